"""Phase 5 of :mod:`patchcfg.analyze`: an :class:`~patchcfg.analyze.analysis.Analysis` as a text
table, CSV, Markdown or JSON, and a metric per epoch as a figure (matplotlib, imported only there)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from patchcfg.analyze.analysis import Analysis
from patchcfg.analyze.figures import INDEX_COLUMNS, metric_direction
from patchcfg.analyze.runs import MISSING, format_value
from patchcfg.atomic import atomic_write_figure
from patchcfg.errors import UserError

FORMATS = ("table", "csv", "md", "json")
CAPTIONS = {"kept": "figures: what each run's kept model scores (summary.json); --best-epoch for each "
                    "metric's best epoch",
            "best-epoch": "figures: each metric's best epoch (metrics.csv), which may not be the kept model's"}


def format_number(value: float, precision: int) -> str:
    """``value`` with ``precision`` decimals; tiny or huge values in ``g`` notation."""
    if value is None or math.isnan(value):
        return "-"
    if value != 0 and (abs(value) < 10.0 ** -precision or abs(value) >= 1e7):
        return f"{value:.{max(precision, 1)}g}"
    return f"{value:.{precision}f}"


def _metric_cell(stats: tuple[float, float, int] | None, precision: int) -> str:
    if stats is None:
        return "-"
    mean, std, count = stats
    text = format_number(mean, precision)
    if count > 1 and not math.isnan(std):
        text += f" ± {format_number(std, precision)}"
    return text


def _text_cells(analysis: Analysis, precision: int) -> tuple[list[str], list[list[str]], set[int]]:
    head = ["name", "stage", "state", "runs", "n"]
    headers = [*head, *analysis.keys, *analysis.metrics]
    cells = [
        [row.name, row.stage, row.state, str(len(row.runs)), str(row.n)]
        + [format_value(row.config.get(key, MISSING)) for key in analysis.keys]
        + [_metric_cell(row.metrics.get(m), precision) for m in analysis.metrics]
        for row in analysis.rows
    ]
    right = {3, 4, *range(len(head) + len(analysis.keys), len(headers))}
    return headers, cells, right


def render_table(analysis: Analysis, precision: int = 4) -> str:
    """An aligned plain-text table, then one line per run that recorded an error."""
    headers, cells, right = _text_cells(analysis, precision)
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        padded = [v.rjust(widths[i]) if i in right else v.ljust(widths[i]) for i, v in enumerate(values)]
        return "  ".join(padded).rstrip()

    lines = [line(headers), "  ".join("-" * w for w in widths), *(line(row) for row in cells),
             "", CAPTIONS[analysis.figures]]
    errors = [f"  {row.stage} {error}" for row in analysis.rows for error in row.errors]
    if errors:
        lines += ["", "errors:", *errors]
    return "\n".join(lines) + "\n"


def render_markdown(analysis: Analysis, precision: int = 4) -> str:
    """A GitHub-flavoured Markdown table."""
    headers, cells, right = _text_cells(analysis, precision)

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.replace("|", "\\|") for v in values) + " |"

    rule = ["---:" if i in right else "---" for i in range(len(headers))]
    return "\n".join([line(headers), "| " + " | ".join(rule) + " |", *(line(row) for row in cells),
                      "", f"*{CAPTIONS[analysis.figures]}*"]) + "\n"


def _number_or_empty(value: float) -> str:
    return "" if math.isnan(value) else repr(float(value))


def render_csv(analysis: Analysis) -> str:
    """CSV with full precision: per metric ``M`` (mean), ``M_std`` and ``M_n`` columns."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    metric_headers = [h for m in analysis.metrics for h in (m, f"{m}_std", f"{m}_n")]
    writer.writerow(["name", "stage", "state", "runs", "n", *analysis.keys, *metric_headers, "names", "errors"])
    for row in analysis.rows:
        config = [
            "" if row.config.get(k, MISSING) is MISSING else format_value(row.config[k]) for k in analysis.keys
        ]
        values = []
        for metric in analysis.metrics:
            mean, std, count = row.metrics.get(metric, (math.nan, math.nan, 0))
            values += [_number_or_empty(mean), _number_or_empty(std), str(count)]
        writer.writerow([row.name, row.stage, row.state, len(row.runs), row.n, *config, *values,
                         ";".join(row.names), ";".join(row.errors)])
    return buffer.getvalue()


