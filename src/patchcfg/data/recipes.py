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
(imgaug's ``Sometimes``). ``OPS`` is the single source of the JSON schema
(:func:`augmentation_schema`, written to ``schemas/augmentation.schema.json``) and of the
reference in the docs, so the three never disagree.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

from patchcfg.errors import ConfigError

# --------------------------------------------------------------------------- schema helpers


def _number(lo=None, hi=None, *, integer=False, exclusive_lo=False) -> dict:
    schema: dict[str, Any] = {"type": "integer" if integer else "number"}
    if lo is not None:
        schema["exclusiveMinimum" if exclusive_lo else "minimum"] = lo
    if hi is not None:
        schema["maximum"] = hi
    return schema


def _bounds(lo, hi) -> str:
    if lo is None and hi is None:
        return ""
    if hi is None:
        return f" >= {lo:g}"
    if lo is None:
        return f" <= {hi:g}"
    return f" in [{lo:g}, {hi:g}]"


def _range(lo=None, hi=None) -> dict:
    """A number or a [low, high] pair, each within [lo, hi]."""
    item = _number(lo, hi)
    where = _bounds(lo, hi)
    return {"anyOf": [dict(item, **{"x-kind": f"a number{where}"}),
                      {"type": "array", "items": item, "minItems": 2, "maxItems": 2,
                       "x-kind": f"a [low, high] pair{where}"}],
            "x-kind": f"a number or a [low, high] pair{where}"}


def _xy_range(lo=None, hi=None) -> dict:
    """A number, a [low, high] pair, or {x: ..., y: ...} with either."""
    inner = _range(lo, hi)
    return {"anyOf": [*inner["anyOf"],
                      {"type": "object", "additionalProperties": False, "x-kind": "a mapping {x: ..., y: ...}",
                       "properties": {"x": dict(inner, description="Along the width."),
                                      "y": dict(inner, description="Along the height.")}}],
            "x-kind": "a number, a [low, high] pair or {x: ..., y: ...}"}


PROB = dict(_number(0, 1), **{"x-kind": "a probability in [0, 1]"})
BOOL_OR_PROB = {"anyOf": [{"type": "boolean"}, PROB], "x-kind": "true/false or a probability in [0, 1]"}
FILL_MODES = ["constant", "edge", "symmetric", "reflect", "wrap"]
KERAS_FILL = ["reflect", "wrap", "constant", "nearest"]
INTERP = ["nearest", "bilinear"]


@dataclass
class Param:
    schema: dict
    default: Any
    doc: str


@dataclass
class Op:
    """One augmenter name: its parameters, which one a bare value sets, and what it does."""

    name: str
    family: str  # "patchwork" | "imgaug" | "keras"
    doc: str
    params: dict[str, Param]
    primary: str | None = None  # parameter a bare (non-mapping) value sets
    rgb_only: bool = False
    keras_layer: str | None = None
    alias_of: str | None = None
    required: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict)


SOMETIMES = Param(PROB, 1.0, "Fraction of images this augmenter is applied to (imgaug's `Sometimes`).")

OPS: dict[str, Op] = {}

#: Names that move pixels (flips, crops, affine and elastic warps). Masks that go with an image (DetCon's
#: segments) take these with the image's random draws; every other name changes the image only.
GEOMETRIC = frozenset({
    "flip_left_right", "flip_up_down", "rot90", "shear", "zoom_scale", "center_zoom_scale", "Fliplr", "Flipud",
    "Affine", "Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY", "ScaleX", "ScaleY", "Crop", "RandomFlip",
    "RandomRotation", "RandomZoom", "RandomTranslation", "RandomShear", "RandomPerspective",
    "RandomElasticTransform"})


def _op(name, family, doc, params, primary=None, **kw) -> None:
    params = dict(params)
    params.setdefault("sometimes", SOMETIMES)
    OPS[name] = Op(name=name, family=family, doc=doc, params=params, primary=primary, **kw)


# --------------------------------------------------------------------------- patchwork-style

_op("flip_left_right", "patchwork", "Mirror left-right; true = half of the images, a number = that fraction.",
    {"p": Param(BOOL_OR_PROB, 0.5, "Probability (true = 0.5).")}, primary="p")
_op("flip_up_down", "patchwork", "Mirror up-down; true = half of the images, a number = that fraction.",
    {"p": Param(BOOL_OR_PROB, 0.5, "Probability (true = 0.5).")}, primary="p")
