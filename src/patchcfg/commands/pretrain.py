"""``patchcfg pretrain``: self-supervised pretraining of the encoder."""

from __future__ import annotations

import click

from patchcfg.commands._common import config_args, experiments_option, force_option, one_config, sweep_option


@click.command()
@config_args
@sweep_option
@experiments_option
@force_option
def pretrain(args, sweeps, experiments_root, force):
    """Pretrain an encoder on every image (SimCLR, MoCo, HCL), with a linear probe on the labels.

    Writes experiments/<name>/pretrain/: encoder.keras, metrics.csv, summary.json, TensorBoard
    logs and checkpoints. Interrupted (Ctrl-C, SIGTERM), it saves a checkpoint; the same command
    resumes it. A stage already complete with the same config is skipped.

    \b
    Example:
      patchcfg pretrain configs/simclr.yaml
      patchcfg pretrain configs/moco.yaml pretrain.epochs=5 name=moco-quick
      patchcfg pretrain configs/simclr.yaml --sweep pretrain.temperature=0.1,0.5
      tensorboard --logdir experiments
    """
    from patchcfg.config import expand_sweeps

    path, overrides = one_config(args)
    configs = expand_sweeps(path, overrides, sweeps)
    missing = [c["name"] for c in configs if not c.get("pretrain")]
    if missing:
        raise click.UsageError(f"{path} has no pretrain section (add `pretrain: {{method: simclr}}`)")

    # Heavy imports only now that every config is valid. The strategy comes first: a
    # MultiWorkerMirroredStrategy must exist before TensorFlow runs any op.
    from patchcfg.pretrain import run_pretrain
    from patchcfg.train.distribute import make_strategy

    strategy = make_strategy((configs[0].get("distribute") or {}).get("strategy", "auto"))
    for config in configs:
        if len(configs) > 1:
            click.echo(f"== {config['name']}")
        run_pretrain(config, root=experiments_root, force=force, strategy=strategy)
