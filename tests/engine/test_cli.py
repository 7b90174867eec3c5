"""The ssd command line: every subcommand, its error messages, and a real SIGKILL + --resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import tiny_config

from ssd_ext.cli import main
from ssd_ext.engine.checkpoint import list_checkpoints, load_checkpoint
from ssd_ext.engine.config import save_config

ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    paths = [str(ROOT), str(ROOT / "python"), str(ROOT / "tests"), str(Path(__file__).parent)]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(paths), OMP_NUM_THREADS="1")


def _ssd(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ssd_ext", *args], env=_env(), cwd=cwd,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_sigkill_while_writing_a_checkpoint_then_resume(tmp_path):
    run = tmp_path / "run"
    killed = subprocess.run([sys.executable, str(Path(__file__).parent / "_kill_worker.py"), str(run)],
                            env=_env(), capture_output=True, text=True, timeout=600)
    assert killed.returncode == -9, killed.stderr[-2000:]
    folder = run / "checkpoints"
    # The first checkpoint (iteration 4) is intact; the torn second one never got its name.
    assert [p.name for p in list_checkpoints(folder)] == ["checkpoint_00000004.pt"]
    assert len(list(folder.glob(".checkpoint_00000008.pt.*.tmp"))) == 1
    assert load_checkpoint(folder / "checkpoint_00000004.pt")["iteration"] == 4
    resumed = _ssd("train", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Traceback" not in resumed.stderr
    names = [p.name for p in list_checkpoints(folder)]
    assert names[-1] == "checkpoint_00000012.pt"
    assert load_checkpoint(folder / names[-1])["iteration"] == 12
    assert not list(folder.glob("*.tmp"))
    # The metrics of the resumed run continue those of the killed one, without duplicates.
    iterations = [json.loads(line)["iter"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert iterations == sorted(set(iterations)) and iterations[-1] == 12


@pytest.mark.slow
def test_train_eval_detect_from_the_command_line(tmp_path, capsys):
    config = tiny_config(tmp_path / "run", schedule__epochs=1, eval__at_end=True, eval__num_pictures=1)
    save_config(config, tmp_path / "tiny.json")
    (tmp_path / "more.yaml").write_text("optim:\n  lr: 0.002\n")
    assert main(["train", "--config", str(tmp_path / "tiny.json"), "--config", str(tmp_path / "more.yaml"),
                 "--schedule.warmup_iters", "2"]) == 0
    out = capsys.readouterr().out
    assert "held-out test split: AP" in out and "checkpoint:" in out
    resolved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert resolved["optim"]["lr"] == 0.002 and resolved["schedule"]["warmup_iters"] == 2
    assert resolved["model"]["kwargs"] == {"width": 8}
    checkpoint = tmp_path / "run" / "checkpoints" / "checkpoint_00000006.pt"
    # A second fresh run into the same folder is refused (it would mix two runs).
    assert main(["train", "--config", str(tmp_path / "tiny.json")]) == 2
    assert "already holds checkpoints" in capsys.readouterr().err

    assert main(["eval", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "eval")]) == 0
    assert "AP" in capsys.readouterr().out
    assert "AP50" in json.dumps(json.loads((tmp_path / "eval" / "eval.json").read_text()))

    # The same checkpoint on the synthetic set written to disk in VOC and COCO layouts.
    assert main(["data", "synth", "--out", str(tmp_path / "voc"), "--num-images", "4", "--quiet",
                 "--image-size", "64"]) == 0
    assert main(["eval", "--checkpoint", str(checkpoint), "--data", str(tmp_path / "voc"),
                 "--split", "2007:trainval"]) == 0
    assert main(["data", "synth", "--layout", "coco", "--out", str(tmp_path / "coco"), "--num-images", "4",
                 "--quiet", "--image-size", "64"]) == 0
    coco_json = str(tmp_path / "coco" / "annotations.json")
    assert main(["eval", "--checkpoint", str(checkpoint), "--data", coco_json,
                 "--images", str(tmp_path / "coco" / "images")]) == 0
    capsys.readouterr()

    images = tmp_path / "voc" / "VOC2007" / "JPEGImages"
    detect_args = ["detect", str(images), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "detect"),
                   "--score-threshold", "0.0"]
    assert main(detect_args) == 0
    # The line counts what detections.json holds.
    written = json.loads((tmp_path / "detect" / "detections.json").read_text())
    in_json = sum(len(image["detections"]) for image in written["images"])
    assert in_json > 0 and f"4 image(s), {in_json} detection(s) above 0.0" in capsys.readouterr().out
    assert len(list((tmp_path / "detect").glob("*.png"))) == 4
    written = json.loads((tmp_path / "detect" / "detections.json").read_text())
    assert len(written["images"]) == 4 and written["failures"] == []

    # The Detector built from the checkpoint runs the checkpoint's model on the checkpoint's
    # input size: its boxes equal model.detect's on the same preprocessed picture.
    from ssd_ext.engine.checkpoint import model_from_checkpoint
    from ssd_ext.engine.inference import Detector

    detector = Detector.from_checkpoint(checkpoint, score_threshold=0.0)
    model, _ = model_from_checkpoint(checkpoint)
    picture = sorted(images.glob("*.jpg"))[0]
    tensor, (height, width) = detector.preprocess(picture)
    assert tensor.shape[-2:] == model.image_size
    expected = model.detect(tensor[None], score_threshold=0.0, max_detections=detector.max_detections,
                            image_sizes=[(height, width)])[0]
    found = detector(picture)[0]
    assert torch.equal(found["boxes"], expected["boxes"]) and torch.equal(found["labels"], expected["labels"])
    assert set(found["names"]) <= set(load_checkpoint(checkpoint)["class_names"][1:])

    # Errors: one line on stderr, a nonzero status, no traceback.
    bad_image = tmp_path / "bad.jpg"
    bad_image.write_bytes(b"not a picture")
    other = load_checkpoint(checkpoint)
    other["model"]["kwargs"] = {"width": 16}
    torch.save(other, tmp_path / "other.pt")
    cases = [
        (["train", "--preset", "nope"], 2, "unknown preset 'nope'"),
        (["train", "--data.kind", "voc", "--data.voc.root", str(tmp_path / "missing")], 2, "is not a folder"),
        (["train", "--optim.lr", "fast"], 2, "optim.lr"),
        (["eval", "--checkpoint", str(tmp_path / "missing.pt")], 1, "does not exist"),
        (["eval", "--checkpoint", str(tmp_path / "tiny.json")], 1, "cannot be read"),
        (["eval", "--checkpoint", str(tmp_path / "other.pt")], 1, "another model"),
        (["eval", "--checkpoint", str(checkpoint), "--data", str(tmp_path / "missing")], 2,
         "is not a folder"),
        (["detect", str(bad_image), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "d")], 2,
         "cannot read image"),
        (["detect", str(tmp_path / "nothing.png"), "--checkpoint", str(checkpoint), "--out",
          str(tmp_path / "d")], 2, "no such file or folder"),
        (["detect", str(bad_image), str(images), "--checkpoint", str(checkpoint), "--out",
          str(tmp_path / "d")], 1, "1 of 5 input(s) failed"),
    ]
    for argv, status, message in cases:
        assert main(argv) == status, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)
        assert err.count("\n") == 1, err


def test_info_and_an_error_in_a_real_process():
    info = _ssd("info")
    assert info.returncode == 0 and "synthetic_small" in info.stdout and "ssd_small" in info.stdout
    bad = _ssd("train", "--preset", "ssd301_voc")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().startswith("ssd: error: unknown preset")


def test_synth_alias_bench_and_unknown_command(tmp_path, capsys, monkeypatch):
    assert main(["synth-voc", "--out", str(tmp_path / "voc"), "--num-images", "2", "--quiet"]) == 0
    assert len(list((tmp_path / "voc" / "VOC2007" / "Annotations").glob("*.xml"))) == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["frobnicate"])
    assert exit_info.value.code == 2 and "invalid choice" in capsys.readouterr().err
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--help"])
    assert exit_info.value.code == 0 and "usage" in capsys.readouterr().out.lower()
