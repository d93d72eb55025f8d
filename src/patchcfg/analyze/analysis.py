"""The whole comparison: phases 1 to 4 of :mod:`patchcfg.analyze` in order, into an
:class:`Analysis` that :mod:`patchcfg.analyze.report` renders."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pandas as pd

from patchcfg.analyze.discover import METRICS_FILES, check_roots
from patchcfg.analyze.figures import (
    best_per_fold,
    choose_metrics,
    last_per_fold,
    metric_direction,
    read_curves,
    summary_best,
)
from patchcfg.analyze.grouping import (
    GROUPED_KEYS,
    Row,
    aggregate,
    changed_keys,
    check_sort_key,
    group_runs,
    ordered_keys,
    sort_rows,
)
from patchcfg.analyze.runs import Problem, ProblemLog, Run, load_runs, select_runs
from patchcfg.errors import UserError

#: Which figure a run reports: what its kept model scores (``summary.json``: each fold's model,
#: the student, the saved encoder), or each metric's best epoch in ``metrics.csv``.
FIGURES = ("kept", "best-epoch")


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
    roots = check_roots(dirs)
    runs = select_runs(load_runs(roots, problems), roots, stage, filters)
    by_id = dict(enumerate(runs))
    curves, bad_csv = read_curves(by_id, problems)
    if figures == "kept":
        from_summary = {i: r for i, r in by_id.items() if (r.path / "summary.json").is_file()}
    else:
        from_summary = {i: r for i, r in by_id.items() if i not in bad_csv
                        and not (r.path / METRICS_FILES.get(r.stage, "metrics.csv")).is_file()}
    summary, bad_summary = summary_best(from_summary, problems, figures)
    by_id = {i: r for i, r in by_id.items() if i not in bad_csv | bad_summary}
    if not by_id:
        raise UserError("no readable runs left: every selected run has an unreadable metrics.csv or summary.json")

    chosen = choose_metrics(metrics, sort_by, curves, summary, per_class)
    directions = {m: metric_direction(m, minimize, maximize) for m in chosen}
    if figures == "kept":
        epochs = last_per_fold(curves[~curves["_run"].isin(list(from_summary))], chosen)
    else:
        epochs = best_per_fold(curves, chosen, directions)
    parts = [f for f in (epochs, summary) if len(f)]
    best = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    rows, row_of = group_runs(by_id)
    aggregate(rows, row_of, best, chosen)

    configs = [run.config for run in by_id.values()]
    keys = [k for k in ordered_keys(configs) if k not in GROUPED_KEYS]
    if only_changed:  # what differs among runs of the same stage (the stage column tells stages apart)
        changed: set[str] = set()
        for stage in {run.stage for run in by_id.values()}:
            changed.update(changed_keys([r.config for r in by_id.values() if r.stage == stage], keys))
        keys = [k for k in keys if k in changed]
    rows = sort_rows(rows, "stage", True)
    if sort_by is not None:
        check_sort_key(sort_by, chosen, configs)
        if ascending is None:
            ascending = directions.get(sort_by, "min") == "min"
        rows = sort_rows(rows, sort_by, ascending)
    return Analysis(rows, keys, chosen, directions, list(problems), curves, by_id, figures)
