"""Checkpoints: resumed == uninterrupted bit for bit, safe loading, clear errors."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from helpers import tiny_config

from ssd_ext.engine.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from ssd_ext.engine.train import fit


def _assert_same_state(a, b, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_same_state(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.mark.parametrize("ema", [True])
def test_resume_mid_epoch_equals_uninterrupted(tmp_path, ema):
    # 2 epochs of 6 iterations; checkpoints at 4 and 8 (mid-epoch), resume from 4.
    full = tiny_config(tmp_path / "full", train__ema=ema, optim__clip_grad_norm=5.0)
    fit(full)
    ckpts = tmp_path / "full" / "checkpoints"
    middle = ckpts / "checkpoint_00000004.pt"
    assert middle.exists()
    resumed = tiny_config(tmp_path / "resumed", train__ema=ema, optim__clip_grad_norm=5.0)
    # Let the resumed run start from a copy of the mid-run checkpoint in its own folder.
    (tmp_path / "resumed" / "checkpoints").mkdir(parents=True)
    start = tmp_path / "resumed" / "checkpoints" / middle.name
    start.write_bytes(middle.read_bytes())
    # Disturb every global RNG: the resume must restore them.
    torch.manual_seed(12345)
    fit(resumed, resume=start)
    a = load_checkpoint(ckpts / "checkpoint_00000012.pt")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "checkpoint_00000012.pt")
    assert a["iteration"] == b["iteration"] == 12
    for key in ("model_state", "ema_state", "ema_averaging_state", "optimizer_state", "scheduler_state",
                "rng"):
        _assert_same_state(a[key], b[key], key)
    assert a["model_state"].keys() and (a["ema_state"] is not None) == ema
    # And training really changed the weights between the checkpoint and the end.
    start_state = load_checkpoint(middle)["model_state"]
    assert any(not torch.equal(start_state[k], a["model_state"][k]) for k in start_state)
    model, ckpt = model_from_checkpoint(ckpts / "checkpoint_00000012.pt")
    assert not model.training and ckpt["class_names"][0] == "__background__"
    assert ckpt["input"]["size"] == [160, 160]


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch EVIL_RAN",))


def test_load_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weight": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="not an ssd_ext checkpoint"):
        load_checkpoint(foreign)
    text = tmp_path / "text.pt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(text)
    evil = tmp_path / "evil.pt"
    torch.save({"format": "ssd_ext.checkpoint", "payload": _Evil()}, evil)
    with pytest.raises(CheckpointError, match="other than plain data"):
        load_checkpoint(evil)
    assert not (tmp_path / "EVIL_RAN").exists()
    evil_pickle = tmp_path / "evil.pkl"
    evil_pickle.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(CheckpointError):
        load_checkpoint(evil_pickle)
    assert not (tmp_path / "EVIL_RAN").exists()


def test_truncated_checkpoint_and_other_model(tmp_path):
    config = tiny_config(tmp_path / "run", schedule__epochs=1)
    fit(config)
    good = tmp_path / "run" / "checkpoints" / "checkpoint_00000006.pt"
    data = good.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(truncated)
    ckpt = load_checkpoint(good)
    ckpt["model"]["kwargs"] = {"width": 16}  # the weights belong to width 8
    with pytest.raises(CheckpointError, match="another model"):
        model_from_checkpoint(ckpt)
