"""What every pretraining method shares: parameters, encoder, projection head, data, state, monitoring.

:class:`PretrainMethod` is the general base (DeepCluster, the context encoder and multitask build on
it directly): a method gives its loss (:meth:`PretrainMethod.compute_loss`) and, when it has any,
its extra state. Contrastive methods build on :class:`patchcfg.pretrain.two_view.TwoViewMethod`
(paired views, negatives gathered over replicas); a momentum encoder is
:class:`patchcfg.pretrain.momentum.MomentumEncoder`. Losses are pure functions in
:mod:`patchcfg.pretrain.losses`.

:class:`PretrainMethod` is a :class:`patchcfg.train.loop.TrainTask`: the shared training loop
runs it (strategy, optimizer, checkpoints, metrics, callbacks). :class:`patchcfg.stages.pretrain.PretrainStage` is the whole
stage: experiment folder, data, loop, ``encoder.keras``, ``summary.json``.
"""

from __future__ import annotations

import abc
import tempfile
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from patchcfg.errors import UserError
from patchcfg.models.layers import BatchNormalization
from patchcfg.pretrain.params import PretrainParams, build_params
from patchcfg.train.loop import TrainTask


def build_projection_head(input_dim: int, depth: int, units: int, dim: int, batchnorm: bool, *,
                          synchronized: bool, output_batchnorm: bool,
                          model_name: str | None = None) -> keras.Model:
    """The projection head of SimCLR/MoCo v2: ``depth - 1`` x (Dense(units) [+ BN] + ReLU), then
    Dense(dim) [+ BN, without the Dense's bias: SimCLR v2, Chen et al. 2020b]; ``depth == 0`` is the
    identity. BYOL's predictor is the same MLP (``model_name`` ``predictor``)."""
    inputs = keras.Input(shape=(input_dim,), name="features")
    x = inputs
    for i in range(max(0, depth - 1)):
        x = keras.layers.Dense(units, use_bias=not batchnorm, name=f"hidden_{i}")(x)
        if batchnorm:
            x = BatchNormalization(synchronized=synchronized, name=f"bn_{i}")(x)
        x = keras.layers.ReLU(name=f"relu_{i}")(x)
    if depth > 0:
        x = keras.layers.Dense(dim, use_bias=not output_batchnorm, name="projection")(x)
        if output_batchnorm:
            x = BatchNormalization(synchronized=synchronized, name="bn_projection")(x)
    return keras.Model(inputs, x, name=model_name or "projection_head")


