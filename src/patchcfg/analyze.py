"""Compare experiments: which config keys differ between runs, and how each configuration did.

The pipeline, each step a small function:

1. :func:`find_experiments` walks the given folders for ``config.yaml`` files that sit next to a
   stage folder (``pretrain``, ``finetune``, ``distill``, ``query``) holding ``status.json``,
   ``metrics.csv`` or ``summary.json``.
2. Each stage of each experiment becomes a :class:`Run`: its flattened config (:func:`flatten`),
   its state and error from ``status.json``. Folders that cannot be read are collected as
   :class:`Problem` (path + reason) and skipped, never silently.
3. All ``metrics.csv`` files are parsed together (one pandas parse per distinct header), and per
   run and fold the best epoch of each metric is taken in its direction (:func:`metric_direction`),
   over the epochs of the last fine-tuning stage when a ``stage`` column is present. Runs without
   ``metrics.csv`` fall back to ``summary.json``.
4. Runs whose configs differ only in ``name`` and ``seed`` (and have the same stage and state) are
   one configuration: one :class:`Row` with mean, sample standard deviation and n over folds x seeds.
5. :func:`render` writes the rows as a text table, CSV, Markdown or JSON; :func:`plot` draws a metric
   per epoch (matplotlib, imported only there).

This module never imports TensorFlow, so ``patchcfg analyze`` starts quickly.
"""

from __future__ import annotations

import csv
import difflib
import fnmatch
import io
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from patchcfg.atomic import atomic_write_figure
from patchcfg.config import flatten
from patchcfg.errors import UserError
from patchcfg.experiment import live_status
from patchcfg.metrics import is_per_class, metric_mode
from patchcfg.stages import unrelated_sections

STAGES = ("pretrain", "finetune", "distill", "query", "label")
#: A stage whose per-epoch table has another name: the labelling app's learning curve (one row per
#: refit, ``epoch`` = the refit's number, ``labels`` = labelled training rows).
METRICS_FILES = {"label": "learning_curve.csv"}
FORMATS = ("table", "csv", "md", "json")
#: Which figure a run reports: what its kept model scores (``summary.json``: each fold's model,
#: the student, the saved encoder), or each metric's best epoch in ``metrics.csv``.
FIGURES = ("kept", "best-epoch")
CAPTIONS = {"kept": "figures: what each run's kept model scores (summary.json); --best-epoch for each "
                    "metric's best epoch",
            "best-epoch": "figures: each metric's best epoch (metrics.csv), which may not be the kept model's"}
#: Config keys that do not define a configuration: runs differing only in these are grouped.
GROUPED_KEYS = ("name", "seed")
#: Columns of metrics.csv that index rows rather than measure anything.
INDEX_COLUMNS = ("epoch", "fold", "stage")
#: Training-only columns, not aggregated unless asked for with ``--metric``.
TRAINING_COLUMNS = frozenset(
    {"lr", "learning_rate", "time", "seconds", "elapsed", "wall_time", "timestamp", "step", "steps",
     "version", "labels", "validation_labels", "known_train_labels"}  # the last four: the label stage
)
#: Row-level fields usable with ``--sort-by`` besides metrics and config keys.
ROW_FIELDS = ("name", "stage", "state", "runs", "n")
_STATUS_FILES = ("status.json", "metrics.csv", "summary.json")
#: Facts a stage records in its ``env.json`` once it runs, shown and grouped as ``run.<fact>`` keys:
#: the dtype policy ``mixed_precision: auto`` resolved to differs between machines (float32 on one,
#: mixed_bfloat16 or mixed_float16 on another), and so do the figures; ``backbone_sha256``: the
#: weights of a ``name: keras_hub`` preset folder, which can change under the same path.
RECORDED = ("precision", "backbone_sha256")
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Missing:
    """A config key that a run does not have; it compares as a value of its own."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing()


@dataclass
class Problem:
    """A folder or file that could not be used, and why."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class Run:
    """One stage of one experiment."""

    name: str
    path: Path
    stage: str
    state: str
    error: str | None
    config: dict[str, Any]

    @property
    def seed(self) -> Any:
        return self.config.get("seed")


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