_op("rot90", "patchwork",
    "Rotate by a multiple of 90 degrees; true = uniformly 0/90/180/270, a number = probability of a "
    "non-zero rotation. Non-square images are rotated by 0 or 180 only (their shape must not change).",
    {"p": Param(BOOL_OR_PROB, 0.75, "Probability of rotating (true = 0.75: uniform over the four).")},
    primary="p")
_op("shear", "patchwork", "Random shear along both axes up to this factor (reflected borders).",
    {"factor": Param(_number(0, 2), 0.3, "Largest shear factor.")}, primary="factor")
_op("zoom_scale", "patchwork",
    "Random resized crop (SimCLR): a crop covering between this fraction and all of the image area, "
    "aspect ratio in `ratio`, resized back to `data.imshape`.",
    {"scale": Param(_number(0, 1, exclusive_lo=True), 0.2, "Smallest crop area, as a fraction of the image."),
     "ratio": Param({"type": "array", "items": _number(0, exclusive_lo=True), "minItems": 2, "maxItems": 2},
                    [0.75, 4 / 3], "Range of crop aspect ratios (width/height, relative to the image).")},
    primary="scale")
_op("center_zoom_scale", "patchwork",
    "Random centred crop keeping between this fraction and all of each side, resized back.",
    {"scale": Param(_number(0, 1, exclusive_lo=True), 0.8, "Smallest kept fraction of each side.")},
    primary="scale")
_op("solarize", "patchwork", "With this probability, invert the pixels above a random threshold.",
    {"p": Param(PROB, 0.1, "Probability.")}, primary="p")
_op("jitter", "patchwork",
    "SimCLR colour jitter of this strength s: brightness x[1-0.8s, 1+0.8s], contrast and saturation "
    "[1-0.8s, 1+0.8s], hue +-0.2s of a turn (brightness and contrast only for images that are not RGB). "
    "Saturation blends with the luma image and hue turns the colours about the grey axis (YIQ).",
    {"strength": Param(_number(0, 4), 1.0, "Jitter strength s.")}, primary="strength")
_op("brightness_delta", "patchwork", "Multiply by a random factor in [1-d, 1+d].",
    {"delta": Param(_number(0, 1), 0.2, "d.")}, primary="delta")
_op("contrast_delta", "patchwork", "Scale contrast around each channel's mean by a factor in [1-d, 1+d].",
    {"delta": Param(_number(0, 1), 0.1, "d.")}, primary="delta")
_op("saturation_delta", "patchwork", "Scale saturation by a factor in [1-d, 1+d] (RGB images).",
    {"delta": Param(_number(0, 1), 0.1, "d.")}, primary="delta", rgb_only=True)
_op("hue_delta", "patchwork", "Shift hue by up to +-d of the colour circle (RGB images).",
    {"delta": Param(_number(0, 0.5), 0.05, "d.")}, primary="delta", rgb_only=True)
_op("gaussian_blur", "patchwork",
    "With this probability, Gaussian blur with sigma uniform in `sigma` (kernel radius: 1/20 of the height).",
    {"p": Param(PROB, 0.2, "Probability."),
     "sigma": Param(_range(0, 20), [0.1, 2.0], "Range of the blur's sigma, in pixels.")}, primary="p")
_op("gaussian_noise", "patchwork", "With this probability, add Gaussian noise of standard deviation `std`.",
    {"p": Param(PROB, 0.2, "Probability."), "std": Param(_number(0, 1), 0.1, "Noise standard deviation.")},
    primary="p")
_op("autocontrast", "patchwork", "With this probability, stretch the image's values to fill [0, 1].",
    {"p": Param(PROB, 0.1, "Probability.")}, primary="p")
_op("drop_color", "patchwork", "With this probability, replace every channel by the mean of the channels.",
    {"p": Param(PROB, 0.2, "Probability.")}, primary="p")
_op("sobel_prob", "patchwork", "With this probability, replace the image by its Sobel edge magnitude.",
    {"p": Param(PROB, 0.1, "Probability.")}, primary="p")
_op("mask", "patchwork", "With this probability, fill a random rectangle (1/20 to 1/2 of each side) with 0.5.",
    {"p": Param(PROB, 0.2, "Probability.")}, primary="p")