class PretrainMethod(TrainTask, metaclass=abc.ABCMeta):
    """Base of the pretraining methods. Subclasses implement :meth:`compute_loss`, declare the keys
    they read in ``Params`` and may add state in :meth:`build_state` / :meth:`extra_state` and a
    cross-replica :meth:`after_step`.

    Args:
        config: the resolved config (``pretrain``, ``data``, ``backbone``, ``augmentation``, ``seed``).
        paths: the training images.
        probe: a :class:`patchcfg.train.monitor.LinearProbe` and the paths of its rows, or None.
        encoder: a ready encoder (tests, custom models); default: ``build_backbone(config["backbone"])``.
        channels: channels the images have (default ``data.channels``).
        workdir: a folder for what the method computes once and a resumed run reuses (DetCon's
            segments); default: a temporary folder, removed with the method.
    """

    name = "base"
    #: the method's parameters (a dataclass extending :class:`PretrainParams`), read by
    #: :func:`~patchcfg.pretrain.params.build_params` from the resolved ``pretrain`` section
    Params = PretrainParams
    #: one sentence on the method (its paper cited) for the description of ``pretrain.method``
    summary = ""
    #: the keys of ``pretrain`` the method reads besides the common ones: each key's JSON schema (type,
    #: bounds, ``default``, ``description``), written into schemas/pretrain.schema.json (the one place
    #: its default is stated); a subclass adds to its bases' keys (:func:`patchcfg.pretrain.method_keys`)
    config_keys: dict[str, dict] = {}
    #: augmented views per image in a training batch of :meth:`views_dataset`: 1 = one batch,
    #: 2 = a tuple of two batches (:class:`~patchcfg.pretrain.two_view.TwoViewMethod`)
    views = 1

    def __init__(self, config: dict, paths: list[str], *, probe=None, probe_paths=None, encoder=None,
                 channels: int | None = None, workdir=None):
        self.config = config
        self.params = build_params(self.Params, config["pretrain"])
        self.seed = int(config["seed"])
        self.data_cfg = dict(config["data"])
        self.backbone_cfg = dict(config["backbone"])
        self.aug_cfg = config["augmentation"]
        self.imshape = tuple(int(v) for v in self.data_cfg["imshape"])
        self.channels = int(channels or self.data_cfg["channels"])
        self.input_shape = (*self.imshape, self.channels)
        self.temperature = float(self.params.temperature)
        self.global_batch_size = int(self.params.batch_size)
        self.epochs = int(self.params.epochs)
        self.paths = list(paths)
        self.probe = probe
        self.probe_paths = list(probe_paths or [])
        self._encoder = encoder
        self._workdir = workdir
        self.encoder = self.head = self.model = None
        #: a predictor on the head (BYOL, SimSiam, NNCLR...), built in ``build_state``; trained and
        #: checkpointed with encoder and head when set
        self.predictor = None
        self.optimizer = None
        self._fixed_views = None
        self._pipeline = None
        self._augmenter = None
        self.steps_per_epoch = self.params.steps_per_epoch

    def workdir(self) -> Path:
        """The folder for files the method computes once (see ``workdir`` above)."""
        if self._workdir is None:
            self._temporary = tempfile.TemporaryDirectory(prefix=f"patchcfg-{self.name}-")
            self._workdir = self._temporary.name
        return Path(self._workdir)

    # ------------------------------------------------------------------ models and state
    def build(self) -> None:
        keras.utils.set_random_seed(self.seed)
        self.encoder = self.build_encoder()
        if len(self.encoder.output_shape) != 2:
            raise UserError(f"backbone.pooling: pretraining with {self.name} saves a pooled encoder (batch, D), "
                            "not a feature map; set backbone.pooling to avg or max")
        self.head = self.build_head(int(self.encoder.output_shape[-1]))
        inputs = keras.Input(shape=self.input_shape, name="image")
        self.model = keras.Model(inputs, self.head(self.encoder(inputs)), name=f"{self.name}_pretrain")
        self.build_state()

    def epoch_steps(self) -> int:
        """Steps of an epoch when ``steps_per_epoch`` is null: one pass over the images."""
        return max(1, len(self.paths) // self.global_batch_size)

    def epoch_draws(self) -> int:
        """Images one epoch trains on: its steps times the global batch."""
        return (self.steps_per_epoch or self.epoch_steps()) * self.global_batch_size

    def build_encoder(self) -> keras.Model:
        """The encoder trained and saved: the one given, else ``backbone`` built for the images."""
        if self._encoder is not None:
            return self._encoder
        from patchcfg.models.backbones import build_backbone

        return build_backbone(self.backbone_cfg, self.input_shape)

    def build_head(self, features: int, dim: int | None = None, min_depth: int = 0) -> keras.Model:
        """The head on the encoder's ``features``: the ``projection`` MLP (at least ``min_depth``
        layers), its last layer ``dim`` wide (default ``projection.dim``)."""
        projection = self.params.projection
        return build_projection_head(features, max(projection.depth, min_depth), projection.units,
                                     dim or projection.dim, projection.batchnorm,
                                     synchronized=bool(self.backbone_cfg["sync_batchnorm"]),
                                     output_batchnorm=projection.output_batchnorm)

    def build_predictor(self, predictor) -> keras.Model:
        """BYOL's predictor (Grill et al. 2020) on the head's output: Dense(``predictor.units``)
        [+ BN] + ReLU, then back to the head's width (a :class:`~patchcfg.pretrain.params.Predictor`)."""
        dim = int(self.head.output_shape[-1])
        return build_projection_head(dim, 2, predictor.units, dim, predictor.batchnorm,  # no BN on its output
                                     synchronized=bool(self.backbone_cfg["sync_batchnorm"]), output_batchnorm=False,
                                     model_name="predictor")

    def build_state(self) -> None:
        """Method state beyond encoder and head (inside ``strategy.scope()``)."""

    def extra_state(self) -> dict[str, Any]:
        """Method state to checkpoint beyond encoder, head and optimizer."""
        return {}

    def checkpoint_items(self) -> dict[str, Any]:
        return {"encoder": self.encoder, "head": self.head, "predictor": self.predictor, **self.extra_state()}

    def trainable_variables(self) -> list:
        variables = list(self.encoder.trainable_variables) + list(self.head.trainable_variables)
        return variables + (list(self.predictor.trainable_variables) if self.predictor is not None else [])

    # ------------------------------------------------------------------ forward and loss
    def embed(self, images, training: bool = True):
        """Projection of ``images`` (float32, not normalised)."""
        return tf.cast(self.head(self.encoder(images, training=training), training=training), tf.float32)

    def predict(self, z, training: bool = True):
        """The predictor's output for the head's output ``z`` (float32)."""
        return tf.cast(self.predictor(z, training=training), tf.float32)

    @abc.abstractmethod
    def compute_loss(self, batch, global_batch_size: int):
        """The method's loss on a replica's share of a batch of :meth:`dataset`: ``(loss, logs, aux)``
        with ``loss`` and ``logs`` shares of global means (``patchcfg.train.distribute.global_mean``)."""

    # ------------------------------------------------------------------ data
    def dataset(self, epoch: int) -> tf.data.Dataset:
        """The epoch's training batches: :meth:`views_dataset` unless a method trains on other data."""
        return self.views_dataset(epoch)

    def augmenter(self):
        """The ``augmentation`` section compiled once (seeded by the run's seed)."""
        if self._augmenter is None:
            from patchcfg.data.augment import build_augmenter

            self._augmenter = build_augmenter(self.aug_cfg, self.imshape, self.channels, seed=self.seed)
        return self._augmenter

    def views_dataset(self, epoch: int) -> tf.data.Dataset:
        """``views`` augmented views of shuffled images; order and augmentation depend on (seed, epoch) only.

        The pipeline is built once, as a ``tf.function`` of the epoch's seed: each epoch gets its own
        order and augmentation without tracing the pipeline's functions again (on 2 cores that
        re-tracing cost about a tenth of a demo epoch).
        """
        if self._pipeline is None:
            from patchcfg.data.loading import make_dataset

            augmenter = self.augmenter()
            # Repeat only when an epoch is longer than one pass: a pipeline that ends by itself does
            # not prepare batches past the end of the epoch that would be thrown away.
            repeat = self.epoch_draws() > len(self.paths)

            @tf.function(input_signature=[tf.TensorSpec([], tf.int64)], autograph=False)
            def pipeline(seed):
                # A fixed seed for this function's own graph: the epoch's seed alone drives the
                # randomness, and tf.data never tests a symbolic seed against a global seed of 0.
                tf.random.set_seed(1)
                return make_dataset(self.paths, self.data_cfg, batch_size=self.global_batch_size, shuffle=True,
                                    seed=seed, repeat=repeat, augmenter=augmenter, views=self.views,
                                    drop_remainder=True)

            self._pipeline = pipeline
        return self._pipeline(tf.constant(self.epoch_seed(epoch), tf.int64))

    def drawn_dataset(self, paths, labels, picks, seed: int) -> tf.data.Dataset:
        """Batches of the augmented images ``paths[picks]`` and their ``labels[picks]``, in the order
        drawn (methods that sample their own epoch: DeepCluster over clusters, multitask over tasks)."""
        from patchcfg.data.loading import make_dataset

        return make_dataset([paths[i] for i in picks], self.data_cfg, batch_size=self.global_batch_size,
                            labels=np.asarray(labels, np.float32)[picks], seed=seed, augmenter=self.augmenter(),
                            drop_remainder=True, cache=False)

    # ------------------------------------------------------------------ monitoring
    def _features(self, paths: list[str]) -> np.ndarray:
        """The encoder's features (N, D) float32 of ``paths``, unaugmented, in one array filled batch
        by batch: the embed stage's pipeline and step (:func:`patchcfg.tasks.embed.embed_batches`), run
        by this process alone (it is called outside the strategy's scope: every worker of a
        multi-worker run computes its own)."""
        from patchcfg.data.loading import image_batches
        from patchcfg.tasks.embed import embed_batches

        batches, channels = image_batches(paths, self.data_cfg, 256)
        out = np.empty((len(paths), int(self.encoder.output_shape[-1])), np.float32)  # filled batch by batch
        done = 0
        for features in embed_batches(self.encoder, batches.prefetch(tf.data.AUTOTUNE), self.data_cfg, channels):
            out[done:done + len(features)] = features
            done += len(features)
        return out

    def _views_for_monitoring(self):
        """Two augmented views of the same (up to) 256 images, drawn once (seeded)."""
        if self._fixed_views is None:
            from patchcfg.data.loading import make_dataset

            rng = np.random.default_rng(self.seed)
            chosen = sorted(rng.choice(len(self.paths), size=min(256, len(self.paths)), replace=False))
            data = make_dataset([self.paths[i] for i in chosen], self.data_cfg, batch_size=256, seed=self.seed,
                                augmenter=self.augmenter(), views=2, cache=False)
            self._fixed_views = next(iter(data))
        return self._fixed_views

    def monitor_due(self, epoch: int) -> bool:
        every = self.params.monitor.every
        return every > 0 and ((epoch + 1) % every == 0 or epoch + 1 == self.epochs)

    def on_epoch_end(self, epoch: int, logs: dict) -> dict:
        from patchcfg.train.monitor import alignment_uniformity

        out: dict[str, float] = {}
        if epoch == 0 and self.params.monitor.views_image:
            v1, v2 = self._views_for_monitoring()
            pairs = tf.concat([v1[:8], v2[:8]], axis=2)  # each image: view 1 | view 2
            shown = pairs if self.channels in (1, 3, 4) else pairs[..., :1]  # else the first channel
            tf.summary.image("augmented_views", tf.clip_by_value(shown, 0.0, 1.0), max_outputs=8)
        if not self.monitor_due(epoch):
            return out
        v1, v2 = self._views_for_monitoring()
        out.update(alignment_uniformity(self.encoder(v1, training=False).numpy(),
                                        self.encoder(v2, training=False).numpy()))
        if self.probe is not None:
            out.update(self.probe.score(self._features(self.probe_paths)))
        return out
