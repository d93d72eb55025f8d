"""Augmentation recipes: the names, their parameters, the presets. No TensorFlow here.

A recipe is the ``augmentation:`` mapping of a config. Its keys are augmenter names applied in the
order written; ``preset`` expands to a named recipe at its place, and later keys that the preset
already has override its parameters in place (mappings merge, a bare value sets the main
parameter). Three families of names share one namespace:

- patchwork-style SSL parameters (``flip_left_right``, ``zoom_scale``, ``jitter``, ...), with
  patchwork's meanings;
- imgaug-style augmenters (``Fliplr``, ``Affine``, ``GaussianBlur``, ...), so Musket recipes carry
  over; pixel values in their parameters (``Add``, ``cval``, ...) use imgaug's 0-255 scale;
- Keras 3 preprocessing layers by their class name (``RandomRotation``, ...), with their own
  arguments (``value_range`` and ``seed`` are set for you).

Every object form also takes ``sometimes``: the fraction of images the augmenter is applied to
(imgaug's ``Sometimes``). The op registry (:data:`patchcfg.data.ops.OPS`, one module per op) is
the single source of the JSON schema (:func:`augmentation_schema`, written to
``schemas/augmentation.schema.json``) and of the reference in the docs, so the three never disagree.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from patchcfg.data.ops import OPS, Op
from patchcfg.errors import ConfigError

__all__ = ["OPS", "PRESETS", "augmentation_schema", "expand_recipe", "reference_markdown"]

# --------------------------------------------------------------------------- presets

PRESETS: dict[str, dict] = {
    "none": {},
    # patchwork's DEFAULT_AUGMENT_PARAMS, in patchwork's order
    "default": {
        "flip_left_right": True, "flip_up_down": True, "rot90": True, "zoom_scale": 0.2,
        "brightness_delta": 0.2, "contrast_delta": 0.1, "saturation_delta": 0.1, "hue_delta": 0.05,
        "gaussian_blur": 0.2, "gaussian_noise": 0.2, "drop_color": 0.2, "sobel_prob": 0.1, "mask": 0.2,
    },
    # Chen et al. 2020 (SimCLR), appendix A: crop 0.08-1, flip, colour jitter s=1 on 80%,
    # grayscale on 20%, blur on 50%
    "simclr": {
        "zoom_scale": 0.08, "flip_left_right": True, "jitter": {"strength": 1.0, "sometimes": 0.8},
        "drop_color": 0.2, "gaussian_blur": 0.5,
    },
}
PRESET_DOCS = {
    "none": "No augmentation.",
    "default": "patchwork's default augmentation: flips, rot90, zoom_scale 0.2, brightness/contrast/"
               "saturation/hue deltas 0.2/0.1/0.1/0.05, blur 0.2, noise 0.2, drop_color 0.2, sobel 0.1, "
               "mask 0.2.",
    "simclr": "SimCLR (Chen et al. 2020): zoom_scale 0.08, flip_left_right, jitter 1.0 on 80% of images, "
              "drop_color 0.2, gaussian_blur 0.5.",
}

# --------------------------------------------------------------------------- schema


def _op_schema(op: Op) -> dict:
    """A mapping of parameters (if the value is a mapping), else the bare primary value.

    Parameter defaults are stated in the descriptions, not as schema ``default``s: a mapping that
    overrides a preset's step must not be filled with the step's own defaults.
    """
    properties = {}
    for pname, param in op.params.items():
        prop = copy.deepcopy(param.schema)
        default = "" if param.default is None else f" Default: {_show_default(param.default)}."
        prop["description"] = param.doc + default
        properties[pname] = prop
    obj = {"type": "object", "additionalProperties": False, "properties": properties}
    if op.required:
        obj["required"] = list(op.required)
    if op.primary:
        other = copy.deepcopy(op.params[op.primary].schema)
        kind = f"{op.primary} ({_kind(op.params[op.primary].schema)}) or a mapping of parameters"
    elif op.required:
        other = {"type": "object", "x-message": f"expected a mapping with {', '.join(op.required)}"}
        kind = "a mapping of parameters"
    else:
        other = {"type": "null", "x-message": "expected a mapping of parameters (or nothing)"}
        kind = "a mapping of parameters"
    return {"description": op.doc + (f" A bare value sets `{op.primary}`." if op.primary else ""),
            "x-kind": kind, "if": {"type": "object"}, "then": obj, "else": other}


def _show_default(value) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_show_default(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value)


def _kind(schema: dict) -> str:
    if "x-kind" in schema:
        return schema["x-kind"]
    if "enum" in schema:
        return "one of " + ", ".join(map(str, schema["enum"]))
    return schema.get("type", "a value")


def augmentation_schema() -> dict:
    """The JSON schema of the ``augmentation`` section (written to schemas/augmentation.schema.json)."""
    properties: dict[str, Any] = {
        "preset": {"description": "A named recipe expanded at this place: "
                                  + " ".join(f"{k}: {v}" for k, v in PRESET_DOCS.items())
                                  + " Later keys override its parameters. An empty augmentation "
                                    "section means `preset: default`.",
                   "enum": list(PRESETS)},
        "engine": {"description": "Augmentation engine: keras (TensorFlow ops and Keras 3 preprocessing "
                                  "layers inside the tf.data graph). An imgaug engine is not provided.",
                   "enum": ["keras"], "default": "keras"},
    }
    for name, op in OPS.items():
        properties[name] = _op_schema(op)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "augmentation.schema.json",
        "title": "patchcfg augmentation recipe",
        "description": "Augmenters applied in the order written, inside the tf.data graph. `preset` "
                       "expands to a named recipe; later keys override its parameters. Names: "
                       "patchwork-style (flip_left_right, zoom_scale, jitter, ...), imgaug-style "
                       "(Fliplr, Affine, GaussianBlur, ...) and Keras layer names (RandomRotation, ...). "
                       "Every mapping form takes `sometimes`: the fraction of images it applies to.",
        "type": ["object", "null"],
        "additionalProperties": False,
        "properties": properties,
    }


# --------------------------------------------------------------------------- normalising a recipe


def _as_params(op: Op, value: Any) -> dict:
    """A recipe value as a parameter mapping (a bare value sets the primary parameter)."""
    if isinstance(value, dict):
        return dict(value)
    if value is None:
        return {}
    if op.primary is None:
        raise ConfigError(f"augmentation.{op.name}: expected a mapping of parameters, got {value!r}")
    return {op.primary: value}


def expand_recipe(aug_cfg: dict | None) -> list[tuple[str, dict]]:
    """The recipe as [(name, params)] in order: presets expanded, overrides merged, defaults filled.

    An empty or missing section is ``preset: default``. Raises ConfigError for unknown names
    (schema validation normally catches them first, with the file and line).
    """
    cfg = dict(aug_cfg or {})
    cfg.pop("engine", None)
    if not cfg:
        cfg = {"preset": "default"}
    steps: list[list] = []
    index: dict[str, int] = {}
    for key, value in cfg.items():
        if key == "preset":
            if value not in PRESETS:
                raise ConfigError(f"augmentation.preset: {value!r} is not one of: {', '.join(PRESETS)}")
            for pkey, pvalue in PRESETS[value].items():
                index[pkey] = len(steps)
                steps.append([pkey, _as_params(OPS[pkey], pvalue)])
            continue
        if key not in OPS:
            import difflib

            close = difflib.get_close_matches(key, list(OPS), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"augmentation.{key}: unknown augmenter{hint}; valid names: {', '.join(OPS)}")
        params = _as_params(OPS[key], value)
        if key in index:
            steps[index[key]][1].update(params)
        else:
            index[key] = len(steps)
            steps.append([key, params])
    out = []
    for name, params in steps:
        op = OPS[name]
        unknown = set(params) - set(op.params)
        if unknown:
            raise ConfigError(f"augmentation.{name}: unknown parameter(s) {', '.join(sorted(unknown))}; "
                              f"valid: {', '.join(op.params)}")
        missing = [r for r in op.required if params.get(r) is None]
        if missing:
            raise ConfigError(f"augmentation.{name}: missing required parameter(s) {', '.join(missing)}")
        full = {p: copy.deepcopy(param.default) for p, param in op.params.items()}
        full.update(params)
        out.append((name, full))
    return out


def reference_markdown() -> str:
    """The recipe reference (every name, its parameters and defaults) as Markdown tables."""
    titles = {"patchwork": "patchwork-style SSL parameters", "imgaug": "imgaug-style augmenters",
              "keras": "Keras 3 preprocessing layers"}
    lines = []
    for family, title in titles.items():
        lines += [f"#### {title}", "", "| name | bare value sets | parameters (default) | what it does |",
                  "| --- | --- | --- | --- |"]
        for op in OPS.values():
            if op.family != family:
                continue
            params = ", ".join(
                f"`{p}`" + ("" if param.default is None else f" ({_show_default(param.default)})")
                + (" *required*" if p in op.required else "")
                for p, param in op.params.items() if p != "sometimes")
            doc = op.doc.replace("|", "\\|") + (" RGB only." if op.rgb_only else "")
            lines.append(f"| `{op.name}` | {('`' + op.primary + '`') if op.primary else '-'} | "
                         f"{params or '-'} | {doc} |")
        lines.append("")
    return "\n".join(lines)
