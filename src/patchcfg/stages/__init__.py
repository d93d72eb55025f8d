"""The stages an experiment can declare, and the one runner that runs each of them.

Every stage runs through :class:`patchcfg.stages.runner.Stage`: the experiment folder and its
skip / refuse / resume rules, the distribution strategy, ``env.json``, the image check
(``data.on_bad_image``), the training loop's common settings, TensorBoard HParams and
``summary.json``. A stage file (``stages/finetune.py``...) holds only what is its own.

Naming the stages imports nothing heavy: the classes are imported when a stage runs.
"""

from __future__ import annotations

import importlib
from typing import Any

#: stage name -> "module:class", imported lazily (no TensorFlow to list or validate stages)
STAGES = {
    "pretrain": "patchcfg.stages.pretrain:PretrainStage",
    "finetune": "patchcfg.stages.finetune:FinetuneStage",
    "query": "patchcfg.stages.query:QueryStage",
    "distill": "patchcfg.stages.distill:DistillStage",
    "embed": "patchcfg.stages.embed:EmbedStage",
}

#: What ``patchcfg run`` runs, in order, for each section the config declares.
PIPELINE = ("pretrain", "finetune", "query", "distill")

#: The other stages' sections whose settings can change a stage's result.
DEPENDS_ON = {"pretrain": (), "finetune": ("pretrain",), "query": ("pretrain", "finetune"),
              "distill": ("pretrain", "finetune"), "embed": ("pretrain", "finetune")}


def stage_names() -> tuple[str, ...]:
    """Every declared stage, in the order ``run`` would run them (``embed`` last: ``run`` skips it)."""
    return (*PIPELINE, *(s for s in STAGES if s not in PIPELINE))


def result_folders() -> tuple[str, ...]:
    """The folders of an experiment that hold results ``analyze`` reads: each stage's, then ``label``
    (the labelling app's session: its learning curve)."""
    return (*stage_names(), "label")


def unrelated_sections(stage: str) -> set[str]:
    """Config sections that cannot change ``stage``'s result (other stages downstream or aside)."""
    own = {stage, *DEPENDS_ON.get(stage, ())}
    return {s for s in (*PIPELINE, "embed") if s not in own}


def stage_class(name: str) -> type:
    """The :class:`~patchcfg.stages.runner.Stage` subclass that runs stage ``name``."""
    module, _, cls = STAGES[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def run_stage(name: str, config: dict, root=None, force: bool = False, **options: Any) -> dict:
    """Run stage ``name`` of a resolved config: skipped if complete, resumed if interrupted.

    ``options`` are the runner's (``strategy``, ``verbose``, ``log``) and the stage's own (see
    each stage class). Returns the stage summary (also written to ``summary.json``).
    """
    return stage_class(name)(config, root=root, force=force, **options).run()


def run_pretrain(config: dict, root=None, force: bool = False, *, return_method: bool = False, **options):
    """The pretrain stage; with ``return_method`` also the trained method: ``(summary, method)``
    (``method`` is None when the stage was already complete)."""
    stage = stage_class("pretrain")(config, root=root, force=force, **options)
    summary = stage.run()
    return (summary, stage.method) if return_method else summary


def run_finetune(config: dict, root=None, force: bool = False, **options) -> dict:
    return run_stage("finetune", config, root, force, **options)


def run_distill(config: dict, root=None, force: bool = False, **options) -> dict:
    return run_stage("distill", config, root, force, **options)


def run_embed(config: dict, root=None, force: bool = False, **options) -> dict:
    return run_stage("embed", config, root, force, **options)


def run_query(config: dict, root=None, force: bool = False, **options) -> dict:
    return run_stage("query", config, root, force, **options)
