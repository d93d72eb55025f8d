"""``patchcfg lr-find``: learning-rate range test for fine-tuning."""

from __future__ import annotations

import click

from patchcfg.commands._common import (
    config_args,
    experiments_option,
    labels_option,
    labels_override,
    one_config,
)


@click.command("lr-find")
@config_args
@labels_option
@click.option("--start-lr", default=1e-6, show_default=True, type=float, help="First learning rate.")
@click.option("--end-lr", default=1.0, show_default=True, type=float, help="Last learning rate.")
@click.option("--steps", default=100, show_default=True, type=click.IntRange(3, 100000), help="Steps of the test.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Folder for lr_find.csv and lr_find.png (default: experiments/<name>/lr_find).")
@experiments_option
def lr_find(args, labels, start_lr, end_lr, steps, out, experiments_root):
    """Learning-rate range test: the loss as the learning rate grows from --start-lr to --end-lr.

    Uses the first fine-tuning stage's settings on the labelled training rows; writes the loss and
    its smoothed derivative against the learning rate (PNG + CSV) and prints a suggested rate.

    \b
    Example:
      patchcfg lr-find configs/finetune.yaml --steps 200
    """
    import os

    from patchcfg.config import load_config
    from patchcfg.experiment import experiment_dir
    from patchcfg.experiment import experiments_root as root_of

    path, overrides = one_config(args)
    config = load_config(path, [*overrides, *labels_override(labels)])
    if not config.get("finetune"):
        raise click.UsageError(f"{path} has no finetune section")
    if experiments_root:
        os.environ["PATCHCFG_EXPERIMENTS"] = experiments_root
    from patchcfg.lr_find import lr_range_test, write_outputs

    result = lr_range_test(config, start_lr=start_lr, end_lr=end_lr, steps=steps, log=click.echo)
    folder = out or experiment_dir(root_of(experiments_root), config["name"]) / "lr_find"
    csv_path, png_path = write_outputs(result, folder)
    click.echo(f"suggested lr: {result['suggested_lr']:.3g}  (wrote {csv_path} and {png_path})")
