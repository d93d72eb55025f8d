"""Distillation: a student learns the teacher's soft multi-hot labels over every image.

The teacher (this experiment's fine-tuned fold ensemble, or a model file) predicts every
non-excluded image; the student (any backbone + a small head) learns those probabilities
softened by a temperature T (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural
Network"): per class, BCE between sigmoid(z_t / T) and sigmoid(z_s / T), scaled by T^2, where
z are logits. ``label_weight`` adds a masked BCE on the known labels. Student and teacher are
scored side by side on the validation rows.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from patchcfg.errors import UserError
from patchcfg.losses import masked_bce
from patchcfg.metrics import is_per_class, masked_metrics
from patchcfg.train.loop import TrainLoop, TrainTask, best_metrics, flatten_config

EPSILON = 1e-6


def logit(p):
    p = np.clip(np.asarray(p, np.float32), EPSILON, 1 - EPSILON)
    return np.log(p) - np.log1p(-p)


def distillation_loss(teacher_logits, student_logits, temperature: float):
    """Mean over entries of BCE(sigmoid(z_t/T), sigmoid(z_s/T)) x T^2 (Hinton et al. 2015)."""
    target = tf.sigmoid(teacher_logits / temperature)
    bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=target, logits=student_logits / temperature)
    return tf.reduce_mean(bce) * temperature ** 2


def build_student(config: dict, n_classes: int) -> keras.Model:
    """Student backbone + head; outputs probabilities (layer ``output``) after logits (layer ``logits``)."""
    from patchcfg.models.backbones import build_backbone

    distill, data = config["distill"], config["data"]
    spec = {**distill["student"], "pooling": distill["student"].get("pooling") or "avg"}
    encoder = build_backbone(spec, (*data["imshape"], data["channels"]), name="encoder")
    inputs = keras.Input(encoder.input_shape[1:], name="image")
    x = encoder(inputs)
    for i, units in enumerate(distill["head"]["units"]):
        x = keras.layers.Dense(units, activation="relu", name=f"head_dense_{i}")(x)
    if distill["head"]["dropout"]:
        x = keras.layers.Dropout(distill["head"]["dropout"], name="head_dropout")(x)
    logits = keras.layers.Dense(n_classes, dtype="float32", name="logits")(x)
    outputs = keras.layers.Activation("sigmoid", dtype="float32", name="output")(logits)
    return keras.Model(inputs, outputs, name="student")


class DistillTask(TrainTask):
    def __init__(self, config, classes, paths, teacher_probabilities, known_labels, val_images, val_labels, seed):
        self.config, self.classes, self.seed = config, classes, seed
        self.distill, self.data_cfg = config["distill"], config["data"]
        self.paths = paths
        self.targets = np.concatenate([logit(teacher_probabilities), known_labels], axis=1).astype(np.float32)
        self.val_images, self.val_labels = val_images, val_labels
        self.model = self.logits_model = None

    def reported(self, metric: str) -> bool:  # per-class metrics go to metrics.csv, not the progress line
        return not is_per_class(metric)

    def build(self) -> None:
        keras.utils.set_random_seed(self.seed)
        self.model = build_student(self.config, len(self.classes))
        self.logits_model = keras.Model(self.model.inputs, self.model.get_layer("logits").output)

    def dataset(self, epoch: int) -> tf.data.Dataset:
        from patchcfg.data.augment import build_augmenter
        from patchcfg.data.loading import make_dataset

        seed = (self.seed * 1_000_003 + epoch) % (2 ** 31)
        aug_cfg = self.distill.get("augmentation")
        aug_cfg = self.config.get("augmentation") or {} if aug_cfg is None else aug_cfg
        augmenter = build_augmenter(aug_cfg, tuple(self.data_cfg["imshape"]), int(self.data_cfg["channels"]), seed=seed)
        return make_dataset(self.paths, self.data_cfg, batch_size=self.global_batch_size, labels=self.targets,
                            shuffle=True, seed=seed, repeat=True, augmenter=augmenter, drop_remainder=True,
                            cache="memory")

    def compute_loss(self, batch, global_batch_size: int):
        images, targets = batch
        n = len(self.classes)
        teacher_logits, known = targets[:, :n], targets[:, n:]
        student_logits = self.logits_model(images, training=True)
        loss = distillation_loss(teacher_logits, student_logits, float(self.distill["temperature"]))
        logs = {}
        if self.distill["label_weight"]:
            supervised = masked_bce(known, tf.sigmoid(student_logits))
            loss = loss + float(self.distill["label_weight"]) * supervised
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return loss / replicas, logs, {}

    def on_epoch_end(self, epoch: int, logs: dict) -> dict:
        from patchcfg.predict import predict_arrays

        if not len(self.val_images):
            return {}
        probabilities = predict_arrays([self.model], self.val_images, self.data_cfg)
        return masked_metrics(self.val_labels, probabilities, self.classes)


def run_distill(config: dict, root=None, force: bool = False, *, strategy=None, verbose="auto", log=None) -> dict:
    """Run the distill stage of a resolved config (skipped if complete, resumed if interrupted)."""
    from patchcfg.data.loading import check_images, load_images
    from patchcfg.experiment import Experiment, file_digest, stage_logs
    from patchcfg.labels import read_label_table
    from patchcfg.predict import predict_arrays, resolve_models
    from patchcfg.train import distribute

    chief = distribute.is_chief()
    log, say = stage_logs(log, verbose, chief)
    distill, data_cfg = config["distill"], config["data"]
    if not data_cfg.get("labels") or not Path(data_cfg["labels"]).is_file():
        raise UserError("distill needs the label table (data.labels): its rows are the images, its "
                        "validation rows score student and teacher")
    experiment = Experiment(config, root=root, force=force, is_chief=chief)
    teacher_source = experiment.dir if distill["teacher"] == "finetune" else Path(distill["teacher"])
    run = experiment.stage("distill", inputs={"labels_sha256": file_digest(data_cfg["labels"])})
    if run.is_complete():
        say(run.skip_message())
        return run.read_summary()
    teachers, teacher_data, teacher_classes = resolve_models(teacher_source)
    table = read_label_table(data_cfg["labels"])
    classes = teacher_classes or table.classes
    missing = [c for c in classes if c not in table.classes]
    if missing:
        raise UserError(f"distill: the teacher's classes {', '.join(missing)} are not in {data_cfg['labels']}")
    strategy = strategy or distribute.make_strategy((config.get("distribute") or {}).get("strategy", "auto"))
    started = time.time()
    with run:
        run.update_env(**distribute.describe(strategy))
        all_paths = np.array(table.resolved_paths())
        rows = np.flatnonzero(~table.exclude)
        good, skipped = check_images(list(all_paths[rows]), data_cfg.get("on_bad_image", "error"), data_cfg=data_cfg)
        good_set = set(good)
        rows = np.array([r for r in rows if all_paths[r] in good_set], int)
        images = load_images(list(all_paths[rows]), data_cfg)
        say(f"distill: teacher ({len(teachers)} model(s)) labels {len(rows)} images")
        soft = predict_arrays(teachers, images, teacher_data, distill.get("tta", "none"))
        labels = table.label_matrix(classes)[rows]
        is_val = table.validation[rows]
        val_images, val_labels = images[is_val], labels[is_val]
        teacher_metrics = masked_metrics(val_labels, soft[is_val], classes) if is_val.any() else {}
        gbs = int(distill["batch_size"])
        if len(rows) < gbs:
            raise UserError(f"distill.batch_size {gbs} is larger than the number of images ({len(rows)})")
        steps = int(distill.get("steps_per_epoch") or max(1, len(rows) // gbs))
        train_labels = np.where(is_val[:, None], -1.0, labels)  # validation labels only score, never train
        task = DistillTask(config, classes, list(all_paths[rows]), soft, train_labels, val_images, val_labels,
                           seed=int(config["seed"]))
        task.global_batch_size = gbs
        say(f"distill: student {distill['student'].get('name')} for {distill['epochs']} epochs x {steps} steps, "
            f"T={distill['temperature']}")
        loop = TrainLoop(task, run=run, strategy=strategy, epochs=distill["epochs"], steps_per_epoch=steps,
                         global_batch_size=gbs, optimizer_config=distill.get("optimizer") or {},
                         hparams=flatten_config({k: v for k, v in config.items() if k not in ("name", "description")}),
                         trial_id=config["name"], verbose=verbose, log=log)
        result = loop.fit()
        student_metrics = task.on_epoch_end(distill["epochs"] - 1, {})
        if chief:
            task.model.save(run.path("model.keras"))
        gap = teacher_metrics.get("val_macro_auc", math.nan) - student_metrics.get("val_macro_auc", math.nan)
        summary = {"classes": classes, "images": len(rows), "skipped_images": len(skipped), "skipped": skipped,
                   "teacher": {k: v for k, v in teacher_metrics.items() if "macro" in k},
                   "student": {k: v for k, v in student_metrics.items() if "macro" in k},
                   "teacher_minus_student_val_macro_auc": gap,
                   "final": student_metrics, "best": best_metrics(result["history"]),
                   "train_seconds": result["train_seconds"], "seconds": round(time.time() - started, 3)}
        run.write_summary(summary)
        say(f"distill done: student val_macro_auc {student_metrics.get('val_macro_auc', math.nan):.4f}, teacher "
            f"{teacher_metrics.get('val_macro_auc', math.nan):.4f} -> {run.path('model.keras')}")
    return summary
