"""The ablation runner: study files, overrides, planning, a tiny study end to end (resume, a failed
variant, a changed budget), the report, and ``ssd ablate``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math

import pytest
import torch
import yaml

from ssd_ext import cli
from ssd_ext.engine import ablation as A
from ssd_ext.engine.ablation_report import format_markdown, stats, summarize
from ssd_ext.engine.ablation_studies import PAPER
from ssd_ext.engine.presets import get_preset
from ssd_ext.engine.train import fit
from ssd_ext.models import ssd_small

# A run of a few steps: width-8 ssd_small, 16 training and 8 held-out pictures, one epoch of
# batch 8 (two iterations), no pictures, TensorBoard or loader processes.
TINY = {
    "model.kwargs.width": 8, "data.synthetic.train_images": 16, "data.synthetic.val_images": 8,
    "data.synthetic.test_images": 8,
    "data.num_workers": 0, "train.batch_size": 8, "train.tensorboard": False, "eval.num_pictures": 0,
    "eval.every_epochs": 0, "eval.batch_size": 8, "schedule.warmup_iters": 1,
}
TIMING = A.TimingOptions(batch_size=4, warmup_batches=1, batches=2)


def _study(*variants: dict) -> A.Study:
    return A.study_from_dict({"name": "tiny", "variants": list(variants)})


class CountingFit:
    """The real ``fit``, recording each run's output folder; optionally interrupted (as by
    Ctrl-C) at the ``interrupt_at``-th call."""

    def __init__(self, interrupt_at: int | None = None) -> None:
        self.calls: list[str] = []
        self.interrupt_at = interrupt_at

    def __call__(self, config):
        self.calls.append(config.output_dir)
        if self.interrupt_at is not None and len(self.calls) == self.interrupt_at:
            raise KeyboardInterrupt
        return fit(config)


# ---------------------------------------------------------------------------- study files


def test_study_files_yaml_and_json_round_trip(tmp_path):
    data = {"name": "mine", "base": {"optim.lr": 0.01},
            "variants": [{"name": "a"}, {"name": "b", "overrides": {"schedule.epochs": 2},
                                         "model_overrides": {"ssd300": {"model.levels": [0, 1]}},
                                         "models": ["ssd300"], "paper": {"table": "T", "mAP": 1.0}}]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(data))
    (tmp_path / "s.json").write_text(json.dumps(data["variants"]))
    from_yaml = A.load_study(tmp_path / "s.yaml")
    assert from_yaml.base == {"optim.lr": 0.01} and [v.name for v in from_yaml.variants] == ["a", "b"]
    assert from_yaml.variants[1].overrides_for("ssd300") == {"schedule.epochs": 2, "model.levels": [0, 1]}
    assert from_yaml.variants[1].overrides_for("ssd_small") == {"schedule.epochs": 2}
    assert A.study_from_dict(A.study_to_dict(from_yaml)) == from_yaml
    from_json = A.load_study(str(tmp_path / "s.json"))
    assert from_json.name == "s" and len(from_json.variants) == 2


@pytest.mark.parametrize(("data", "message"), [
    ({"variants": []}, "'variants' must be a non-empty list"),
    ({"variants": [{"name": "a"}, {"name": "a"}]}, r"unique; repeated: \['a'\]"),
    ({"variants": [{"name": "a/b"}]}, "names a folder"),
    ({"variants": [{"name": "a", "overide": {}}]}, r"unknown key\(s\) \['overide'\]"),
    ({"variants": [{"name": "a", "overrides": [1]}]}, "overrides must be a mapping"),
    ({"variants": [{"name": "a", "models": "ssd300"}]}, "models must be a list"),
    ({"variants": [{"name": "a"}], "seeds": 3}, r"unknown key\(s\) \['seeds'\]"),
    ("text", "a study is a list of variants"),
])
def test_bad_study_files_are_named_errors(data, message):
    with pytest.raises(A.StudyError, match=message):
        A.study_from_dict(data, "my.yaml")


def test_missing_and_unreadable_study_files(tmp_path):
    with pytest.raises(A.StudyError, match="neither a packaged study"):
        A.load_study(tmp_path / "none.yaml")
    (tmp_path / "bad.yaml").write_text("variants: [unclosed")
    with pytest.raises(A.StudyError, match="not a readable study file"):
        A.load_study(tmp_path / "bad.yaml")


# ---------------------------------------------------------------------------- the paper study

PAPER_FIGURES = {  # variant -> (mAP, boxes) as in the paper's Tables 2, 3 and 6
    "baseline": (77.2, 8732), "no_expand": (74.3, 8732), "flip_only": (65.5, 8732),
    "no_ratio_3": (73.7, None), "no_ratio_2_3": (71.6, None), "no_atrous": (74.2, 8732),
    "drop_coarsest_1": (74.6, 8764),
    "drop_coarsest_2": (73.8, 8942), "drop_coarsest_3": (70.7, 9864), "first_two_levels": (64.2, 9025),
    "second_level_only": (62.4, 8664),
}
# SSD300's and ssd_small's prior counts under each variant of the paper study (None: n/a).
PAPER_PRIORS = {
    "ssd300": {"no_ratio_3": 7760, "no_ratio_2_3": 3880, "no_atrous": 8732, "drop_coarsest_1": 8764,
               "drop_coarsest_2": 8892, "drop_coarsest_3": 9942, "first_two_levels": 15162,
               "second_level_only": 10830},
    "ssd_small": {"no_ratio_3": 2140, "no_ratio_2_3": 1070, "no_atrous": None, "drop_coarsest_1": 2440,
                  "drop_coarsest_2": 2600, "drop_coarsest_3": None, "first_two_levels": 3800,
                  "second_level_only": 2600},
}


def test_paper_study_rows_carry_the_papers_figures():
    study = A.load_study("paper")
    assert [v.name for v in study.variants] == list(PAPER_FIGURES)
    for variant in study.variants:
        mAP, boxes = PAPER_FIGURES[variant.name]
        assert variant.paper["mAP"] == mAP and variant.paper.get("boxes") == boxes, variant.name
    assert study.base == {f"data.augment.{k}": True for k in ("photometric", "expand", "crop", "flip")}
    assert "Tables 2, 3 and 6" in study.reference


@pytest.mark.parametrize("model", sorted(PAPER_PRIORS))
def test_paper_study_switches_build_each_model(model):
    """Each variant's model overrides, given to build_model as the trainer does, give the prior
    counts the docs state (on the meta device: no memory)."""
    for variant in A.load_study("paper").variants:
        expected = PAPER_PRIORS[model].get(variant.name, 8732 if model == "ssd300" else 2408)
        if variant.models is not None and model not in variant.models:
            assert expected is None, variant.name
            continue
        values = {"model": {"name": model, "priors": None, "kwargs": {}, "aspect_ratios": None,
                            "levels": None, "atrous": None}}
        for key, value in variant.overrides_for(model).items():
            if key.startswith("model."):
                values["model"][key.split(".", 1)[1]] = value
        assert A.count_priors(values) == expected, variant.name


def test_paper_study_prints_as_yaml_that_reads_back(capsys):
    assert cli.main(["ablate", "--print-study"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert A.study_from_dict(printed, "paper") == A.study_from_dict(PAPER, "paper")


# ---------------------------------------------------------------------------- overrides and planning


def test_apply_overrides_sets_dotted_keys_and_names_missing_sections():
    values = {"optim": {"lr": 1.0}, "model": {"kwargs": {}}}
    out = A.apply_overrides(values, {"optim.lr": 2.0, "model.kwargs.width": 8}, "here")
    assert out == {"optim": {"lr": 2.0}, "model": {"kwargs": {"width": 8}}}
    assert values["optim"]["lr"] == 1.0  # a copy
    with pytest.raises(A.StudyError, match=r"here: override 'optim.lr.x': 'optim.lr' is not a config sec"):
        A.apply_overrides(values, {"optim.lr.x": 1}, "here")
    with pytest.raises(A.StudyError, match="must be dotted names"):
        A.apply_overrides(values, {"optim..lr": 1}, "here")


def test_parse_override_reads_yaml_values():
    assert A.parse_override("optim.lr=0.01") == ("optim.lr", 0.01)
    assert A.parse_override("model.levels=[0, 1]") == ("model.levels", [0, 1])
    assert A.parse_override("model.atrous=false") == ("model.atrous", False)
    assert A.parse_override("output_dir=runs/x") == ("output_dir", "runs/x")
    with pytest.raises(A.StudyError, match="KEY=VALUE"):
        A.parse_override("optim.lr")


def test_plan_orders_runs_and_applies_overrides_in_order(tmp_path):
    study = A.study_from_dict({"base": {"optim.lr": 0.5, "optim.momentum": 0.5}, "variants": [
        {"name": "a", "overrides": {"optim.lr": 0.1}},
        {"name": "b", "model_overrides": {"ssd_small": {"optim.weight_decay": 0.0}}},
        {"name": "c", "models": ["ssd300"]},
        {"name": "d", "overrides": {"optim.nope": 1}},
    ]})
    planned = A.plan_study(study, get_preset("synthetic_small"), [3, 1], tmp_path,
                           user_overrides={"optim.lr": 0.2, "optim.momentum": 0.7}, epochs=2)
    assert [(p.variant.name, p.seed) for p in planned] == [(v, s) for v in "abcd" for s in (3, 1)]
    a3, b3, c3, d3 = planned[0], planned[2], planned[4], planned[6]
    # base < --set < variant; the run's own seed, folder and quiet trainer
    assert a3.config.optim.lr == 0.1 and a3.config.optim.momentum == 0.7 and a3.config.schedule.epochs == 2
    assert b3.config.optim.lr == 0.2 and b3.config.optim.weight_decay == 0.0
    assert a3.config.train.seed == 3 and planned[1].config.train.seed == 1 and not a3.config.train.progress
    assert a3.config.output_dir == str(tmp_path / "runs" / "a" / "seed3" / "train")
    assert c3.not_applicable == "applies to ssd300; the config's model is ssd_small" and c3.config is None
    assert "unknown config key(s) optim.nope" in d3.error


@pytest.mark.parametrize(("seeds", "epochs", "overrides", "message"), [
    ([], None, {}, "seeds must be distinct"), ([1, 1], None, {}, "seeds must be distinct"),
    ([0], 0, {}, "--epochs must be a positive int"),
    ([0], None, {"optim.lrr": 1}, "--set overrides do not fit the config: unknown config key"),
])
def test_plan_refuses_what_would_fail_every_run(tmp_path, seeds, epochs, overrides, message):
    with pytest.raises(A.StudyError, match=message):
        A.plan_study(_study({"name": "a"}), get_preset("synthetic_small"), seeds, tmp_path, overrides, epochs)


# ---------------------------------------------------------------------------- timing and files


def test_measure_inference_times_the_requested_batches():
    torch.manual_seed(0)
    model = ssd_small(3, width=8)
    calls = []
    original = model.detect

    def counting_detect(images, **kwargs):
        calls.append((len(images), kwargs["score_threshold"], kwargs["max_detections"]))
        return original(images, **kwargs)

    model.detect = counting_detect
    speed = A.measure_inference(model, torch.randn(6, 3, 160, 160), A.TimingOptions(4, 1, 3))
    assert speed > 0 and math.isfinite(speed)
    assert [c[0] for c in calls] == [4, 2, 4, 2]  # the batches cycle: 1 warm-up, 3 timed
    assert calls[0][1:] == (0.01, 200)


def test_write_json_atomic_leaves_one_file_with_nan_as_null(tmp_path):
    A.write_json_atomic({"x": float("nan"), "y": [1.0, float("inf")]}, tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text()) == {"x": None, "y": [1.0, None]}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_stats_and_markdown_of_partial_and_not_applicable_rows():
    assert stats([1.0, 2.0, 3.0, None, float("nan")]) == {"mean": 2.0, "std": 1.0, "n": 3,
                                                           "values": [1.0, 2.0, 3.0]}
    assert stats([0.5])["std"] is None and stats([None]) is None
    study = _study({"name": "x", "paper": {"table": "T2", "mAP": 70.0, "note": "n"}},
                   {"name": "y", "models": ["z"]})
    planned = [A.PlannedRun(study.variants[0], s, None) for s in (0, 1)]
    planned.append(A.PlannedRun(study.variants[1], 0, None, not_applicable="applies to z"))
    results = [{"variant": "x", "seed": 0, "status": "ok", "metrics": {"AP50": 0.5}, "num_priors": 10,
                "train_images_per_second": 2.0, "inference_images_per_second": 3.0},
               {"variant": "x", "seed": 1, "status": "failed", "error": "RuntimeError: out of memory"}]
    rows = summarize(study, planned, results)
    assert rows[0]["status"] == "partial" and rows[0]["metrics"]["AP50"]["mean"] == 0.5
    assert rows[1]["status"] == "n/a"
    text = format_markdown(rows, {"study": "s", "seeds": [0, 1], "timing": {}})
    line = "| `x` | 1/2 | 50.0 | 10 | 2.0 | 3.0 | 70.0 |  | T2 | seed 1 failed: RuntimeError: out of memory"
    assert line in text
    assert "- `y`: applies to z" in text and "mAP VOC07" not in text


# ---------------------------------------------------------------------------- end to end


def test_tiny_study_runs_resumes_and_reports_a_failed_variant(tmp_path):
    study = _study({"name": "base"}, {"name": "low_lr", "overrides": {"optim.lr": 1e-4}},
                   {"name": "bad_levels", "overrides": {"model.kwargs.levels": [0, 7]}})
    base = get_preset("synthetic_small")
    options = A.StudyOptions(seeds=(0,), out_dir=tmp_path, epochs=1, overrides=TINY, progress=False,
                             timing=TIMING, fit=CountingFit(interrupt_at=2))
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C during the second run
        A.run_study(study, base, options)
    assert (tmp_path / "runs/base/seed0/result.json").exists()
    assert not (tmp_path / "runs/low_lr/seed0/result.json").exists()

    counting = CountingFit()
    result = A.run_study(study, base, dataclasses.replace(options, fit=counting))
    assert counting.calls == [str(tmp_path / f"runs/{name}/seed0/train") for name in ("low_lr", "bad_levels")]
    by_name = {r["variant"]: r for r in result.results}
    assert by_name["base"]["status"] == by_name["low_lr"]["status"] == "ok"
    assert by_name["bad_levels"]["status"] == "failed"
    assert "ssd_small: levels[1] = 7 is out of range" in by_name["bad_levels"]["error"]
    for name in ("base", "low_lr"):
        run = by_name[name]
        assert run["num_priors"] == 2408 and run["iterations"] == 2 and run["inference_images_per_second"] > 0
        assert set(run["metrics"]) >= {"AP", "AP50"} and run["config"]["train"]["seed"] == 0
        assert (tmp_path / f"runs/{name}/seed0/train/config.json").exists()
    markdown = (tmp_path / "results.md").read_text()
    assert "| `bad_levels` | 0/1 |" in markdown and "levels[1] = 7 is out of range" in markdown
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [row["variant"] for row in saved["rows"]] == ["base", "low_lr", "bad_levels"]
    assert (tmp_path / "results.png").stat().st_size > 0

    again = CountingFit()
    A.run_study(study, base, dataclasses.replace(options, fit=again))
    assert again.calls == [str(tmp_path / "runs/bad_levels/seed0/train")]  # only the failed run is redone
    finished = json.loads((tmp_path / "runs/base/seed0/result.json").read_text())
    assert finished["finished_at"] == by_name["base"]["finished_at"]

    with pytest.raises(A.StudyError, match=r"another config.*base seed 0: schedule.epochs: 1 -> 2"):
        A.run_study(study, base, dataclasses.replace(options, epochs=2, fit=again))


def test_ssd_ablate_dry_run_lists_runs_and_prior_counts(tmp_path, capsys):
    study_file = tmp_path / "study.yaml"
    study_file.write_text(yaml.safe_dump({"variants": [
        {"name": "base"}, {"name": "two_levels", "overrides": {"model.kwargs.levels": [0, 1]}},
        {"name": "big", "models": ["ssd300"]}]}))
    argv = ["ablate", "--study", str(study_file), "--out", str(tmp_path / "out"), "--seeds", "2", "--dry-run"]
    assert cli.main(argv + [f"--set={k}={v}" for k, v in TINY.items()]) == 0
    out = capsys.readouterr().out
    assert "study study: 3 variants x 2 seed(s)" in out
    assert "base        priors   2408  seed 0: pending; seed 1: pending" in out
    assert "two_levels  priors   3800" in out
    assert "big         priors      -  seed 0: n/a; seed 1: n/a  applies to ssd300" in out
    assert not (tmp_path / "out").exists()  # a dry run writes nothing


def test_parse_seeds_takes_a_count_or_a_list():
    assert A.parse_seeds("3") == (0, 1, 2)
    assert A.parse_seeds("0,5") == (0, 5) and A.parse_seeds("5,") == (5,)
    with pytest.raises(argparse.ArgumentTypeError, match="--seeds takes a count"):
        A.parse_seeds("0")


@pytest.mark.parametrize(("argv", "message"), [
    (["--set", "optim.lr", "--out", "OUT"], "--set expects KEY=VALUE"),
    (["--study", "nope", "--out", "OUT"], "neither a packaged study"),
    ([], "needs --out DIR"),
])
def test_ssd_ablate_wrong_input_is_one_error_line(tmp_path, capsys, argv, message):
    argv = [str(tmp_path) if arg == "OUT" else arg for arg in argv]
    assert cli.main(["ablate", *argv]) == 2
    error = capsys.readouterr().err
    assert error.startswith("ssd: error: ") and message in error
