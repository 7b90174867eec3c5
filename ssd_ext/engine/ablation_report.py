"""The report of an ablation study: one row per variant (mean and spread over seeds), written as
markdown, JSON and a bar chart beside the paper's figures (see :mod:`ssd_ext.engine.ablation`).

Accuracy metrics are the trainer's held-out ``metrics`` (COCO-style ``AP``/``AP50`` and, where
the evaluation gives it, ``mAP_voc07``), shown in % in the markdown and chart and kept as
fractions in the JSON. The spread is the sample standard deviation over the seeds that finished
(none with one seed).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["summarize", "stats", "format_markdown", "plot_rows", "write_report", "SHOWN_METRICS"]

# (metrics key, column title), in the table's order; a column none of the runs has is left out.
SHOWN_METRICS = (("AP", "AP"), ("AP50", "AP50"), ("mAP_voc07", "mAP VOC07"))


def stats(values: Sequence[Any]) -> dict[str, Any] | None:
    """``{"mean", "std", "n", "values"}`` of the finite numbers in ``values`` (``std`` is the
    sample standard deviation, None for one value); None when there is none."""
    numbers = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not numbers:
        return None
    spread = statistics.stdev(numbers) if len(numbers) > 1 else None
    return {"mean": statistics.fmean(numbers), "std": spread, "n": len(numbers), "values": numbers}


def _variant_row(variant: Any, planned: Sequence[Any],
                 results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    row: dict[str, Any] = {"variant": variant.name, "description": variant.description,
                           "paper": dict(variant.paper) if variant.paper else None,
                           "seeds": [p.seed for p in planned]}
    if all(p.not_applicable is not None for p in planned):
        row.update(status="n/a", note=planned[0].not_applicable)
        return row
    ok = [r for r in results if r.get("status") == "ok"]
    row["failures"] = [{"seed": r.get("seed"), "error": r.get("error", "")} for r in results
                       if r.get("status") != "ok"]
    row["status"] = "ok" if len(ok) == len(planned) else ("failed" if not ok else "partial")
    row["runs_ok"] = len(ok)
    metric_keys = sorted({k for r in ok for k in (r.get("metrics") or {})})
    row["metrics"] = {k: stats([(r.get("metrics") or {}).get(k) for r in ok]) for k in metric_keys}
    priors = sorted({r["num_priors"] for r in ok if r.get("num_priors") is not None})
    row["num_priors"] = priors[0] if len(priors) == 1 else (priors or None)
    for key in ("train_images_per_second", "inference_images_per_second"):
        row[key] = stats([r.get(key) for r in ok])
    errors = sorted({r["inference_error"] for r in ok if r.get("inference_error")})
    if errors:
        row["inference_errors"] = errors
    return row


def summarize(study: Any, planned: Sequence[Any],
              results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per variant of ``study`` (in its order) from the planned runs and their results."""
    by_run = {(r.get("variant"), r.get("seed")): r for r in results}
    rows = []
    for variant in study.variants:
        runs = [p for p in planned if p.variant.name == variant.name]
        found = [by_run[(variant.name, p.seed)] for p in runs if (variant.name, p.seed) in by_run]
        rows.append(_variant_row(variant, runs, found))
    return rows


def _fmt(value: dict[str, Any] | None, scale: float = 1.0, digits: int = 1) -> str:
    if value is None:
        return "-"
    text = f"{value['mean'] * scale:.{digits}f}"
    return text if value["std"] is None else f"{text} ± {value['std'] * scale:.{digits}f}"


