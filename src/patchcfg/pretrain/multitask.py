"""Multitask: pretrain the encoder on the labels of several label tables at once.

patchwork's multitask trainer, on patchcfg's label tables: each entry of ``tasks`` is a label table
(multi-hot, blank = unknown; by default ``data.labels``) whose classes get their own output units
on a shared head (``projection``'s hidden layers). The loss of a task is the masked binary
cross-entropy over its known labels; rows with no known label in a task do not count for it.
Tasks are mixed by their ``weight``, or with ``task_weighting: adaptive`` by learnt uncertainty
(Kendall et al. 2018), with a trainable ``s_t = log sigma_t^2`` per task
(:mod:`patchcfg.pretrain.losses.multitask`). Rows are drawn so that every task is equally
represented (a row's chance is the sum over the tasks it has labels for of 1 / (tasks x rows
labelled for the task)), then augmented. Rows marked ``validation`` or ``exclude`` in a table are
never trained on, so the linear probe stays honest.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from patchcfg.errors import UserError
from patchcfg.pretrain import register
from patchcfg.pretrain.base import PretrainMethod
from patchcfg.pretrain.losses.multitask import masked_task_bce, uncertainty_weighted
from patchcfg.pretrain.params import PretrainParams, build_params, optional, resolved_section
from patchcfg.train.distribute import global_mean
from patchcfg.train.loop import epoch_seed


def task_name(path, taken: set[str]) -> str:
    """A metric-friendly name for the task of label table ``path`` (its file stem, made unique)."""
    base = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in Path(path).stem) or "task"
    name, n = base, 2
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    return name


def merge_tasks(tables) -> tuple[list[str], np.ndarray, list[slice]]:
    """``(paths, labels, columns)``: every trainable row of every table once (same image = one row),
    labels (rows, total classes) with -1 where a task does not know, and each task's columns."""
    index: dict[str, int] = {}
    paths: list[str] = []
    blocks = []
    for table in tables:
        keep = table.train_rows() & table.labelled()
        rows = []
        for path in np.asarray(table.resolved_paths())[keep]:
            key = os.path.realpath(path)
            if key not in index:
                index[key] = len(paths)
                paths.append(path)
            rows.append(index[key])
        blocks.append((np.asarray(rows, np.int64), table.label_matrix()[keep]))
    labels = np.full((len(paths), sum(b[1].shape[1] for b in blocks)), -1.0, np.float32)
    columns, start = [], 0
    for rows, values in blocks:
        width = values.shape[1]
        labels[rows, start:start + width] = values
        columns.append(slice(start, start + width))
        start += width
    return paths, labels, columns


def balanced_probabilities(labels, columns) -> np.ndarray:
    """Each row's chance of being drawn: every task gets an equal share, spread over its rows."""
    known = [(labels[:, c] >= 0).any(axis=1) for c in columns]
    weights = np.zeros(len(labels))
    for has in known:
        if has.any():
            weights[has] += 1.0 / (has.sum() * len(columns))
    return weights / weights.sum()


@dataclass(frozen=True)
class Task:
    """An entry of ``pretrain.tasks``."""

    labels: str
    name: str | None = optional()
    weight: float


