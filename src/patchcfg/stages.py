"""The stages an experiment can declare, in the order ``patchcfg run`` runs them.

Each entry gives the function that runs the stage of a resolved config:
``runner(config, root=None, force=False, *, strategy=None, ...) -> summary``. Imported lazily:
naming the stages must not import TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable


def _pretrain() -> Callable:
    from patchcfg.pretrain import run_pretrain

    return run_pretrain


def _finetune() -> Callable:
    from patchcfg.finetune import run_finetune

    return run_finetune


def _query() -> Callable:
    from patchcfg.query import run_query

    return run_query


def _distill() -> Callable:
    from patchcfg.distill import run_distill

    return run_distill


def _embed() -> Callable:
    from patchcfg.embed import run_embed

    return run_embed


STAGE_RUNNERS: dict[str, Callable[[], Callable]] = {
    "pretrain": _pretrain, "finetune": _finetune, "query": _query, "distill": _distill, "embed": _embed}

#: What ``patchcfg run`` runs, in order, for each section the config declares.
PIPELINE = ("pretrain", "finetune", "query", "distill")

#: The other stages' sections whose settings can change a stage's result.
DEPENDS_ON = {"pretrain": (), "finetune": ("pretrain",), "query": ("pretrain", "finetune"),
              "distill": ("pretrain", "finetune"), "embed": ("pretrain", "finetune")}


def unrelated_sections(stage: str) -> set[str]:
    """Config sections that cannot change ``stage``'s result (other stages downstream or aside)."""
    own = {stage, *DEPENDS_ON.get(stage, ())}
    return {s for s in (*PIPELINE, "embed") if s not in own}