def _json_number(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def to_records(analysis: Analysis) -> dict[str, Any]:
    """The analysis as JSON-ready data: rows, keys, metrics with directions, problems."""
    rows = []
    for row in analysis.rows:
        rows.append({
            "name": row.name,
            "stage": row.stage,
            "state": row.state,
            "runs": len(row.runs),
            "n": row.n,
            "names": row.names,
            "paths": [str(run.path) for run in row.runs],
            "seeds": [run.seed for run in row.runs],
            "errors": row.errors,
            "config": {k: row.config[k] for k in analysis.keys if k in row.config},
            "metrics": {
                m: {"mean": _json_number(mean), "std": _json_number(std), "n": count}
                for m, (mean, std, count) in row.metrics.items() if m in analysis.metrics
            },
        })
    return {
        "figures": analysis.figures,
        "keys": analysis.keys,
        "metrics": {m: analysis.directions[m] for m in analysis.metrics},
        "rows": rows,
        "problems": [{"path": str(p.path), "reason": p.reason} for p in analysis.problems],
    }


def render(analysis: Analysis, fmt: str = "table", precision: int = 4) -> str:
    """The analysis as ``table``, ``csv``, ``md`` or ``json`` text."""
    if fmt == "table":
        return render_table(analysis, precision)
    if fmt == "md":
        return render_markdown(analysis, precision)
    if fmt == "csv":
        return render_csv(analysis)
    if fmt == "json":
        return json.dumps(to_records(analysis), indent=2, default=str) + "\n"
    raise UserError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")


def _epoch_axis(frame: pd.DataFrame) -> tuple[pd.Series, str]:
    """Epochs as x; when epochs restart at each stage, the position across stages instead."""
    if frame.duplicated(["_run", "fold", "epoch"]).any():
        return frame.groupby(["_run", "fold"]).cumcount(), "epoch (stages one after another)"
    return frame["epoch"], "epoch"


def _row_index(analysis: Analysis) -> dict[int, int]:
    """Run id -> index of its row in ``analysis.rows``."""
    row_of_run = {id(run): i for i, row in enumerate(analysis.rows) for run in row.runs}
    return {run_id: row_of_run[id(run)] for run_id, run in analysis.run_ids.items()}


def plot(analysis: Analysis, metric: str, out: str | os.PathLike) -> Path:
    """Draw ``metric`` per epoch, one line per row (mean over folds x seeds, band = ±1 std)."""
    curves = analysis.curves
    if metric not in curves.columns or not curves[metric].notna().any():
        available = [c for c in curves.columns if c not in ("_run", *INDEX_COLUMNS)]
        raise UserError(
            f"--plot {metric!r}: no per-epoch values in metrics.csv of the selected runs "
            f"(available: {', '.join(map(str, available)) or 'none'})"
        )
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    frame = curves.assign(fold=curves["fold"].fillna(0) if "fold" in curves else 0)
    sort = ["_run", "fold", *(["stage"] if "stage" in frame else []), "epoch"]
    frame = frame.sort_values(sort, kind="stable")
    x, xlabel = _epoch_axis(frame)
    frame = frame.assign(_x=x.to_numpy())
    frame["_row"] = frame["_run"].map(_row_index(analysis))

    figure = Figure(figsize=(8, 5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for index, row in enumerate(analysis.rows):
        stats = frame[frame["_row"] == index].groupby("_x")[metric].agg(["mean", "std"]).dropna(subset=["mean"])
        if stats.empty:
            continue
        label = row.name if row.state == "complete" else f"{row.name} ({row.state})"
        (line,) = axes.plot(stats.index, stats["mean"], label=label)
        band = stats["std"].fillna(0)
        low, high = stats["mean"] - band, stats["mean"] + band
        axes.fill_between(stats.index, low, high, alpha=0.15, color=line.get_color())
    axes.set_xlabel(xlabel)
    axes.set_ylabel(f"{metric} ({analysis.directions.get(metric) or metric_direction(metric)} is best)")
    axes.grid(alpha=0.3)
    if len(analysis.rows) <= 20:
        axes.legend(fontsize="small")
    figure.tight_layout()
    return atomic_write_figure(out, figure)
