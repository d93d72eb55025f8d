"""Phase 3 of :mod:`patchcfg.analyze`: each run's figures per fold. All ``metrics.csv`` files are
parsed together (one pandas parse per distinct header); a fold's figure is its best epoch in the
metric's direction or its last epoch, and ``summary.json`` gives the kept model's figures."""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from patchcfg.analyze.discover import METRICS_FILES
from patchcfg.analyze.runs import Problem, Run, read_json, unknown_name
from patchcfg.metrics import is_per_class, metric_mode

#: Columns of metrics.csv that index rows rather than measure anything.
INDEX_COLUMNS = ("epoch", "fold", "stage")
#: Training-only columns, not aggregated unless asked for with ``--metric``.
TRAINING_COLUMNS = frozenset(
    {"lr", "learning_rate", "time", "seconds", "elapsed", "wall_time", "timestamp", "step", "steps",
     "version", "labels", "validation_labels", "known_train_labels"}  # the last four: the label stage
)
#: What an embed's ``summary.json`` records about its feature cache (counts, size, throughput): facts
#: about the run rather than scores, so shown only when asked for with ``--metric``.
EMBED_FACTS = frozenset(
    {"images", "dimensions", "replicas", "resumed_at", "kept", "images_per_second",
     "steady_images_per_second", "shards"}
)
_HIDDEN_COLUMNS = TRAINING_COLUMNS | EMBED_FACTS


def metric_direction(name: str, minimize: Iterable[str] = (), maximize: Iterable[str] = ()) -> str:
    """``"min"`` or ``"max"``: which way a metric improves.

    Explicit ``minimize``/``maximize`` names win; otherwise the direction the training loop ranks
    epochs by (:func:`patchcfg.metrics.metric_mode`: losses, errors, alignment and uniformity are
    minimised), and a metric with no known direction is maximised.

    >>> metric_direction("val_loss"), metric_direction("val_mae"), metric_direction("val_macro_auc")
    ('min', 'min', 'max')
    """
    if name in set(minimize):
        return "min"
    if name in set(maximize):
        return "max"
    return metric_mode(name) or "max"


def read_curves(runs: dict[int, Run], problems: list[Problem]) -> tuple[pd.DataFrame, set[int]]:
    """All ``metrics.csv`` rows with a ``_run`` column, and the run ids whose file was unreadable.

    Files with the same header are concatenated and parsed once; if that parse fails or its row
    count does not add up, the group is parsed file by file so the bad file is named.
    """
    groups: dict[bytes, list[tuple[int, Path, bytes]]] = {}
    bad: set[int] = set()
    for run_id, run in runs.items():
        path = run.path / METRICS_FILES.get(run.stage, "metrics.csv")
        if not path.is_file():
            continue
        try:
            data = path.read_bytes()
        except OSError as error:
            problems.append(Problem(path, f"cannot read: {error}"))
            bad.add(run_id)
            continue
        header, _, body = data.partition(b"\n")
        header = header.strip()
        if not header:
            problems.append(Problem(path, "unreadable CSV: empty file (no header)"))
            bad.add(run_id)
            continue
        groups.setdefault(header, []).append((run_id, path, body))
    frames = []
    for header, members in groups.items():
        frames.extend(_parse_group(header, members, problems, bad))
    frames = [frame for frame in frames if len(frame)]
    if not frames:
        return pd.DataFrame({"_run": pd.Series(dtype="int64")}), bad
    return pd.concat(frames, ignore_index=True, sort=False), bad


def _parse_csv(data: bytes) -> pd.DataFrame:
    frame = pd.read_csv(io.BytesIO(data))
    if "epoch" not in frame.columns:
        raise ValueError("no 'epoch' column")
    for column in frame.columns:
        if not pd.api.types.is_numeric_dtype(frame[column]):
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame


def _parse_group(
    header: bytes, members: list[tuple[int, Path, bytes]], problems: list[Problem], bad: set[int]
) -> list[pd.DataFrame]:
    lines = [[line for line in body.splitlines() if line.strip()] for _, _, body in members]
    counts = [len(group) for group in lines]
    data = header + b"\n" + b"".join(b"\n".join(group) + b"\n" for group in lines if group)
    try:
        frame = _parse_csv(data)
        if len(frame) == sum(counts):
            frame["_run"] = np.repeat([run_id for run_id, _, _ in members], counts)
            return [frame]
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError):
        pass
    frames = []
    for run_id, path, body in members:
        try:
            frame = _parse_csv(header + b"\n" + body)
        except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as error:
            reason = " ".join(str(error).split()).replace("Error tokenizing data. ", "")
            problems.append(Problem(path, f"unreadable CSV: {reason}"))
            bad.add(run_id)
            continue
        frame["_run"] = run_id
        frames.append(frame)
    return frames