@dataclass
class Analysis:
    """What :func:`analyze` found: rows in display order, the keys and metrics shown, problems."""

    rows: list[Row]
    keys: list[str]
    metrics: list[str]
    directions: dict[str, str]
    problems: list[Problem]
    curves: pd.DataFrame = field(repr=False)
    run_ids: dict[int, Run] = field(repr=False, default_factory=dict)
    figures: str = "kept"


# ---------------------------------------------------------------------------------------------
# Config flattening and metric directions


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


# ---------------------------------------------------------------------------------------------
# Discovery and reading


def find_experiments(root: Path) -> list[tuple[Path, list[str]]]:
    """Experiment folders under ``root`` (sorted) with the stage folders each one has."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(name for name in dirnames if not name.startswith("."))
        if "config.yaml" not in filenames:
            continue
        stages = [s for s in STAGES if s in dirnames and _is_stage_dir(os.path.join(dirpath, s))]
        if stages:
            found.append((Path(dirpath), stages))
            dirnames[:] = []  # an experiment's own folders hold no further experiments
    return found


def _is_stage_dir(path: str) -> bool:
    names = (*_STATUS_FILES, *METRICS_FILES.values())
    return any(os.path.isfile(os.path.join(path, name)) for name in names)


def _check_roots(dirs: Sequence[str | os.PathLike]) -> list[Path]:
    roots = [Path(d) for d in dirs] or [Path("experiments")]
    for root in roots:
        if not root.exists():
            raise UserError(f"{root}: no such directory (give the folder that holds your experiments)")
        if not root.is_dir():
            raise UserError(f"{root}: not a directory")
    return roots


def _short_yaml_error(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return f"invalid YAML: {problem}{where}"


def read_config(path: Path) -> dict[str, Any]:
    """The flattened config in ``path``; raises ``ValueError`` with a short reason."""
    try:
        with open(path, "rb") as handle:
            config = yaml.load(handle, Loader=_LOADER)  # noqa: S506 - a safe loader
    except yaml.YAMLError as error:
        raise ValueError(_short_yaml_error(error)) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read: {error}") from None
    if not isinstance(config, Mapping):
        raise ValueError(f"expected a YAML mapping, got {type(config).__name__}")
    return flatten(config)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read: {error}") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"invalid JSON: {error}") from None


def read_recorded(stage_dir: Path) -> dict[str, Any]:
    """``run.<fact>`` for each of :data:`RECORDED` in the stage's ``env.json`` (none when the file is
    absent or unreadable: an older or never-started run)."""
    try:
        env = _read_json(stage_dir / "env.json")
    except ValueError:
        return {}
    return {f"run.{fact}": env[fact] for fact in RECORDED if isinstance(env, Mapping) and fact in env}


def read_status(stage_dir: Path) -> tuple[str, str | None]:
    """``(state, error)`` from ``status.json``; state ``"unknown"`` when the file is absent."""
    path = stage_dir / "status.json"
    if not path.is_file():
        return "unknown", None
    status = _read_json(path)
    if not isinstance(status, Mapping):
        raise ValueError(f"expected a JSON object, got {type(status).__name__}")
    status = live_status(status)  # "running" by a process that is gone: interrupted
    state = status.get("state") or "unknown"
    error = status.get("error")
    return str(state), (str(error) if error else None)


def _display_name(folder: Path, base: Path) -> str:
    rel = os.path.relpath(folder, base)
    return folder.resolve().name if rel == "." else Path(rel).as_posix()


def load_runs(roots: Sequence[Path], problems: list[Problem]) -> list[Run]:
    """Every readable stage run under ``roots`` (each experiment once, even if roots overlap);
    unreadable ones go to ``problems``."""
    base = Path(os.path.commonpath([os.path.abspath(root) for root in roots]))
    runs: list[Run] = []
    seen: set[Path] = set()
    for root in roots:
        experiments = find_experiments(root)
        if not experiments:
            raise UserError(
                f"{root}: no experiments found (looked for <name>/config.yaml next to a "
                f"{'|'.join(STAGES)}/status.json folder)"
            )
        for folder, stages in experiments:
            if folder.resolve() in seen:
                continue
            seen.add(folder.resolve())
            runs.extend(_load_experiment(folder, stages, _display_name(folder.absolute(), base), problems))
    return runs


def _load_experiment(folder: Path, stages: list[str], name: str, problems: list[Problem]) -> list[Run]:
    try:
        config = read_config(folder / "config.yaml")
    except ValueError as error:
        problems.append(Problem(folder / "config.yaml", str(error)))
        return []
    runs = []
    for stage in stages:
        stage_dir = folder / stage
        try:
            state, error = read_status(stage_dir)
        except ValueError as reason:
            problems.append(Problem(stage_dir / "status.json", str(reason)))
            continue
        unrelated = unrelated_sections(stage)
        stage_config = {k: v for k, v in config.items() if k.split(".", 1)[0] not in unrelated}
        stage_config.update(read_recorded(stage_dir))
        runs.append(Run(name, stage_dir, stage, state, error, stage_config))
    return runs


# ---------------------------------------------------------------------------------------------
# metrics.csv: parsed together, one pandas parse per distinct header


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


# ---------------------------------------------------------------------------------------------
# summary.json fallback


def read_summary_units(path: Path, figures: str = "kept") -> list[tuple[int, dict[str, float]]]:
    """``(fold, metrics)`` pairs from a ``summary.json``: per fold if it has folds (each fold's kept
    model), else its ``final`` figures (``kept``) or its ``best`` (``best-epoch``)."""
    summary = _read_json(path)
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


def _summary_best(runs: dict[int, Run], problems: list[Problem], figures: str = "best-epoch"
                  ) -> tuple[pd.DataFrame, set[int]]:
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


# ---------------------------------------------------------------------------------------------
# Aggregation


def _metric_columns(curves: pd.DataFrame, summary: pd.DataFrame, per_class: bool = False) -> list[str]:
    """Metrics shown by default: numeric, not an index or training column, with some value; the
    per-class ones (``val_auc_<class>``) only with ``per_class``."""
    columns = []
    for frame in (curves, summary):
        for column in frame.columns:
            if column == "_run" or column in INDEX_COLUMNS or column in columns:
                continue
            if not per_class and is_per_class(str(column)):
                continue
            lowered = str(column).lower()
            if lowered in TRAINING_COLUMNS or lowered.endswith(("_time", "_seconds")):
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


def _aggregate(rows: list[Row], row_of: dict[int, int], best: pd.DataFrame, metrics: Sequence[str]) -> None:
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


# ---------------------------------------------------------------------------------------------
# Filters and sorting


def parse_filter(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` split at the first ``=``."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--filter {text!r}: expected KEY=VALUE, e.g. --filter finetune.stages.0.lr=0.001")
    return key.strip(), value.strip()


def _parse_scalar(text: str) -> Any:
    try:
        value = yaml.load(text, Loader=_LOADER)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads 1e-3 as a string
        except ValueError:
            return value
    return value


def value_matches(actual: Any, wanted: str) -> bool:
    """Whether a config value matches a ``--filter`` value (YAML scalar, or a glob for strings)."""
    if actual is MISSING:
        return False
    parsed = _parse_scalar(wanted)
    if isinstance(actual, bool) or isinstance(parsed, bool):  # 1 == True in Python, not here
        if actual is parsed:
            return True
    elif actual == parsed:
        return True
    if isinstance(actual, str) and any(c in wanted for c in "*?["):
        return fnmatch.fnmatchcase(actual, wanted)
    return format_value(actual) == wanted


def apply_filters(runs: list[Run], filters: Sequence[str]) -> list[Run]:
    """The runs matching every ``KEY=VALUE`` (config keys, plus ``state`` and ``path``)."""
    known = set().union(*(run.config for run in runs)) if runs else set()
    for text in filters:
        key, wanted = parse_filter(text)
        if key not in known and key not in ("state", "path"):
            raise _unknown("--filter", key, sorted(known), "no run has this config key")
        runs = [run for run in runs if value_matches(_filter_value(run, key), wanted)]
    return runs


def _filter_value(run: Run, key: str) -> Any:
    if key == "state" and key not in run.config:
        return run.state
    if key == "path" and key not in run.config:
        return run.name
    return run.config.get(key, MISSING)


def _sort_value(row: Row, by: str) -> Any:
    if by in row.metrics:
        return row.metrics[by][0]
    if by == "runs":
        return len(row.runs)
    if by in ROW_FIELDS:
        return STAGES.index(row.stage) if by == "stage" and row.stage in STAGES else getattr(row, by)
    return row.config.get(by, MISSING)


def _sort_key(value: Any) -> tuple[int, Any]:
    if isinstance(value, int | float):
        return (0, value)
    if isinstance(value, str):
        return (1, value)
    return (2, _canonical(value))


def sort_rows(rows: list[Row], by: str, ascending: bool) -> list[Row]:
    """Rows sorted by a metric, config key or row field; rows without a value go last either way."""
    values = [(row, _sort_value(row, by)) for row in rows]
    missing = [row for row, v in values if _is_missing(v)]
    present = [(row, v) for row, v in values if not _is_missing(v)]
    present.sort(key=lambda item: _sort_key(item[1]), reverse=not ascending)
    return [row for row, _ in present] + missing


def _is_missing(value: Any) -> bool:
    return value is MISSING or value is None or (isinstance(value, float) and math.isnan(value))


# ---------------------------------------------------------------------------------------------
# The whole analysis


def analyze(
    dirs: Sequence[str | os.PathLike] = ("experiments",),
    *,
    stage: str | None = None,
    metrics: Sequence[str] | None = None,
    minimize: Sequence[str] = (),
    maximize: Sequence[str] = (),
    filters: Sequence[str] = (),
    sort_by: str | None = None,
    ascending: bool | None = None,
    only_changed: bool = True,
    figures: str = "kept",
    per_class: bool = False,
    on_problem: Callable[[Problem], None] | None = None,
) -> Analysis:
    """Find, read, group and sort the experiments under ``dirs``.

    ``figures``: ``kept`` reports what each run's kept model scores (its ``summary.json``: every
    fold's model, the distilled student, the saved encoder; a run without one, its last epoch);
    ``best-epoch`` each metric's best epoch in ``metrics.csv`` (which may not be the kept model).
    ``per_class`` adds the per-class metrics to the default columns.

    ``ascending=None`` sorts a metric best first (anything else ascending). ``on_problem`` is
    called with each unreadable file as it is found (they are also in ``Analysis.problems``).
    Raises :class:`~patchcfg.errors.UserError` for a missing folder, a folder without experiments,
    an unknown metric, filter or sort key, or when nothing readable is left.
    """
    if figures not in FIGURES:
        raise UserError(f"figures {figures!r}: expected one of {', '.join(FIGURES)}")
    problems = ProblemLog(on_problem)
    roots = _check_roots(dirs)
    runs = _select(load_runs(roots, problems), roots, stage, filters)
    by_id = dict(enumerate(runs))
    curves, bad_csv = read_curves(by_id, problems)
    if figures == "kept":
        from_summary = {i: r for i, r in by_id.items() if (r.path / "summary.json").is_file()}
    else:
        from_summary = {i: r for i, r in by_id.items() if i not in bad_csv
                        and not (r.path / METRICS_FILES.get(r.stage, "metrics.csv")).is_file()}
    summary, bad_summary = _summary_best(from_summary, problems, figures)
    by_id = {i: r for i, r in by_id.items() if i not in bad_csv | bad_summary}
    if not by_id:
        raise UserError("no readable runs left: every selected run has an unreadable metrics.csv or summary.json")

    chosen = _choose_metrics(metrics, sort_by, curves, summary, per_class)
    directions = {m: metric_direction(m, minimize, maximize) for m in chosen}
    if figures == "kept":
        epochs = last_per_fold(curves[~curves["_run"].isin(list(from_summary))], chosen)
    else:
        epochs = best_per_fold(curves, chosen, directions)
    parts = [f for f in (epochs, summary) if len(f)]
    best = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    rows, row_of = group_runs(by_id)
    _aggregate(rows, row_of, best, chosen)

    configs = [run.config for run in by_id.values()]
    keys = [k for k in ordered_keys(configs) if k not in GROUPED_KEYS]
    if only_changed:  # what differs among runs of the same stage (the stage column tells stages apart)
        changed: set[str] = set()
        for stage in {run.stage for run in by_id.values()}:
            changed.update(changed_keys([r.config for r in by_id.values() if r.stage == stage], keys))
        keys = [k for k in keys if k in changed]
    rows = sort_rows(rows, "stage", True)
    if sort_by is not None:
        _check_sort_key(sort_by, chosen, configs)
        if ascending is None:
            ascending = directions.get(sort_by, "min") == "min"
        rows = sort_rows(rows, sort_by, ascending)
    return Analysis(rows, keys, chosen, directions, list(problems), curves, by_id, figures)


class ProblemLog(list):
    """A list of :class:`Problem` that also reports each one as it is added."""

    def __init__(self, callback: Callable[[Problem], None] | None = None):
        super().__init__()
        self.callback = callback

    def append(self, problem: Problem) -> None:
        super().append(problem)
        if self.callback is not None:
            self.callback(problem)


def _select(runs: list[Run], roots: Sequence[Path], stage: str | None, filters: Sequence[str]) -> list[Run]:
    where = ", ".join(map(str, roots))
    if not runs:
        raise UserError(f"no readable experiments under {where} (see the problems above)")
    if stage is not None:
        if stage not in STAGES:
            raise UserError(f"--stage {stage!r}: expected one of {', '.join(STAGES)}")
        found = sorted({run.stage for run in runs}, key=STAGES.index)
        runs = [run for run in runs if run.stage == stage]
        if not runs:
            raise UserError(f"no {stage} runs under {where} (stages found: {', '.join(found)})")
    runs = apply_filters(runs, filters)
    if not runs:
        raise UserError(f"no runs under {where} match --filter {' '.join(filters)}")
    return runs


def _unknown(option: str, name: str, candidates: Iterable[str], what: str) -> UserError:
    close = difflib.get_close_matches(name, list(candidates), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return UserError(f"{option} {name!r}: {what}{hint}")


def _choose_metrics(
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
                raise _unknown("--metric", metric, available, what)
            if metric not in chosen:
                chosen.append(metric)
    if sort_by and sort_by not in chosen and sort_by in measured:
        chosen.append(sort_by)
    return chosen


def _check_sort_key(sort_by: str, metrics: Sequence[str], configs: Sequence[Mapping[str, Any]]) -> None:
    if sort_by in metrics or sort_by in ROW_FIELDS or any(sort_by in c for c in configs):
        return
    candidates = [*metrics, *ROW_FIELDS, *sorted(set().union(*configs))]
    raise _unknown("--sort-by", sort_by, candidates, f"not a metric, config key or one of {', '.join(ROW_FIELDS)}")


# ---------------------------------------------------------------------------------------------
# Output


def format_value(value: Any) -> str:
    """A config value as YAML would write it: ``true``, ``null``, ``[32, 32]``; missing is ``-``."""
    if value is MISSING:
        return "-"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, list | dict):
        return json.dumps(value, default=str)
    return str(value)


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


# ---------------------------------------------------------------------------------------------
# Plot


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
