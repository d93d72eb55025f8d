"""Foundation encoders from KerasHub presets (``backbone.name: keras_hub``): DINOv2/DINOv3
(Oquab et al. 2023, "DINOv2: Learning Robust Visual Features without Supervision"), SigLIP
(Zhai et al. 2023), CLIP, ViT, and KerasHub's convolutional networks (ResNet, EfficientNet, ...).

The encoder is one ``keras.Model`` from patchcfg's images (floats in [0, 1], any number of
channels) to a feature vector, like every backbone:

1. channels other than 3: a 1x1 ``channel_adapter`` conv to 3 (it starts as the channel mean for 1
   or 2 channels, so a 1-band image reaches the model as grey RGB, or as the identity on the first
   three channels; it trains with the encoder). 16-bit images are already in [0, 1] (the reader
   divides by 65535), so they need nothing more;
2. ``x 255`` and the preset's own image converter (``image_converter.json``): resize to
   ``image_size`` and ``x * scale + offset``, the mean/std the weights were trained with;
3. the KerasHub backbone (or its ``vision_encoder`` for SigLIP/CLIP);
4. pooling (:class:`~patchcfg.models.layers.TokenPool`): ``cls`` (the class token), ``mean``/``avg``
   (the mean of the patch tokens), ``max``, ``cls+mean`` (both side by side, as DINOv2's linear
   probes), ``none`` (the patch tokens as an (h, w, D) map, for conv heads and DetCon);
   convolutional networks are pooled as the other backbones.

DINOv2's position embeddings stay as the preset has them when the encoder trains
(:func:`_freeze_interpolated_positions` says why); every other weight trains.

Which sizes, poolings and files fit is read from the preset's files by :mod:`~patchcfg.models.presets`
before Keras loads (``patchcfg validate``).
"""

from __future__ import annotations

import contextlib
import os

import keras

from patchcfg.errors import UserError
from patchcfg.models.layers import TokenPool, channel_adapter
from patchcfg.models.presets import (
    VISION_TOWERS,
    check_handle_reachable,
    image_size_problem,
    is_handle,
    pooling_problem,
    read_preset,
)
from patchcfg.models.util import short


def import_keras_hub():
    """``keras_hub``, or a UserError saying how to install it."""
    try:
        import keras_hub
    except ImportError as error:
        raise UserError("backbone.name: keras_hub needs the keras-hub package: pip install keras-hub "
                        f"({error})") from None
    return keras_hub


@contextlib.contextmanager
def _loading(preset: str, what: str):
    try:
        yield
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001 - KerasHub raises many kinds for an unusable preset
        first = short(error).splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"{what}: cannot load the KerasHub preset {preset}: {first}") from error


def load_preset(preset: str, image_size: int | None = None, what: str = "backbone.preset"):
    """``(backbone, converter, info)``: the KerasHub backbone built for ``image_size`` (DINOv2/v3
    interpolate their position embeddings), the preset's image converter (None if it has none),
    and the :class:`~patchcfg.models.presets.PresetInfo` (None for a handle)."""
    keras_hub = import_keras_hub()
    info = None
    overrides = {"dtype": keras.config.dtype_policy().name}
    if is_handle(preset):
        check_handle_reachable(preset, what)
        source = preset
    else:
        info = read_preset(preset, what)
        problem = image_size_problem(info, image_size)
        if problem:
            raise UserError(f"backbone.image_size: {problem}")
        source = os.path.expanduser(preset)
        size = image_size or info.default_size
        if size and info.image_shape and info.tower is None and info.sizes != "fixed":
            overrides["image_shape"] = (size, size, 3)
    with _loading(preset, what):
        backbone = keras_hub.models.Backbone.from_preset(source, **overrides)
    converter = None
    has_converter = info is None or info.converter is not None
    if has_converter:
        size = image_size or (info.default_size if info else None)
        kwargs = {"image_size": (size, size)} if size else {}
        with _loading(preset, what):
            try:
                converter = keras_hub.layers.ImageConverter.from_preset(source, dtype="float32", **kwargs)
            except ValueError:
                if info is not None:
                    raise
    return backbone, converter, info


