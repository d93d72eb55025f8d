"""Phase 4 of :mod:`patchcfg.analyze`: runs whose configs differ only in ``name`` and ``seed`` (same
stage and state) as one :class:`Row` with mean, sample standard deviation and n over folds x
seeds; the config keys that differ; the order of the rows."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from patchcfg.analyze.runs import MISSING, Run, unknown_name
from patchcfg.stages import result_folders

#: Config keys that do not define a configuration: runs differing only in these are grouped.
GROUPED_KEYS = ("name", "seed")
#: Row-level fields usable with ``--sort-by`` besides metrics and config keys.
ROW_FIELDS = ("name", "stage", "state", "runs", "n")


@dataclass
class Row:
    """One configuration at one stage and state: its runs and their aggregated metrics."""

    name: str
    stage: str
    state: str
    config: dict[str, Any]
    runs: list[Run]
    n: int = 0
    metrics: dict[str, tuple[float, float, int]] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [run.name for run in self.runs]

    @property
    def errors(self) -> list[str]:
        return [f"{run.name}: {run.error}" for run in self.runs if run.error]


def _config_key(run: Run) -> str:
    items = [(k, v) for k, v in run.config.items() if k not in GROUPED_KEYS]
    return json.dumps(items, sort_keys=False, default=str)


def group_runs(runs: dict[int, Run]) -> tuple[list[Row], dict[int, int]]:
    """One row per (stage, state, config without name/seed); the row index of every run id."""
    index: dict[tuple[str, str, str], int] = {}
    rows: list[Row] = []
    row_of: dict[int, int] = {}
    for run_id, run in runs.items():
        key = (run.stage, run.state, _config_key(run))
        if key not in index:
            index[key] = len(rows)
            rows.append(Row("", run.stage, run.state, run.config, []))
        rows[index[key]].runs.append(run)
        row_of[run_id] = index[key]
    for row in rows:
        row.name = group_name(row.names)
    return rows, row_of


def group_name(names: Sequence[str]) -> str:
    """A run's name; for several runs their common prefix and ``*`` (a glob matching them all)."""
    if len(names) == 1:
        return names[0]
    prefix = os.path.commonprefix(list(names))
    return f"{prefix}*" if prefix else f"{names[0]} +{len(names) - 1}"


def aggregate(rows: list[Row], row_of: dict[int, int], best: pd.DataFrame, metrics: Sequence[str]) -> None:
    """Fill each row's n and (mean, std, count) per metric from the per-fold bests."""
    if best.empty:
        return
    best = best.assign(_row=best["_run"].map(row_of))
    sizes = best.groupby("_row").size()
    present = [m for m in metrics if m in best.columns]
    stats = best.groupby("_row")[present].agg(["mean", "std", "count"]) if present else None
    for row_index, size in sizes.items():
        row = rows[int(row_index)]
        row.n = int(size)
        for metric in present:
            mean, std, count = (stats.at[row_index, (metric, s)] for s in ("mean", "std", "count"))
            if count:
                row.metrics[metric] = (float(mean), float(std), int(count))


def ordered_keys(configs: Iterable[Mapping[str, Any]]) -> list[str]:
    """The union of the configs' keys; a new key goes right after the key it follows in its config."""
    order: list[str] = []
    seen: set[str] = set()
    for config in configs:
        previous = None
        for key in config:
            if key not in seen:
                order.insert(order.index(previous) + 1 if previous is not None else 0, key)
                seen.add(key)
            previous = key
    return order


def changed_keys(configs: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> list[str]:
    """The keys (in the order given) whose values differ between configs; missing is a value."""
    changed = []
    for key in keys:
        values = {_canonical(config.get(key, MISSING)) for config in configs}
        if len(values) > 1:
            changed.append(key)
    return changed


def _canonical(value: Any) -> str:
    if value is MISSING:
        return "\0missing"
    return json.dumps(value, sort_keys=True, default=str)


def _sort_value(row: Row, by: str, stages: Sequence[str]) -> Any:
    if by in row.metrics:
        return row.metrics[by][0]
    if by == "runs":
        return len(row.runs)
    if by in ROW_FIELDS:
        return stages.index(row.stage) if by == "stage" and row.stage in stages else getattr(row, by)
    return row.config.get(by, MISSING)


def _sort_key(value: Any) -> tuple[int, Any]:
    if isinstance(value, int | float):
        return (0, value)
    if isinstance(value, str):
        return (1, value)
    return (2, _canonical(value))


def sort_rows(rows: list[Row], by: str, ascending: bool) -> list[Row]:
    """Rows sorted by a metric, config key or row field (``stage``: in pipeline order); rows without a
    value go last either way."""
    stages = result_folders()
    values = [(row, _sort_value(row, by, stages)) for row in rows]
    missing = [row for row, v in values if _is_missing(v)]
    present = [(row, v) for row, v in values if not _is_missing(v)]
    present.sort(key=lambda item: _sort_key(item[1]), reverse=not ascending)
    return [row for row, _ in present] + missing


def _is_missing(value: Any) -> bool:
    return value is MISSING or value is None or (isinstance(value, float) and math.isnan(value))


def check_sort_key(sort_by: str, metrics: Sequence[str], configs: Sequence[Mapping[str, Any]]) -> None:
    """Raise a user error, with the closest names, unless ``sort_by`` is a metric, row field or key."""
    if sort_by in metrics or sort_by in ROW_FIELDS or any(sort_by in c for c in configs):
        return
    candidates = [*metrics, *ROW_FIELDS, *sorted(set().union(*configs))]
    raise unknown_name("--sort-by", sort_by, candidates,
                       f"not a metric, config key or one of {', '.join(ROW_FIELDS)}")
