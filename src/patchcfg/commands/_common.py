"""Pieces shared by the verbs: config arguments with trailing ``key=value`` overrides."""

from __future__ import annotations

import json

import click

from patchcfg.errors import ConfigError, UserError


def literal(key: str, value) -> str:
    """An override that sets ``key`` to ``value`` exactly as given (a path or name from an option
    is a string, taken as typed: ``queue #1.csv`` is not cut at a YAML comment)."""
    return f"{key}={json.dumps(value, ensure_ascii=False)}"


def split_args(args) -> tuple[list[str], list[str]]:
    """Separate config paths from ``key=value`` overrides (anything with '=' is an override)."""
    paths = [a for a in args if "=" not in a]
    overrides = [a for a in args if "=" in a]
    return paths, overrides


def one_config(args) -> tuple[str, list[str]]:
    paths, overrides = split_args(args)
    if len(paths) != 1:
        raise UserError(f"expected one config file followed by key=value overrides, got {len(paths)} files: "
                        f"{' '.join(paths) or '(none)'}")
    return paths[0], overrides


config_args = click.argument("args", nargs=-1, required=True, metavar="CONFIG [KEY=VALUE ...]")
sweep_option = click.option(
    "--sweep", "sweeps", multiple=True, metavar="KEY=V1,V2",
    help="Run one experiment per value (repeat for a grid); e.g. --sweep pretrain.temperature=0.1,0.2")
experiments_option = click.option(
    "--experiments", "experiments_root", default=None, metavar="DIR",
    help="Where experiment folders go (default: $PATCHCFG_EXPERIMENTS or ./experiments).")
labels_option = click.option("--labels", type=click.Path(dir_okay=False), default=None, metavar="CSV",
                             help="The label table (sets data.labels).")


def labels_override(labels: str | None) -> list[str]:
    """``--labels`` as an override of ``data.labels`` (taken as typed), or none."""
    return [literal("data.labels", labels)] if labels else []


force_option = click.option("--force", is_flag=True,
                            help="Replace an experiment of the same name that ran with another config.")


def engine_options(command):
    """``--engine local|ray``, ``--address`` and ``--actors`` of the batch-inference verbs (embed,
    predict; the function takes ``engine, address, actors``)."""
    for option in (
        click.option("--actors", type=int, default=None, metavar="N",
                     help="With --engine ray: how many actors (default: one per GPU, else one per 2 CPUs)."),
        click.option("--address", default=None, metavar="ADDRESS",
                     help="With --engine ray: the cluster (auto, HOST:PORT or ray://HOST:PORT; "
                          "default: the one this process runs, else a local one)."),
        click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
                     help="Where the models run: this machine, or the actors of a Ray cluster "
                          "(pip install 'patchcfg[ray]'); the same output."),
    ):
        command = option(command)
    return command


def stage_options(command):
    """The arguments of a training verb: ``CONFIG [KEY=VALUE ...]``, ``--labels``, ``--sweep``,
    ``--experiments`` and ``--force`` (the function takes ``args, labels, sweeps,
    experiments_root, force``)."""
    for option in (force_option, experiments_option, sweep_option, labels_option, config_args):
        command = option(command)
    return command


def run_stages(args, sweeps, experiments_root, force, stages=None, extra_overrides=()) -> list:
    """Validate every sweep combination, then run ``stages`` of each, in order.

    ``stages`` None: every stage the config declares (``patchcfg run``). Heavy imports happen
    only once every config is valid.
    """
    from patchcfg.config import expand_sweeps
    from patchcfg.stages import pipeline, run_stage

    path, overrides = one_config(args)
    configs = expand_sweeps(path, [*overrides, *extra_overrides], sweeps)
    if stages is None:
        stages = [s for s in pipeline() if configs[0].get(s) is not None]
        if not stages:
            raise UserError(f"{path} declares no stage; add one of: {', '.join(pipeline())}")
    for stage in stages:
        if any(not c.get(stage) for c in configs):
            raise UserError(f"{path} has no {stage} section; add `{stage}:` (see `patchcfg schema --markdown`)")
    from patchcfg.config.checks import label_table_problems

    problems = list(dict.fromkeys(p for c in configs for p in label_table_problems(c, stages)))
    if problems:
        raise ConfigError([f"{path}: {p}" for p in problems])
    from patchcfg.experiment import experiment_dir
    from patchcfg.experiment import experiments_root as resolve_root

    for config in configs:  # a folder strictly inside a usable root, before anything heavy runs
        experiment_dir(resolve_root(experiments_root), config["name"]).mkdir(parents=True, exist_ok=True)
    # The strategy comes first: a MultiWorkerMirroredStrategy must exist before TensorFlow runs any op.
    from patchcfg.train.distribute import make_strategy

    strategy = make_strategy(configs[0]["distribute"]["strategy"])
    results = []
    for config in configs:
        for stage in stages:
            if len(configs) > 1 or len(stages) > 1:
                click.echo(f"== {config['name']}: {stage}")
            results.append(run_stage(stage, config, root=experiments_root, force=force, strategy=strategy))
    return results


def stage_command(stage) -> click.Command:
    """The verb every stage can have: ``patchcfg <stage> CONFIG [KEY=VALUE ...]`` with
    ``--labels``, ``--sweep``, ``--experiments`` and ``--force``; its help is ``stage.command_doc``."""

    def command(args, labels, sweeps, experiments_root, force):
        run_stages(args, sweeps, experiments_root, force, [stage.name], labels_override(labels))

    return click.command(stage.name, help=stage.command_doc)(stage_options(command))