_op("pixel_mask", "patchwork", "With this probability, zero a random fraction `drop` of the pixels.",
    {"p": Param(PROB, 0.1, "Probability."), "drop": Param(PROB, 0.7, "Fraction of pixels zeroed.")},
    primary="p")

# --------------------------------------------------------------------------- imgaug-style

_AFFINE_COMMON = {
    "order": Param({"enum": [0, 1]}, 1, "Interpolation: 0 nearest, 1 bilinear."),
    "cval": Param(_number(0, 255), 0, "Fill value for `mode: constant`, on the 0-255 scale."),
    "mode": Param({"enum": FILL_MODES}, "constant", "How pixels outside the image are filled."),
}
_op("Fliplr", "imgaug", "Mirror left-right with probability p.",
    {"p": Param(PROB, 0.5, "Probability.")}, primary="p")
_op("Flipud", "imgaug", "Mirror up-down with probability p.",
    {"p": Param(PROB, 0.5, "Probability.")}, primary="p")
_op("Affine", "imgaug",
    "Scale, translate, rotate and shear in one resampling. A number is that value, [a, b] a uniform "
    "range; `scale`, `translate_percent` and `shear` also take {x: ..., y: ...}.",
    {"scale": Param(_xy_range(0.01, 10), 1.0, "Zoom factor (1 = unchanged)."),
     "translate_percent": Param(_xy_range(-1, 1), 0.0, "Shift as a fraction of the image size."),
     "rotate": Param(_range(-360, 360), 0.0, "Rotation in degrees."),
     "shear": Param(_xy_range(-89, 89), 0.0, "Shear in degrees."),
     **_AFFINE_COMMON})
_op("Rotate", "imgaug", "Affine rotation in degrees (number or [a, b]).",
    {"rotate": Param(_range(-360, 360), [-30, 30], "Rotation in degrees."), **_AFFINE_COMMON},
    primary="rotate")
_op("ShearX", "imgaug", "Affine shear along x in degrees.",
    {"shear": Param(_range(-89, 89), [-30, 30], "Shear in degrees."), **_AFFINE_COMMON}, primary="shear")
_op("ShearY", "imgaug", "Affine shear along y in degrees.",
    {"shear": Param(_range(-89, 89), [-30, 30], "Shear in degrees."), **_AFFINE_COMMON}, primary="shear")
_op("TranslateX", "imgaug", "Affine shift along x as a fraction of the width.",
    {"percent": Param(_range(-1, 1), [-0.2, 0.2], "Shift fraction."), **_AFFINE_COMMON}, primary="percent")
_op("TranslateY", "imgaug", "Affine shift along y as a fraction of the height.",
    {"percent": Param(_range(-1, 1), [-0.2, 0.2], "Shift fraction."), **_AFFINE_COMMON}, primary="percent")
_op("ScaleX", "imgaug", "Affine zoom along x.",
    {"scale": Param(_range(0.01, 10), [0.5, 1.5], "Zoom factor."), **_AFFINE_COMMON}, primary="scale")
_op("ScaleY", "imgaug", "Affine zoom along y.",
    {"scale": Param(_range(0.01, 10), [0.5, 1.5], "Zoom factor."), **_AFFINE_COMMON}, primary="scale")
_op("GaussianBlur", "imgaug", "Gaussian blur, sigma in pixels (number or [a, b]).",
    {"sigma": Param(_range(0, 20), [0.0, 3.0], "Sigma in pixels.")}, primary="sigma")
_PER_CHANNEL = Param(BOOL_OR_PROB, False, "Sample per channel (true) or per image (false); a number: "
                     "fraction of images sampled per channel.")
_op("Multiply", "imgaug", "Multiply pixel values by a factor.",
    {"mul": Param(_range(0, 10), [0.8, 1.2], "Factor."), "per_channel": _PER_CHANNEL}, primary="mul")
_op("Add", "imgaug", "Add a value, on the 0-255 scale (divided by 255).",
    {"value": Param(_range(-255, 255), [-20, 20], "Value (0-255 scale)."), "per_channel": _PER_CHANNEL},
    primary="value")
_op("AddToHueAndSaturation", "imgaug",
    "Add to hue and saturation, imgaug's -255..255 scale (255 = a full turn of hue / the full "
    "saturation range). RGB images.",
    {"value": Param(_range(-255, 255), [-20, 20], "Value for both hue and saturation."),
     "value_hue": Param({"anyOf": [{"type": "null"}, _range(-255, 255)]}, None, "Hue value (overrides value)."),
     "value_saturation": Param({"anyOf": [{"type": "null"}, _range(-255, 255)]}, None,
                               "Saturation value (overrides value).")},
    primary="value", rgb_only=True)
