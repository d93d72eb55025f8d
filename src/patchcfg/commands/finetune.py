"""``patchcfg finetune``: a classifier on the partially labelled label table."""

from __future__ import annotations

import click

from patchcfg.commands._common import labels_override, run_stages, stage_options


@click.command()
@stage_options
def finetune(args, labels, sweeps, experiments_root, force):
    """Train a classifier: encoder + head, masked loss, stratified batches, stages, folds.

    Writes experiments/<name>/finetune/: fold_<k>/model.keras, metrics.csv (fold, stage, epoch),
    predictions.csv (out-of-fold and holdout), summary.json (per fold, mean, std), ROC curves.
    Each fold x stage resumes where it was interrupted; a complete stage is skipped.

    \b
    Example:
      patchcfg finetune configs/finetune.yaml --labels data/demo/labels.csv
      patchcfg finetune configs/finetune.yaml finetune.folds_count=3 --sweep seed=1,2
    """
    extra = labels_override(labels)
    run_stages(args, sweeps, experiments_root, force, ["finetune"], extra)
