"""Musket ``architecture`` / ``classifier``, ``weights`` and ``pooling`` as our ``backbone`` section.

CamelCase names that are ``keras.applications`` constructors (the names the backbone registry knows,
:func:`patchcfg.models.registry.keras_application_names`) pass through; Musket's ResNet-18/34
(classification_models) have no keras.applications twin and become our small-image built-ins.
"""

from __future__ import annotations

import difflib

from patchcfg.interop.musket.report import Report
from patchcfg.interop.musket.values import show

# Musket's ResNet-18/34 (classification_models) have no keras.applications twin: our built-ins.
_SMALL_RESNETS = {"resnet18": "resnet18", "resnet34": "resnet34"}


def convert_backbone(musket: dict, report: Report) -> dict:
    from patchcfg.models.registry import keras_application_names

    m = musket
    out: dict = {}
    key = "architecture" if "architecture" in m else "classifier" if "classifier" in m else None
    if key == "architecture" and "classifier" in m:
        report.lost(("classifier",), "architecture is used")
    builtin = False
    if key is None:
        report.note(("architecture",), "not given; backbone.name is patchcfg's default (resnet18)")
    else:
        name = m[key]
        if not isinstance(name, str):
            report.lost((key,), f"expected a model name, got {show(name)}")
        elif name in keras_application_names():
            out["name"] = name
        elif name.lower() in _SMALL_RESNETS:
            out["name"] = _SMALL_RESNETS[name.lower()]
            builtin = True
            report.note((key,), f"{name} -> {out['name']}, patchcfg's built-in ResNet for small images "
                                "(3x3 stem, no max-pool), not the ImageNet ResNet that Musket builds")
        elif name.lower() in (by_lower := {n.lower(): n for n in keras_application_names()}):
            out["name"] = by_lower[name.lower()]
            report.note((key,), f"{name} -> {out['name']} (keras.applications)")
        else:
            close = difflib.get_close_matches(name, keras_application_names(), n=1)
            hint = f"; the closest is {close[0]}" if close else ""
            report.lost((key,), f"'{name}' is not a keras.applications model{hint}; backbone.name is "
                                "patchcfg's default (resnet18): set it, or write a module:function builder")
    wkey = "encoder_weights" if m.get("encoder_weights") is not None else "weights"
    if wkey == "encoder_weights" and "weights" in m:
        report.lost(("weights",), "encoder_weights is used")
    if wkey in m:
        weights = m[wkey]
        if weights is None or weights == "":
            out["weights"] = None
        elif weights == "imagenet":
            if builtin:
                report.lost((wkey,), f"ImageNet weights exist for keras.applications backbones only; "
                                     f"{out['name']} starts from random weights: pretrain it with "
                                     "`patchcfg pretrain`, or use ResNet50")
                out["weights"] = None
            elif "name" in out:
                out["weights"] = "imagenet"
            else:
                report.lost((wkey,), "ImageNet weights need a keras.applications backbone")
        elif isinstance(weights, str) and weights.startswith("imagenet"):
            report.lost((wkey,), f"'{weights}' weights are not available; only imagenet")
        elif isinstance(weights, str):
            out["weights"] = weights
            report.note((wkey,), "a weights file must fit the patchcfg backbone (see backbone.weights)")
        else:
            report.lost((wkey,), f"expected imagenet or a file path, got {show(weights)}")
    pooling = convert_pooling(musket, report)
    if pooling is not None:
        out["pooling"] = pooling
    return out


def convert_pooling(musket: dict, report: Report) -> str | None:
    if "pooling" not in musket:
        return None
    value = musket["pooling"]
    if value in ("avg", "max"):
        return value
    if value is None or value == "none":
        return None  # Musket then averages the feature map itself
    report.lost(("pooling",), f"expected avg or max, got {show(value)}")
    return None
