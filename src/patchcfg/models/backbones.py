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

Saving: every layer is a standard Keras layer or registered with
``@keras.saving.register_keras_serializable(package="patchcfg")``, so ``encoder.save("x.keras")``
and :func:`load_encoder` round-trip.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import importlib
import inspect
import os
import re
import socket
import tempfile
import urllib.parse
import urllib.request
import warnings
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from patchcfg.errors import UserError
from patchcfg.models import resnet

__all__ = [
    "SPEC_DEFAULTS",
    "ImagenetPreprocess",
    "available_backbones",
    "build_backbone",
    "keras_application_names",
    "load_encoder",
    "normalize_spec",
    "register_backbone",
]

#: Defaults of a backbone spec (mirrors ``schemas/backbone.schema.json``).
SPEC_DEFAULTS: dict[str, Any] = {
    "name": "resnet18",
    "width": 1.0,
    "weights": None,
    "pooling": "avg",
    "sync_batchnorm": False,
    "channel_adapter": "auto",
    "preprocess": "auto",
    "kwargs": {},
}
POOLING = ("avg", "max", "none")
_AUTO_BOOL = ("auto", True, False)
# Arguments of keras.applications constructors that build_backbone sets itself.
_RESERVED_APP_KWARGS = ("include_top", "weights", "input_shape", "input_tensor", "pooling", "classes")

_REGISTRY: dict[str, Callable[..., keras.Model]] = {}


# --------------------------------------------------------------------------- registry


def register_backbone(name: str) -> Callable[[Callable[..., keras.Model]], Callable[..., keras.Model]]:
    """Register a backbone builder under ``name`` (a decorator).

    The builder is called as ``builder(input_shape, *, width, sync_batchnorm, **kwargs)`` and returns
    a ``keras.Model`` from ``input_shape`` to a feature map ``(batch, h, w, D)`` (or a vector
    ``(batch, D)``); :func:`build_backbone` adds pooling and loads weights. Registering a name again
    replaces the earlier builder.

    >>> @register_backbone("my_net")                                    # doctest: +SKIP
    ... def my_net(input_shape, *, width=1.0, sync_batchnorm=False):
    ...     ...
    """
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(f"backbone name must be a non-empty string without ':', got {name!r}")

    def decorator(builder: Callable[..., keras.Model]) -> Callable[..., keras.Model]:
        _REGISTRY[name] = builder
        return builder

    return decorator


def available_backbones() -> list[str]:
    """Registered backbone names (sorted). ``keras.applications`` names and ``module:function``
    are accepted too (see :func:`keras_application_names`)."""
    return sorted(_REGISTRY)


@functools.cache
def keras_application_names() -> list[str]:
    """Every ``keras.applications`` constructor name (``ResNet50``, ``MobileNetV2``, ...)."""
    return sorted(
        name
        for name in dir(keras.applications)
        if name[:1].isupper() and callable(getattr(keras.applications, name))
    )


@register_backbone("resnet18")
def _resnet18(input_shape, *, width: float = 1.0, sync_batchnorm: bool = False) -> keras.Model:
    """Small-image ResNet-18: BasicBlock, [2, 2, 2, 2], D = 512·width."""
    return resnet.small_resnet(input_shape, (2, 2, 2, 2), "basic", width, sync_batchnorm, name="resnet18")


@register_backbone("resnet34")
def _resnet34(input_shape, *, width: float = 1.0, sync_batchnorm: bool = False) -> keras.Model:
    """Small-image ResNet-34: BasicBlock, [3, 4, 6, 3], D = 512·width."""
    return resnet.small_resnet(input_shape, (3, 4, 6, 3), "basic", width, sync_batchnorm, name="resnet34")


@register_backbone("resnet50")
def _resnet50(input_shape, *, width: float = 1.0, sync_batchnorm: bool = False) -> keras.Model:
    """Small-image ResNet-50: Bottleneck, [3, 4, 6, 3], D = 2048·width."""
    return resnet.small_resnet(
        input_shape, (3, 4, 6, 3), "bottleneck", width, sync_batchnorm, name="resnet50"
    )


@register_backbone("tiny")
def _tiny(input_shape, *, width: float = 1.0, sync_batchnorm: bool = False) -> keras.Model:
    """Three 3×3 conv layers (8, 16, 16 filters × width), D = 16·width: for tests and demos."""
    return resnet.tiny_convnet(input_shape, width, sync_batchnorm, name="tiny")


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


# --------------------------------------------------------------------------- spec handling


