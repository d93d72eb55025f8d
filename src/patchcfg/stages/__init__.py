"""The stages an experiment can declare, and the one runner that runs each of them.

Every stage runs through :class:`patchcfg.stages.runner.Stage`: the experiment folder and its
skip / refuse / resume rules, the distribution strategy, ``env.json``, the image check
(``data.on_bad_image``), the training loop's common settings, TensorBoard HParams and
``summary.json``. A stage file (``stages/finetune.py``...) holds only what is its own, its
declaration included (its config section and schema, what it depends on, where ``patchcfg run``
runs it, its verb): :data:`STAGES` reads them, and so do the config schema, ``patchcfg run``, the
command line and ``analyze``. A new stage is one new file.

Listing the stages imports no TensorFlow: stage modules import it inside their methods.
"""

from __future__ import annotations

from typing import Any

from patchcfg.registries import Registry


def _run_order(name: str, stage: type) -> tuple:
    return stage.run_order is None, stage.run_order or 0, name


def _check_stage(name: str, stage: type) -> None:
    if not name.isidentifier() or not stage.section_help or not stage.command_help:
        raise ValueError(f"stage {name!r}: a stage needs a name that is a config key, section_help and command_help")
    if stage.command is None and not stage.command_doc:
        raise ValueError(f"stage {name!r}: without a command of its own it needs command_doc (its --help)")


def config_schema(schema: dict) -> dict:
    """config.schema.json's contents with one property per stage (its section: a reference to its
    schema file, or its schema written in), in :func:`stage_names` order, where the first stood."""
    sections = {}
    for name in stage_names():
        stage = STAGES[name]
        section = {"$ref": stage.schema} if isinstance(stage.schema, str) else stage.schema
        sections[name] = {"description": stage.section_help, **section}
    properties: dict[str, Any] = {}
    for key, prop in schema["properties"].items():
        if key in sections:
            properties.update(sections)
        else:
            properties[key] = prop
    properties.update(sections)  # a new stage when none stood there yet; else no change
    return dict(schema, properties=properties)


#: Every stage by name: each module of this package but the runner, and every one registered since.
STAGES = Registry("stage", __name__, shared=("runner",), order=_run_order, on_register=_check_stage,
                  schema=("config.schema.json", f"{__name__}:config_schema"))


def register(stage: type) -> type:
    """Class decorator: make a :class:`~patchcfg.stages.runner.Stage` subclass the stage ``stage.name``."""
    return STAGES.add(stage.name, stage, stacklevel=2)


#: Forget a stage registered at run time.
unregister = STAGES.unregister


def stage_names() -> tuple[str, ...]:
    """Every stage, in the order ``run`` would run them (those ``run`` leaves out, as ``embed``, last)."""
    return tuple(STAGES.names())


def pipeline() -> tuple[str, ...]:
    """What ``patchcfg run`` runs, in order, of the sections a config declares."""
    return tuple(name for name in stage_names() if STAGES[name].run_order is not None)


def result_folders() -> tuple[str, ...]:
    """The folders of an experiment that hold results ``analyze`` reads: each stage's, then ``label``
    (the labelling app's session: its learning curve)."""
    return (*stage_names(), "label")


def unrelated_sections(stage: str) -> set[str]:
    """Config sections that cannot change ``stage``'s result (other stages downstream or aside)."""
    own = {stage, *(STAGES[stage].depends_on if stage in STAGES else ())}
    return {s for s in stage_names() if s not in own}


def stage_class(name: str) -> type:
    """The :class:`~patchcfg.stages.runner.Stage` subclass that runs stage ``name``."""
    return STAGES[name]


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
