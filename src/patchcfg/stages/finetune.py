"""The finetune stage: a classifier on the partially labelled label table, over folds and phases.

Musket's semantics: each training phase, an entry of ``finetune.stages`` (``epochs``, ``lr``,
``loss``, ``negatives``, ``freeze_encoder`` / ``unfreeze_encoder``, ``initial_weights``,
``callbacks``), starts from the previous phase's best weights (best by ``primary_metric``); with
``folds_count`` k > 1 every fold trains on the other folds' labelled rows and is scored on its own,
the ``validation`` rows being a holdout scored by the fold ensemble. Every fold x phase is a
resumable unit: an interrupted run resumes from the last checkpoint of the unit it was in, and
finished units are not trained again.
The model and its task are in :mod:`patchcfg.tasks.finetune`.

Outputs in ``experiments/<name>/finetune/``: ``fold_<k>/model.keras`` (best weights),
``metrics.csv`` (fold, stage, epoch rows), ``predictions.csv`` (out-of-fold and holdout
probabilities beside the known labels), ``summary.json`` (per fold, mean and std),
``roc_fold_<k>.png`` and ``folds.csv``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from patchcfg.data.folds import HOLDOUT
from patchcfg.errors import UserError
from patchcfg.label_groups import has_groups
from patchcfg.losses import build_group_loss
from patchcfg.metrics import grouped_metrics
from patchcfg.stages import register
from patchcfg.stages.runner import Stage

if TYPE_CHECKING:
    import keras


class UnitRun:
    """One fold x training phase of the finetune stage, as the training loop sees a run.

    Checkpoints and TensorBoard logs live under ``fold_<k>/stage_<phase>/``; metric rows go to the
    stage's one ``metrics.csv`` with ``fold`` and ``stage`` (the phase) columns.
    """

    def __init__(self, run, fold: int, phase: int):
        self.parent, self.fold, self.phase = run, fold, phase
        self.is_chief = run.is_chief
        self.dir = run.dir / f"fold_{fold}" / f"stage_{phase}"

    @property
    def checkpoint_dir(self) -> Path:
        if self.is_chief:
            return self.dir / "checkpoints"
        return self.parent.checkpoint_dir / f"fold_{self.fold}_stage_{self.phase}"

    @property
    def tensorboard_dir(self) -> Path:
        return self.parent.tensorboard_dir / f"fold_{self.fold}" / f"stage_{self.phase}"

    def append_metrics(self, row: dict) -> None:
        self.parent.append_metrics({"fold": self.fold, "stage": self.phase, **row})

    def read_metrics(self) -> list[dict]:
        return [{k: v for k, v in r.items() if k not in ("fold", "stage")} for r in self.parent.read_metrics()
                if r.get("fold") == self.fold and r.get("stage") == self.phase]

    @property
    def done_path(self) -> Path:
        return self.dir / "done.json"

    @property
    def best_weights_path(self) -> Path:
        return self.dir / "best.weights.h5"

    def done(self) -> dict | None:
        try:
            return json.loads(self.done_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return None



def _rows(table, classes, folds, fold: int, k: int):
    labels = table.label_matrix(classes)
    known = (labels >= 0).any(axis=1) & ~table.exclude
    if k > 1:
        train = known & (folds >= 0) & (folds != fold)
        val = known & (folds == fold)
    else:
        train = known & ~table.validation
        val = known & table.validation
    return np.flatnonzero(train), np.flatnonzero(val)


def _roc_plot(path: Path, labels: np.ndarray, probabilities: np.ndarray, classes: list[str], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    from patchcfg.atomic import atomic_write_figure

    fig, ax = plt.subplots(figsize=(6, 6))
    for c, name in enumerate(classes):
        known = labels[:, c] >= 0
        truth = labels[known, c] > 0.5
        if 0 < truth.sum() < truth.size:
            fpr, tpr, _ = roc_curve(truth, probabilities[known, c])
            ax.plot(fpr, tpr, label=name, linewidth=1)
    ax.plot([0, 1], [0, 1], "k--", linewidth=0.5)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    if len(classes) <= 20:
        ax.legend(fontsize=7, loc="lower right")
    atomic_write_figure(path, fig)
    plt.close(fig)


def _prediction_rows(paths, labels, probabilities, classes, split: str, fold) -> list[dict]:
    rows = []
    for path, y, p in zip(paths, labels, probabilities, strict=True):
        row = {"filepath": path, "split": split, "fold": fold}
        row.update({f"p_{c}": float(v) for c, v in zip(classes, p, strict=True)})
        row.update({f"y_{c}": (int(v) if v >= 0 else None) for c, v in zip(classes, y, strict=True)})
        rows.append(row)
    return rows


def _mean_std(per_fold: dict[int, dict]) -> tuple[dict, dict]:
    keys = sorted({k for m in per_fold.values() for k, v in m.items() if isinstance(v, int | float)})
    mean, std = {}, {}
    for key in keys:
        values = np.array([m[key] for m in per_fold.values() if isinstance(m.get(key), int | float)], float)
        values = values[np.isfinite(values)]
        if values.size:
            mean[key] = float(values.mean())
            std[key] = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return mean, std


class FoldTrainer:
    """Trains one fold's phases in order, each a resumable unit starting from the previous best."""

    def __init__(self, stage: FinetuneStage, *, classes, paths, labels, encoder_spec, phases, unlabelled,
                 groups=None):
        self.stage, self.config, self.classes, self.paths, self.labels = stage, stage.config, classes, paths, labels
        self.groups = groups
        self.run, self.encoder_spec, self.phases = stage.stage_run, encoder_spec, phases
        self.unlabelled, self.say = unlabelled, stage.say
        from patchcfg.tasks.finetune import primary_mode

        self.finetune = stage.params
        self.primary, self.mode = self.finetune["primary_metric"], primary_mode(self.finetune)

    def training_images(self, rows) -> tuple[list[str], np.ndarray | None]:
        """The images (and labels) ``rows`` train on: the rows' images, or with ``data.crops`` their
        cells, each with its image's labels (``rows`` None: the unlabelled images, for FixMatch)."""
        from patchcfg.data import crops

        paths = list(self.paths[rows]) if rows is not None else list(self.unlabelled)
        labels = self.labels[rows] if rows is not None else np.zeros((len(paths), 0), np.float32)
        if crops.crops_of(self.config["data"]) == 1:
            return paths, labels
        data = self.config["data"]
        folder = self.stage.workdir() / "cells"
        overrides = None
        if data["cell_labels"] and rows is not None:
            overrides = crops.read_cell_labels(data["cell_labels"], list(self.classes), crops.crops_of(data))
        return crops.expand(labels, crops.cell_files(paths, data, folder), overrides, paths)

    def train_fold(self, fold: int, train_rows, val_rows) -> keras.Model:
        """The fold's model with its last phase's best weights."""
        from patchcfg.tasks.finetune import build_model, load_model_weights

        weights = None
        for phase in self.phases:
            weights = self.train_unit(fold, phase, train_rows, val_rows, weights)
        model = build_model(self.config, self.encoder_spec, len(self.classes), self.groups)
        if isinstance(weights, list):
            model.set_weights(weights)
        else:
            load_model_weights(model, weights)
        return model

    def train_unit(self, fold: int, phase: dict, train_rows, val_rows, weights):
        """Train one fold x phase (or skip it when done); returns its best weights (list or file)."""
        from patchcfg.atomic import atomic_write_json
        from patchcfg.tasks.finetune import FinetuneTask
        from patchcfg.train.callbacks import BestWeights, build_callbacks

        unit, say, primary = UnitRun(self.run, fold, phase["index"]), self.say, self.primary
        done = unit.done()
        if done is not None and unit.best_weights_path.is_file():
            say(f"fold {fold + 1} stage {phase['index'] + 1}: already trained (best {primary} {done['best']:.4g}); "
                "skipping")
            return str(unit.best_weights_path)
        gbs = int(self.finetune["batch_size"])
        train_paths, train_labels = self.training_images(train_rows)
        steps = int(phase["steps_per_epoch"] or max(1, math.ceil(len(train_paths) / gbs)))  # cells with crops
        task = FinetuneTask(
            config=self.config, classes=self.classes, encoder_spec=self.encoder_spec, phase=phase,
            train_paths=train_paths, train_labels=train_labels,
            val_paths=list(self.paths[val_rows]), val_labels=self.labels[val_rows],
            start_weights=phase["initial_weights"] or weights,
            seed=int(self.config["seed"]) * 100 + fold * 10 + phase["index"], groups=self.groups)
        task.global_batch_size = gbs
        task.unlabelled_paths = self.training_images(None)[0] if self.unlabelled else []
        chief = self.run.is_chief
        best = BestWeights(primary, self.mode, unit.best_weights_path if chief else None,
                           unit.dir / "best.json" if chief else None)
        optimizer_cfg = {**(self.finetune.get("optimizer") or {}), "lr": phase["lr"]}
        if any(n in phase["callbacks"] for n in ("ReduceLROnPlateau", "CyclicLR")):
            optimizer_cfg["schedule"] = "constant"  # the callback owns the learning rate
        say(f"fold {fold + 1} stage {phase['index'] + 1}: {phase['epochs']} epochs x {steps} steps, "
            f"lr {phase['lr']:g}, loss {phase['loss']}, encoder {'frozen' if phase['frozen'] else 'trained'}")
        loop = self.stage.loop(task, run=unit, hparams=fold == 0 and phase["index"] == 0, epochs=phase["epochs"],
                               steps_per_epoch=steps, global_batch_size=gbs, optimizer_config=optimizer_cfg,
                               callbacks=[best, *build_callbacks(phase["callbacks"], primary, self.mode)])
        loop.fit()
        best.restore()
        if chief:
            unit.dir.mkdir(parents=True, exist_ok=True)
            if not unit.best_weights_path.is_file():
                task.model.save_weights(str(unit.best_weights_path))
            atomic_write_json(unit.done_path, {"best": best.best, "epoch": best.best_epoch, "metric": primary})
        return task.model.get_weights()