_op("Grayscale", "imgaug", "Blend with the grayscale image (mean of channels if not RGB) by alpha.",
    {"alpha": Param(_range(0, 1), 1.0, "Blend factor: 0 = unchanged, 1 = gray.")}, primary="alpha")
_op("Crop", "imgaug", "Crop each side by a fraction of the size, then resize back (keep_size).",
    {"percent": Param(_range(0, 0.49), [0.0, 0.1], "Fraction cropped per side."),
     "sample_independently": Param({"type": "boolean"}, True, "One fraction per side (true) or one for all.")},
    primary="percent")
_op("Dropout", "imgaug", "Set a fraction p of the pixels to zero.",
    {"p": Param(_range(0, 1), 0.05, "Fraction dropped."), "per_channel": _PER_CHANNEL}, primary="p")
_op("CoarseDropout", "imgaug",
    "Set a fraction p of rectangular cells to zero; cells are `size_percent` of the image size.",
    {"p": Param(_range(0, 1), 0.1, "Fraction of cells dropped."),
     "size_percent": Param(_range(0.001, 1), 0.1, "Cell grid size as a fraction of the image size."),
     "per_channel": _PER_CHANNEL}, primary="p")
_op("AdditiveGaussianNoise", "imgaug", "Add Gaussian noise; `scale` is its std on the 0-255 scale.",
    {"scale": Param(_range(0, 255), [0, 12.75], "Noise std (0-255 scale)."), "per_channel": _PER_CHANNEL},
    primary="scale")
_op("LinearContrast", "imgaug", "Scale contrast around 0.5: 0.5 + alpha * (x - 0.5).",
    {"alpha": Param(_range(0, 10), [0.75, 1.25], "Contrast factor."), "per_channel": _PER_CHANNEL},
    primary="alpha")
_op("ContrastNormalization", "imgaug", "Old imgaug name of LinearContrast.",
    {"alpha": Param(_range(0, 10), [0.75, 1.25], "Contrast factor."), "per_channel": _PER_CHANNEL},
    primary="alpha", alias_of="LinearContrast")
_op("Invert", "imgaug", "Invert (1 - x) with probability p.",
    {"p": Param(PROB, 1.0, "Probability."), "per_channel": _PER_CHANNEL}, primary="p")
_op("Solarize", "imgaug", "Invert the values above a threshold, with probability p.",
    {"p": Param(PROB, 1.0, "Probability."),
     "threshold": Param(_range(0, 255), 128, "Threshold (0-255 scale).")}, primary="p")
_op("Sharpen", "imgaug", "Sharpen with a 3x3 kernel, blended by alpha; lightness scales the centre.",
    {"alpha": Param(_range(0, 1), [0.0, 1.0], "Blend factor."),
     "lightness": Param(_range(0, 10), [0.75, 1.5], "Lightness.")}, primary="alpha")
_op("Cutout", "imgaug", "Fill `nb_iterations` random squares (side `size` of the image size) with `cval`.",
    {"nb_iterations": Param(_number(1, 16, integer=True), 1, "Number of squares."),
     "size": Param(_range(0, 1), 0.2, "Side as a fraction of the smaller image side."),
     "cval": Param(_range(0, 255), 128, "Fill value (0-255 scale).")}, primary="nb_iterations")

# --------------------------------------------------------------------------- Keras layers

