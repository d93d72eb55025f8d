"""The pretrain stage: a self-supervised method (``pretrain.method``) trains the encoder on every
image; a linear probe on the label table's labelled rows is scored while it trains.

Writes ``encoder.keras`` (and ``encoder_savedmodel/`` with ``pretrain.export_savedmodel``).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from patchcfg.errors import UserError
from patchcfg.stages import register
from patchcfg.stages.runner import Stage


def labelled_probe(config: dict, good_paths: list[str], log) -> tuple[Any, list[str], dict]:
    """A LinearProbe over the label table's labelled, not excluded rows whose image is readable."""
    from patchcfg.label_table import read_label_table
    from patchcfg.train.monitor import LinearProbe

    labels_path = config["data"]["labels"]
    monitor = config["pretrain"]["monitor"]
    if not labels_path or monitor["every"] == 0:
        return None, [], {}
    table = read_label_table(labels_path)
    usable = {os.path.realpath(p) for p in good_paths}
    paths = table.resolved_paths()
    matrix = table.label_matrix()
    keep = np.array([os.path.realpath(p) in usable for p in paths], dtype=bool) & ~table.exclude & table.labelled()
    if not keep.any():
        log("monitor: the label table has no labelled rows; no linear probe")
        return None, [], {}
    rows = np.flatnonzero(keep)
    probe = LinearProbe(matrix[rows], table.validation[rows], table.classes, C=float(monitor["C"]),
                        seed=int(config["seed"]), validation_fraction=float(monitor["validation_fraction"]))
    if not probe.usable():
        log("monitor: too few labelled rows for a linear probe (need a class with both values, and "
            "held-out rows); no probe")
        return None, [], {}
    info = {"probe_train_rows": len(probe.train_rows_), "probe_heldout_rows": len(probe.val_rows_),
            "probe_split": probe.split_, "probe_accuracy_kind": probe.accuracy_kind_,
            "probe_exclusive_classes": [table.classes[c] for c in probe.exclusive_]}
    log(f"monitor: linear probe on {info['probe_train_rows']} labelled rows, scored on "
        f"{info['probe_heldout_rows']} ({probe.split_}); accuracy: {probe.accuracy_kind_}")
    probe_paths = [paths[r] for r in rows[probe.rows]]
    return probe, probe_paths, info


@register
class PretrainStage(Stage):
    """Options besides the runner's: ``encoder`` (train this encoder instead of building
    ``backbone``), ``callbacks`` (Keras callbacks besides ``pretrain.callbacks``). After the run,
    :attr:`method` is the trained method (None when the stage was already complete)."""

    name = "pretrain"
    run_order = 1
    schema = "pretrain.schema.json"
    section_help = "Self-supervised pretraining of the encoder (`patchcfg pretrain`)."
    command_help = "Self-supervised pretraining."
    command = "patchcfg.commands.pretrain:pretrain"

    def __init__(self, config: dict, root=None, force: bool = False, *, encoder=None, callbacks=(), **options):
        super().__init__(config, root, force, **options)
        self.encoder, self.extra_callbacks = encoder, list(callbacks)
        self.method = None

    def cells(self, paths: list[str]) -> list[str]:
        """With ``data.crops`` > 1 every image's cells (each an image of its own), else ``paths``;
        the probe still scores whole images."""
        from patchcfg.data import crops

        if crops.crops_of(self.data_cfg) == 1:
            return paths
        folder = self.workdir() / "cells"
        return [c for files in crops.cell_files(paths, self.data_cfg, folder) for c in files]

    def execute(self) -> dict:
        from patchcfg.data.images import resolve_image_paths
        from patchcfg.pretrain import get_method
        from patchcfg.train.callbacks import build_callbacks
        from patchcfg.train.loop import best_metrics
        from patchcfg.train.precision import float32_copy

        params, run, strategy = self.params, self.stage_run, self.strategy
        paths = self.readable(resolve_image_paths(self.data_cfg))
        gbs = int(params["batch_size"])
        if len(paths) < gbs:
            raise UserError(f"pretrain.batch_size {gbs} is larger than the number of images ({len(paths)}); "
                            "use a smaller batch_size")
        probe, probe_paths, probe_info = labelled_probe(self.config, paths, self.say)
        paths = self.cells(paths)
        method = get_method(params["method"])(self.config, paths, probe=probe, probe_paths=probe_paths,
                                              encoder=self.encoder, workdir=self.workdir())
        steps = int(params["steps_per_epoch"] or method.epoch_steps())
        self.say(f"pretrain {params['method']}: {len(paths)} images, {params['epochs']} epochs x {steps} steps "
                 f"of {gbs} ({strategy.num_replicas_in_sync} replica(s), {type(strategy).__name__}) -> {run.dir}")
        result = self.loop(
            method, epochs=params["epochs"], steps_per_epoch=steps, global_batch_size=gbs,
            optimizer_config=params["optimizer"],
            callbacks=[*build_callbacks(params["callbacks"]), *self.extra_callbacks],
            checkpoint_every=params["checkpoint_every"]).fit()
        self.method = method
        if self.chief:
            encoder = float32_copy(method.encoder)  # loads and runs in float32 whatever trained it
            encoder.save(run.path("encoder.keras"))
            if params["export_savedmodel"]:
                encoder.export(str(run.path("encoder_savedmodel")), verbose=False)
        history = result["history"]
        return {
            "method": params["method"],
            "epochs_completed": result["epochs_completed"],
            "stopped_early": result["stopped_early"],
            "final": dict(history[-1]) if history else {"epoch": result["epochs_completed"], **result["final"]},
            "best": best_metrics(history),
            "images": len(paths),
            "steps_per_epoch": steps,
            "global_batch_size": gbs,
            "replicas": strategy.num_replicas_in_sync,
            "train_seconds": result["train_seconds"],
            "images_per_second": result["images_per_second"],
            "resumed": result["resumed"],
            "encoder": str(run.path("encoder.keras")),
            **probe_info,
        }
