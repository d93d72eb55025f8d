"""Distillation: a student learns the teacher's soft multi-hot labels over every image.

The teacher (this experiment's fine-tuned fold ensemble, or a model file) predicts every
non-excluded image; the student (any backbone + a small head) learns those probabilities
softened by a temperature T (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural
Network"): per class, BCE between sigmoid(z_t / T) and sigmoid(z_s / T), scaled by T^2, where
z are logits. ``label_weight`` adds a masked BCE on the known labels. With output groups
(:mod:`patchcfg.models.outputs`) the student has the teacher's groups: a softmax group learns the
cross-entropy between softmax(z_t / T) and softmax(z_s / T) over its classes (z_t = log p_t), a
sigmoid group as above, and the known labels train through the groups' masked losses. The stage that scores
student and teacher side by side is :mod:`patchcfg.stages.distill`.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from patchcfg.label_groups import has_groups
from patchcfg.losses import build_group_loss
from patchcfg.metrics import grouped_metrics, is_per_class
from patchcfg.train.loop import TrainTask

EPSILON = 1e-6


def logit(p):
    p = np.clip(np.asarray(p, np.float32), EPSILON, 1 - EPSILON)
    return np.log(p) - np.log1p(-p)


def distillation_loss(teacher_logits, student_logits, temperature: float):
    """Mean over entries of BCE(sigmoid(z_t/T), sigmoid(z_s/T)) x T^2 (Hinton et al. 2015)."""
    target = tf.sigmoid(teacher_logits / temperature)
    bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=target, logits=student_logits / temperature)
    return tf.reduce_mean(bce) * temperature ** 2


def softmax_distillation_loss(teacher_logits, student_logits, temperature: float):
    """Mean over rows of CE(softmax(z_t/T), softmax(z_s/T)) x T^2 over one softmax group's classes."""
    target = tf.nn.softmax(teacher_logits / temperature, axis=-1)
    ce = tf.nn.softmax_cross_entropy_with_logits(labels=target, logits=student_logits / temperature)
    return tf.reduce_mean(ce) * temperature ** 2


def group_distillation_loss(groups, teacher_logits, student_logits, temperature: float):
    """The sum over output groups of each group's distillation loss on its columns."""
    if not has_groups(groups):
        return distillation_loss(teacher_logits, student_logits, temperature)
    total = 0.0
    for g in groups:
        loss = softmax_distillation_loss if g.softmax else distillation_loss
        total = total + loss(teacher_logits[:, g.start:g.stop], student_logits[:, g.start:g.stop], temperature)
    return total


def teacher_logits(probabilities, groups) -> np.ndarray:
    """Logits of the teacher's probabilities: log-odds per sigmoid class, log p in a softmax group."""
    out = logit(probabilities)
    for g in groups or []:
        if g.softmax:
            out[:, g.start:g.stop] = np.log(np.clip(probabilities[:, g.start:g.stop], EPSILON, 1.0))
    return out


def build_student(config: dict, n_classes: int, groups=None) -> keras.Model:
    """Student backbone + head; outputs probabilities (layer ``output``) after logits (layer ``logits``);
    with output groups, per group ``logits_<group>`` and ``output_<group>`` (its activation)."""
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
    if has_groups(groups):
        outputs = [keras.layers.Activation(g.type, dtype="float32", name=f"output_{g.name}")(
            keras.layers.Dense(len(g.classes), dtype="float32", name=f"logits_{g.name}")(x)) for g in groups]
        return keras.Model(inputs, outputs, name="student")
    logits = keras.layers.Dense(n_classes, dtype="float32", name="logits")(x)
    outputs = keras.layers.Activation("sigmoid", dtype="float32", name="output")(logits)
    return keras.Model(inputs, outputs, name="student")


class DistillTask(TrainTask):
    def __init__(self, config, classes, paths, teacher_probabilities, known_labels, val_images, val_labels, seed,
                 groups=None):
        from patchcfg.models.outputs import groups_from_summary

        self.config, self.classes, self.seed = config, classes, seed
        self.groups = groups or groups_from_summary(None, classes)
        self.distill, self.data_cfg = config["distill"], config["data"]
        self.paths = paths
        self.targets = np.concatenate([teacher_logits(teacher_probabilities, self.groups), known_labels],
                                      axis=1).astype(np.float32)
        self.val_images, self.val_labels = val_images, val_labels
        self.model = self.logits_model = None

    def reported(self, metric: str) -> bool:  # per-class metrics go to metrics.csv, not the progress line
        return not is_per_class(metric)

    def build(self) -> None:
        keras.utils.set_random_seed(self.seed)
        self.model = build_student(self.config, len(self.classes), self.groups)
        if has_groups(self.groups):
            self.logits_model = keras.Model(self.model.inputs,
                                            [self.model.get_layer(f"logits_{g.name}").output for g in self.groups])
        else:
            self.logits_model = keras.Model(self.model.inputs, self.model.get_layer("logits").output)

    def dataset(self, epoch: int) -> tf.data.Dataset:
        from patchcfg.data.augment import build_augmenter
        from patchcfg.data.loading import make_dataset

        seed = self.epoch_seed(epoch)
        aug_cfg = self.distill["augmentation"]
        aug_cfg = self.config["augmentation"] if aug_cfg is None else aug_cfg
        augmenter = build_augmenter(aug_cfg, tuple(self.data_cfg["imshape"]), int(self.data_cfg["channels"]), seed=seed)
        return make_dataset(self.paths, self.data_cfg, batch_size=self.global_batch_size, labels=self.targets,
                            shuffle=True, seed=seed, repeat=True, augmenter=augmenter, drop_remainder=True,
                            cache="memory")

    def compute_loss(self, batch, global_batch_size: int):
        images, targets = batch
        n = len(self.classes)
        teacher_logits, known = targets[:, :n], targets[:, n:]
        from patchcfg.models.classifier import probabilities

        student_logits = probabilities(self.logits_model(images, training=True))
        loss = group_distillation_loss(self.groups, teacher_logits, student_logits,
                                       float(self.distill["temperature"]))
        logs = {}
        if self.distill["label_weight"]:
            student = [tf.nn.softmax(student_logits[:, g.start:g.stop]) if g.softmax
                       else tf.sigmoid(student_logits[:, g.start:g.stop]) for g in self.groups]
            supervised = build_group_loss(self.groups, "masked_bce")(known, tf.concat(student, axis=-1))
            loss = loss + float(self.distill["label_weight"]) * supervised
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return loss / replicas, logs, {}

    def on_epoch_end(self, epoch: int, logs: dict) -> dict:
        from patchcfg.tasks.predict import predict_arrays

        if not len(self.val_images):
            return {}
        from patchcfg.data.crops import crops_of, reduce

        probabilities = predict_arrays([self.model], self.val_images, self.data_cfg)
        if crops_of(self.data_cfg) > 1:  # the validation images' cells, reduced per image
            probabilities = reduce(probabilities, crops_of(self.data_cfg), self.data_cfg["crop_reduce"])
        return grouped_metrics(self.val_labels, probabilities, self.classes, self.groups)
