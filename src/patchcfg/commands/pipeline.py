"""``patchcfg embed``, ``query`` and ``run`` (every stage a config declares)."""

from __future__ import annotations

import click

from patchcfg.active.strategies import cli_help as strategy_help
from patchcfg.commands._common import (
    config_args,
    engine_options,
    experiments_option,
    force_option,
    labels_option,
    labels_override,
    literal,
    one_config,
    run_stages,
    stage_options,
)


@click.command()
@config_args
@labels_option
@click.option("--encoder", default="auto", show_default=True,
              help="auto | pretrain | finetune | backbone | a .keras file.")
@click.option("--dtype", type=click.Choice(["float32", "float16"]), default=None,
              help="How features.npy stores the features (embed.dtype).")
@click.option("--shard", default=None, metavar="I/N",
              help="Embed only the I-th of N contiguous slices of the images, into embed_shards/I-of-N/ "
                   "(one task of a SLURM array: $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT).")
@click.option("--merge", is_flag=True,
              help="Join the N complete shards into embed/features.npy + index.csv, as one run writes them.")
@engine_options
@experiments_option
@force_option
def embed(args, labels, encoder, dtype, shard, merge, engine, address, actors, experiments_root, force):
    """Cache pooled encoder features of every image (experiments/<name>/embed/features.npy + index.csv).

    Queries and quick heads then run on these features, on a laptop without a GPU. The features are
    written chunk by chunk; an interrupted embed continues where it stopped when run again. Without
    a cluster engine, N tasks each embed one shard (--shard I/N) and one more joins them (--merge).
    With --engine ray the actors of a Ray cluster compute the features (the same files result).

    \b
    Examples:
      patchcfg embed configs/demo.yaml
      patchcfg embed configs/demo.yaml --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT
      patchcfg embed configs/demo.yaml --merge
      patchcfg embed configs/demo.yaml --engine ray --address auto
    """
    from patchcfg.config import load_config
    from patchcfg.stages import run_embed

    path, overrides = one_config(args)
    dtype_override = [f"embed.dtype={dtype}"] if dtype else []
    config = load_config(path, [*overrides, *labels_override(labels), *dtype_override])
    run_embed(config, root=experiments_root, force=force, encoder=encoder, shard=shard, merge=merge, engine=engine,
              address=address, actors=actors)


class StrategyOption(click.Option):
    """``--strategy``, whose help names the strategies registered when it is shown."""

    @property
    def help(self) -> str:
        return strategy_help()

    @help.setter
    def help(self, value) -> None:
        pass


@click.command()
@config_args
@labels_option
@click.option("--strategy", cls=StrategyOption, default=None)
@click.option("--n", "n", type=click.IntRange(1), default=None, help="How many images to propose.")
@click.option("--subset", default=None, help="unlabeled, partial, labeled, contains:CLASS, lacks:CLASS, ...")
@click.option("--explore", type=click.FloatRange(0, 1), default=None, help="Fraction of random picks.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="The queue CSV to write.")
@click.option("--force", is_flag=True,
              help="Replace an existing --out file that is not a queue this command wrote.")
@experiments_option
def query(args, labels, strategy, n, subset, explore, out, force, experiments_root):
    """Rank the images to label next (active learning) and write them as a CSV.

    Defaults come from the config's query section; the options override them. Scores come from
    the experiment's fine-tuned fold ensemble, or a quick head on cached features (`patchcfg embed`).

    \b
    Example:
      patchcfg query configs/demo.yaml --strategy entropy --n 20 --out queue.csv
      patchcfg query configs/demo.yaml --strategy guide:nine --subset unlabeled:nine
    """
    from patchcfg.config import load_config
    from patchcfg.stages import run_query

    options = {"strategy": strategy, "n": n, "subset": subset, "explore": explore, "out": out}
    path, overrides = one_config(args)
    overrides = [*overrides, *labels_override(labels)]
    chosen = [literal(f"query.{k}", v) for k, v in options.items() if v is not None]
    config = load_config(path, [*overrides, *chosen], sections=("query",))
    from patchcfg.config.checks import label_table_problems
    from patchcfg.errors import ConfigError

    problems = label_table_problems(config, ["query"])
    if problems:
        raise ConfigError([f"{path}: {p}" for p in problems])
    run_query(config, root=experiments_root, overwrite=force, protect=[("config", path)])


@click.command("run")
@stage_options
def run_all(args, labels, sweeps, experiments_root, force):
    """Run every stage the config declares, in order: pretrain, finetune, query, distill.

    Each stage goes into its folder; complete stages are skipped, interrupted ones resume.

    \b
    Example:
      patchcfg run configs/demo.yaml
    """
    run_stages(args, sweeps, experiments_root, force, None, labels_override(labels))
