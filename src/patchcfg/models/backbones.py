"""Backbones (feature extractors) by name: the config's ``backbone`` section made into a Keras model.

A backbone spec is a small dict (``schemas/backbone.schema.json``)::

    backbone:
      name: resnet18          # built-in | any keras.applications constructor | module:function
      width: 0.5              # channel multiplier (built-ins; alpha of the MobileNets)
      weights: null           # null | imagenet | path to .weights.h5 / .keras / Keras .h5
      pooling: avg            # avg | max | none (feature map)
      sync_batchnorm: false   # BatchNormalization(synchronized=True)
      channel_adapter: auto   # learned 1x1 conv to 3 channels in front of keras.applications
      preprocess: auto        # keras.applications: map [0, 1] images to what the model expects
      kwargs: {}              # extra keyword arguments for the constructor

and :func:`build_backbone` turns it into a ``keras.Model`` named ``encoder`` whose output is a pooled
feature vector ``(batch, D)`` (or the feature map ``(batch, h, w, D)`` with ``pooling: none``);
``model.output_shape[-1]`` is ``D``.

Names, in the order they are resolved:

1. ``module:function`` — your own builder, ``function(input_shape, **kwargs) -> keras.Model``. The
   module must be importable (installed or on ``PYTHONPATH``). ``kwargs`` from the spec are passed
   on; so are ``width``, ``sync_batchnorm`` and ``weights="imagenet"`` when the function's signature
   names them. A 4-D output is pooled as asked; a 2-D output is used as is.
2. A registered name (:func:`available_backbones`): ``resnet18``, ``resnet34``, ``resnet50`` (small-image
   ResNets, :mod:`patchcfg.models.resnet`) and ``tiny`` (three conv layers, for tests and demos).
   Register more with :func:`register_backbone`.
3. Any ``keras.applications`` constructor (``ResNet50``, ``MobileNetV2``, ``EfficientNetB0``,
   ``DenseNet121``, ...), built with ``include_top=False``.
4. A case-insensitive match of 2 or 3 when it is unique (``mobilenetv2`` -> ``MobileNetV2``).

Anything else is a :class:`~patchcfg.errors.UserError` that lists the names and suggests the
closest ("did you mean ...").

Channels. The built-ins take any number of channels. A ``keras.applications`` model without
pretrained weights is built for the given channels. With ImageNet weights (``imagenet`` or a Keras
``.h5`` file) and channels != 3, a learned 1x1 convolution ``channel_adapter`` maps the input to 3
channels in front of the pretrained network; it starts as the channel mean (1 or 2 channels) or as
the identity on the first three channels (more than 3), and trains with the encoder.

Inputs of ``keras.applications`` backbones are expected as floats in [0, 1], like every patchcfg
backbone; with ``preprocess: auto`` (the default) an :class:`ImagenetPreprocess` layer scales them
by 255 and applies the application's own ``preprocess_input`` (caffe / tf / torch conventions).

Weights (``weights:``):

- ``null``: random initialisation.
- ``imagenet``: ``keras.applications`` only. Keras reads its cache, ``~/.keras/models/<file>``
  (``$KERAS_HOME/models/``), and downloads the file when it is missing. Without network access the
  download is not attempted (or its failure is caught) and a ``UserError`` names the exact file, the
  URL and where to put it.
- a path: ``.weights.h5`` (``model.save_weights`` of a backbone built from the same spec),
  ``.keras`` (an encoder saved by patchcfg pretraining, or any saved model whose weights, or whose
  nested model's weights, fit), or for ``keras.applications`` the Keras-distributed ``.h5`` file
  (e.g. ``resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5``), loaded into the application
  itself. A file that does not fit gives a ``UserError`` listing the arrays whose shapes differ.

The modules: :mod:`~patchcfg.models.registry` (names, the spec), this one (building),
:mod:`~patchcfg.models.download` (``imagenet`` without network), :mod:`~patchcfg.models.weights`
(weights files, saved encoders).

Saving: every layer is a standard Keras layer or registered with
``@keras.saving.register_keras_serializable(package="patchcfg")``, so ``encoder.save("x.keras")``
and :func:`load_encoder` round-trip.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import warnings
from collections.abc import Callable
from typing import Any

import keras

from patchcfg.errors import UserError
from patchcfg.models.download import imagenet_download_guard
from patchcfg.models.layers import channel_adapter
from patchcfg.models.registry import (
    SPEC_DEFAULTS,
    available_backbones,
    did_you_mean,
    get_builder,
    keras_application_names,
    normalize_spec,
    register_backbone,
    resolve_name,
    unregister_backbone,
)
from patchcfg.models.util import all_layers, check_call, named_parameters, short
from patchcfg.models.weights import existing_path, load_encoder, load_weights

__all__ = [
    "SPEC_DEFAULTS",
    "ImagenetPreprocess",
    "available_backbones",
    "build_backbone",
    "keras_application_names",
    "load_encoder",
    "normalize_spec",
    "register_backbone",
    "unregister_backbone",
]

# Arguments of keras.applications constructors that build_backbone sets itself.
_RESERVED_APP_KWARGS = ("include_top", "weights", "input_shape", "input_tensor", "pooling", "classes")


# --------------------------------------------------------------------------- custom layers


@functools.cache
def _preprocess_function(application: str) -> Callable:
    """``preprocess_input`` of the module that defines ``keras.applications.<application>``."""
    constructor = getattr(keras.applications, application, None)
    module = importlib.import_module(constructor.__module__) if constructor is not None else None
    preprocess = getattr(module, "preprocess_input", None)
    if preprocess is None:
        raise ValueError(f"no keras.applications preprocess_input found for {application!r}")
    return preprocess


@keras.saving.register_keras_serializable(package="patchcfg")
class ImagenetPreprocess(keras.layers.Layer):
    """Map images in ``[0, 1]`` to the input a ``keras.applications`` model expects.

    Multiplies by ``scale`` (255) and applies ``keras.applications.<module>.preprocess_input`` of
    ``application`` (e.g. caffe-style BGR mean subtraction for ``ResNet50``, ``[-1, 1]`` for
    ``MobileNetV2``, nothing more for ``EfficientNetB0`` whose model rescales itself).
    """

    def __init__(self, application: str, scale: float = 255.0, **kwargs):
        super().__init__(**kwargs)
        self.application = application
        self.scale = float(scale)
        self._preprocess = _preprocess_function(application)

    def call(self, inputs):
        return self._preprocess(inputs * self.scale)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "application": self.application, "scale": self.scale}


def _check_input_shape(input_shape) -> tuple:
    try:
        shape = tuple(None if d is None else int(d) for d in input_shape)
    except (TypeError, ValueError) as error:
        raise UserError(
            f"backbone input shape: expected (height, width, channels), got {input_shape!r}"
        ) from error
    if len(shape) != 3 or shape[-1] is None or shape[-1] < 1:
        raise UserError(f"backbone input shape: expected (height, width, channels), got {input_shape!r}")
    return shape


# --------------------------------------------------------------------------- building


def build_backbone(
    spec: dict | str | None, input_shape: tuple[int, int, int], name: str = "encoder"
) -> keras.Model:
    """Build the feature extractor a backbone spec describes.

    Args:
        spec: the config's ``backbone`` section, e.g. ``{"name": "resnet18", "width": 0.5,
            "weights": None, "pooling": "avg"}``; missing keys take :data:`SPEC_DEFAULTS`.
        input_shape: ``(height, width, channels)`` of the images (floats in [0, 1]).
        name: the returned model's name.

    Returns:
        A ``keras.Model`` from ``input_shape`` to ``(batch, D)`` (``pooling: avg|max``) or to the
        feature map ``(batch, h, w, D)`` (``pooling: none``); ``model.output_shape[-1] == D``.

    Raises:
        UserError: unknown name (with suggestions), bad option, weights that cannot be found,
            downloaded or do not fit.
    """
    spec = normalize_spec(spec)
    input_shape = _check_input_shape(input_shape)
    kind, canonical = resolve_name(spec["name"])
    weights = spec["weights"]
    path_weights = weights not in (None, "imagenet")
    if path_weights:
        weights = existing_path(weights)

    if kind == "registered":
        if weights == "imagenet":
            raise UserError(
                f"backbone {canonical}: weights: imagenet exists only for keras.applications backbones "
                f"(e.g. ResNet50, MobileNetV2); {canonical} is built in: use weights: null or a path"
            )
        builder = get_builder(canonical)
        call_kwargs = {"width": spec["width"], "sync_batchnorm": spec["sync_batchnorm"], **spec["kwargs"]}
        check_call(builder, canonical, input_shape, **call_kwargs)
        features = builder(input_shape, **call_kwargs)
        if not isinstance(features, keras.Model):
            raise UserError(
                f"backbone {canonical}: the builder returned {type(features).__name__}, not a keras.Model"
            )
        if spec["sync_batchnorm"]:
            _synchronize_batchnorm(features)
        inputs, outputs = features.inputs[0], features.outputs[0]
        loaded_inside = False
    elif kind == "keras":
        inputs, outputs, loaded_inside = _keras_application(canonical, spec, input_shape, weights)
    elif kind == "keras_hub":
        from patchcfg.models.foundation import build_keras_hub

        inputs, outputs = build_keras_hub(spec, input_shape)
        loaded_inside = False
    else:
        inputs, outputs = _user_function(canonical, spec, input_shape)
        loaded_inside = False

    model = keras.Model(inputs, _pool(outputs, spec["pooling"]), name=name)
    if path_weights and not loaded_inside:
        load_weights(model, weights, spec, input_shape)
    model.trainable = spec["trainable"]
    return model


def _pool(x, pooling: str):
    if len(x.shape) != 4 or pooling == "none":
        return x
    if pooling in ("avg", "mean"):
        return keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.layers.GlobalMaxPooling2D(name="max_pool")(x)


def _synchronize_batchnorm(model: keras.Model) -> None:
    """Switch every BatchNormalization in ``model`` (nested too) to synchronized statistics."""
    for layer in all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True


def _user_function(reference: str, spec: dict, input_shape: tuple):
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise UserError(f"backbone.name: expected 'module:function', got {reference!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise UserError(
            f"backbone {reference}: cannot import module {module_name!r} ({error}); "
            "it must be installed or on PYTHONPATH"
        ) from error
    function: Any = module
    try:
        for part in attribute.split("."):
            function = getattr(function, part)
    except AttributeError as error:
        public = sorted(n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n)))
        raise UserError(
            f"backbone {reference}: module {module_name!r} has no {attribute!r}"
            f"{did_you_mean(attribute, public)}"
        ) from error
    if not callable(function):
        raise UserError(f"backbone {reference}: {attribute!r} is not callable")

    named = named_parameters(function)
    kwargs = dict(spec["kwargs"])
    for key in ("width", "sync_batchnorm"):
        if key in named:
            kwargs.setdefault(key, spec[key])
    if spec["weights"] == "imagenet":
        if "weights" not in named:
            raise UserError(
                f"backbone {reference}: weights: imagenet needs a 'weights' parameter in {attribute}(); "
                "use weights: null or a path"
            )
        kwargs["weights"] = "imagenet"
    check_call(function, reference, input_shape, **kwargs)
    features = function(tuple(input_shape), **kwargs)
    if not isinstance(features, keras.Model):
        raise UserError(f"backbone {reference}: returned {type(features).__name__}, expected a keras.Model")
    if spec["sync_batchnorm"] and "sync_batchnorm" not in named:
        _synchronize_batchnorm(features)
    inputs = keras.Input(shape=input_shape, name="image")
    return inputs, features(inputs)


def _is_keras_h5(path) -> bool:
    return isinstance(path, str) and path.endswith(".h5") and not path.endswith(".weights.h5")


def _keras_application(app_name: str, spec: dict, input_shape: tuple, weights):
    """Build ``keras.applications.<app_name>(include_top=False)`` behind adapter/preprocessing.

    Returns ``(inputs, feature_map, weights_loaded)``.
    """
    constructor = getattr(keras.applications, app_name)
    channels = input_shape[-1]
    kwargs = dict(spec["kwargs"])
    reserved = sorted(set(kwargs) & set(_RESERVED_APP_KWARGS))
    if reserved:
        raise UserError(
            f"backbone {app_name}: kwargs {reserved} are set by patchcfg; "
            "use the backbone keys (weights, pooling) and the data's shape instead"
        )
    if spec["width"] != 1.0:
        if "alpha" in named_parameters(constructor) and "alpha" not in kwargs:
            kwargs["alpha"] = spec["width"]
        elif "alpha" not in kwargs:
            raise UserError(
                f"backbone {app_name}: width {spec['width']} applies to the built-in backbones and to the "
                "MobileNets (as alpha); set width: 1.0 for this keras.applications model"
            )

    app_weights = weights if (weights == "imagenet" or _is_keras_h5(weights)) else None
    adapter = spec["channel_adapter"]
    if adapter == "auto":
        adapter = channels != 3 and app_weights is not None
    app_channels = 3 if adapter else channels
    if app_weights is not None and app_channels != 3:
        raise UserError(
            f"backbone {app_name}: ImageNet weights need 3 input channels but the data has {channels}; "
            "set channel_adapter: auto (or true) to learn a 1x1 conv from "
            f"{channels} to 3 channels, or use weights: null"
        )
    app_input_shape = (*input_shape[:2], app_channels)
    check_call(
        constructor,
        app_name,
        include_top=False,
        weights=app_weights,
        input_shape=app_input_shape,
        pooling=None,
        **kwargs,
    )
    guard = imagenet_download_guard(app_name) if app_weights == "imagenet" else contextlib.nullcontext()
    with guard, warnings.catch_warnings():
        # channels other than 1 or 3 are intended here (weights null): silence Keras's reminder
        warnings.filterwarnings("ignore", message=".*usually expects 1 or 3 input channels.*")
        try:
            application = constructor(
                include_top=False, weights=app_weights, input_shape=app_input_shape, pooling=None, **kwargs
            )
        except (ValueError, TypeError) as error:
            if isinstance(app_weights, str) and app_weights != "imagenet":
                raise UserError(
                    f"backbone {app_name}: weights file {app_weights} does not fit "
                    f"keras.applications.{app_name}(include_top=False, input_shape={app_input_shape}, "
                    f"**{kwargs}): {short(error)}"
                ) from error
            raise UserError(f"backbone {app_name}: {short(error)}") from error
    if spec["sync_batchnorm"]:
        _synchronize_batchnorm(application)

    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    if adapter:
        x = channel_adapter(x, channels)
    preprocess = spec["preprocess"]
    if preprocess == "auto" or preprocess:
        x = ImagenetPreprocess(app_name, name="imagenet_preprocess")(x)
    return inputs, application(x), app_weights is not None and app_weights != "imagenet"
