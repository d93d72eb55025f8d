"""Context encoder: learn features by inpainting a hidden rectangle of each image.

Pathak, Krähenbühl, Donahue, Darrell & Efros, "Context Encoders: Feature Learning by Inpainting",
CVPR 2016. A rectangle of each augmented image (``mask_size`` of each side; ``random`` position, or
the paper's ``center``) is replaced by the mean colour of the rest of that image; the encoder's
pooled features go through a decoder (a dense layer to a small feature map, then upsampling
convolutions) that predicts the whole image. The loss is the paper's reconstruction loss, the mean
squared error over the hidden pixels, plus ``context_weight`` times the error over the visible ones
(0 = the paper's). With ``adversarial: {weight, lr}`` the paper's adversarial loss joins in: a
small discriminator (its own Adam at ``lr``) learns to tell real images from inpainted ones, and
the loss becomes ``(1 - weight) * reconstruction + weight * adversarial`` (the paper: 0.001).

Masks are drawn from ``(seed, optimizer step)`` for the global batch, so a resumed run, or one on
more replicas, hides the same rectangles as a straight one. TensorBoard gets ``inpainting`` images
(hidden | predicted | original) on monitored epochs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import keras
import tensorflow as tf

from patchcfg.data.augment import rect_mask
from patchcfg.errors import UserError
from patchcfg.models.layers import BatchNormalization
from patchcfg.pretrain import register
from patchcfg.pretrain.base import PretrainMethod
from patchcfg.pretrain.losses.inpainting import inpainting_loss
from patchcfg.pretrain.params import PretrainParams
from patchcfg.train.distribute import global_mean, replica_rows


def build_decoder(features: int, imshape, channels: int, filters: int, upsamplings: int = 3, *,
                  synchronized: bool) -> keras.Model:
    """Pooled features (B, D) -> an image (B, H, W, channels): Dense to a (H/2^u, W/2^u, filters)
    map, ``u`` x (2x upsampling + 3x3 conv + batch norm + ReLU, halving the filters), a 3x3 conv to
    ``channels`` (linear, so any ``data.normalize`` range can be predicted)."""
    height, width = (int(v) for v in imshape)
    scale = 2 ** upsamplings
    start = (max(1, math.ceil(height / scale)), max(1, math.ceil(width / scale)))
    inputs = keras.Input(shape=(features,), name="features")
    x = keras.layers.Dense(start[0] * start[1] * filters, name="to_map")(inputs)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Reshape((*start, filters))(x)
    for i in range(upsamplings):
        filters = max(8, filters // 2)
        x = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"up_{i}")(x)
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv_{i}")(x)
        x = BatchNormalization(synchronized=synchronized, name=f"bn_{i}")(x)
        x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(channels, 3, padding="same", name="image")(x)
    if (start[0] * scale, start[1] * scale) != (height, width):
        x = keras.layers.Resizing(height, width, name="to_imshape")(x)
    return keras.Model(inputs, x, name="decoder")


def build_discriminator(input_shape, filters: int = 32) -> keras.Model:
    """Real or inpainted? Two stride-2 3x3 convolutions with LeakyReLU (no batch norm, so each image
    is judged alone), global average pooling, one logit. float32 whatever the dtype policy."""
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    for i, width in enumerate((filters, 2 * filters)):
        x = keras.layers.Conv2D(width, 3, strides=2, padding="same", dtype="float32", name=f"conv_{i}")(x)
        x = keras.layers.LeakyReLU(0.2, dtype="float32")(x)
    x = keras.layers.GlobalAveragePooling2D(dtype="float32")(x)
    return keras.Model(inputs, keras.layers.Dense(1, dtype="float32", name="logit")(x), name="discriminator")


def hidden_rectangles(batch, height: int, width: int, seed, size, position: str):
    """(batch, height, width, 1) masks, 1 on each image's hidden rectangle: sides a fraction of the
    image's drawn from ``size`` (a number, or low and high), placed uniformly (``random``) or
    centred (``center``)."""
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 4)
    low, high = (float(size), float(size)) if isinstance(size, int | float) else (float(size[0]), float(size[1]))

    def side(key, pixels):
        fraction = tf.random.stateless_uniform([batch], seed=key, minval=low, maxval=high) if high > low \
            else tf.fill([batch], low)
        return tf.clip_by_value(tf.round(fraction * pixels), 1.0, float(pixels))

    h, w = side(seeds[0], height), side(seeds[1], width)
    if position == "center":
        y0, x0 = tf.floor((height - h) / 2), tf.floor((width - w) / 2)
    else:
        y0 = tf.floor(tf.random.stateless_uniform([batch], seed=seeds[2]) * (height - h + 1))
        x0 = tf.floor(tf.random.stateless_uniform([batch], seed=seeds[3]) * (width - w + 1))
    return rect_mask(batch, height, width, y0, x0, y0 + h, x0 + w)


def hide(images, masks):
    """Each image with its rectangle filled by the mean colour of its visible pixels."""
    visible = 1.0 - masks
    mean = tf.reduce_sum(images * visible, axis=[1, 2], keepdims=True) / tf.maximum(
        tf.reduce_sum(visible, axis=[1, 2], keepdims=True), 1.0)
    return images * visible + mean * masks


@dataclass(frozen=True)
class Adversarial:
    """``pretrain.adversarial``: the paper's adversarial loss."""

    weight: float
    lr: float


