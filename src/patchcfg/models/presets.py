"""KerasHub presets read from their files, before Keras loads: what ``validate`` checks and
``patchcfg weights check`` prints.

A preset folder is what ``keras_hub.models.Backbone.save_to_preset`` writes: ``config.json`` (the
backbone's class and arguments), ``model.weights.h5``, ``metadata.json`` and, when an image converter
was saved beside it (``ImageConverter.save_to_preset``), ``image_converter.json`` with the image
size and the normalisation (``scale``, ``offset``) the weights expect. A *handle*
(``kaggle://keras/dinov2/keras/dinov2_small``, ``hf://owner/name``, or a KerasHub preset name such
as ``dinov2_small``) names a preset on the network; ``patchcfg weights fetch`` makes one a folder.

Which image sizes a preset takes (:attr:`PresetInfo.sizes`):

- ``any multiple``: DINOv2 and DINOv3, whose position embeddings are interpolated to the image
  size: any ``image_size`` that is a multiple of the patch size;
- ``fixed``: the other vision transformers (ViT, SigLIP, CLIP, ...): only the preset's own size;
- ``any``: convolutional networks (ResNet, EfficientNet, MobileNet, ...) take any size.

Nothing here imports Keras or TensorFlow.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

from patchcfg.errors import UserError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
CONVERTER_FILE = "image_converter.json"
METADATA_FILE = "metadata.json"
#: schemes KerasHub's loader resolves over the network, with the host each needs
HANDLE_HOSTS = {"kaggle": "https://www.kaggle.com", "hf": "https://huggingface.co",
                "modelscope": "https://www.modelscope.cn", "gs": "https://storage.googleapis.com"}
#: backbones whose position embeddings follow the image size (any multiple of the patch size)
INTERPOLATING = ("DINOV2Backbone", "DINOV3Backbone")
#: composite backbones whose image tower is an attribute: the tower is the encoder
VISION_TOWERS = ("vision_encoder",)


@dataclass
class PresetInfo:
    """What a preset folder says about itself.

    Attributes:
        folder: the preset folder.
        class_name: the backbone class (``DINOV2Backbone``, ``SigLIPBackbone``, ...).
        tower: the class of the image tower when the backbone is composite (``SigLIPVisionEncoder``).
        patch_size: the vision transformer's patch size (None for a convolutional network).
        image_shape: the ``image_shape`` the preset was saved with (None entries: any size).
        sizes: ``any multiple``, ``fixed`` or ``any`` (see the module's docstring).
        tokens: the model gives one vector per patch (and class token): ``cls``/``mean`` apply.
        converter: ``image_converter.json``'s config (image_size, scale, offset), or None.
        metadata: ``metadata.json`` (versions, parameter count), or {}.
    """

    folder: str
    class_name: str
    config: dict
    tower: str | None = None
    patch_size: int | None = None
    image_shape: tuple | None = None
    sizes: str = "any"
    tokens: bool = False
    converter: dict | None = None
    metadata: dict = field(default_factory=dict)

    @property
    def default_size(self) -> int | None:
        """The image size the preset expects: its converter's, else its fixed ``image_shape``."""
        if self.converter and self.converter.get("image_size"):
            return int(self.converter["image_size"][0])
        if self.image_shape and self.image_shape[0]:
            return int(self.image_shape[0])
        return None

    def normalisation(self) -> str:
        """How pixels in [0, 255] become the model's input, in words."""
        if not self.converter:
            return f"no {CONVERTER_FILE}: images reach the model in [0, 1], resized"
        return (f"x * scale + offset on [0, 255] pixels (scale {_short(self.converter.get('scale'))}, "
                f"offset {_short(self.converter.get('offset'))})")


def _short(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in value) + "]"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def is_handle(preset: str) -> bool:
    """A network handle (``kaggle://...``, ``hf://...`` or a bare KerasHub preset name), not a path."""
    if "://" in preset:
        return True
    looks_like_path = os.sep in preset or preset.startswith((".", "~")) or (os.altsep or "\0") in preset
    return not looks_like_path and not os.path.exists(preset)


def handle_host(handle: str) -> str:
    """The URL whose host must answer for KerasHub to resolve ``handle`` (bare names: Kaggle)."""
    scheme = handle.split("://", 1)[0] if "://" in handle else "kaggle"
    return HANDLE_HOSTS.get(scheme, f"https://{handle.split('://', 1)[-1].split('/', 1)[0]}")


def check_handle_reachable(handle: str, what: str = "backbone.preset") -> None:
    """Fail at once, with one message, when the network a handle needs does not answer."""
    from patchcfg.models import download  # stdlib only: the check runs before Keras loads

    host = handle_host(handle)
    if not download.can_reach(host):
        raise UserError(
            f"{what}: {handle} is a network handle and {host} cannot be reached from this machine. "
            f"On a machine with network access run\n    patchcfg weights fetch {handle} --out DIR\n"
            + ("copy DIR here and set backbone.preset: DIR" if what.endswith("preset")
               else "and copy DIR here"))


def _read_json(path: str, what: str) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except OSError as error:
        raise UserError(f"{what}: cannot read {path}: {error.strerror or error}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{what}: {path} is not valid JSON ({error})") from None


def _find(config: Any, key: str) -> Any:
    """The first value of ``key`` in a nested config (depth first), or None."""
    if isinstance(config, dict):
        if key in config:
            return config[key]
        for value in config.values():
            found = _find(value, key)
            if found is not None:
                return found
    return None


def read_preset(folder: str, what: str = "backbone.preset") -> PresetInfo:
    """Read a preset folder's JSON files. ``what`` names the key in messages.

    Raises:
        UserError: the folder is missing, or is not a KerasHub preset (no config.json, no weights).
    """
    folder = os.path.expanduser(str(folder))
    if not os.path.isdir(folder):
        raise UserError(
            f"{what}: {folder} is not a folder. Give a KerasHub preset folder (what "
            "Backbone.save_to_preset writes: config.json, model.weights.h5), e.g. one made with "
            "`patchcfg weights fetch HANDLE --out DIR` on a machine with network access")
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not os.path.isfile(os.path.join(folder, name))]
    if missing:
        present = sorted(os.listdir(folder))[:8]
        raise UserError(
            f"{what}: {folder} is not a KerasHub preset folder: {' and '.join(missing)} missing "
            f"(it holds {', '.join(present) or 'nothing'}). A preset folder is what "
            "Backbone.save_to_preset writes; make one with `patchcfg weights fetch HANDLE --out DIR`")
    saved = _read_json(os.path.join(folder, CONFIG_FILE), what)
    if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
        raise UserError(f"{what}: {folder}/{CONFIG_FILE} is not a saved Keras backbone config "
                        "(expected class_name and config)")
    config = saved["config"]
    info = PresetInfo(folder=folder, class_name=str(saved.get("class_name")), config=config)
    image_config = config
    for tower in VISION_TOWERS:
        if isinstance(config.get(tower), dict):
            info.tower = str(config[tower].get("class_name"))
            image_config = config[tower].get("config") or {}
    patch = _find(image_config, "patch_size")
    info.patch_size = int(patch[0] if isinstance(patch, list) else patch) if patch else None
    shape = image_config.get("image_shape") or image_config.get("input_shape")
    info.image_shape = tuple(shape) if shape else None
    if info.patch_size is None:
        info.sizes = "any"
    elif info.class_name in INTERPOLATING:
        info.sizes = "any multiple"
    else:
        info.sizes = "fixed"
    # a composite backbone's tower pools itself (SigLIP's attention head, CLIP's class token)
    info.tokens = info.patch_size is not None and info.tower is None
    converter_path = os.path.join(folder, CONVERTER_FILE)
    if os.path.isfile(converter_path):
        converter = _read_json(converter_path, what)
        info.converter = converter.get("config") if isinstance(converter, dict) else None
    metadata_path = os.path.join(folder, METADATA_FILE)
    if os.path.isfile(metadata_path):
        metadata = _read_json(metadata_path, what)
        info.metadata = metadata if isinstance(metadata, dict) else {}
    return info


