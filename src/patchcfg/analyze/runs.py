"""Phase 2 of :mod:`patchcfg.analyze`: each stage of each experiment as a :class:`Run` (its
flattened config, state and error), unreadable folders as a :class:`Problem`; and which runs
``--stage`` and ``--filter`` keep."""

from __future__ import annotations

import difflib
import fnmatch
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from patchcfg.analyze.discover import find_experiments
from patchcfg.config import flatten
from patchcfg.errors import UserError
from patchcfg.experiment import live_status
from patchcfg.stages import result_folders, unrelated_sections

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


class ProblemLog(list):
    """A list of :class:`Problem` that also reports each one as it is added."""

    def __init__(self, callback: Callable[[Problem], None] | None = None):
        super().__init__()
        self.callback = callback

    def append(self, problem: Problem) -> None:
        super().append(problem)
        if self.callback is not None:
            self.callback(problem)


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


def read_json(path: Path) -> Any:
    """The JSON in ``path``; raises ``ValueError`` with a short reason."""
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
        env = read_json(stage_dir / "env.json")
    except ValueError:
        return {}
    return {f"run.{fact}": env[fact] for fact in RECORDED if isinstance(env, Mapping) and fact in env}


def read_status(stage_dir: Path) -> tuple[str, str | None]:
    """``(state, error)`` from ``status.json``; state ``"unknown"`` when the file is absent."""
    path = stage_dir / "status.json"
    if not path.is_file():
        return "unknown", None
    status = read_json(path)
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
                f"{'|'.join(result_folders())}/status.json folder)"
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


def unknown_name(option: str, name: str, candidates: Iterable[str], what: str) -> UserError:
    """The error for an unknown ``name`` given to ``option``, suggesting the closest candidates."""
    close = difflib.get_close_matches(name, list(candidates), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return UserError(f"{option} {name!r}: {what}{hint}")


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
            raise unknown_name("--filter", key, sorted(known), "no run has this config key")
        runs = [run for run in runs if value_matches(_filter_value(run, key), wanted)]
    return runs


def _filter_value(run: Run, key: str) -> Any:
    if key == "state" and key not in run.config:
        return run.state
    if key == "path" and key not in run.config:
        return run.name
    return run.config.get(key, MISSING)


def select_runs(runs: list[Run], roots: Sequence[Path], stage: str | None,
                filters: Sequence[str]) -> list[Run]:
    """The runs of ``stage`` (all when None) that match every ``--filter``; none left is a user error."""
    where = ", ".join(map(str, roots))
    if not runs:
        raise UserError(f"no readable experiments under {where} (see the problems above)")
    if stage is not None:
        stages = result_folders()
        if stage not in stages:
            raise UserError(f"--stage {stage!r}: expected one of {', '.join(stages)}")
        found = sorted({run.stage for run in runs}, key=stages.index)
        runs = [run for run in runs if run.stage == stage]
        if not runs:
            raise UserError(f"no {stage} runs under {where} (stages found: {', '.join(found)})")
    runs = apply_filters(runs, filters)
    if not runs:
        raise UserError(f"no runs under {where} match --filter {' '.join(filters)}")
    return runs