@register("multitask")
class MultiTask(PretrainMethod):
    """Supervised multitask pretraining on one or more label tables (masked BCE per task)."""

    summary = ("learn the labels of one or more label tables at once (masked BCE per task, optionally "
               "weighted by learnt uncertainty, Kendall et al. 2018).")
    config_keys = {
        "tasks": {
            "description": ("Label tables to learn at once (the label table format; their own images). "
                            "Empty = data.labels alone. Rows marked validation or exclude are never "
                            "trained on."),
            "type": "array",
            "default": [],
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["labels"],
                "properties": {
                    "labels": {
                        "description": "Path of the task's label table.",
                        "type": "string",
                        "minLength": 1,
                    },
                    "name": {
                        "description": "Name in metrics (loss_<name>); default: the file's stem.",
                        "type": "string",
                        "pattern": "^[A-Za-z0-9_]+$",
                    },
                    "weight": {
                        "description": "Weight of the task's loss (task_weighting: fixed).",
                        "type": "number",
                        "minimum": 0,
                        "default": 1.0,
                    },
                },
            },
        },
        "task_weighting": {
            "description": ("fixed = each task's weight; adaptive = learnt uncertainty weights exp(-s_t) "
                            "L_t + s_t / 2 (Kendall et al. 2018)."),
            "enum": ["fixed", "adaptive"],
            "default": "fixed",
        },
    }

    @dataclass(frozen=True)
    class Params(PretrainParams):
        tasks: tuple[Task, ...]
        task_weighting: str

    def __init__(self, config, paths, **kwargs):
        from patchcfg.label_table import read_label_table

        super().__init__(config, paths, **kwargs)
        specs = self.params.tasks
        if not specs:
            if not self.data_cfg["labels"]:
                raise UserError("pretrain.tasks: multitask needs label tables; list them under pretrain.tasks "
                                "or set data.labels")
            implicit = resolved_section({"method": self.name, "tasks": [{"labels": self.data_cfg["labels"]}]})
            specs = build_params(self.Params, implicit).tasks
        tables = []
        for i, spec in enumerate(specs):
            try:
                tables.append(read_label_table(spec.labels))
            except UserError as error:
                where = f"pretrain.tasks[{i}].labels" if self.params.tasks else "data.labels"
                raise type(error)(f"{where}: {error}") from None
        taken: set[str] = set()
        self.task_names = []
        for i, spec in enumerate(specs):
            name = spec.name or task_name(spec.labels, taken)
            if name in taken:
                raise UserError(f"pretrain.tasks[{i}].name: '{name}' names another task too; give each a "
                                "different name")
            self.task_names.append(name)
            taken.add(name)
        self.task_weights = [spec.weight for spec in specs]
        self.adaptive = self.params.task_weighting == "adaptive"
        self.task_paths, self.labels, self.columns = merge_tasks(tables)
        for name, table, columns in zip(self.task_names, tables, self.columns, strict=True):
            if not (self.labels[:, columns] >= 0).any():
                raise UserError(f"pretrain.tasks: {table.path} ({name}) has no labelled training rows "
                                "(rows with a known label, not validation, not excluded)")
        self.probabilities = balanced_probabilities(self.labels, self.columns)

    def epoch_steps(self) -> int:
        """An epoch draws about as many rows as the tasks have (at least one batch)."""
        return max(1, len(self.task_paths) // self.global_batch_size)

    def build_head(self, features: int, dim: int | None = None, min_depth: int = 0) -> keras.Model:
        return super().build_head(features, dim=self.labels.shape[1], min_depth=1)

    def build_state(self) -> None:
        # s_t = log sigma_t^2 of each task (adaptive weighting), starting at 0 (weight 1)
        self.log_variances = tf.Variable(tf.zeros([len(self.columns)]), trainable=self.adaptive,
                                         name="task_log_variances")

    def extra_state(self) -> dict:
        return {"task_log_variances": self.log_variances}

    def trainable_variables(self) -> list:
        extra = [self.log_variances] if self.adaptive else []
        return super().trainable_variables() + extra

    def dataset(self, epoch: int) -> tf.data.Dataset:
        """Augmented rows drawn with :func:`balanced_probabilities` (seeded by the epoch) and their labels."""
        seed = epoch_seed(self.seed, epoch)
        picks = np.random.default_rng(seed).choice(len(self.task_paths), size=self.epoch_draws(), p=self.probabilities)
        return self.drawn_dataset(self.task_paths, self.labels, picks, seed)

    def compute_loss(self, batch, global_batch_size: int):
        images, labels = batch
        per_task = masked_task_bce(labels, self.embed(images), self.columns)
        logs = {f"loss_{name}": global_mean(loss, global_batch_size)
                for name, loss in zip(self.task_names, per_task, strict=True)}
        if self.adaptive:
            total = uncertainty_weighted(per_task, self.log_variances)
            ones = tf.ones(tf.shape(per_task[0]))
            for t, name in enumerate(self.task_names):
                logs[f"weight_{name}"] = global_mean(ones * tf.exp(-self.log_variances[t]), global_batch_size)
        else:
            total = 0.0
            for weight, loss in zip(self.task_weights, per_task, strict=True):
                total += weight * loss
        return global_mean(total, global_batch_size), logs, {}
