"""Evaluation reports: JSON (+ Markdown table + PNG histograms) and side-by-side comparison."""

from __future__ import annotations

import json
import math
from pathlib import Path

from eval_crafter.cache import from_jsonable, to_jsonable
from eval_crafter.errors import EvalInputError
from tsm_video.fileio import atomic_write_text

__all__ = ["write_report", "load_report", "markdown_table", "plot_histograms", "compare_reports"]

_CATEGORIES = ("visual_quality", "text_video_alignment", "motion_quality", "temporal_consistency", "total")


def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    value = float(value)
    return "nan" if math.isnan(value) else f"{value:.{digits}f}"


_REPORT_KEYS = ("tool", "mode", "backend", "label", "videos", "metrics")


def load_report(path: str | Path) -> dict:
    """A report JSON written by :func:`write_report` ("NaN" strings read back as floats).

    Raises :class:`~eval_crafter.errors.EvalInputError` for a file that is not JSON or not such
    a report (``OSError`` for a missing one)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise EvalInputError(f"{path}: not a JSON report ({err})") from err
    if (
        not isinstance(data, dict)
        or any(k not in data for k in _REPORT_KEYS)
        or not isinstance(data["metrics"], dict)
    ):
        raise EvalInputError(
            f"{path}: not a report of `tsm-video eval evalcrafter` (expected a JSON object with the "
            f"keys {', '.join(_REPORT_KEYS)})"
        )
    return from_jsonable(data)


def markdown_table(report: dict) -> str:
    """The aggregate values as a Markdown table, labelled with mode and backend."""
    lines = [
        f"# {report['label']}",
        "",
        f"videos: `{report['videos']}` ({report['num_videos']}), metadata: {report['metadata']}, "
        f"skipped: {report['skipped'] or 'none'}",
        "",
        "| metric | value | n |",
        "|---|---:|---:|",
    ]
    for name, agg in report["metrics"].items():
        lines.append(f"| {name} | {_fmt(agg.get('value'))} | {agg.get('n', '-')} |")
    scores = report.get("evalcrafter")
    if scores:
        lines += [
            "",
            "EvalCrafter categories (x100; nan where an input metric was not measured):",
            "",
            "| category | score |",
            "|---|---:|",
        ]
        lines += [f"| {c} | {_fmt(scores[c])} |" for c in _CATEGORIES]
    return "\n".join(lines) + "\n"


def plot_histograms(report: dict, path: Path) -> Path | None:
    """One histogram per metric of its per-video values; None if no metric has any."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    from eval_crafter import metrics  # imported here: the full tables load every metric module

    table = metrics.LIGHT_METRICS if report["backend"] == "light" else metrics.METRICS
    series = {}
    for name in report["metrics"]:
        key = table[name].histogram_key if name in table else None
        values = [
            float(r[name][key]) for r in report["per_video"].values() if key and name in r and key in r[name]
        ]
        values = [v for v in values if math.isfinite(v)]
        if values:
            series[f"{name}: {key}"] = values
    if not series:
        return None
    fig = Figure(figsize=(4 * len(series), 3))
    axes = fig.subplots(1, len(series), squeeze=False)
    for ax, (title, values) in zip(axes[0], series.items()):
        ax.hist(values, bins=min(20, max(5, len(values))))
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("videos")
    fig.suptitle(report["label"], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def write_report(report: dict, out: str | Path) -> dict[str, Path]:
    """Write ``out`` (JSON), ``<stem>.md`` and ``<stem>_hist.png`` beside it; returns the paths."""
    out = Path(out)
    atomic_write_text(out, json.dumps(to_jsonable(report), indent=1))
    paths = {"json": out, "markdown": out.with_suffix(".md")}
    atomic_write_text(paths["markdown"], markdown_table(report))
    png = plot_histograms(report, out.with_name(f"{out.stem}_hist.png"))
    if png is not None:
        paths["histograms"] = png
    return paths


def compare_reports(a: dict, b: dict, names: tuple[str, str] = ("A", "B")) -> str:
    """Two reports side by side (aggregate values, their difference, EvalCrafter categories)."""
    lines = [f"| metric | {names[0]} | {names[1]} | {names[1]} - {names[0]} |", "|---|---:|---:|---:|"]
    for name in list(dict.fromkeys([*a["metrics"], *b["metrics"]])):
        va = a["metrics"].get(name, {}).get("value")
        vb = b["metrics"].get(name, {}).get("value")
        diff = None if va is None or vb is None else float(vb) - float(va)
        lines.append(f"| {name} | {_fmt(va)} | {_fmt(vb)} | {_fmt(diff)} |")
    if a.get("evalcrafter") and b.get("evalcrafter"):
        for c in _CATEGORIES:
            va, vb = a["evalcrafter"][c], b["evalcrafter"][c]
            lines.append(f"| *{c}* | {_fmt(va)} | {_fmt(vb)} | {_fmt(float(vb) - float(va))} |")
    header = [f"{names[0]}: {a['label']} ({a['videos']})", f"{names[1]}: {b['label']} ({b['videos']})"]
    if (a["mode"], a["backend"]) != (b["mode"], b["backend"]):
        header.append("**warning: the runs differ in mode or backend; values are not comparable**")
    header += _runtime_differences(a.get("runtime", {}), b.get("runtime", {}))
    return "\n".join(["\n\n".join(header), "", *lines]) + "\n"


def _runtime_differences(a: dict, b: dict) -> list[str]:
    """One note per metric whose device, precision, detection schedule or weights differ."""
    notes = []
    for name in sorted(set(a) & set(b)):
        ra, rb = a[name], b[name]
        parts = [
            f"{key} {ra.get(key)} vs {rb.get(key)}"
            for key in ("device", "fp32", "dtypes", "detection")
            if ra.get(key) != rb.get(key)
        ]
        if ra.get("weights") != rb.get("weights"):
            parts.append("other weights files")
        if parts:
            notes.append(f"note: {name} ran differently: " + "; ".join(parts))
    return notes