def _tower(backbone):
    for attribute in VISION_TOWERS:
        tower = getattr(backbone, attribute, None)
        if tower is not None:
            return tower
    return backbone


def build_keras_hub(spec: dict, input_shape: tuple):
    """``(inputs, features)`` of the encoder a ``name: keras_hub`` spec describes (see the module)."""
    preset = spec.get("preset")
    if not preset:
        raise UserError("backbone.preset: name: keras_hub needs a preset (a KerasHub preset folder)")
    backbone, converter, info = load_preset(str(preset), spec.get("image_size"))
    if info is not None:
        problem = pooling_problem(info, spec["pooling"])
        if problem:
            raise UserError(f"backbone.pooling: {problem}")
    tower = _tower(backbone)
    _freeze_interpolated_positions(tower)
    size = spec.get("image_size") or (converter.image_size[0] if converter is not None and converter.image_size
                                      else None) or input_shape[0]

    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    if input_shape[-1] != 3:
        x = channel_adapter(x, input_shape[-1])
    if converter is not None:
        x = keras.layers.Rescaling(255.0, name="to_pixels")(x)
        x = converter(x)
    elif tuple(input_shape[:2]) != (size, size):
        x = keras.layers.Resizing(size, size, name="resize")(x)
    x = tower({"images": x} if isinstance(tower.input, dict) else x)
    if len(x.shape) == 3:
        patch = info.patch_size if info is not None else _find_patch_size(tower)
        grid = (size // patch, size // patch) if patch else None
        x = TokenPool(spec["pooling"], grid=grid, name=f"{spec['pooling'].replace('+', '_')}_pool")(x)
    elif len(x.shape) == 2 and spec["pooling"] not in ("avg",):
        raise UserError(f"backbone.pooling: {spec['pooling']}: this preset's image tower gives one "
                        "vector per image; leave pooling at avg")
    elif len(x.shape) == 4 and spec["pooling"] == "mean":
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif len(x.shape) == 4 and spec["pooling"] in ("cls", "cls+mean"):
        raise UserError(f"backbone.pooling: {spec['pooling']}: a convolutional network has no class "
                        "token; use avg, mean or max")
    return inputs, x


def _freeze_interpolated_positions(tower) -> None:
    """Keep DINOv2's position embeddings as the preset has them.

    KerasHub's DINOv2 trains a copy interpolated to the image size and, on load, recomputes that copy
    from the saved originals; it writes a trained copy back only when the signed sum of its changes
    is positive, so a fine-tuned model could reload with other position embeddings than it trained
    with. Frozen, the copy is always the one a reload computes."""
    for variable in tower.weights:
        if variable.path.endswith("interpolated_position_embeddings"):
            variable.trainable = False


def _find_patch_size(tower) -> int | None:
    patch = getattr(tower, "patch_size", None)
    if isinstance(patch, list | tuple):
        patch = patch[0]
    return int(patch) if patch else None


def describe(preset: str) -> dict:
    """What ``patchcfg weights check`` prints: class, parameters, feature width, expected input,
    the normalisation and the weights' sha256 (the preset is loaded)."""
    from patchcfg.models.presets import weights_digest

    info = read_preset(preset, "weights check")
    backbone, converter, _ = load_preset(preset, what="weights check")
    tower = _tower(backbone)
    size = info.default_size
    width = int(tower.output_shape[-1])
    return {
        "preset": info.folder,
        "architecture": info.class_name + (f" (image tower {info.tower})" if info.tower else ""),
        "parameters": int(backbone.count_params()),
        "image_tower_parameters": int(tower.count_params()),
        "feature_width": width,
        "poolings": "cls, mean, max, cls+mean (2x the width), none" if info.tokens else
                    ("avg (the tower pools itself)" if info.tower else "avg, mean, max, none"),
        "input": {"image_size": size, "patch_size": info.patch_size, "channels": 3,
                  "sizes": info.sizes, "normalisation": info.normalisation()},
        "converter": None if converter is None else type(converter).__name__,
        "keras_hub_version": info.metadata.get("keras_hub_version"),
        "weights_sha256": weights_digest(info.folder),
    }


#: the mean/std of ImageNet, as DINOv2's and most KerasHub converters use them
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
RANDOM_ARCHITECTURES = ("dinov2", "siglip", "efficientnet")


def save_random_preset(folder: str, architecture: str = "dinov2", *, image_size: int = 28, patch_size: int = 4,
                       layers: int = 2, hidden: int = 32, heads: int = 2, registers: int = 0,
                       seed: int = 0) -> str:
    """Write a randomly initialised KerasHub preset folder (for tests and benchmarks: no download).

    ``architecture``: ``dinov2`` (a DINOv2 ViT), ``siglip`` (a SigLIP image + text model whose image
    tower pools itself) or ``efficientnet`` (a two-block EfficientNet). ``hidden``/``layers``/``heads``
    size the transformers (ViT-S: 384/12/6, patch 14, 224 px). The image converter is saved beside
    the backbone with ImageNet's mean/std (SigLIP: [-1, 1]), as published presets have it.
    """
    keras_hub = import_keras_hub()
    keras.utils.set_random_seed(seed)
    mean_std = ([1 / (255 * s) for s in IMAGENET_STD], [-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)])
    shape = (image_size, image_size, 3)
    if architecture == "dinov2":
        backbone = keras_hub.models.DINOV2Backbone(
            patch_size=patch_size, num_layers=layers, hidden_dim=hidden, num_heads=heads,
            intermediate_dim=4 * hidden, num_register_tokens=registers, image_shape=shape,
            position_embedding_shape=shape)
        converter = keras_hub.layers.DINOV2ImageConverter(image_size=(image_size, image_size),
                                                          scale=mean_std[0], offset=mean_std[1])
    elif architecture == "siglip":
        vision = keras_hub.models.SigLIPVisionEncoder(
            patch_size=patch_size, hidden_dim=hidden, num_layers=layers, num_heads=heads,
            intermediate_dim=4 * hidden, image_shape=shape)
        text = keras_hub.models.SigLIPTextEncoder(
            vocabulary_size=32, embedding_dim=hidden, hidden_dim=hidden, num_layers=1, num_heads=heads,
            intermediate_dim=4 * hidden, max_sequence_length=8)
        backbone = keras_hub.models.SigLIPBackbone(vision, text)
        converter = keras_hub.layers.SigLIPImageConverter(image_size=(image_size, image_size),
                                                          scale=1 / 127.5, offset=-1.0)
    elif architecture == "efficientnet":
        backbone = keras_hub.models.EfficientNetBackbone(
            stackwise_width_coefficients=[1.0, 1.0], stackwise_depth_coefficients=[1.0, 1.0],
            stackwise_kernel_sizes=[3, 3], stackwise_num_repeats=[1, 1], stackwise_input_filters=[8, 8],
            stackwise_output_filters=[8, hidden // 2], stackwise_expansion_ratios=[1, 2],
            stackwise_squeeze_and_excite_ratios=[0.25, 0.25], stackwise_strides=[1, 2],
            stackwise_block_types=["fused", "unfused"], stackwise_force_input_filters=[0, 0],
            stackwise_nores_option=[False, False], dropout=0.0)  # its num_features is not saved
        converter = keras_hub.layers.EfficientNetImageConverter(image_size=(image_size, image_size),
                                                                scale=mean_std[0], offset=mean_std[1])
    else:
        raise ValueError(f"architecture: expected one of {', '.join(RANDOM_ARCHITECTURES)}, got {architecture!r}")
    os.makedirs(folder, exist_ok=True)
    backbone.save_to_preset(folder)
    converter.save_to_preset(folder)
    return folder