def normalize_spec(spec: dict | str | None) -> dict[str, Any]:
    """Check a backbone spec and fill in defaults; a bare string is taken as ``{name: ...}``.

    Raises :class:`UserError` for unknown keys (with the closest valid key) and wrong types.
    """
    if spec is None:
        spec = {}
    elif isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict):
        raise UserError(f"backbone: expected a mapping such as {{name: resnet18}}, got {spec!r}")
    unknown = sorted(set(spec) - set(SPEC_DEFAULTS))
    if unknown:
        problems = [
            f"backbone: unknown key {key!r}{_did_you_mean(key, list(SPEC_DEFAULTS))}" for key in unknown
        ]
        raise UserError("\n".join(problems) + f"\nvalid keys: {', '.join(SPEC_DEFAULTS)}")
    if not isinstance(spec.get("kwargs") or {}, dict):
        raise UserError(f"backbone.kwargs: expected a mapping, got {spec['kwargs']!r}")
    out = {**SPEC_DEFAULTS, **spec}
    out["kwargs"] = dict(out["kwargs"] or {})

    if not isinstance(out["name"], str) or not out["name"].strip():
        raise UserError(f"backbone.name: expected a backbone name, got {out['name']!r}")
    out["name"] = out["name"].strip()
    width = out["width"]
    if isinstance(width, bool) or not isinstance(width, int | float) or not width > 0:
        raise UserError(f"backbone.width: expected a number > 0, got {width!r}")
    out["width"] = float(width)
    weights = out["weights"]
    if isinstance(weights, os.PathLike):
        weights = os.fspath(weights)
    if weights is not None and not isinstance(weights, str):
        raise UserError(f"backbone.weights: expected null, imagenet or a file path, got {weights!r}")
    if isinstance(weights, str) and weights.strip().lower() == "imagenet":
        weights = "imagenet"
    out["weights"] = weights
    pooling = "none" if out["pooling"] is None else out["pooling"]
    if pooling not in POOLING:
        raise UserError(f"backbone.pooling: expected one of {', '.join(POOLING)}, got {pooling!r}")
    out["pooling"] = pooling
    if not isinstance(out["sync_batchnorm"], bool):
        raise UserError(f"backbone.sync_batchnorm: expected true or false, got {out['sync_batchnorm']!r}")
    for key in ("channel_adapter", "preprocess"):
        if out[key] not in _AUTO_BOOL or isinstance(out[key], int) and not isinstance(out[key], bool):
            raise UserError(f"backbone.{key}: expected auto, true or false, got {out[key]!r}")
    return out


def _did_you_mean(name: str, choices: list[str]) -> str:
    by_lower: dict[str, str] = {}
    for choice in choices:
        by_lower.setdefault(choice.lower(), choice)
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=3, cutoff=0.6)
    if not close:
        return ""
    return "; did you mean " + " or ".join(repr(by_lower[c]) for c in close) + "?"


def _unknown_name_error(name: str) -> UserError:
    builtin = available_backbones()
    apps = keras_application_names()
    return UserError(
        f"backbone.name: unknown backbone {name!r}{_did_you_mean(name, builtin + apps)}\n"
        f"available: {', '.join(builtin)}; "
        f"any keras.applications constructor ({', '.join(apps)}); "
        "or 'module:function' for your own builder"
    )


def _resolve(name: str) -> tuple[str, str]:
    """``(kind, canonical_name)`` with kind ``function``, ``registered`` or ``keras``."""
    if ":" in name:
        return "function", name
    if name in _REGISTRY:
        return "registered", name
    if name in keras_application_names():
        return "keras", name
    matches = [("registered", n) for n in _REGISTRY if n.lower() == name.lower()]
    matches += [("keras", n) for n in keras_application_names() if n.lower() == name.lower()]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        options = " or ".join(
            f"{n!r} ({'small-image, built in' if kind == 'registered' else 'keras.applications'})"
            for kind, n in matches
        )
        raise UserError(f"backbone.name: {name!r} is ambiguous; write it exactly as {options}")
    raise _unknown_name_error(name)


