"""imgaug's affine family: ``Affine`` (scale, translate, rotate, shear in one resampling) and its one-axis
shorthands ``Rotate``, ``ShearX/Y``, ``TranslateX/Y``, ``ScaleX/Y``."""

import math

from patchcfg.data.ops import Param, number, register, value_range, xy_range

FILL_MODES = ["constant", "edge", "symmetric", "reflect", "wrap"]
_COMMON = {
    "order": Param({"enum": [0, 1]}, 1, "Interpolation: 0 nearest, 1 bilinear."),
    "cval": Param(number(0, 255), 0, "Fill value for `mode: constant`, on the 0-255 scale."),
    "mode": Param({"enum": FILL_MODES}, "constant", "How pixels outside the image are filled."),
}


def _matrices(batch, height, width, *, sx, sy, tx, ty, rot, shx, shy):
    """Per-image forward matrices about the image centre (angles in radians, shifts in pixels)."""
    import tensorflow as tf

    one, zero = tf.ones([batch]), tf.zeros([batch])

    def mat(rows):
        return tf.reshape(tf.stack([v for row in rows for v in row], axis=-1), [-1, 3, 3])

    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    to_origin = mat([[one, zero, -cx * one], [zero, one, -cy * one], [zero, zero, one]])
    back = mat([[one, zero, cx * one + tx], [zero, one, cy * one + ty], [zero, zero, one]])
    scale = mat([[sx, zero, zero], [zero, sy, zero], [zero, zero, one]])
    shear = mat([[one, tf.tan(shx), zero], [tf.tan(shy), one, zero], [zero, zero, one]])
    cos, sin = tf.cos(rot), tf.sin(rot)
    rotate = mat([[cos, -sin, zero], [sin, cos, zero], [zero, zero, one]])
    return back @ rotate @ shear @ scale @ to_origin


def _xy(value, default):
    if isinstance(value, dict):
        return value.get("x", default), value.get("y", default)
    return value, value


def _affine(params, *, scale=1.0, translate=0.0, rotate=0.0, shear=0.0, same_scale=True):
    import tensorflow as tf

    from patchcfg.data.kernels import project, sample

    degrees = math.pi / 180

    def run(images, seeds):
        batch = tf.shape(images)[0]
        height, width = images.shape[1], images.shape[2]
        scale_x, scale_y = _xy(scale, 1.0)
        sx = sample(seeds, batch, scale_x)
        sy = sx if (same_scale and not isinstance(scale, dict)) else sample(seeds, batch, scale_y)
        trans_x, trans_y = _xy(translate, 0.0)
        tx = sample(seeds, batch, trans_x) * width
        ty = sample(seeds, batch, trans_y) * height
        rot = sample(seeds, batch, rotate) * degrees
        shear_x, shear_y = _xy(shear, 0.0)
        shx = sample(seeds, batch, shear_x) * degrees
        shy = (sample(seeds, batch, shear_y) * degrees) if isinstance(shear, dict) else tf.zeros([batch])
        matrices = _matrices(batch, height, width, sx=sx, sy=sy, tx=tx, ty=ty, rot=rot, shx=shx, shy=shy)
        return project(images, matrices, fill_mode=params["mode"], fill_value=params["cval"] / 255.0,
                       interpolation="bilinear" if params["order"] == 1 else "nearest")
    return run


@register("Affine", "imgaug",
          "Scale, translate, rotate and shear in one resampling. A number is that value, [a, b] a uniform "
          "range; `scale`, `translate_percent` and `shear` also take {x: ..., y: ...}.",
          {"scale": Param(xy_range(0.01, 10), 1.0, "Zoom factor (1 = unchanged)."),
           "translate_percent": Param(xy_range(-1, 1), 0.0, "Shift as a fraction of the image size."),
           "rotate": Param(value_range(-360, 360), 0.0, "Rotation in degrees."),
           "shear": Param(xy_range(-89, 89), 0.0, "Shear in degrees."),
           **_COMMON}, geometric=True)
def affine(params):
    return _affine(params, scale=params["scale"], translate=params["translate_percent"],
                   rotate=params["rotate"], shear=params["shear"])


@register("Rotate", "imgaug", "Affine rotation in degrees (number or [a, b]).",
          {"rotate": Param(value_range(-360, 360), [-30, 30], "Rotation in degrees."), **_COMMON},
          primary="rotate", geometric=True)
def rotate(params):
    return _affine(params, rotate=params["rotate"])


def _one_axis(name, doc, key, schema, default, what, kind):
    @register(name, "imgaug", doc, {key: Param(schema, default, what), **_COMMON}, primary=key,
              geometric=True)
    def build(params):
        axis = name[-1].lower()
        if kind == "scale":
            return _affine(params, scale={axis: params[key]}, same_scale=False)
        return _affine(params, **{kind: {axis: params[key]}})
    return build


shear_x = _one_axis("ShearX", "Affine shear along x in degrees.", "shear", value_range(-89, 89), [-30, 30],
                    "Shear in degrees.", "shear")
shear_y = _one_axis("ShearY", "Affine shear along y in degrees.", "shear", value_range(-89, 89), [-30, 30],
                    "Shear in degrees.", "shear")
translate_x = _one_axis("TranslateX", "Affine shift along x as a fraction of the width.", "percent",
                        value_range(-1, 1), [-0.2, 0.2], "Shift fraction.", "translate")
translate_y = _one_axis("TranslateY", "Affine shift along y as a fraction of the height.", "percent",
                        value_range(-1, 1), [-0.2, 0.2], "Shift fraction.", "translate")
scale_x = _one_axis("ScaleX", "Affine zoom along x.", "scale", value_range(0.01, 10), [0.5, 1.5],
                    "Zoom factor.", "scale")
scale_y = _one_axis("ScaleY", "Affine zoom along y.", "scale", value_range(0.01, 10), [0.5, 1.5],
                    "Zoom factor.", "scale")