@register("context_encoder")
class ContextEncoder(PretrainMethod):
    """Context encoder: the encoder's features must let a decoder fill in a hidden rectangle."""

    summary = ("a decoder fills in a hidden rectangle of each image from the encoder's features (Pathak et "
               "al. 2016).")
    config_keys = {
        "mask_size": {
            "description": ("Side of the hidden rectangle as a fraction of the image's side: a number, or "
                            "[low, high] to draw height and width from (0.5 = a quarter of the area, the "
                            "paper's)."),
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                {
                    "type": "array",
                    "items": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                    "minItems": 2,
                    "maxItems": 2,
                },
            ],
            "default": 0.5,
        },
        "mask_position": {
            "description": "random = anywhere in the image; center = the paper's central region.",
            "enum": ["random", "center"],
            "default": "random",
        },
        "context_weight": {
            "description": ("Weight of the reconstruction error on the visible pixels; 0 = only the hidden "
                            "rectangle counts (the paper's loss)."),
            "type": "number",
            "minimum": 0,
            "default": 0.0,
        },
        "decoder_filters": {
            "description": ("Channels of the decoder's first feature map (halved at each of its three "
                            "upsamplings, at least 8)."),
            "type": "integer",
            "minimum": 8,
            "default": 64,
        },
        "adversarial": {
            "description": ("The paper's adversarial loss: a small discriminator learns to tell real "
                            "images from inpainted ones, and the loss becomes (1 - weight) * "
                            "reconstruction + weight * adversarial; null = reconstruction only."),
            "type": ["object", "null"],
            "additionalProperties": False,
            "default": None,
            "properties": {
                "weight": {
                    "description": "Weight of the adversarial term (the paper: 0.001).",
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "exclusiveMaximum": 1,
                    "default": 0.001,
                },
                "lr": {
                    "description": "Learning rate of the discriminator's Adam (beta_1 0.5).",
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "default": 0.0002,
                },
            },
        },
    }

    views = 1  # one augmented view of each image

    @dataclass(frozen=True)
    class Params(PretrainParams):
        mask_size: float | tuple[float, ...]
        mask_position: str
        context_weight: float
        decoder_filters: int
        adversarial: Adversarial | None

    def __init__(self, config, paths, **kwargs):
        super().__init__(config, paths, **kwargs)
        size = self.params.mask_size
        if isinstance(size, tuple) and float(size[0]) > float(size[1]):
            raise UserError(f"pretrain.mask_size: {list(size)} has low > high; write [low, high]")
        self.adversarial = self.params.adversarial
        self.discriminator = self.discriminator_optimizer = None

    def build_state(self) -> None:
        if self.adversarial:
            self.discriminator = build_discriminator(self.input_shape)
            self.discriminator_optimizer = keras.optimizers.Adam(self.adversarial.lr, beta_1=0.5)
            self.discriminator_optimizer.build(self.discriminator.trainable_variables)

    def extra_state(self) -> dict:
        if not self.adversarial:
            return {}
        return {"discriminator": self.discriminator, "discriminator_optimizer": self.discriminator_optimizer}

    def build_head(self, features: int, dim: int | None = None) -> keras.Model:
        return build_decoder(features, self.imshape, self.channels, self.params.decoder_filters,
                             synchronized=bool(self.backbone_cfg["sync_batchnorm"]))

    def masks(self, batch, seed):
        return hidden_rectangles(batch, self.imshape[0], self.imshape[1], seed, self.params.mask_size,
                                 self.params.mask_position)

    def compute_loss(self, batch, global_batch_size: int):
        images = tf.cast(batch, tf.float32)
        # the global batch's masks from (seed, step), this replica's rows of them: the same masks
        # for the same image whatever the number of replicas
        local = tf.shape(images)[0]
        offset, _ = replica_rows(local)
        step = tf.cast(self.optimizer.iterations, tf.int64)
        every = self.masks(global_batch_size, tf.stack([tf.constant(self.seed, tf.int64), step]))
        masks = every[offset:][:local]
        predicted = tf.cast(self.head(self.encoder(hide(images, masks), training=True), training=True), tf.float32)
        loss, hidden, visible = inpainting_loss(predicted, images, masks, self.params.context_weight)
        logs = {"hidden_mse": global_mean(hidden, global_batch_size),
                "visible_mse": global_mean(visible, global_batch_size)}
        aux = {}
        if self.adversarial:
            # the paper's joint loss: (1 - w) reconstruction + w adversarial (the inpainted image
            # should pass the discriminator as real)
            weight = self.adversarial.weight
            composite = images * (1.0 - masks) + predicted * masks
            fooled = tf.nn.sigmoid_cross_entropy_with_logits(
                labels=tf.ones([local]), logits=self.discriminator(composite, training=True)[:, 0])
            loss = (1.0 - weight) * loss + weight * fooled
            logs["adversarial_loss"] = global_mean(fooled, global_batch_size)
            aux = {"images": images, "composite": composite}
        return global_mean(loss, global_batch_size), logs, aux

    def train_step(self, batch, optimizer, global_batch_size: int):
        """The encoder and decoder's step; with ``adversarial``, then the discriminator's."""
        logs, aux = super().train_step(batch, optimizer, global_batch_size)
        if not self.adversarial:
            return logs, aux
        variables = self.discriminator.trainable_variables
        local = tf.shape(aux["images"])[0]
        with tf.GradientTape() as tape:
            real = self.discriminator(aux["images"], training=True)[:, 0]
            fake = self.discriminator(tf.stop_gradient(aux["composite"]), training=True)[:, 0]
            per_example = tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.ones([local]), logits=real) + \
                tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.zeros([local]), logits=fake)
            loss = global_mean(per_example, global_batch_size)
        gradients = tape.gradient(loss, variables)
        self.discriminator_optimizer.apply_gradients(zip(gradients, variables, strict=True))
        return {**logs, "discriminator_loss": loss}, {}

    def on_epoch_end(self, epoch: int, logs: dict) -> dict:
        out = super().on_epoch_end(epoch, logs)
        if self.monitor_due(epoch):
            images = self._views_for_monitoring()[0][:8]
            masks = self.masks(tf.shape(images)[0], tf.constant([self.seed, -1], tf.int64))
            hidden = hide(images, masks)
            predicted = tf.cast(self.head(self.encoder(hidden, training=False), training=False), tf.float32)
            shown = tf.concat([hidden, predicted, images], axis=2)  # hidden | predicted | original
            shown = shown if self.channels in (1, 3, 4) else shown[..., :1]
            tf.summary.image("inpainting", tf.clip_by_value(shown, 0.0, 1.0), max_outputs=8)
        return out