def _shown_metrics(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    return [(key, title) for key, title in SHOWN_METRICS
            if any((row.get("metrics") or {}).get(key) for row in rows)]


def _table_line(row: Mapping[str, Any], metrics: Sequence[tuple[str, str]]) -> str:
    paper = row.get("paper") or {}
    paper_cells = [str(paper.get("mAP", "")), str(paper.get("boxes", "")), str(paper.get("table", ""))]
    if row["status"] == "n/a":
        cells = ["n/a"] + ["-"] * (len(metrics) + 3)
    else:
        cells = [f"{row['runs_ok']}/{len(row['seeds'])}"]
        cells += [_fmt((row.get("metrics") or {}).get(key), 100.0) for key, _ in metrics]
        priors = row.get("num_priors")
        cells += ["-" if priors is None else str(priors), _fmt(row.get("train_images_per_second")),
                  _fmt(row.get("inference_images_per_second"))]
    return "| " + " | ".join([f"`{row['variant']}`", *cells, *paper_cells, _notes(row)]) + " |"


def _notes(row: Mapping[str, Any], limit: int = 90) -> str:
    """The table's notes cell: why a variant did not apply, or its runs' errors (shortened; the
    whole text is under "Failed runs"), and the paper's own note."""
    notes = []
    if row["status"] == "n/a":
        notes.append(f"not applicable: {row.get('note')}")
    for failure in row.get("failures") or []:
        error = " ".join(str(failure["error"]).split())
        notes.append(f"seed {failure['seed']} failed: {error[:limit]}{'...' if len(error) > limit else ''}")
    paper_note = (row.get("paper") or {}).get("note")
    if paper_note:
        notes.append(f"paper: {paper_note}")
    return "; ".join(notes).replace("|", "/")


def format_markdown(rows: Sequence[Mapping[str, Any]], header: Mapping[str, Any]) -> str:
    """The report as markdown: what ran, the table, then failed and not applicable variants."""
    metrics = _shown_metrics(rows)
    seeds = ", ".join(str(s) for s in header.get("seeds", []))
    timing = header.get("timing") or {}
    lines = [
        f"# Ablation study `{header.get('study')}`", "",
        f"Preset `{header.get('preset')}` (model `{header.get('model')}`), schedule.epochs = "
        f"{header.get('epochs')} per run, seeds {seeds}. Mean ± sample standard deviation over the "
        "seeds that finished; AP metrics in % on the held-out split. Training images/s from the "
        f"trainer; detect images/s: the trained model's `detect` on held-out images, batch "
        f"{timing.get('batch_size')}, "
        f"{timing.get('batches')} timed batches after {timing.get('warmup_batches')} warm-up.",
    ]
    if header.get("reference"):
        lines += ["", f"Paper columns: {header.get('paper_metric')}; {header.get('reference')}."]
    titles = [title for _, title in metrics]
    columns = ["variant", "runs", *titles, "priors", "train img/s", "detect img/s",
               "paper mAP", "paper boxes", "paper row", "notes"]
    lines += ["", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += [_table_line(row, metrics) for row in rows]
    described = [row for row in rows if row.get("description")]
    if described:
        lines += ["", "Variants:", ""] + [f"- `{row['variant']}`: {row['description']}" for row in described]
    failures = [(row["variant"], f) for row in rows for f in row.get("failures") or []]
    if failures:
        lines += ["", "## Failed runs", ""]
        lines += [f"- `{name}` seed {f['seed']}: {f['error']} (log: runs/{name}/seed{f['seed']}/train.log)"
                  for name, f in failures]
    skipped = [row for row in rows if row["status"] == "n/a"]
    if skipped:
        lines += ["", "## Not applicable", ""] + [f"- `{row['variant']}`: {row['note']}" for row in skipped]
    timing_errors = [(row["variant"], e) for row in rows for e in row.get("inference_errors") or []]
    if timing_errors:
        lines += ["", "## Detect timing not measured", ""] + [f"- `{n}`: {e}" for n, e in timing_errors]
    return "\n".join(lines) + "\n"


def plot_rows(rows: Sequence[Mapping[str, Any]], path: str | Path, title: str = "") -> Path | None:
    """A PNG of horizontal bars: this study's main metric (mAP VOC07 when every finished variant
    has it, else AP50; mean ± std) beside the paper's mAP for the same rows. None when no
    variant finished."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    finished = [row for row in rows if row.get("metrics")]
    if not finished:
        return None
    key = "mAP_voc07" if all((row["metrics"] or {}).get("mAP_voc07") for row in finished) else "AP50"
    names = [row["variant"] for row in rows][::-1]
    means, errors, labels = [], [], []
    for row in rows[::-1]:
        value = (row.get("metrics") or {}).get(key)
        means.append(value["mean"] * 100 if value else 0.0)
        errors.append((value["std"] or 0.0) * 100 if value else 0.0)
        labels.append("" if value else ("n/a" if row["status"] == "n/a" else "failed"))
    paper = [float((row.get("paper") or {}).get("mAP", 0.0) or 0.0) for row in rows[::-1]]
    figure, (ours, theirs) = plt.subplots(1, 2, figsize=(11, 0.45 * len(rows) + 2.0), sharey=True,
                                          layout="constrained")
    positions = range(len(names))
    ours.barh(positions, means, xerr=errors, color="#3b75af", capsize=3)
    for position, label in zip(positions, labels, strict=True):
        if label:  # x in axes fractions, y in bar positions
            ours.text(0.01, position, label, va="center", fontsize=8, color="#a33",
                      transform=ours.get_yaxis_transform())
    ours.set_yticks(list(positions), names)
    ours.set_xlabel(f"{'mAP VOC07' if key == 'mAP_voc07' else 'AP50'} (%), this study")
    theirs.barh(positions, paper, color="#999999")
    theirs.set_xlabel("paper: SSD300 VOC2007 test mAP (%)")
    for axis in (ours, theirs):
        axis.grid(axis="x", alpha=0.3)
    if title:
        figure.suptitle(title)
    path = Path(path)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def write_report(study: Any, rows: Sequence[Mapping[str, Any]], out_dir: str | Path,
                 header: Mapping[str, Any]) -> dict[str, Path]:
    """``results.md``, ``results.json`` and (when a variant finished) ``results.png`` in
    ``out_dir``; returns their paths by kind."""
    from .ablation import write_json_atomic

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "results.md", "json": out / "results.json"}
    paths["markdown"].write_text(format_markdown(rows, header))
    write_json_atomic({"header": dict(header), "rows": list(rows)}, paths["json"])
    title = f"{study.name}: {header.get('preset')} ({header.get('model')}), seeds {header.get('seeds')}"
    png = plot_rows(rows, out / "results.png", title)
    if png is not None:
        paths["png"] = png
    return paths
