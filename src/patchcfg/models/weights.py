"""Weights from files: ``.weights.h5``, ``.keras`` and Keras ``.h5`` files loaded into a built backbone
(a file that does not fit is a message listing the arrays whose shapes differ), and saved encoders."""

from __future__ import annotations

import os
import re
import tempfile

import keras

import patchcfg.models.layers  # noqa: F401  (registers patchcfg's own layers, so saved models load)
from patchcfg.errors import UserError
from patchcfg.models.registry import keras_application_names
from patchcfg.models.util import all_layers, short


def existing_path(path: str) -> str:
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
        hint += (" (an encoder built with ImageNet weights and channels != 3 has a channel_adapter: "
                 "set channel_adapter: true)")
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


def load_weights(model: keras.Model, path: str, spec: dict, input_shape: tuple) -> None:
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
            f"{_h5_readable(key, readable)}: backbone {expected.get(key, 'has none')}, "
            f"file {found.get(key, 'has none')}"
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
                f"backbone.weights: {path} does not fit backbone {describe}: {short(error)}\n"
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
        raise UserError(f"backbone.weights: cannot load {path}: {short(error)}") from error
    expected = [tuple(w.shape) for w in model.weights]
    candidates = [saved] + [layer for layer in all_layers(saved) if isinstance(layer, keras.Model)]
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
        raise UserError(f"cannot load encoder {path}: {short(error)}") from error