_FACTOR = _range(-1, 1)
_UNIT = _range(0, 1)
_KERAS: dict[str, tuple[str, dict[str, Param], tuple[str, ...], bool]] = {
    "RandomFlip": ("Random flips.", {"mode": Param({"enum": ["horizontal", "vertical", "horizontal_and_vertical"]},
                                                   "horizontal_and_vertical", "Which flips.")}, (), False),
    "RandomRotation": ("Random rotation; factor as a fraction of a full turn.", {
        "factor": Param(_FACTOR, None, "Rotation range, fraction of 2*pi."),
        "fill_mode": Param({"enum": KERAS_FILL}, "reflect", "Border fill."),
        "interpolation": Param({"enum": INTERP}, "bilinear", "Interpolation."),
        "fill_value": Param(_number(0, 1), 0.0, "Fill value for constant mode.")}, ("factor",), False),
    "RandomZoom": ("Random zoom (negative = zoom in).", {
        "height_factor": Param(_FACTOR, None, "Zoom range along the height."),
        "width_factor": Param({"anyOf": [{"type": "null"}, _FACTOR]}, None, "Along the width (null: keep aspect)."),
        "fill_mode": Param({"enum": KERAS_FILL}, "reflect", "Border fill."),
        "interpolation": Param({"enum": INTERP}, "bilinear", "Interpolation."),
        "fill_value": Param(_number(0, 1), 0.0, "Fill value for constant mode.")}, ("height_factor",), False),
    "RandomTranslation": ("Random shift, as a fraction of the size.", {
        "height_factor": Param(_FACTOR, None, "Shift range along the height."),
        "width_factor": Param(_FACTOR, None, "Shift range along the width."),
        "fill_mode": Param({"enum": KERAS_FILL}, "reflect", "Border fill."),
        "interpolation": Param({"enum": INTERP}, "bilinear", "Interpolation."),
        "fill_value": Param(_number(0, 1), 0.0, "Fill value for constant mode.")},
        ("height_factor", "width_factor"), False),
    "RandomShear": ("Random shear.", {
        "x_factor": Param(_UNIT, 0.0, "Shear range along x."), "y_factor": Param(_UNIT, 0.0, "Along y."),
        "fill_mode": Param({"enum": KERAS_FILL}, "reflect", "Border fill."),
        "interpolation": Param({"enum": INTERP}, "bilinear", "Interpolation."),
        "fill_value": Param(_number(0, 1), 0.0, "Fill value for constant mode.")}, (), False),
    "RandomContrast": ("Random contrast.", {"factor": Param(_UNIT, None, "Contrast range.")}, ("factor",), False),
    "RandomBrightness": ("Random brightness (added).", {"factor": Param(_FACTOR, None, "Brightness range.")},
                         ("factor",), False),
    "RandomColorJitter": ("Brightness, contrast, saturation and hue jitter.", {
        "brightness_factor": Param({"anyOf": [{"type": "null"}, _FACTOR]}, None, "Brightness range."),
        "contrast_factor": Param({"anyOf": [{"type": "null"}, _UNIT]}, None, "Contrast range."),
        "saturation_factor": Param({"anyOf": [{"type": "null"}, _UNIT]}, None, "Saturation range."),
        "hue_factor": Param({"anyOf": [{"type": "null"}, _UNIT]}, None, "Hue range.")}, (), True),
    "RandomGrayscale": ("Grayscale with probability factor.", {"factor": Param(PROB, 0.5, "Probability.")},
                        (), True),
    "RandomHue": ("Random hue.", {"factor": Param(_UNIT, None, "Hue range.")}, ("factor",), True),
    "RandomSaturation": ("Random saturation.", {"factor": Param(_UNIT, None, "Saturation range.")},
                         ("factor",), True),
    "RandomColorDegeneration": ("Blend with grayscale.", {"factor": Param(_UNIT, None, "Range.")},
                                ("factor",), True),
    "RandomSharpness": ("Random sharpness.", {"factor": Param(_UNIT, None, "Range.")}, ("factor",), False),
    "RandomPosterization": ("Reduce bits per channel.", {"factor": Param(_range(1, 8), None, "Bits range.")},
                            ("factor",), False),
    "RandomInvert": ("Invert with probability factor.", {"factor": Param(_UNIT, 1.0, "Probability range.")},
                     (), False),
    "RandomErasing": ("Erase random rectangles.", {
        "factor": Param(_UNIT, 1.0, "Probability range."),
        "scale": Param({"type": "array", "items": _number(0, 1), "minItems": 2, "maxItems": 2}, [0.02, 0.33],
                       "Erased area range."),
        "fill_value": Param({"anyOf": [{"type": "null"}, _number(0, 1)]}, None, "Fill (null: random).")},
        (), False),
    "RandomGaussianBlur": ("Gaussian blur (one sigma per batch).", {
        "factor": Param(_UNIT, 1.0, "Probability range."),
        "kernel_size": Param(_number(1, 63, integer=True), 3, "Kernel size."),
        "sigma": Param(_range(0, 20), 1.0, "Sigma range.")}, (), False),
    "RandomPerspective": ("Random perspective warp.", {
        "factor": Param(_UNIT, 1.0, "Probability range."), "scale": Param(_number(0, 1), 1.0, "Distortion."),
        "interpolation": Param({"enum": INTERP}, "bilinear", "Interpolation."),
        "fill_value": Param(_number(0, 1), 0.0, "Fill value.")}, (), False),
    "RandomElasticTransform": ("Elastic deformation.", {
        "factor": Param(_UNIT, 1.0, "Probability range."), "scale": Param(_UNIT, 1.0, "Distortion."),
        "fill_mode": Param({"enum": KERAS_FILL}, "reflect", "Border fill."),
        "interpolation": Param({"enum": INTERP}, "bilinear", "Interpolation."),
        "fill_value": Param(_number(0, 1), 0.0, "Fill value.")}, (), False),
    "Solarization": ("Solarize.", {
        "addition_factor": Param(_UNIT, 0.0, "Range of the value added before solarizing."),
        "threshold_factor": Param(_UNIT, 0.0, "Threshold range.")}, (), False),
    "AutoContrast": ("Stretch each channel to the full range.", {}, (), False),
    "Equalization": ("Histogram equalization.", {"bins": Param(_number(2, 65536, integer=True), 256, "Bins.")},
                     (), False),
}
for _name, (_doc, _params, _required, _rgb) in _KERAS.items():
    _op(_name, "keras", f"keras.layers.{_name}: {_doc}", _params, keras_layer=_name, required=_required,
        rgb_only=_rgb)

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
               "saturation/hue deltas 0.2/0.1/0.1/0.05, blur 0.2, noise 0.2, drop_color 0.2, sobel 0.1, mask 0.2.",
    "simclr": "SimCLR (Chen et al. 2020): zoom_scale 0.08, flip_left_right, jitter 1.0 on 80% of images, "
              "drop_color 0.2, gaussian_blur 0.5.",
}
RESERVED_KEYS = ("preset", "engine")

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
    import json

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


