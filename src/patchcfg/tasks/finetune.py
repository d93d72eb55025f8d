"""Fine-tuning's model and task: a classifier (encoder + head) on one fold x training phase.

A training phase is one entry of ``finetune.stages`` (Musket's "stages": epochs, lr, loss,
(un)freezing, ...); it is called a phase in code so as not to be taken for a pipeline stage.
Batches come from patchwork's stratified sampler; the loss is masked, so unknown labels never
count; FixMatch (Sohn et al. 2020) optionally learns from the unlabelled rows. The pipeline stage
that runs the folds and their phases is :mod:`patchcfg.stages.finetune`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from patchcfg.errors import UserError
from patchcfg.label_groups import has_groups
from patchcfg.losses import build_group_loss
from patchcfg.metrics import grouped_metrics, is_per_class, metric_mode
from patchcfg.train.loop import TrainTask

# --------------------------------------------------------------------------- phase settings

def phase_settings(finetune: dict, encoder_pretrained: bool) -> list[dict]:
    """Each training phase (``finetune.stages``) with everything resolved: lr, loss, negatives,
    frozen, callbacks, steps."""
    optimizer, sampler = finetune["optimizer"], finetune["sampler"]
    frozen = encoder_pretrained  # a random encoder is trained from the start unless told otherwise
    resolved = []
    for index, phase in enumerate(finetune["stages"]):
        if "freeze_encoder" in phase:
            frozen = bool(phase["freeze_encoder"])
        elif "unfreeze_encoder" in phase:
            frozen = not phase["unfreeze_encoder"]
        resolved.append({
            "index": index,
            "epochs": int(phase["epochs"]),
            "lr": float(phase.get("lr", optimizer["lr"])),
            "loss": phase.get("loss", finetune["loss"]),
            "negatives": phase.get("negatives", sampler["negatives"]),
            "frozen": frozen,
            "initial_weights": phase.get("initial_weights"),
            "callbacks": phase.get("callbacks", finetune["callbacks"]),
            "steps_per_epoch": phase.get("steps_per_epoch", finetune["steps_per_epoch"]),
        })
    return resolved


def stage_settings(finetune: dict, encoder_pretrained: bool) -> list[dict]:
    """The old name of :func:`phase_settings`; warns (it goes in patchcfg 0.3)."""
    warnings.warn("patchcfg.tasks.finetune.stage_settings is now phase_settings (the old name goes in "
                  "patchcfg 0.3)", DeprecationWarning, stacklevel=2)
    return phase_settings(finetune, encoder_pretrained)


def metric_names(classes: list[str], groups=None) -> list[str]:
    """Every metric a fine-tuning epoch logs (what primary_metric and callbacks may watch)."""
    from patchcfg.metrics import METRICS

    names = ["loss", "val_loss", *(f"val_macro_{m}" for m in METRICS)]
    if has_groups(groups):
        names += [f"val_{g.name}_{m}" for g in groups for m in ("accuracy", "macro_auc")]
    return names + [f"val_{m}_{c}" for m in METRICS for c in classes]


def check_monitored(finetune: dict, classes: list[str], groups=None) -> None:
    """primary_metric and callback monitors must name logged metrics: checked before training."""
    import difflib

    known = metric_names(classes, groups)
    watched = [("finetune.primary_metric", finetune["primary_metric"])]
    for where, spec in [("finetune.callbacks", finetune["callbacks"])] + [
            (f"finetune.stages.{i}.callbacks", phase.get("callbacks") or {})
            for i, phase in enumerate(finetune["stages"])]:
        watched += [(f"{where}.{name}.monitor", kw["monitor"]) for name, kw in spec.items() if (kw or {}).get("monitor")]
    for where, name in watched:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise UserError(f"{where}: '{name}' is not a metric fine-tuning logs{hint}; use loss, val_loss, "
                            "val_macro_<m> or val_<m>_<class> with <m> one of auc, f1, precision, recall, accuracy"
                            + (", or val_<group>_accuracy / val_<group>_macro_auc" if has_groups(groups) else ""))


def primary_mode(finetune: dict) -> str:
    """``primary_metric_mode``, with ``auto`` the primary metric's direction."""
    mode = finetune["primary_metric_mode"]
    if mode != "auto":
        return mode
    return metric_mode(finetune["primary_metric"]) or "max"


# --------------------------------------------------------------------------- the task

