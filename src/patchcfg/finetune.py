"""Fine-tuning: a classifier on the partially labelled label table, over folds and stages.

Musket's semantics: each stage (``epochs``, ``lr``, ``loss``, ``negatives``, ``freeze_encoder`` /
``unfreeze_encoder``, ``initial_weights``, ``callbacks``) starts from the previous stage's best
weights (best by ``primary_metric``); with ``folds_count`` k > 1 every fold trains on the other
folds' labelled rows and is scored on its own, the ``validation`` rows being a holdout scored by
the fold ensemble. Batches come from patchwork's stratified sampler; the loss is masked, so
unknown labels never count. Every fold x stage is a resumable unit: an interrupted run resumes
from the last checkpoint of the unit it was in, and finished units are not trained again.

Outputs in ``experiments/<name>/finetune/``: ``fold_<k>/model.keras`` (best weights),
``metrics.csv`` (fold, stage, epoch rows), ``predictions.csv`` (out-of-fold and holdout
probabilities beside the known labels), ``summary.json`` (per fold, mean and std),
``roc_fold_<k>.png`` and ``folds.csv``.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from patchcfg.errors import UserError
from patchcfg.losses import build_loss
from patchcfg.metrics import is_per_class, masked_metrics
from patchcfg.train.loop import TrainLoop, TrainTask, best_metrics, flatten_config, metric_mode

HOLDOUT = -1


# --------------------------------------------------------------------------- stage settings

def stage_settings(finetune: dict, encoder_pretrained: bool) -> list[dict]:
    """Each stage with everything resolved: lr, loss, negatives, frozen, callbacks, steps."""
    optimizer = finetune.get("optimizer") or {}
    sampler = finetune.get("sampler") or {}
    frozen = encoder_pretrained  # a random encoder is trained from the start unless told otherwise
    resolved = []
    for index, stage in enumerate(finetune["stages"]):
        if "freeze_encoder" in stage:
            frozen = bool(stage["freeze_encoder"])
        elif "unfreeze_encoder" in stage:
            frozen = not stage["unfreeze_encoder"]
        resolved.append({
            "index": index,
            "epochs": int(stage["epochs"]),
            "lr": float(stage.get("lr", optimizer.get("lr", 1e-3))),
            "loss": stage.get("loss", finetune.get("loss", "masked_bce")),
            "negatives": stage.get("negatives", sampler.get("negatives", "real")),
            "frozen": frozen,
            "initial_weights": stage.get("initial_weights"),
            "callbacks": stage["callbacks"] if "callbacks" in stage else (finetune.get("callbacks") or {}),
            "steps_per_epoch": stage.get("steps_per_epoch", finetune.get("steps_per_epoch")),
        })
    return resolved


def metric_names(classes: list[str]) -> list[str]:
    """Every metric a fine-tuning epoch logs (what primary_metric and callbacks may watch)."""
    from patchcfg.metrics import METRICS

    names = ["loss", "val_loss", *(f"val_macro_{m}" for m in METRICS)]
    return names + [f"val_{m}_{c}" for m in METRICS for c in classes]


def check_monitored(finetune: dict, classes: list[str]) -> None:
    """primary_metric and callback monitors must name logged metrics: checked before training."""
    import difflib

    known = metric_names(classes)
    watched = [("finetune.primary_metric", finetune["primary_metric"])]
    for where, spec in [("finetune.callbacks", finetune.get("callbacks") or {})] + [
            (f"finetune.stages.{i}.callbacks", st.get("callbacks") or {}) for i, st in enumerate(finetune["stages"])]:
        watched += [(f"{where}.{name}.monitor", kw["monitor"]) for name, kw in spec.items() if (kw or {}).get("monitor")]
    for where, name in watched:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise UserError(f"{where}: '{name}' is not a metric fine-tuning logs{hint}; use loss, val_loss, "
                            "val_macro_<m> or val_<m>_<class> with <m> one of auc, f1, precision, recall, accuracy")


def primary_mode(finetune: dict) -> str:
    mode = finetune.get("primary_metric_mode", "auto")
    if mode != "auto":
        return mode
    return metric_mode(finetune.get("primary_metric", "val_macro_auc")) or "max"


# --------------------------------------------------------------------------- a fold x stage as a run

class UnitRun:
    """One fold x stage of the finetune stage, as the training loop sees a run.

    Checkpoints and TensorBoard logs live under ``fold_<k>/stage_<s>/``; metric rows go to the
    stage's one ``metrics.csv`` with ``fold`` and ``stage`` columns.
    """

    def __init__(self, run, fold: int, stage: int):
        self.parent, self.fold, self.stage = run, fold, stage
        self.is_chief = run.is_chief
        self.dir = run.dir / f"fold_{fold}" / f"stage_{stage}"

    @property
    def checkpoint_dir(self) -> Path:
        if self.is_chief:
            return self.dir / "checkpoints"
        return self.parent.checkpoint_dir / f"fold_{self.fold}_stage_{self.stage}"

    @property
    def tensorboard_dir(self) -> Path:
        return self.parent.tensorboard_dir / f"fold_{self.fold}" / f"stage_{self.stage}"

    def append_metrics(self, row: dict) -> None:
        self.parent.append_metrics({"fold": self.fold, "stage": self.stage, **row})

    def read_metrics(self) -> list[dict]:
        return [{k: v for k, v in r.items() if k not in ("fold", "stage")} for r in self.parent.read_metrics()
                if r.get("fold") == self.fold and r.get("stage") == self.stage]

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


class BestWeights(keras.callbacks.Callback):
    """Keep the weights of the best epoch by ``monitor`` (in memory, and on disk for resume)."""

    def __init__(self, monitor: str, mode: str, path: Path | None, state_path: Path | None):
        super().__init__()
        self.monitor, self.mode, self.path, self.state_path = monitor, mode, path, state_path
        self.best, self.best_epoch, self.weights = None, None, None
        if state_path is not None and state_path.is_file() and path is not None and path.is_file():
            state = json.loads(state_path.read_text(encoding="utf-8"))
            self.best, self.best_epoch = state["best"], state["epoch"]
            self._load_from_disk = True
        else:
            self._load_from_disk = False

    def on_train_begin(self, logs=None):
        if self._load_from_disk:
            current = self.model.get_weights()
            self.model.load_weights(str(self.path))
            self.weights = self.model.get_weights()
            self.model.set_weights(current)

    def _better(self, value: float) -> bool:
        if value is None or not math.isfinite(value):
            return False
        if self.best is None:
            return True
        return value > self.best if self.mode == "max" else value < self.best

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise UserError(f"finetune.primary_metric: '{self.monitor}' is not among the metrics "
                            f"({', '.join(sorted(logs or {}))})")
        if self._better(float(value)):
            self.best, self.best_epoch = float(value), epoch + 1
            self.weights = self.model.get_weights()
            if self.path is not None:
                from patchcfg.atomic import atomic_write_json

                tmp = self.path.with_name(".tmp-" + self.path.name)
                tmp.parent.mkdir(parents=True, exist_ok=True)
                self.model.save_weights(str(tmp))
                tmp.replace(self.path)
                atomic_write_json(self.state_path, {"best": self.best, "epoch": self.best_epoch})

    def restore(self) -> None:
        if self.weights is not None:
            self.model.set_weights(self.weights)


class CyclicLR(keras.callbacks.Callback):
    """Cyclical learning rates (Smith 2017, "Cyclical Learning Rates for Training Neural Networks").

    ``triangular``: linear up and down between base_lr and max_lr every 2 x step_size steps;
    ``triangular2``: the amplitude halves each cycle; ``exp_range``: amplitude x gamma^step.
    """

    def __init__(self, base_lr=1e-4, max_lr=1e-3, step_size=200, mode="triangular", gamma=1.0):
        super().__init__()
        self.base_lr, self.max_lr, self.step_size = float(base_lr), float(max_lr), int(step_size)
        self.mode, self.gamma = mode, float(gamma)
        self.step = 0

    def lr_at(self, step: int) -> float:
        cycle = math.floor(1 + step / (2 * self.step_size))
        x = abs(step / self.step_size - 2 * cycle + 1)
        amplitude = (self.max_lr - self.base_lr) * max(0.0, 1 - x)
        if self.mode == "triangular2":
            amplitude /= 2 ** (cycle - 1)
        elif self.mode == "exp_range":
            amplitude *= self.gamma ** step
        return self.base_lr + amplitude

    def on_train_batch_begin(self, batch, logs=None):
        self.model.optimizer.learning_rate.assign(self.lr_at(self.step))
        self.step += 1

    def on_train_batch_end(self, batch, logs=None):
        # The loop calls only *_end for batches: set the next step's rate here.
        self.on_train_batch_begin(batch, logs)


def build_stage_callbacks(spec: dict, primary: str, mode: str) -> list:
    callbacks = []
    for name, kwargs in (spec or {}).items():
        kwargs = dict(kwargs or {})
        if name in ("EarlyStopping", "ReduceLROnPlateau"):
            kwargs.setdefault("monitor", primary)
            if kwargs.get("mode", "auto") == "auto":
                kwargs["mode"] = metric_mode(kwargs["monitor"]) or mode
            callbacks.append(getattr(keras.callbacks, name)(**kwargs))
        elif name == "CyclicLR":
            callbacks.append(CyclicLR(**kwargs))
        else:  # the schema allows no other name
            raise UserError(f"finetune.callbacks.{name}: unknown callback")
    return callbacks


# --------------------------------------------------------------------------- the task

class FinetuneTask(TrainTask):
    """One fold x stage: the classifier, its masked loss and stratified batches; validation metrics."""

    def __init__(self, *, config: dict, classes: list[str], encoder_spec: dict, stage: dict,
                 train_paths: list[str], train_labels: np.ndarray, val_paths: list[str],
                 val_labels: np.ndarray, start_weights, seed: int):
        self.config, self.classes, self.stage = config, classes, stage
        self.finetune = config["finetune"]
        self.data_cfg = config["data"]
        self.encoder_spec = encoder_spec
        self.train_paths, self.train_labels = train_paths, train_labels
        self.val_paths, self.val_labels = val_paths, val_labels
        self.start_weights = start_weights
        self.seed = seed
        self.loss_fn = build_loss(stage["loss"])
        self.imshape = tuple(self.data_cfg["imshape"])
        self.channels = int(self.data_cfg["channels"])
        self.model = None
        self._val_images = None
        self._decoded: dict = {}  # the cached training images, decoded once for every epoch
        self.unlabelled_paths: list[str] = []  # FixMatch's images, set by run_finetune

    def build(self) -> None:
        keras.utils.set_random_seed(self.seed)
        self.model = build_model(self.config, self.encoder_spec, len(self.classes))
        if isinstance(self.start_weights, list):
            self.model.set_weights(self.start_weights)
        elif self.start_weights:
            load_model_weights(self.model, self.start_weights)
        self.model.get_layer("encoder").trainable = not self.stage["frozen"]

    def trainable_variables(self) -> list:
        return list(self.model.trainable_variables)

    def reported(self, metric: str) -> bool:  # per-class metrics go to metrics.csv, not the progress line
        return not is_per_class(metric)

    def augmenter(self, seed: int):
        from patchcfg.data.augment import build_augmenter

        aug_cfg = self.finetune.get("augmentation")
        if aug_cfg is None:
            aug_cfg = self.config.get("augmentation") or {}
        return build_augmenter(aug_cfg, self.imshape, self.channels, seed=seed)

    def dataset(self, epoch: int) -> tf.data.Dataset:
        from patchcfg.data.sampling import StratifiedSampler, make_labelled_dataset

        sampler_cfg = self.finetune.get("sampler") or {}
        sampler = StratifiedSampler(type=sampler_cfg.get("type", "stratified"),
                                    weighting=sampler_cfg.get("weighting", "class"),
                                    negatives=self.stage["negatives"])
        seed = (self.seed * 1_000_003 + epoch) % (2 ** 31)
        labelled = make_labelled_dataset(self.train_paths, self.train_labels, self.data_cfg, sampler=sampler,
                                         batch_size=self.global_batch_size, seed=seed,
                                         augmenter=self.augmenter(seed), cache="memory", memo=self._decoded)
        if not self.fixmatch_enabled:
            return labelled
        return tf.data.Dataset.zip(labelled, self._unlabelled_dataset(seed))

    # ------------------------------------------------------------------ FixMatch
    @property
    def fixmatch_enabled(self) -> bool:
        return bool((self.finetune.get("fixmatch") or {}).get("enabled")) and bool(self.unlabelled_paths)

    def _unlabelled_dataset(self, seed: int) -> tf.data.Dataset:
        """Weak (flip) and strong (the stage's augmentation) views of mu x batch unlabelled images."""
        from patchcfg.data.loading import make_dataset

        mu = int(self.finetune["fixmatch"].get("mu", 2))
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
        """FixMatch (Sohn et al. 2020) for multi-hot outputs: each class of the weak view's
        prediction is a pseudo-label where it is confident (p >= tau: 1, p <= 1 - tau: 0), and the
        strong view learns those entries with masked BCE; the others count as unknown."""
        from patchcfg.losses import masked_bce

        tau = float(self.finetune["fixmatch"].get("threshold", 0.95))
        p_weak = tf.stop_gradient(self.model(weak, training=True))
        pseudo = tf.where(p_weak >= tau, 1.0, tf.where(p_weak <= 1.0 - tau, 0.0, -1.0))
        loss = masked_bce(pseudo, self.model(strong, training=True))
        return loss, tf.reduce_mean(tf.cast(pseudo >= 0, tf.float32))

    def compute_loss(self, batch, global_batch_size: int):
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        logs = {}
        if self.fixmatch_enabled:
            (images, labels), (weak, strong) = batch
        else:
            images, labels = batch
        predictions = self.model(images, training=True)
        loss = tf.cast(self.loss_fn(labels, predictions), tf.float32)
        if self.fixmatch_enabled:
            unlabelled, confident = self.fixmatch_loss(weak, strong)
            loss = loss + float(self.finetune["fixmatch"].get("weight", 1.0)) * unlabelled
            logs = {"loss_unlabelled": unlabelled / replicas, "pseudo_label_fraction": confident / replicas}
        return loss / replicas, logs, {}

    def on_train_begin(self, loop) -> None:
        self.model.optimizer = loop.optimizer  # for ReduceLROnPlateau / CyclicLR

    def predict_validation(self) -> np.ndarray:
        """The model's probabilities on the validation rows (with the configured TTA)."""
        from patchcfg.data.loading import load_images
        from patchcfg.predict import predict_arrays

        if self._val_images is None:
            self._val_images = load_images(self.val_paths, self.data_cfg)
        return predict_arrays([self.model], self._val_images, self.data_cfg, self.finetune.get("tta", "none"))

    def on_epoch_end(self, epoch: int, logs: dict) -> dict:
        probabilities = self.predict_validation()
        out = {"val_loss": float(self.loss_fn(self.val_labels, probabilities))}
        out.update(masked_metrics(self.val_labels, probabilities, self.classes,
                                  threshold=self.finetune["output"]["threshold"]))
        return out


# --------------------------------------------------------------------------- models

def resolve_encoder_spec(config: dict, experiment_dir: Path) -> tuple[dict, bool]:
    """The backbone spec the classifier's encoder is built from, and whether it carries weights."""
    from patchcfg.models.classifier import encoder_needs_feature_map

    finetune = config["finetune"]
    spec = dict(config.get("backbone") or {})
    if encoder_needs_feature_map(finetune.get("head") or {}):
        spec["pooling"] = "none"
    source = finetune.get("encoder", "auto")
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
    return spec, spec.get("weights") is not None


def build_model(config: dict, encoder_spec: dict, n_classes: int) -> keras.Model:
    from patchcfg.models.backbones import build_backbone
    from patchcfg.models.classifier import build_classifier

    data = config["data"]
    encoder = build_backbone(encoder_spec, (*data["imshape"], data["channels"]), name="encoder")
    return build_classifier(encoder, n_classes, config["finetune"].get("head") or {},
                            config["finetune"].get("output") or {})


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


# --------------------------------------------------------------------------- the stage

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


def _usable_rows(table, classes, data_cfg, say) -> tuple[np.ndarray, list[dict]]:
    """Rows with a readable image among the labelled, not excluded ones (``on_bad_image``)."""
    from patchcfg.data.loading import check_images

    labels = table.label_matrix(classes)
    candidates = np.flatnonzero((labels >= 0).any(axis=1) & ~table.exclude)
    paths = table.resolved_paths()
    good, skipped = check_images([paths[i] for i in candidates], data_cfg.get("on_bad_image", "error"),
                                 data_cfg=data_cfg)
    if skipped:
        say(f"skipped {len(skipped)} unreadable image(s); listed in summary.json")
    good = set(good)
    usable = np.zeros(len(table), bool)
    usable[[i for i in candidates if paths[i] in good]] = True
    return usable, skipped


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


class _FoldTrainer:
    """Trains one fold's stages in order, each a resumable unit starting from the previous best."""

    def __init__(self, *, config, classes, paths, labels, run, encoder_spec, stages, strategy, unlabelled,
                 verbose, log, say):
        self.config, self.classes, self.paths, self.labels = config, classes, paths, labels
        self.run, self.encoder_spec, self.stages, self.strategy = run, encoder_spec, stages, strategy
        self.unlabelled, self.verbose, self.log, self.say = unlabelled, verbose, log, say
        self.finetune = config["finetune"]
        self.primary, self.mode = self.finetune["primary_metric"], primary_mode(self.finetune)

    def train_fold(self, fold: int, train_rows, val_rows) -> keras.Model:
        """The fold's model with its last stage's best weights."""
        weights = None
        for stage in self.stages:
            weights = self.train_unit(fold, stage, train_rows, val_rows, weights)
        model = build_model(self.config, self.encoder_spec, len(self.classes))
        if isinstance(weights, list):
            model.set_weights(weights)
        else:
            load_model_weights(model, weights)
        return model

    def train_unit(self, fold: int, stage: dict, train_rows, val_rows, weights):
        """Train one fold x stage (or skip it when done); returns its best weights (list or file)."""
        from patchcfg.atomic import atomic_write_json

        unit, say, primary = UnitRun(self.run, fold, stage["index"]), self.say, self.primary
        done = unit.done()
        if done is not None and unit.best_weights_path.is_file():
            say(f"fold {fold + 1} stage {stage['index'] + 1}: already trained (best {primary} {done['best']:.4g}); "
                "skipping")
            return str(unit.best_weights_path)
        gbs = int(self.finetune["batch_size"])
        steps = int(stage["steps_per_epoch"] or max(1, math.ceil(len(train_rows) / gbs)))
        task = FinetuneTask(
            config=self.config, classes=self.classes, encoder_spec=self.encoder_spec, stage=stage,
            train_paths=list(self.paths[train_rows]), train_labels=self.labels[train_rows],
            val_paths=list(self.paths[val_rows]), val_labels=self.labels[val_rows],
            start_weights=stage["initial_weights"] or weights,
            seed=int(self.config["seed"]) * 100 + fold * 10 + stage["index"])
        task.global_batch_size = gbs
        task.unlabelled_paths = self.unlabelled
        chief = self.run.is_chief
        best = BestWeights(primary, self.mode, unit.best_weights_path if chief else None,
                           unit.dir / "best.json" if chief else None)
        optimizer_cfg = {**(self.finetune.get("optimizer") or {}), "lr": stage["lr"]}
        if any(n in stage["callbacks"] for n in ("ReduceLROnPlateau", "CyclicLR")):
            optimizer_cfg["schedule"] = "constant"  # the callback owns the learning rate
        say(f"fold {fold + 1} stage {stage['index'] + 1}: {stage['epochs']} epochs x {steps} steps, "
            f"lr {stage['lr']:g}, loss {stage['loss']}, encoder {'frozen' if stage['frozen'] else 'trained'}")
        first = fold == 0 and stage["index"] == 0
        hparams = flatten_config({k: v for k, v in self.config.items() if k not in ("name", "description")})
        loop = TrainLoop(task, run=unit, strategy=self.strategy, epochs=stage["epochs"], steps_per_epoch=steps,
                         global_batch_size=gbs, optimizer_config=optimizer_cfg,
                         callbacks=[best, *build_stage_callbacks(stage["callbacks"], primary, self.mode)],
                         hparams=hparams if first else None, trial_id=self.config["name"],
                         verbose=self.verbose, log=self.log)
        loop.fit()
        best.restore()
        if chief:
            unit.dir.mkdir(parents=True, exist_ok=True)
            if not unit.best_weights_path.is_file():
                task.model.save_weights(str(unit.best_weights_path))
            atomic_write_json(unit.done_path, {"best": best.best, "epoch": best.best_epoch, "metric": primary})
        return task.model.get_weights()


def run_finetune(config: dict, root=None, force: bool = False, *, strategy=None, verbose="auto", log=None) -> dict:
    """Run the finetune stage of a resolved config (skipped if complete, resumed if interrupted)."""
    import pandas as pd

    from patchcfg.atomic import atomic_write_text
    from patchcfg.data.folds import load_or_assign_folds
    from patchcfg.data.loading import check_images, load_images
    from patchcfg.experiment import Experiment, file_digest, stage_logs
    from patchcfg.labels import read_label_table
    from patchcfg.predict import predict_arrays
    from patchcfg.train import distribute

    chief = distribute.is_chief()
    log, say = stage_logs(log, verbose, chief)
    finetune, data_cfg = config["finetune"], config["data"]
    if not data_cfg.get("labels"):
        raise UserError("finetune needs a label table: set data.labels in the config or pass --labels labels.csv")
    if not Path(data_cfg["labels"]).is_file():
        raise UserError(f"data.labels: {data_cfg['labels']} not found")
    experiment = Experiment(config, root=root, force=force, is_chief=chief)
    run = experiment.stage("finetune", inputs={"labels_sha256": file_digest(data_cfg["labels"])})
    if run.is_complete():
        say(run.skip_message())
        return run.read_summary()
    if run.inputs_changed():
        say(f"{data_cfg['labels']} changed since the last finetune of '{config['name']}': training afresh")
    table = read_label_table(data_cfg["labels"])
    classes = finetune.get("classes") or table.classes
    missing = [c for c in classes if c not in table.classes]
    if missing:
        raise UserError(f"finetune.classes: {', '.join(missing)} not in {data_cfg['labels']} "
                        f"(its classes: {', '.join(table.classes)})")
    if not classes:
        raise UserError(f"{data_cfg['labels']}: no class columns; add one with `patchcfg labels add-class`")
    check_monitored(finetune, classes)
    strategy = strategy or distribute.make_strategy((config.get("distribute") or {}).get("strategy", "auto"))
    primary, mode = finetune["primary_metric"], primary_mode(finetune)
    k = int(finetune.get("folds_count") or 1)
    started = time.time()
    with run:
        run.update_env(**distribute.describe(strategy))
        encoder_spec, pretrained = resolve_encoder_spec(config, experiment.dir)
        stages = stage_settings(finetune, pretrained)
        usable, skipped = _usable_rows(table, classes, data_cfg, say)
        folds = load_or_assign_folds(table, k, int(config["seed"]), run.dir) if chief else \
            load_or_assign_folds(table, k, int(config["seed"]), run.checkpoint_dir)
        paths = np.array(table.resolved_paths())
        labels = table.label_matrix(classes)
        per_fold, prediction_rows, holdout = {}, [], []
        unlabelled = list(paths[~table.exclude & ~table.validation & ~(labels >= 0).any(axis=1)]) \
            if (finetune.get("fixmatch") or {}).get("enabled") else []
        if unlabelled:
            unlabelled, _ = check_images(unlabelled, data_cfg.get("on_bad_image", "error"), data_cfg=data_cfg)
            say(f"fixmatch: {len(unlabelled)} unlabelled images")
        trainer = _FoldTrainer(config=config, classes=classes, paths=paths, labels=labels, run=run,
                               encoder_spec=encoder_spec, stages=stages, strategy=strategy, unlabelled=unlabelled,
                               verbose=verbose, log=log, say=say)
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
            probabilities = predict_arrays([model], load_images(list(paths[val_rows]), data_cfg), data_cfg,
                                           finetune.get("tta", "none"))
            per_fold[fold] = masked_metrics(labels[val_rows], probabilities, classes,
                                            threshold=finetune["output"]["threshold"])
            per_fold[fold]["val_loss"] = float(build_loss(stages[-1]["loss"])(labels[val_rows], probabilities))
            split = "oof" if k > 1 else "validation"
            prediction_rows += _prediction_rows(paths[val_rows], labels[val_rows], probabilities, classes, split, fold)
            if chief:
                model.save(run.path(f"fold_{fold}") / "model.keras")
                if finetune.get("roc_plot", True):
                    _roc_plot(run.path(f"roc_fold_{fold}.png"), labels[val_rows], probabilities, classes,
                              f"{config['name']}: fold {fold} ({split})")
            if k > 1:
                holdout.append(model)
        summary: dict[str, Any] = {"classes": classes, "folds_count": k, "primary_metric": primary,
                                   "primary_metric_mode": mode, "folds": {str(f): m for f, m in per_fold.items()}}
        summary["mean"], summary["std"] = _mean_std(per_fold)
        if k > 1:
            holdout_rows = np.flatnonzero(usable & (folds == HOLDOUT))
            if len(holdout_rows):
                probabilities = predict_arrays(holdout, load_images(list(paths[holdout_rows]), data_cfg), data_cfg,
                                               finetune.get("tta", "none"))
                summary["holdout"] = masked_metrics(labels[holdout_rows], probabilities, classes,
                                                    threshold=finetune["output"]["threshold"])
                prediction_rows += _prediction_rows(paths[holdout_rows], labels[holdout_rows], probabilities,
                                                    classes, "validation", "ensemble")
        summary["best_epochs"] = best_metrics_by_unit(run, k, len(stages), primary)
        summary.update({"skipped_images": len(skipped), "skipped": skipped,
                        "seconds": round(time.time() - started, 3)})
        if chief:
            frame = pd.DataFrame(prediction_rows)
            atomic_write_text(run.path("predictions.csv"), frame.to_csv(index=False, lineterminator="\n"))
        run.write_summary(summary)
        say(f"finetune done: {primary} {summary['mean'].get(primary, float('nan')):.4f}"
            + (f" ± {summary['std'].get(primary, 0):.4f} over {k} folds" if k > 1 else "") + f" -> {run.dir}")
    return summary


def best_metrics_by_unit(run, k: int, n_stages: int, primary: str) -> dict:
    rows = run.read_metrics()
    out = {}
    for fold in range(k):
        for stage in range(n_stages):
            unit_rows = [r for r in rows if r.get("fold") == fold and r.get("stage") == stage]
            best = best_metrics(unit_rows).get(primary)
            if best:
                out[f"fold_{fold}_stage_{stage}"] = best
    return out