def image_size_problem(info: PresetInfo, image_size: int | None) -> str | None:
    """Why ``image_size`` does not fit the preset (None: it fits)."""
    size = image_size or info.default_size
    if size is None:
        return None
    name = info.tower or info.class_name
    if info.patch_size and size % info.patch_size:
        lower = size - size % info.patch_size
        return (f"{size} is not a multiple of the preset's patch size {info.patch_size} ({name}); "
                f"use {lower or info.patch_size} or {lower + info.patch_size}")
    if info.sizes == "fixed" and info.default_size and size != info.default_size:
        return (f"{size}: this {name} preset takes only {info.default_size}-px images (its position "
                f"embeddings are fixed); set image_size: {info.default_size} or leave it out")
    return None


def pooling_problem(info: PresetInfo, pooling: str) -> str | None:
    """Why ``pooling`` does not apply to the preset's output (None: it applies)."""
    name = info.tower or info.class_name
    if info.tower is not None and pooling not in ("avg",):
        return (f"{pooling}: the {name} image tower pools its tokens itself and gives one vector "
                "per image; leave pooling at avg")
    if not info.tokens and pooling in ("cls", "cls+mean"):
        return (f"{pooling}: {name} is a convolutional network with no class token; "
                "use avg, mean or max")
    return None


def spec_problems(spec: dict, channels: int | None = None) -> list[tuple[str, str]]:
    """``(key, message)`` for each way a ``name: keras_hub`` backbone spec cannot work, from the
    preset's files (a handle is not read: it is checked where it is loaded)."""
    preset = spec.get("preset")
    if not preset:
        return [("preset", "name: keras_hub needs a preset: a KerasHub preset folder "
                           "(or a kaggle:// / hf:// handle where there is network)")]
    if is_handle(str(preset)):
        return []
    try:
        info = read_preset(str(preset))
    except UserError as error:
        return [("preset", str(error).split(": ", 1)[1])]
    problems = []
    size_problem = image_size_problem(info, spec.get("image_size"))
    if size_problem:
        problems.append(("image_size", size_problem))
    pool_problem = pooling_problem(info, spec.get("pooling") or "avg")
    if pool_problem:
        problems.append(("pooling", pool_problem))
    return problems


def weights_digest(folder: str) -> str:
    """sha256 of the preset's ``model.weights.h5`` (hex)."""
    digest = hashlib.sha256()
    with open(os.path.join(os.path.expanduser(folder), WEIGHTS_FILE), "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