@register
class FinetuneStage(Stage):
    name = "finetune"
    depends_on = ("pretrain",)
    run_order = 2
    schema = "finetune.schema.json"
    section_help = "Fine-tuning a classifier on the label table (`patchcfg finetune`)."
    command_help = "Train a classifier on the label table."
    command_doc = """Train a classifier: encoder + head, masked loss, stratified batches, stages, folds.

    Writes experiments/<name>/finetune/: fold_<k>/model.keras, metrics.csv (fold, stage, epoch),
    predictions.csv (out-of-fold and holdout), summary.json (per fold, mean, std), ROC curves.
    Each fold x stage resumes where it was interrupted; a complete stage is skipped.

    \b
    Example:
      patchcfg finetune configs/finetune.yaml --labels data/demo/labels.csv
      patchcfg finetune configs/finetune.yaml finetune.folds_count=3 --sweep seed=1,2
    """
    needs_labels = "its labelled rows train and score the classifier"

    def prepare(self) -> None:
        from patchcfg.label_table import read_label_table
        from patchcfg.models.outputs import group_classes, resolve_groups
        from patchcfg.tasks.finetune import check_monitored

        labels = self.data_cfg["labels"]
        self.table = table = read_label_table(labels)
        self.classes = classes = self.params["classes"] or table.classes
        missing = [c for c in classes if c not in table.classes]
        if missing:
            raise UserError(f"finetune.classes: {', '.join(missing)} not in {labels} "
                            f"(its classes: {', '.join(table.classes)})")
        if not classes:
            raise UserError(f"{labels}: no class columns; add one with `patchcfg labels add-class`")
        self.groups = resolve_groups(self.params, classes)
        self.classes = classes = group_classes(self.groups)  # the model's order: group after group
        check_monitored(self.params, classes, self.groups)

    def usable_rows(self) -> np.ndarray:
        """Rows with a readable image among the labelled, not excluded ones (``on_bad_image``)."""
        table = self.table
        candidates = np.flatnonzero((table.label_matrix(self.classes) >= 0).any(axis=1) & ~table.exclude)
        paths = table.resolved_paths()
        good = set(self.readable([paths[i] for i in candidates]))
        usable = np.zeros(len(table), bool)
        usable[[i for i in candidates if paths[i] in good]] = True
        return usable

    def predict(self, models, paths) -> np.ndarray:
        from patchcfg.tasks.predict import predict_paths

        return predict_paths(models, list(paths), self.data_cfg, self.params["tta"])

    def execute(self) -> dict:
        import pandas as pd

        from patchcfg.atomic import atomic_write_text
        from patchcfg.data.folds import load_or_assign_folds
        from patchcfg.tasks.finetune import phase_settings, primary_mode, resolve_encoder_spec

        finetune, table, classes, run, say = self.params, self.table, self.classes, self.stage_run, self.say
        primary, mode = finetune["primary_metric"], primary_mode(finetune)
        threshold = finetune["output"]["threshold"]
        k = int(finetune["folds_count"])
        encoder_spec, pretrained = resolve_encoder_spec(self.config, self.experiment.dir)
        phases = phase_settings(finetune, pretrained)
        usable = self.usable_rows()
        folds = load_or_assign_folds(table, k, int(self.config["seed"]), self.workdir())
        paths = np.array(table.resolved_paths())
        labels = table.label_matrix(classes)
        per_fold, prediction_rows, holdout = {}, [], []
        unlabelled = []
        if finetune["fixmatch"]["enabled"]:
            unlabelled = self.readable(list(paths[~table.exclude & ~table.validation & ~(labels >= 0).any(axis=1)]))
            say(f"fixmatch: {len(unlabelled)} unlabelled images")
        trainer = FoldTrainer(self, classes=classes, paths=paths, labels=labels, encoder_spec=encoder_spec,
                              phases=phases, unlabelled=unlabelled, groups=self.groups)
        groups = self.groups
        for fold in range(k):
            train_rows, val_rows = (r[usable[r]] for r in _rows(table, classes, folds, fold, k))
            if len(val_rows) == 0:
                raise UserError(
                    f"fold {fold}: no labelled rows to validate on; mark some labelled rows validation=True "
                    "in the label table, or set finetune.folds_count >= 2")
            if len(train_rows) == 0:
                raise UserError(f"fold {fold}: no labelled training rows")
            say(f"fold {fold + 1}/{k}: {len(train_rows)} labelled training rows, {len(val_rows)} validation rows, "
                f"{len(classes)} classes")
            model = trainer.train_fold(fold, train_rows, val_rows)
            probabilities = self.predict([model], paths[val_rows])
            per_fold[fold] = grouped_metrics(labels[val_rows], probabilities, classes, groups, threshold=threshold)
            per_fold[fold]["val_loss"] = float(build_group_loss(groups, phases[-1]["loss"])(labels[val_rows],
                                                                                           probabilities))
            split = "oof" if k > 1 else "validation"
            prediction_rows += _prediction_rows(paths[val_rows], labels[val_rows], probabilities, classes, split, fold)
            if self.chief:
                model.save(run.path(f"fold_{fold}") / "model.keras")
                if finetune["roc_plot"]:
                    _roc_plot(run.path(f"roc_fold_{fold}.png"), labels[val_rows], probabilities, classes,
                              f"{self.config['name']}: fold {fold} ({split})")
            if k > 1:
                holdout.append(model)
        summary: dict[str, Any] = {"classes": classes, "folds_count": k, "primary_metric": primary,
                                   "primary_metric_mode": mode, "folds": {str(f): m for f, m in per_fold.items()}}
        if has_groups(groups):
            summary["outputs"] = [g.describe() for g in groups]
        summary["mean"], summary["std"] = _mean_std(per_fold)
        if k > 1:
            holdout_rows = np.flatnonzero(usable & (folds == HOLDOUT))
            if len(holdout_rows):
                probabilities = self.predict(holdout, paths[holdout_rows])
                summary["holdout"] = grouped_metrics(labels[holdout_rows], probabilities, classes, groups,
                                                     threshold=threshold)
                prediction_rows += _prediction_rows(paths[holdout_rows], labels[holdout_rows], probabilities,
                                                    classes, "validation", "ensemble")
        summary["best_epochs"] = best_metrics_by_unit(run, k, len(phases), primary)
        if self.chief:
            frame = pd.DataFrame(prediction_rows)
            atomic_write_text(run.path("predictions.csv"), frame.to_csv(index=False, lineterminator="\n"))
        return summary

    def done_message(self, summary: dict) -> str:
        primary, k = summary["primary_metric"], summary["folds_count"]
        return (f"finetune done: {primary} {summary['mean'].get(primary, float('nan')):.4f}"
                + (f" ± {summary['std'].get(primary, 0):.4f} over {k} folds" if k > 1 else "")
                + f" -> {self.stage_run.dir}")


def best_metrics_by_unit(run, k: int, n_phases: int, primary: str) -> dict:
    from patchcfg.train.loop import best_metrics

    rows = run.read_metrics()
    out = {}
    for fold in range(k):
        for phase in range(n_phases):
            unit_rows = [r for r in rows if r.get("fold") == fold and r.get("stage") == phase]
            best = best_metrics(unit_rows).get(primary)
            if best:
                out[f"fold_{fold}_stage_{phase}"] = best
    return out