def _check_call(function: Callable, label: str, *args, **kwargs) -> None:
    """Raise UserError when ``function`` cannot be called with these arguments."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(*args, **kwargs)
    except TypeError as error:
        raise UserError(f"backbone {label}: bad arguments {sorted(kwargs)}: {error}") from error


def _named_parameters(function: Callable) -> set[str]:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return set()
    return {p.name for p in parameters if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


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
    kind, canonical = _resolve(spec["name"])
    weights = spec["weights"]
    path_weights = weights not in (None, "imagenet")
    if path_weights:
        weights = _existing_path(weights)

    if kind == "registered":
        if weights == "imagenet":
            raise UserError(
                f"backbone {canonical}: weights: imagenet exists only for keras.applications backbones "
                f"(e.g. ResNet50, MobileNetV2); {canonical} is built in: use weights: null or a path"
            )
        builder = _REGISTRY[canonical]
        call_kwargs = {"width": spec["width"], "sync_batchnorm": spec["sync_batchnorm"], **spec["kwargs"]}
        _check_call(builder, canonical, input_shape, **call_kwargs)
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
    else:
        inputs, outputs = _user_function(canonical, spec, input_shape)
        loaded_inside = False

    model = keras.Model(inputs, _pool(outputs, spec["pooling"]), name=name)
    if path_weights and not loaded_inside:
        _load_weights(model, weights, spec, input_shape)
    return model


def _pool(x, pooling: str):
    if len(x.shape) != 4 or pooling == "none":
        return x
    if pooling == "avg":
        return keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.layers.GlobalMaxPooling2D(name="max_pool")(x)


def _synchronize_batchnorm(model: keras.Model) -> None:
    """Switch every BatchNormalization in ``model`` (nested too) to synchronized statistics."""
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True


def _all_layers(model) -> list:
    found, stack = [], list(getattr(model, "layers", []))
    while stack:
        layer = stack.pop()
        found.append(layer)
        stack.extend(getattr(layer, "layers", []) or [])
    return found


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
            f"{_did_you_mean(attribute, public)}"
        ) from error
    if not callable(function):
        raise UserError(f"backbone {reference}: {attribute!r} is not callable")

    named = _named_parameters(function)
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
    _check_call(function, reference, input_shape, **kwargs)
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
        if "alpha" in _named_parameters(constructor) and "alpha" not in kwargs:
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
    _check_call(
        constructor,
        app_name,
        include_top=False,
        weights=app_weights,
        input_shape=app_input_shape,
        pooling=None,
        **kwargs,
    )
    guard = _imagenet_download_guard(app_name) if app_weights == "imagenet" else contextlib.nullcontext()
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
                    f"**{kwargs}): {_short(error)}"
                ) from error
            raise UserError(f"backbone {app_name}: {_short(error)}") from error
    if spec["sync_batchnorm"]:
        _synchronize_batchnorm(application)

    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    if adapter:
        conv = keras.layers.Conv2D(3, 1, name="channel_adapter")
        x = conv(x)
        conv.set_weights([_adapter_init(channels), np.zeros(3, dtype="float32")])
    preprocess = spec["preprocess"]
    if preprocess == "auto" or preprocess:
        x = ImagenetPreprocess(app_name, name="imagenet_preprocess")(x)
    return inputs, application(x), app_weights is not None and app_weights != "imagenet"


def _adapter_init(channels: int) -> np.ndarray:
    """1x1 kernel (1, 1, channels, 3): channel mean for < 3 channels, identity on the first 3 else."""
    kernel = np.zeros((1, 1, channels, 3), dtype="float32")
    if channels < 3:
        kernel[...] = 1.0 / channels
    else:
        for c in range(3):
            kernel[0, 0, c, c] = 1.0
    return kernel


def _short(error: BaseException, limit: int = 600) -> str:
    text = str(error).strip()
    return text if len(text) <= limit else text[:limit] + " ..."


# --------------------------------------------------------------------------- imagenet download


def _keras_cache_dir() -> str:
    """The folder Keras's ``get_file`` uses as its cache root (``~/.keras`` or ``$KERAS_HOME``)."""
    try:
        from keras.src.backend import config as keras_config

        base = keras_config.keras_home()
    except (ImportError, AttributeError):
        base = os.environ.get("KERAS_HOME", os.path.join("~", ".keras"))
    base = os.path.expanduser(base)
    if not os.access(base, os.W_OK):  # the same fallback keras.utils.get_file takes
        base = os.path.join("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir(), ".keras")
    return base


def _can_reach(url: str | None, timeout: float = 3.0) -> bool:
    """Cheap network check: can we open a TCP connection to the URL's host? (Proxies: assume yes.)"""
    if not url:
        return False
    if urllib.request.getproxies():
        return True
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname:
        return False
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _get_file_arguments(
    fname=None,
    origin=None,
    untar=False,
    md5_hash=None,
    file_hash=None,
    cache_subdir="datasets",
    hash_algorithm="auto",
    extract=False,
    archive_format="auto",
    cache_dir=None,
    force_download=False,
):
    return {"fname": fname, "origin": origin, "cache_subdir": cache_subdir, "cache_dir": cache_dir}


def _missing_weights_error(
    app_name: str, file_name: str, origin: str | None, target: str, reason: str
) -> UserError:
    return UserError(
        f"backbone {app_name}: weights: imagenet needs the Keras file {file_name!r}, "
        f"which could not be downloaded ({reason}).\n"
        f"Download it where there is network access:\n    {origin}\n"
        f"and put it at\n    {target}\n"
        "(Keras's weights cache: ~/.keras/models/, or $KERAS_HOME/models/), then run again. Or give a local file instead of imagenet:\n"
        f"    weights: /path/to/{file_name}      (that Keras file)\n"
        "    weights: /path/to/file.weights.h5   (weights saved from this same backbone)"
    )


@contextlib.contextmanager
def _imagenet_download_guard(app_name: str):
    """While building a keras.applications model, turn a failed (or hopeless) weights download
    into a UserError that names the file and where to put it.

    keras.applications fetch weights through ``keras.src.utils.file_utils.get_file``; it is wrapped
    for the duration of the build: a file already in the cache is used as usual; a missing one is
    only downloaded when the host answers, and any failure becomes the message above.
    """
    from keras.src.utils import file_utils

    original = file_utils.get_file

    @functools.wraps(original)
    def guarded_get_file(*args, **kwargs):
        arguments = _get_file_arguments(*args, **kwargs)
        origin = arguments["origin"]
        file_name = arguments["fname"] or os.path.basename(urllib.parse.urlsplit(origin or "").path)
        cache = os.path.expanduser(arguments["cache_dir"]) if arguments["cache_dir"] else _keras_cache_dir()
        target = os.path.join(cache, arguments["cache_subdir"], file_name)
        if not os.path.exists(target) and not _can_reach(origin):
            raise _missing_weights_error(app_name, file_name, origin, target, "no network connection")
        try:
            return original(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - any failure to fetch is reported the same way
            raise _missing_weights_error(
                app_name, file_name, origin, target, f"{type(error).__name__}: {_short(error, 300)}"
            ) from error

    file_utils.get_file = guarded_get_file
    try:
        yield
    finally:
        file_utils.get_file = original


# --------------------------------------------------------------------------- weights files


def _existing_path(path: str) -> str:
    full = os.path.expanduser(path)
    if not os.path.isfile(full):
        raise UserError(
            f"backbone.weights: file not found: {path} "
            "(expected null, imagenet, or a path to a .weights.h5, .keras or Keras .h5 file)"
        )
    return full


def _describe(spec: dict, input_shape: tuple) -> str:
    return f"{spec['name']} (width {spec['width']:g}, input {input_shape})"


def _mismatch_hint(spec: dict, input_shape: tuple) -> str:
    hint = (
        "build the backbone with the same name, width, channels and options as the one that saved the weights"
    )
    if input_shape[-1] != 3 and spec["name"] in keras_application_names():
        hint += " (an encoder built with ImageNet weights and channels != 3 has a channel_adapter: set channel_adapter: true)"
    return hint


def _format_mismatch(differences: list[str], n_expected: int, n_found: int) -> str:
    shown = "\n".join(f"    {d}" for d in differences[:6])
    more = f"\n    ... and {len(differences) - 6} more" if len(differences) > 6 else ""
    return f"backbone has {n_expected} weight arrays, file has {n_found}; differences:\n{shown}{more}"


def _h5_shapes(path: str) -> dict[str, tuple]:
    import h5py

    shapes: dict[str, tuple] = {}

    def visit(name, item):
        if isinstance(item, h5py.Dataset):
            shapes[name] = tuple(item.shape)

    with h5py.File(path, "r") as handle:
        handle.visititems(visit)
    return shapes


def _snake_case(name: str) -> str:
    # keras.src.utils.naming.to_snake_case: how Keras names a layer's group in a weights file
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _h5_layer_names(model, prefix: str = "layers") -> dict[str, str]:
    """Map the groups of a Keras 3 ``.weights.h5`` file (named after layer classes: ``layers/conv2d_3``)
    to the layers' own names (``stage1_block1_conv1``), in the model's layer order."""
    names: dict[str, str] = {}
    used: dict[str, int] = {}
    for layer in getattr(model, "layers", []):
        key = _snake_case(layer.__class__.__name__)
        if key in used:
            used[key] += 1
            key = f"{key}_{used[key]}"
        else:
            used[key] = 0
        path = f"{prefix}/{key}"
        names[path] = layer.name
        if isinstance(layer, keras.Model):
            for sub_path, sub_name in _h5_layer_names(layer, f"{path}/layers").items():
                names[sub_path] = f"{layer.name}/{sub_name}"
    return names


def _h5_group_of(key: str, readable: dict[str, str]) -> str:
    parts = key.split("/")
    for end in range(len(parts), 0, -1):
        group = "/".join(parts[:end])
        if group in readable:
            return group
    return key


def _h5_readable(key: str, readable: dict[str, str]) -> str:
    group = _h5_group_of(key, readable)
    if group not in readable:
        return key
    rest = key[len(group) :].replace("/vars/", " weight #")
    return f"layer {readable[group]}{rest}"


def _load_weights(model: keras.Model, path: str, spec: dict, input_shape: tuple) -> None:
    describe = _describe(spec, input_shape)
    if path.endswith(".keras"):
        _copy_from_saved_model(model, path, spec, input_shape)
    elif path.endswith(".weights.h5"):
        try:
            found = _h5_shapes(path)
        except OSError as error:
            raise UserError(f"backbone.weights: cannot read {path}: {error}") from error
        with tempfile.TemporaryDirectory() as tmp:
            reference = os.path.join(tmp, "expected.weights.h5")
            model.save_weights(reference)
            expected = _h5_shapes(reference)
        readable = _h5_layer_names(model)
        order = {path: index for index, path in enumerate(readable)}

        def sort_key(key):
            group = _h5_group_of(key, readable)
            return (order.get(group, len(order)), key)

        differences = [
            f"{_h5_readable(key, readable)}: backbone {expected.get(key, 'has none')}, file {found.get(key, 'has none')}"
            for key in sorted(set(expected) | set(found), key=sort_key)
            if expected.get(key) != found.get(key)
        ]
        if differences:
            raise UserError(
                f"backbone.weights: {path} does not fit backbone {describe}: "
                f"{_format_mismatch(differences, len(expected), len(found))}\n"
                + _mismatch_hint(spec, input_shape)
            )
        model.load_weights(path)
    elif path.endswith(".h5"):
        try:
            model.load_weights(path)
        except (ValueError, KeyError) as error:
            raise UserError(
                f"backbone.weights: {path} does not fit backbone {describe}: {_short(error)}\n"
                + _mismatch_hint(spec, input_shape)
            ) from error
    else:
        raise UserError(
            f"backbone.weights: {path}: unsupported file type; expected .weights.h5, .keras or .h5"
        )


def _copy_from_saved_model(model: keras.Model, path: str, spec: dict, input_shape: tuple) -> None:
    """Copy weights from a saved ``.keras`` model whose weights (or a nested model's) fit ``model``."""
    try:
        saved = keras.saving.load_model(path, compile=False)
    except Exception as error:  # noqa: BLE001 - any unreadable file is a user error here
        raise UserError(f"backbone.weights: cannot load {path}: {_short(error)}") from error
    expected = [tuple(w.shape) for w in model.weights]
    candidates = [saved] + [layer for layer in _all_layers(saved) if isinstance(layer, keras.Model)]
    for candidate in candidates:
        if [tuple(w.shape) for w in candidate.weights] == expected:
            model.set_weights(candidate.get_weights())
            return
    found = saved.weights
    differences = []
    for index in range(max(len(expected), len(found))):
        want = expected[index] if index < len(expected) else "none"
        have = tuple(found[index].shape) if index < len(found) else "none"
        if want != have:
            label = model.weights[index].path if index < len(expected) else found[index].path
            differences.append(f"#{index} {label}: backbone {want}, file {have}")
    raise UserError(
        f"backbone.weights: {path} does not fit backbone {_describe(spec, input_shape)}: "
        f"{_format_mismatch(differences, len(expected), len(found))}\n" + _mismatch_hint(spec, input_shape)
    )


# --------------------------------------------------------------------------- loading encoders


def load_encoder(path: str | os.PathLike) -> keras.Model:
    """Load an encoder saved with ``encoder.save("encoder.keras")`` (e.g. by patchcfg pretraining).

    Importing this module registers patchcfg's backbone layers, so ``keras.saving.load_model``
    finds them. The model is returned uncompiled.

    Raises:
        UserError: the file is missing or cannot be read as a Keras model.
    """
    path = os.path.expanduser(os.fspath(path))
    if not os.path.isfile(path):
        raise UserError(f"encoder file not found: {path}")
    if not path.endswith(".keras"):
        raise UserError(f"encoder file {path}: expected a .keras file saved with model.save()")
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as error:  # noqa: BLE001 - any unreadable file is a user error here
        raise UserError(f"cannot load encoder {path}: {_short(error)}") from error
