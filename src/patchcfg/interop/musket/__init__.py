"""Musket classification-pipeline configs turned into patchcfg configs.

Musket (``musket-ml/classification_training_pipeline``) describes an experiment in one YAML file
much like ours: an architecture, an imgaug augmentation recipe, an optimizer, callbacks and
training stages. :func:`musket_to_patchcfg` maps each of its keys onto our sections and says, one
line per key, what it could not map and why::

    >>> config, messages = musket_to_patchcfg(
    ...     {"architecture": "ResNet50", "shape": [224, 224, 3], "activation": "sigmoid",
    ...      "loss": "binary_crossentropy+0.1*dice_loss", "stages": [{"epochs": 5}]}, "old")
    >>> config["backbone"]["name"], config["data"]["imshape"], config["finetune"]["loss"]
    ('ResNet50', [224, 224], 'masked_bce+0.1*dice')

The result always validates against ``schemas/`` (anything else is a bug in this module), except
that ``data.labels`` is a placeholder: Musket reads its data through Python code, we read a label
table. :func:`convert_musket_file` reads a file (with line numbers for the messages) and renders
the YAML with a header listing what was not converted.

One module per Musket section, each a ``convert_<section>(..., report)`` function that returns our
section and tells the :class:`~patchcfg.interop.musket.report.Report` what it could not carry
over: :mod:`.backbone`, :mod:`.data`, :mod:`.augmentation`, :mod:`.finetune_section` (with :mod:`.losses`,
:mod:`.metrics`, :mod:`.callbacks`, :mod:`.phases`) and :mod:`.others`. Importing this package does
not import TensorFlow; converting an ``architecture`` asks Keras for its application names.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from patchcfg.errors import ConfigError
from patchcfg.interop.musket.augmentation import convert_augmentation
from patchcfg.interop.musket.backbone import convert_backbone
from patchcfg.interop.musket.data import LABELS_PLACEHOLDER, convert_data
from patchcfg.interop.musket.finetune_section import convert_finetune
from patchcfg.interop.musket.losses import LOSS_NAMES
from patchcfg.interop.musket.others import convert_others
from patchcfg.interop.musket.report import NOT_CONVERTED, Report
from patchcfg.interop.musket.values import as_int

__all__ = ["musket_to_patchcfg", "convert_musket_file", "render_yaml", "name_from_path", "LABELS_PLACEHOLDER",
           "LOSS_NAMES", "NOT_CONVERTED"]


def name_from_path(path: str | Path) -> str:
    """An experiment name from a file name: its stem with runs of other characters made '-'.

    Musket keeps each experiment as ``experiments/<name>/config.yaml``; a file named ``config``
    takes its folder's name instead.
    """
    path = Path(path)
    stem = path.stem
    if stem.lower() == "config" and path.resolve().parent.name:
        stem = path.resolve().parent.name
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-")
    return name or "musket"


def musket_to_patchcfg(musket: dict, name: str, locations: dict | None = None) -> tuple[dict, list[str]]:
    """A Musket classification config as a patchcfg config, and what could not be carried over.

    ``locations`` maps key paths (tuples) to ``(file, line)``, as
    :func:`patchcfg.config.yaml_loader.load_yaml_file` returns them; messages then start with
    ``file:line:``. Each message is ``key.path: not converted (reason)`` or ``key.path: note: ...``.
    The config validates against the schemas; raises :class:`ConfigError` if it would not.
    """
    if not isinstance(musket, dict):
        raise ConfigError(f"a Musket config is a mapping of keys to values, not {type(musket).__name__}")
    report = Report(locations)
    sources = {where[0] for where in (locations or {}).values()}
    source = sources.pop() if len(sources) == 1 else None
    config: dict = {"name": name}
    config["description"] = f"Converted from the Musket config {source}" if source else \
        "Converted from a Musket config"
    seed = as_int(musket.get("random_state"))
    if seed is not None and seed >= 0:
        config["seed"] = seed
    config["data"] = convert_data(musket, report)
    backbone = convert_backbone(musket, report)
    config["backbone"] = backbone
    config["augmentation"] = convert_augmentation(musket.get("augmentation"), report)
    config["finetune"] = convert_finetune(musket, report, backbone.get("pooling"))
    convert_others(musket, report)
    _check(config, f"<converted {name}>")
    return config, report.messages()


def _check(config: dict, where: str) -> None:
    from patchcfg.config import resolve

    try:
        resolve(config, {}, (where, 0))
    except ConfigError as error:
        raise ConfigError(["the converted config does not validate; this is a bug in patchcfg's Musket "
                           "converter (please report it with the Musket file):"]
                          + [f"  {p}" for p in error.problems]) from None


def render_yaml(config: dict, messages: list[str], source: str | None = None) -> str:
    """The config as YAML, after a comment block listing what was not converted and the notes."""
    lost = [m for m in messages if f": {NOT_CONVERTED} (" in m]
    notes = [m for m in messages if m not in lost]
    lines = [f"# patchcfg config converted from the Musket config {source or '(unnamed)'}",
             "# by `patchcfg convert musket`. Check it with `patchcfg validate`.",
             f"# Before running: set data.labels to your label table (now the placeholder "
             f"'{LABELS_PLACEHOLDER}').", "#"]
    if lost:
        lines.append(f"# Not converted ({len(lost)}):")
        lines += [f"#   {m}" for m in lost]
    else:
        lines.append("# Every Musket key was converted.")
    if notes:
        lines.append(f"# Notes ({len(notes)}):")
        lines += [f"#   {m}" for m in notes]
    header = "\n".join(line.replace("\n", " ") for line in lines) + "\n"
    body = yaml.safe_dump(config, sort_keys=False, default_flow_style=None, allow_unicode=True, width=100)
    comment = "# SET THIS: your label table (CSV: filepath, validation, one column per class)"
    body, found = re.subn(r"(?m)^(  labels: .*)$", lambda match: f"{match.group(1)}   {comment}", body,
                          count=1)
    if not found:
        body = re.sub(r"(?m)^data:", lambda match: f"{comment}\n{match.group(0)}", body, count=1)
    return header + body


def convert_musket_file(path: str | Path, name: str | None = None) -> tuple[str, dict, list[str]]:
    """Read a Musket config file: (YAML text of ours, our config, messages with file:line)."""
    from patchcfg.config import resolve
    from patchcfg.config.yaml_loader import load_yaml_file, load_yaml_text

    path = Path(path)
    musket, locations = load_yaml_file(path)
    if musket is None:
        raise ConfigError(f"{path}: the file is empty; expected a Musket config (architecture, shape, ...)")
    if not isinstance(musket, dict):
        raise ConfigError(f"{path}:1: a Musket config is a mapping of keys to values, "
                          f"not {type(musket).__name__}")
    if name is None:
        name = name_from_path(path)
    elif not re.fullmatch(r"[A-Za-z0-9._-]+", name):
        raise ConfigError(f"name '{name}': must use only letters, digits, '.', '_' and '-' "
                          "(it names a folder)")
    config, messages = musket_to_patchcfg(musket, name, locations)
    text = render_yaml(config, messages, str(path))
    # What is printed must load as it is (comments and all): parse it back and validate again.
    reread, reread_locations = load_yaml_text(text, f"<converted {path}>")
    if reread != config:  # pragma: no cover - a YAML round trip that changes values is a bug
        raise ConfigError(f"the converted YAML of {path} does not read back as written (a converter bug)")
    resolve(reread, reread_locations, (f"<converted {path}>", 1))
    return text, config, messages