class FinetuneTask(TrainTask):
    """One fold x training phase: the classifier, its masked loss and stratified batches; validation
    metrics."""

    def __init__(self, *, config: dict, classes: list[str], encoder_spec: dict, phase: dict,
                 train_paths: list[str], train_labels: np.ndarray, val_paths: list[str],
                 val_labels: np.ndarray, start_weights, seed: int, groups=None):
        from patchcfg.models.outputs import group_classes, resolve_groups

        self.config, self.classes, self.phase = config, classes, phase
        self.groups = groups if groups is not None else resolve_groups(config["finetune"], classes)
        if group_classes(self.groups) != list(classes):
            raise ValueError(f"classes {classes} are not in the output groups' order {group_classes(self.groups)}")
        self.finetune = config["finetune"]
        self.data_cfg = config["data"]
        self.encoder_spec = encoder_spec
        self.train_paths, self.train_labels = train_paths, train_labels
        self.val_paths, self.val_labels = val_paths, val_labels
        self.start_weights = start_weights
        self.seed = seed
        self.loss_fn = build_group_loss(self.groups, phase["loss"])
        self.imshape = tuple(self.data_cfg["imshape"])
        self.channels = int(self.data_cfg["channels"])
        self.model = None
        self._val_images = None
        self._decoded: dict = {}  # the cached training images, decoded once for every epoch
        self.unlabelled_paths: list[str] = []  # FixMatch's images, set by the pipeline stage

    def build(self) -> None:
        keras.utils.set_random_seed(self.seed)
        self.model = build_model(self.config, self.encoder_spec, len(self.classes), self.groups)
        if isinstance(self.start_weights, list):
            self.model.set_weights(self.start_weights)
        elif self.start_weights:
            load_model_weights(self.model, self.start_weights)
        self.model.get_layer("encoder").trainable = not self.phase["frozen"]

    def trainable_variables(self) -> list:
        return list(self.model.trainable_variables)

    def reported(self, metric: str) -> bool:  # per-class metrics go to metrics.csv, not the progress line
        return not is_per_class(metric)

    def augmenter(self, seed: int):
        from patchcfg.data.augment import build_augmenter

        aug_cfg = self.finetune["augmentation"]
        if aug_cfg is None:
            aug_cfg = self.config["augmentation"]
        return build_augmenter(aug_cfg, self.imshape, self.channels, seed=seed)

    def dataset(self, epoch: int) -> tf.data.Dataset:
        from patchcfg.data.sampling import make_labelled_dataset, sampler_from_config

        sampler = sampler_from_config(self.finetune["sampler"], negatives=self.phase["negatives"])
        seed = self.epoch_seed(epoch)
        labelled = make_labelled_dataset(self.train_paths, self.train_labels, self.data_cfg, sampler=sampler,
                                         batch_size=self.global_batch_size, seed=seed,
                                         augmenter=self.augmenter(seed), cache="memory", memo=self._decoded)
        if not self.fixmatch_enabled:
            return labelled
        return tf.data.Dataset.zip(labelled, self._unlabelled_dataset(seed))

    # ------------------------------------------------------------------ FixMatch
    @property
    def fixmatch_enabled(self) -> bool:
        return self.finetune["fixmatch"]["enabled"] and bool(self.unlabelled_paths)

    def _unlabelled_dataset(self, seed: int) -> tf.data.Dataset:
        """Weak (flip) and strong (fine-tuning's augmentation) views of mu x batch unlabelled images."""
        from patchcfg.data.loading import make_dataset

        mu = int(self.finetune["fixmatch"]["mu"])
        strong = self.augmenter(seed + 1)
        ds = make_dataset(self.unlabelled_paths, self.data_cfg, batch_size=mu * self.global_batch_size,
                          shuffle=True, seed=seed, repeat=True, drop_remainder=True)
        seeds = tf.data.Dataset.random(seed=seed).batch(2)

        def views(images, pair):
            flip = tf.random.stateless_uniform([tf.shape(images)[0], 1, 1, 1], pair) < 0.5
            weak = tf.where(flip, tf.reverse(images, [2]), images)
            return weak, strong(images, tf.random.experimental.stateless_fold_in(pair, 1))

        return tf.data.Dataset.zip(ds, seeds).map(views, num_parallel_calls=tf.data.AUTOTUNE)

    def fixmatch_loss(self, weak, strong):
        """FixMatch (Sohn et al. 2020) per output group: the weak view's confident answers
        (:func:`pseudo_labels`) are what the strong view learns, with the phase's loss over the
        groups (as the labelled rows); the other entries count as unknown."""
        from patchcfg.models.classifier import probabilities

        p_weak = tf.stop_gradient(probabilities(self.model(weak, training=True)))
        pseudo = pseudo_labels(p_weak, self.groups, float(self.finetune["fixmatch"]["threshold"]))
        loss = self.loss_fn(pseudo, probabilities(self.model(strong, training=True)))
        return loss, tf.reduce_mean(tf.cast(pseudo >= 0, tf.float32))

    def compute_loss(self, batch, global_batch_size: int):
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        logs = {}
        if self.fixmatch_enabled:
            (images, labels), (weak, strong) = batch
        else:
            images, labels = batch
        from patchcfg.models.classifier import probabilities

        predictions = probabilities(self.model(images, training=True))
        loss = tf.cast(self.loss_fn(labels, predictions), tf.float32)
        if self.fixmatch_enabled:
            unlabelled, confident = self.fixmatch_loss(weak, strong)
            loss = loss + float(self.finetune["fixmatch"]["weight"]) * unlabelled
            logs = {"loss_unlabelled": unlabelled / replicas, "pseudo_label_fraction": confident / replicas}
        return loss / replicas, logs, {}

    def on_train_begin(self, loop) -> None:
        self.model.optimizer = loop.optimizer  # for ReduceLROnPlateau / CyclicLR

    def predict_validation(self) -> np.ndarray:
        """The model's probabilities on the validation rows (with the configured TTA)."""
        from patchcfg.data.crops import crops_of, load_cells, reduce
        from patchcfg.data.loading import load_images
        from patchcfg.tasks.predict import predict_arrays

        n = crops_of(self.data_cfg)
        if self._val_images is None:  # with crops: every validation image's cells
            self._val_images = (load_cells(self.val_paths, self.data_cfg) if n > 1
                                else load_images(self.val_paths, self.data_cfg))
        probabilities = predict_arrays([self.model], self._val_images, self.data_cfg, self.finetune["tta"])
        return reduce(probabilities, n, self.data_cfg["crop_reduce"]) if n > 1 else probabilities

    def on_epoch_end(self, epoch: int, logs: dict) -> dict:
        probabilities = self.predict_validation()
        out = {"val_loss": float(self.loss_fn(self.val_labels, probabilities))}
        out.update(grouped_metrics(self.val_labels, probabilities, self.classes, self.groups,
                                   threshold=self.finetune["output"]["threshold"]))
        return out


