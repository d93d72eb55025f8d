"""The distill stage: a student learns the teacher's soft labels over every non-excluded image
(:mod:`patchcfg.tasks.distill`); student and teacher are scored side by side on the validation rows."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from patchcfg.errors import UserError
from patchcfg.stages import register
from patchcfg.stages.runner import Stage


def _macro_auc(metrics: dict) -> float:
    """The validation macro AUC among ``metrics`` (NaN without validation rows)."""
    return metrics["val_macro_auc"] if "val_macro_auc" in metrics else math.nan


@register
class DistillStage(Stage):
    name = "distill"
    depends_on = ("pretrain", "finetune")
    run_order = 4
    schema = "distill.schema.json"
    section_help = "Distillation of the fine-tuned ensemble into a student (`patchcfg distill`)."
    command_help = "Train a student on the teacher's soft labels."
    command_doc = """Train a student on the teacher's soft labels over every image; score both on validation rows.

    \b
    Example:
      patchcfg distill configs/demo.yaml
    """
    needs_labels = "its rows are the images, its validation rows score student and teacher"

    def prepare(self) -> None:
        from patchcfg.label_table import read_label_table
        from patchcfg.tasks.predict import output_groups, resolve_models

        teacher = self.params["teacher"]
        source = self.experiment.dir if teacher == "finetune" else Path(teacher)
        self.teachers, self.teacher_data, teacher_classes = resolve_models(source)
        self.table = read_label_table(self.data_cfg["labels"])
        self.classes = teacher_classes or self.table.classes
        self.groups = output_groups(source, self.classes, self.teachers)
        missing = [c for c in self.classes if c not in self.table.classes]
        if missing:
            raise UserError(f"distill: the teacher's classes {', '.join(missing)} are not in "
                            f"{self.data_cfg['labels']}")

    def execute(self) -> dict:
        from patchcfg.data import crops
        from patchcfg.data.loading import load_images
        from patchcfg.metrics import grouped_metrics, is_per_class
        from patchcfg.tasks.distill import DistillTask
        from patchcfg.tasks.predict import predict_arrays
        from patchcfg.train.loop import best_metrics
        from patchcfg.train.precision import float32_copy

        distill, table, classes, say = self.params, self.table, self.classes, self.say
        all_paths = np.array(table.resolved_paths())
        rows = np.flatnonzero(~table.exclude)
        good = set(self.readable(list(all_paths[rows])))
        rows = np.array([r for r in rows if all_paths[r] in good], int)
        n = crops.crops_of(self.data_cfg)  # with crops, teacher and student work on every image's cells
        images = (crops.load_cells if n > 1 else load_images)(list(all_paths[rows]), self.data_cfg)
        say(f"distill: teacher ({len(self.teachers)} model(s)) labels {len(rows)} images")
        soft = predict_arrays(self.teachers, images, self.teacher_data, distill["tta"])
        labels = table.label_matrix(classes)[rows]
        is_val = table.validation[rows]
        val_images, val_labels = images[np.repeat(is_val, n * n)], labels[is_val]
        per_image = crops.reduce(soft, n, self.data_cfg["crop_reduce"]) if n > 1 else soft
        teacher_metrics = (grouped_metrics(val_labels, per_image[is_val], classes, self.groups) if is_val.any()
                           else {})
        gbs = int(distill["batch_size"])
        if len(rows) < gbs:
            raise UserError(f"distill.batch_size {gbs} is larger than the number of images ({len(rows)})")
        train_labels = np.where(is_val[:, None], -1.0, labels)  # validation labels only score, never train
        train_paths = list(all_paths[rows])
        if n > 1:
            folder = self.workdir() / "cells"
            train_paths, train_labels = crops.expand(train_labels, crops.cell_files(train_paths, self.data_cfg,
                                                                                    folder))
        steps = int(distill["steps_per_epoch"] or max(1, len(train_paths) // gbs))  # cells with crops
        task = DistillTask(self.config, classes, train_paths, soft, train_labels, val_images, val_labels,
                           seed=int(self.config["seed"]), groups=self.groups)
        task.global_batch_size = gbs
        say(f"distill: student {distill['student']['name']} for {distill['epochs']} epochs x {steps} steps, "
            f"T={distill['temperature']}")
        result = self.loop(task, epochs=distill["epochs"], steps_per_epoch=steps, global_batch_size=gbs,
                           optimizer_config=distill["optimizer"]).fit()
        student_metrics = task.on_epoch_end(distill["epochs"] - 1, {})
        if self.chief:
            float32_copy(task.model).save(self.stage_run.path("model.keras"))
        gap = _macro_auc(teacher_metrics) - _macro_auc(student_metrics)
        return {"classes": classes, "images": len(rows),
                "teacher": {k: v for k, v in teacher_metrics.items() if not is_per_class(k)},
                "student": {k: v for k, v in student_metrics.items() if not is_per_class(k)},
                "teacher_minus_student_val_macro_auc": gap,
                "final": student_metrics, "best": best_metrics(result["history"]),
                "train_seconds": result["train_seconds"]}

    def done_message(self, summary: dict) -> str:
        return (f"distill done: student val_macro_auc {_macro_auc(summary['student']):.4f}, "
                f"teacher {_macro_auc(summary['teacher']):.4f} -> "
                f"{self.stage_run.path('model.keras')}")