def read_summary_units(path: Path, figures: str = "kept") -> list[tuple[int, dict[str, float]]]:
    """``(fold, metrics)`` pairs from a ``summary.json``: per fold if it has folds (each fold's kept
    model), else its ``final`` figures (``kept``) or its ``best`` (``best-epoch``)."""
    summary = read_json(path)
    if not isinstance(summary, Mapping):
        raise ValueError(f"expected a JSON object, got {type(summary).__name__}")
    folds = summary.get("folds")
    if isinstance(folds, Mapping) and folds:
        return [(_fold_id(key, i), _numbers(value)) for i, (key, value) in enumerate(folds.items())]
    for key in ("final", "mean", "best") if figures == "kept" else ("best", "mean", "final"):
        if isinstance(summary.get(key), Mapping) and _numbers(summary[key]):
            return [(0, _numbers(summary[key]))]
    return [(0, _numbers(summary))]


def _fold_id(key: Any, position: int) -> int:
    try:
        return int(key)
    except (TypeError, ValueError):
        return position


def _numbers(values: Any) -> dict[str, float]:
    if isinstance(values, Mapping) and isinstance(values.get("best"), Mapping):
        values = values["best"]
    if not isinstance(values, Mapping):
        return {}
    values = {key: value.get("value") if isinstance(value, Mapping) else value for key, value in values.items()}
    return {
        str(key): float(value)
        for key, value in values.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


def summary_best(runs: dict[int, Run], problems: list[Problem], figures: str = "best-epoch"
                  ) -> tuple[pd.DataFrame, set[int]]:
    """Each run's per-fold figures from its ``summary.json`` (``_run``, ``fold``, metrics), and the
    run ids whose file was unreadable."""
    records, bad = [], set()
    for run_id, run in runs.items():
        path = run.path / "summary.json"
        if not path.is_file():
            continue
        try:
            units = read_summary_units(path, figures)
        except ValueError as error:
            problems.append(Problem(path, str(error)))
            bad.add(run_id)
            continue
        records.extend({"_run": run_id, "fold": fold, **values} for fold, values in units if values)
    return pd.DataFrame.from_records(records), bad


def _metric_columns(curves: pd.DataFrame, summary: pd.DataFrame, per_class: bool = False) -> list[str]:
    """Metrics shown by default: numeric, not an index, training or embed column, with some value; the
    per-class ones (``val_auc_<class>``) only with ``per_class``."""
    columns = []
    for frame in (curves, summary):
        for column in frame.columns:
            if column == "_run" or column in INDEX_COLUMNS or column in columns:
                continue
            if not per_class and is_per_class(str(column)):
                continue
            lowered = str(column).lower()
            if lowered in _HIDDEN_COLUMNS or lowered.endswith(("_time", "_seconds")):
                continue
            if frame[column].notna().any():
                columns.append(column)
    return columns


def last_per_fold(curves: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Each metric's value at the last epoch of the last stage, per ``(_run, fold)`` (what a run
    without a summary, still running or stopped, has now)."""
    present = [m for m in metrics if m in curves.columns]
    if curves.empty:
        return pd.DataFrame(columns=["_run", "fold", *present])
    frame = curves.assign(fold=curves["fold"].fillna(0) if "fold" in curves else 0)
    return frame.groupby(["_run", "fold"], sort=False)[present].last().reset_index()


def best_per_fold(curves: pd.DataFrame, metrics: Sequence[str], directions: Mapping[str, str]) -> pd.DataFrame:
    """The best value of each metric per ``(_run, fold)``, over the last stage's epochs."""
    present = [m for m in metrics if m in curves.columns]
    if curves.empty:
        return pd.DataFrame(columns=["_run", "fold", *present])
    frame = curves.assign(fold=curves["fold"].fillna(0) if "fold" in curves else 0)
    keys = ["_run", "fold"]
    if "stage" in frame:
        stage = frame["stage"].fillna(0)
        frame = frame[stage == stage.groupby([frame["_run"], frame["fold"]]).transform("max")]
    grouped = frame.groupby(keys, sort=False)
    parts = [grouped.size().rename("_rows")]
    lows = [m for m in present if directions[m] == "min"]
    highs = [m for m in present if directions[m] == "max"]
    if lows:
        parts.append(grouped[lows].min())
    if highs:
        parts.append(grouped[highs].max())
    return pd.concat(parts, axis=1).reset_index().drop(columns="_rows")


def choose_metrics(
    requested: Sequence[str] | None, sort_by: str | None, curves: pd.DataFrame, summary: pd.DataFrame,
    per_class: bool = False,
) -> list[str]:
    """The requested metrics (checked), else the default ones; plus the sort metric if any."""
    available = _metric_columns(curves, summary, per_class)
    measured = (set(curves.columns) | set(summary.columns)) - {"_run", *INDEX_COLUMNS}
    if not requested:
        chosen = list(available)
    else:
        chosen = []
        for metric in requested:
            if metric not in measured:
                what = f"not in any metrics.csv or summary.json (available: {', '.join(available) or 'none'})"
                raise unknown_name("--metric", metric, available, what)
            if metric not in chosen:
                chosen.append(metric)
    if sort_by and sort_by not in chosen and sort_by in measured:
        chosen.append(sort_by)
    return chosen