def pseudo_labels(p_weak, groups, threshold: float):
    """FixMatch's pseudo-labels (Sohn et al. 2020) in 1 / 0 / -1 (unknown), per output group.

    A sigmoid group's class is 1 where p >= threshold, 0 where p <= 1 - threshold, else unknown;
    a softmax group's row is the one-hot of its most likely class where that class's probability
    is >= threshold (the paper's rule), else unknown in full."""
    sigmoid = tf.where(p_weak >= threshold, 1.0, tf.where(p_weak <= 1.0 - threshold, 0.0, -1.0))
    parts = []
    for group in groups:
        if not group.softmax:
            parts.append(sigmoid[:, group.start:group.stop])
            continue
        p = p_weak[:, group.start:group.stop]
        confident = tf.reduce_max(p, axis=-1, keepdims=True) >= threshold
        parts.append(tf.where(confident, tf.one_hot(tf.argmax(p, axis=-1), group.stop - group.start), -1.0))
    return tf.concat(parts, axis=-1)


# --------------------------------------------------------------------------- models

def resolve_encoder_spec(config: dict, experiment_dir: Path) -> tuple[dict, bool]:
    """The backbone spec the classifier's encoder is built from, and whether the first phase freezes
    it by default: it carries weights (pretrained, a file, ImageNet, a KerasHub preset) or the
    backbone says ``trainable: false``."""
    from patchcfg.models.classifier import encoder_needs_feature_map

    finetune = config["finetune"]
    spec = dict(config["backbone"])
    if encoder_needs_feature_map(finetune["head"]):
        spec["pooling"] = "none"
    source = finetune["encoder"]
    if source == "auto":
        source = "pretrain" if config.get("pretrain") else None
    if source == "pretrain":
        path = experiment_dir / "pretrain" / "encoder.keras"
        if not path.is_file():
            raise UserError(
                f"finetune.encoder: pretrain, but {path} does not exist; run `patchcfg pretrain` on this "
                "config first (or `patchcfg run`), or set finetune.encoder to a path or null")
        spec["weights"] = str(path)
    elif source:
        if not Path(source).is_file():
            raise UserError(f"finetune.encoder: {source} does not exist (a .keras encoder or .weights.h5 file)")
        spec["weights"] = str(source)
    carries_weights = spec.get("weights") is not None or str(spec.get("name", "")).lower() == "keras_hub"
    return spec, carries_weights or spec.get("trainable") is False


def build_model(config: dict, encoder_spec: dict, n_classes: int, groups=None) -> keras.Model:
    """The classifier; with output groups (:mod:`patchcfg.models.outputs`) one output per group."""
    from patchcfg.models.backbones import build_backbone
    from patchcfg.models.classifier import build_classifier

    data = config["data"]
    encoder = build_backbone(encoder_spec, (*data["imshape"], data["channels"]), name="encoder")
    return build_classifier(encoder, n_classes, config["finetune"]["head"], config["finetune"]["output"],
                            groups=groups)


def load_model_weights(model: keras.Model, path: str | Path) -> None:
    """Weights from a ``.weights.h5`` file or a saved ``model.keras`` of the same architecture."""
    path = str(path)
    try:
        if path.endswith(".keras"):
            import patchcfg.models.backbones  # noqa: F401  (registers custom layers)

            model.set_weights(keras.saving.load_model(path, compile=False).get_weights())
        else:
            model.load_weights(path)
    except (ValueError, OSError) as error:
        raise UserError(f"initial_weights: {path} does not fit this model ({str(error)[:300]})") from None


