"""Keras 3 preprocessing layers by their class name, with their own arguments (``value_range`` and
``seed`` are set for you). Each layer is driven through its public ``get_random_transformation`` /
``transform_images`` with a seed object derived from the batch seed, so it is reproducible like the
other ops."""

from patchcfg.data.ops import PAIR, PROB, Param, nullable, number, register, value_range

KERAS_FILL = ["reflect", "wrap", "constant", "nearest"]
INTERP = ["nearest", "bilinear"]
_FACTOR = value_range(-1, 1)
_UNIT = value_range(0, 1)


def _warp(**params):
    return {**params, "fill_mode": Param({"enum": KERAS_FILL}, "reflect", "Border fill."),
            "interpolation": Param({"enum": INTERP}, "bilinear", "Interpolation."),
            "fill_value": Param(number(0, 1), 0.0, "Fill value for constant mode.")}


#: name -> (doc, parameters, required parameters, RGB only, geometric)
LAYERS: dict[str, tuple[str, dict[str, Param], tuple[str, ...], bool, bool]] = {
    "RandomFlip": ("Random flips.", {
        "mode": Param({"enum": ["horizontal", "vertical", "horizontal_and_vertical"]},
                      "horizontal_and_vertical", "Which flips.")}, (), False, True),
    "RandomRotation": ("Random rotation; factor as a fraction of a full turn.", _warp(
        factor=Param(_FACTOR, None, "Rotation range, fraction of 2*pi.")), ("factor",), False, True),
    "RandomZoom": ("Random zoom (negative = zoom in).", _warp(
        height_factor=Param(_FACTOR, None, "Zoom range along the height."),
        width_factor=Param(nullable(_FACTOR), None, "Along the width (null: keep aspect).")),
        ("height_factor",), False, True),
    "RandomTranslation": ("Random shift, as a fraction of the size.", _warp(
        height_factor=Param(_FACTOR, None, "Shift range along the height."),
        width_factor=Param(_FACTOR, None, "Shift range along the width.")),
        ("height_factor", "width_factor"), False, True),
    "RandomShear": ("Random shear.", _warp(
        x_factor=Param(_UNIT, 0.0, "Shear range along x."), y_factor=Param(_UNIT, 0.0, "Along y.")),
        (), False, True),
    "RandomContrast": ("Random contrast.", {"factor": Param(_UNIT, None, "Contrast range.")}, ("factor",),
                       False, False),
    "RandomBrightness": ("Random brightness (added).", {"factor": Param(_FACTOR, None, "Brightness range.")},
                         ("factor",), False, False),
    "RandomColorJitter": ("Brightness, contrast, saturation and hue jitter.", {
        "brightness_factor": Param(nullable(_FACTOR), None, "Brightness range."),
        "contrast_factor": Param(nullable(_UNIT), None, "Contrast range."),
        "saturation_factor": Param(nullable(_UNIT), None, "Saturation range."),
        "hue_factor": Param(nullable(_UNIT), None, "Hue range.")}, (), True, False),
    "RandomGrayscale": ("Grayscale with probability factor.", {"factor": Param(PROB, 0.5, "Probability.")},
                        (), True, False),
    "RandomHue": ("Random hue.", {"factor": Param(_UNIT, None, "Hue range.")}, ("factor",), True, False),
    "RandomSaturation": ("Random saturation.", {"factor": Param(_UNIT, None, "Saturation range.")},
                         ("factor",), True, False),
    "RandomColorDegeneration": ("Blend with grayscale.", {"factor": Param(_UNIT, None, "Range.")},
                                ("factor",), True, False),
    "RandomSharpness": ("Random sharpness.", {"factor": Param(_UNIT, None, "Range.")}, ("factor",), False,
                        False),
    "RandomPosterization": ("Reduce bits per channel.",
                            {"factor": Param(value_range(1, 8), None, "Bits range.")}, ("factor",), False,
                            False),
    "RandomInvert": ("Invert with probability factor.", {"factor": Param(_UNIT, 1.0, "Probability range.")},
                     (), False, False),
    "RandomErasing": ("Erase random rectangles.", {
        "factor": Param(_UNIT, 1.0, "Probability range."),
        "scale": Param(PAIR, [0.02, 0.33], "Erased area range."),
        "fill_value": Param(nullable(number(0, 1)), None, "Fill (null: random).")}, (), False, False),
    "RandomGaussianBlur": ("Gaussian blur (one sigma per batch).", {
        "factor": Param(_UNIT, 1.0, "Probability range."),
        "kernel_size": Param(number(1, 63, integer=True), 3, "Kernel size."),
        "sigma": Param(value_range(0, 20), 1.0, "Sigma range.")}, (), False, False),
    "RandomPerspective": ("Random perspective warp.", {
        "factor": Param(_UNIT, 1.0, "Probability range."), "scale": Param(number(0, 1), 1.0, "Distortion."),
        "interpolation": Param({"enum": INTERP}, "bilinear", "Interpolation."),
        "fill_value": Param(number(0, 1), 0.0, "Fill value.")}, (), False, True),
    "RandomElasticTransform": ("Elastic deformation.", {
        "factor": Param(_UNIT, 1.0, "Probability range."), "scale": Param(_UNIT, 1.0, "Distortion."),
        "fill_mode": Param({"enum": KERAS_FILL}, "reflect", "Border fill."),
        "interpolation": Param({"enum": INTERP}, "bilinear", "Interpolation."),
        "fill_value": Param(number(0, 1), 0.0, "Fill value.")}, (), False, True),
    "Solarization": ("Solarize.", {
        "addition_factor": Param(_UNIT, 0.0, "Range of the value added before solarizing."),
        "threshold_factor": Param(_UNIT, 0.0, "Threshold range.")}, (), False, False),
    "AutoContrast": ("Stretch each channel to the full range.", {}, (), False, False),
    "Equalization": ("Histogram equalization.", {"bins": Param(number(2, 65536, integer=True), 256, "Bins.")},
                     (), False, False),
}


def layer_step(name, params):
    """run(images, seeds) applying the Keras layer ``name`` built from ``params``."""
    import inspect

    import keras
    import tensorflow as tf

    from patchcfg.errors import ConfigError

    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in params.items() if k != "sometimes"}
    cls = getattr(keras.layers, name)
    accepted = inspect.signature(cls.__init__).parameters
    if "value_range" in accepted:
        kwargs["value_range"] = (0.0, 1.0)
    if "seed" in accepted:
        kwargs["seed"] = 0
    try:
        layer = cls(**kwargs)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"augmentation.{name}: {error}") from None
    parts = [layer]
    if name == "RandomColorJitter":
        parts = [sub for sub in (layer.random_brightness, layer.random_contrast, layer.random_saturation,
                                 layer.random_hue) if sub is not None]
    for part in parts:
        part.backend.set_backend("tensorflow")

    def run(images, seeds):
        out = images
        for part in parts:
            transformation = part.get_random_transformation(out, training=True, seed=seeds)
            if name == "RandomContrast" and transformation is not None:
                transformation["contrast_factor"] = tf.cast(transformation["contrast_factor"], tf.float32)
            out = tf.cast(part.transform_images(out, transformation, training=True), tf.float32)
        return out
    return run


for _name, (_doc, _params, _required, _rgb, _geometric) in LAYERS.items():
    register(_name, "keras", f"keras.layers.{_name}: {_doc}", _params, required=_required, rgb_only=_rgb,
             geometric=_geometric)(lambda params, name=_name: layer_step(name, params))
