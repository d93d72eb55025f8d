"""``patchcfg pretrain``: self-supervised pretraining of the encoder."""

from __future__ import annotations

import click

from patchcfg.commands._common import config_args, experiments_option, force_option, run_stages, sweep_option


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
    run_stages(args, sweeps, experiments_root, force, ["pretrain"])
