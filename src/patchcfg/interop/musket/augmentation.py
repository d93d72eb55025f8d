"""Musket's imgaug ``augmentation`` recipe as ours: names kept where our op registry has them (checked
against ``schemas/augmentation.schema.json``), a few renamed, the rest reported with the closest."""

from __future__ import annotations

import copy
import difflib
from typing import Any

from patchcfg.interop.musket.report import Report
from patchcfg.interop.musket.values import (
    AUGMENTATION,
    as_number,
    fits,
    items_of,
    mapping_form,
    schema_node,
    show,
)

_AUG_CONTROL_FLOW = ("Sometimes", "OneOf", "SomeOf", "Sequential")
_AUG_SUGGESTIONS = {
    "AverageBlur": "GaussianBlur", "MedianBlur": "GaussianBlur", "MotionBlur": "GaussianBlur",
    "ElasticTransformation": "RandomElasticTransform", "PiecewiseAffine": "RandomElasticTransform",
    "EdgeDetect": "sobel_prob", "DirectedEdgeDetect": "sobel_prob", "Emboss": "Sharpen",
    "AddElementwise": "Add", "MultiplyElementwise": "Multiply", "PerspectiveTransform": "RandomPerspective",
    "CoarseSaltAndPepper": "CoarseDropout", "SaltAndPepper": "Dropout",
}


def convert_augmentation(value: Any, report: Report) -> dict:
    path = ("augmentation",)
    items = items_of(value)
    if items is None:
        report.lost(path, f"expected a mapping of imgaug augmenter names, got {show(value)}")
        items = []
    props = schema_node(AUGMENTATION, "/properties")
    recipe: dict = {}
    for name, args, rel in items:
        converted = _augmenter(name, args, path + rel, props, report)
        if converted is None:
            continue
        ours, params = converted
        if ours in recipe:
            report.lost(path + rel, f"{ours} is already set above; one of each augmenter")
            continue
        recipe[ours] = params
    # An empty section means our `default` preset; Musket without augmenters has none.
    return recipe or {"preset": "none"}


def _augmenter(name: Any, value: Any, path: tuple, props: dict, report: Report) -> tuple[str, Any] | None:
    if name in ("Rotate90", "Rot90"):
        enabled = value.get("enabled", True) if isinstance(value, dict) else value
        if enabled is False or enabled is None:
            report.note(path, "disabled in the Musket config; left out")
            return None
        return "rot90", True
    if name == "CropAndPad":
        return _crop_and_pad(value, path, report)
    if name in _AUG_CONTROL_FLOW:
        report.lost(path, "imgaug control flow is not converted; list the augmenters directly, each "
                          "with `sometimes: <fraction of images>`")
        return None
    if not isinstance(name, str) or name not in props:
        suggestion = _AUG_SUGGESTIONS.get(name) if isinstance(name, str) else None
        if suggestion is None and isinstance(name, str):
            close = difflib.get_close_matches(name, list(props), n=1)
            suggestion = close[0] if close else None
        hint = f"; the closest is {suggestion}" if suggestion else ""
        report.lost(path, f"no equivalent augmenter{hint} (see schemas/augmentation.schema.json)")
        return None
    pointer = f"/properties/{name}"
    if fits(AUGMENTATION, pointer, value) is None:
        return name, copy.deepcopy(value)
    form = mapping_form(AUGMENTATION, pointer)
    if isinstance(value, dict) and form is not None:
        # Parameters we do not have are reported one by one; the rest must then fit as they are.
        params = schema_node(AUGMENTATION, form).get("properties", {})
        for param in value:
            if param not in params:
                report.lost(path + (param,),
                            f"{name} has no '{param}' in patchcfg; it takes {', '.join(params)}")
        value = {param: param_value for param, param_value in value.items() if param in params}
        if fits(AUGMENTATION, pointer, value) is None:
            return name, copy.deepcopy(value)
    report.lost(path, f"{show(value)}: {fits(AUGMENTATION, pointer, value)}")
    return None


def _crop_and_pad(value: Any, path: tuple, report: Report) -> tuple[str, Any] | None:
    percent = value.get("percent") if isinstance(value, dict) else value
    if isinstance(value, dict):
        for param in value:
            if param != "percent":
                report.lost(path + (param,), "Crop takes only percent (and keeps the size)")
    values = percent if isinstance(percent, list) else [percent]
    if not values or any(as_number(v) is None for v in values) or len(values) > 2:
        report.lost(path, "only `percent` (a number or a [low, high] pair) is converted")
        return None
    if any(v > 0 for v in values):
        report.lost(path, "padding (positive percent) has no equivalent; Crop crops only")
        return None
    cropped = sorted(-v for v in values)
    if cropped[-1] > 0.49:
        report.lost(path, "Crop crops at most 0.49 of a side")
        return None
    report.note(path, f"CropAndPad percent {show(percent)} -> Crop percent {show(cropped)}")
    return "Crop", {"percent": cropped if len(cropped) == 2 else cropped[0]}