def is_noop(name: str, params: dict) -> bool:
    """True for steps that cannot change an image (probability 0, strength 0, ...)."""
    op = OPS[name]
    if params.get("sometimes", 1.0) == 0:
        return True
    if op.primary and op.family == "patchwork":
        value = params[op.primary]
        if value is False or (isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0):
            return name not in ("zoom_scale", "center_zoom_scale")
    if op.family == "imgaug" and op.primary == "p" and name in ("Fliplr", "Flipud", "Invert", "Solarize"):
        return params["p"] == 0
    return False


def check_recipe(aug_cfg: dict | None, channels: int = 3, imshape=(32, 32)) -> list[str]:
    """Problems the schema cannot see (colour-only augmenters on non-RGB data, ...), as messages.

    Cheap and TensorFlow-free: the config validator may call it after the schema check.
    """
    try:
        steps = expand_recipe(aug_cfg)
    except ConfigError as error:
        return list(error.problems)
    problems = []
    explicit = set((aug_cfg or {}).keys())
    for name, params in steps:
        op = OPS[name]
        if op.rgb_only and channels != 3 and not is_noop(name, params) and name in explicit:
            problems.append(f"augmentation.{name}: needs RGB images (data.channels is {channels}); "
                            "remove it or set data.channels: 3")
        for pname, value in params.items():
            if isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
                if value[0] > value[1]:
                    problems.append(f"augmentation.{name}.{pname}: [low, high] with low > high: {value}")
    h, w = imshape
    if min(h, w) < 8:
        problems.append(f"data.imshape: {list(imshape)} is too small (at least 8 pixels per side)")
    if any(math.isnan(float(v)) for _, p in steps for v in p.values()
           if isinstance(v, float)):
        problems.append("augmentation: NaN is not a valid parameter")
    return problems


def schema_text() -> str:
    """:func:`augmentation_schema` as the text of schemas/augmentation.schema.json (short nodes inline)."""
    import json

    def dump(node, indent=0):
        flat = json.dumps(node, ensure_ascii=False)
        if len(flat) + indent <= 100 or not isinstance(node, (dict, list)) or not node:
            return flat
        pad = " " * (indent + 2)
        if isinstance(node, dict):
            body = ",\n".join(f"{pad}{json.dumps(k)}: {dump(v, indent + 2)}" for k, v in node.items())
            return "{\n" + body + "\n" + " " * indent + "}"
        body = ",\n".join(pad + dump(v, indent + 2) for v in node)
        return "[\n" + body + "\n" + " " * indent + "]"

    return dump(augmentation_schema()) + "\n"


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
