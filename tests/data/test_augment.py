"""Augmentation: every recipe name builds and runs in-graph; presets; reproducibility; the schema."""

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from patchcfg.config.docs import augmentation_schema_text as schema_text
from patchcfg.data.augment import build_augmenter
from patchcfg.data.recipes import OPS, PRESETS, expand_recipe
from patchcfg.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SHAPE = (16, 16)

# parameters for the names that need some (or need them to visibly act)
EXAMPLES = {
    "RandomRotation": {"factor": 0.1}, "RandomZoom": {"height_factor": 0.2},
    "RandomTranslation": {"height_factor": 0.1, "width_factor": 0.1}, "RandomContrast": {"factor": 0.3},
    "RandomBrightness": {"factor": 0.2}, "RandomHue": {"factor": 0.2}, "RandomSaturation": {"factor": 0.5},
    "RandomColorDegeneration": {"factor": 0.5}, "RandomSharpness": {"factor": 0.5},
    "RandomPosterization": {"factor": [1, 4]}, "RandomShear": {"x_factor": 0.3, "y_factor": 0.3},
    "RandomColorJitter": {"brightness_factor": 0.2, "contrast_factor": 0.2, "saturation_factor": 0.3,
                          "hue_factor": 0.1},
    "Solarization": {"addition_factor": 0.2, "threshold_factor": 0.5},
    "Affine": {"rotate": [-20, 20], "scale": {"x": [0.8, 1.2], "y": 1.1}, "shear": [-10, 10],
               "translate_percent": 0.1},
    "CoarseDropout": {"p": 0.5}, "rot90": True, "flip_left_right": True, "flip_up_down": True,
    **{name: 1.0 for name in ("solarize", "gaussian_blur", "gaussian_noise", "autocontrast", "drop_color",
                              "sobel_prob", "mask", "pixel_mask")},
}
DETERMINISTIC = {"Grayscale", "Invert", "Solarize", "AutoContrast", "Equalization", "autocontrast", "drop_color",
                 "sobel_prob"}


def batch(n=4, channels=3, seed=0):
    return tf.constant(np.random.default_rng(seed).random((n, *SHAPE, channels)), tf.float32)


@pytest.mark.parametrize("name", list(OPS))
def test_every_name_builds_and_runs_in_graph(name):
    aug = build_augmenter({name: EXAMPLES.get(name)}, SHAPE, 3, seed=1)
    assert aug.steps and aug.steps[0][0] == name
    x = batch()
    run = tf.function(lambda images, seed: aug(images, seed), reduce_retracing=True)
    y = run(x, tf.constant([1, 2], tf.int64)).numpy()
    assert y.shape == x.shape and y.dtype == np.float32
    assert np.isfinite(y).all() and y.min() >= 0 and y.max() <= 1
    assert not np.allclose(y, x.numpy(), atol=1e-4), f"{name} left the batch unchanged"
    again = run(x, tf.constant([1, 2], tf.int64)).numpy()
    np.testing.assert_array_equal(y, again)
    if name not in DETERMINISTIC:
        other = run(x, tf.constant([1, 3], tf.int64)).numpy()
        assert not np.allclose(y, other), f"{name} ignores the seed"


def test_every_name_runs_on_one_channel_where_allowed():
    for name, op in OPS.items():
        if op.rgb_only:
            with pytest.raises(ConfigError, match="needs RGB"):
                build_augmenter({name: EXAMPLES.get(name)}, SHAPE, 1)
            continue
        y = build_augmenter({name: EXAMPLES.get(name)}, SHAPE, 1, seed=0)(batch(channels=1))
        assert y.shape == (4, *SHAPE, 1), name


def test_differs_across_calls_and_reproducible_with_a_seed():
    x = batch()
    a = build_augmenter({"preset": "simclr"}, SHAPE, 3, seed=7)
    b = build_augmenter({"preset": "simclr"}, SHAPE, 3, seed=7)
    c = build_augmenter({"preset": "simclr"}, SHAPE, 3, seed=8)
    first, second = a(x).numpy(), a(x).numpy()
    assert not np.allclose(first, second)
    np.testing.assert_array_equal(first, b(x).numpy())
    np.testing.assert_array_equal(second, b(x).numpy())
    assert not np.allclose(first, c(x).numpy())
    v1, v2 = a.views(x, 2)
    assert not np.allclose(v1.numpy(), v2.numpy())


def test_reproducible_in_a_parallel_tf_data_pipeline(tmp_path):
    from PIL import Image

    from patchcfg.data.loading import make_dataset

    paths = []
    for i in range(12):
        Image.fromarray((np.random.default_rng(i).random((*SHAPE, 3)) * 255).astype(np.uint8)).save(
            tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    data = {"imshape": list(SHAPE), "cache": "memory"}

    def run():
        aug = build_augmenter({"preset": "simclr"}, SHAPE, 3, seed=3)
        ds = make_dataset(paths, data, batch_size=4, shuffle=True, seed=5, augmenter=aug, views=2)
        return [[np.stack([v.numpy() for v in views]) for views in ds] for _ in range(2)]

    one, two = run(), run()
    for epoch in range(2):
        for a, b in zip(one[epoch], two[epoch], strict=True):
            np.testing.assert_array_equal(a, b)
    assert not np.allclose(one[0][0], one[1][0])  # epochs differ
    assert not np.allclose(one[0][0][0], one[0][0][1])  # the two views differ


def test_geometry_is_right():
    x = batch()
    flipped = build_augmenter({"Fliplr": 1.0}, SHAPE, 3, seed=0)(x)
    np.testing.assert_array_equal(flipped.numpy(), x.numpy()[:, :, ::-1])
    upside = build_augmenter({"Flipud": 1.0}, SHAPE, 3, seed=0)(x)
    np.testing.assert_array_equal(upside.numpy(), x.numpy()[:, ::-1])
    rotated = build_augmenter({"rot90": 1.0}, SHAPE, 3, seed=0)(x).numpy()
    for image, out in zip(x.numpy(), rotated, strict=True):
        assert any(np.array_equal(np.rot90(image, k), out) for k in (1, 2, 3))
    identity = build_augmenter({"Affine": {}}, SHAPE, 3, seed=0)(x)
    np.testing.assert_allclose(identity.numpy(), x.numpy(), atol=1e-5)
    no_crop = build_augmenter({"Crop": 0.0}, SHAPE, 3, seed=0)(x)
    np.testing.assert_allclose(no_crop.numpy(), x.numpy(), atol=1e-5)
    shifted = build_augmenter({"Affine": {"translate_percent": {"x": 0.25}, "order": 0}}, SHAPE, 3, seed=0)(x)
    np.testing.assert_allclose(shifted.numpy()[:, :, 4:], x.numpy()[:, :, :-4], atol=1e-6)


def test_jitter_saturation_and_hue_follow_their_definitions():
    """Saturation blends with the luma image; hue rotates the chroma about the grey axis."""
    from patchcfg.data.kernels import Seeds
    from patchcfg.data.ops.jitter import RGB_TO_YIQ, jitter, saturation_hue_matrices

    x = batch(n=3).numpy().reshape(3, -1, 3)
    luma = x @ np.array([0.299, 0.587, 0.114], np.float32)

    def apply(saturation, hue):
        matrices = saturation_hue_matrices(tf.constant(saturation, tf.float32), tf.constant(hue, tf.float32))
        return np.einsum("bpc,bcd->bpd", x, matrices.numpy())

    np.testing.assert_allclose(apply([1, 1, 1], [0, 0, 0]), x, atol=1e-5)
    np.testing.assert_allclose(apply([1, 1, 1], [1, -1, 2]), x, atol=1e-5)  # whole turns
    np.testing.assert_allclose(apply([0, 0, 0], [0.1, 0.2, 0.3]), np.repeat(luma[..., None], 3, -1), atol=1e-5)
    np.testing.assert_allclose(apply([0.4] * 3, [0] * 3), 0.4 * x + 0.6 * luma[..., None], atol=1e-5)
    before, after = x @ RGB_TO_YIQ.T, apply([1] * 3, [0.25] * 3) @ RGB_TO_YIQ.T
    np.testing.assert_allclose(after[..., 0], before[..., 0], atol=1e-5)  # luma kept
    np.testing.assert_allclose(after[..., 1], -before[..., 2], atol=1e-5)  # (I, Q) turned by 90 degrees
    np.testing.assert_allclose(after[..., 2], before[..., 1], atol=1e-5)
    grey = np.full((1, 4, 3), 0.3, np.float32)
    turned = grey @ saturation_hue_matrices(tf.constant([1.7]), tf.constant([0.2])).numpy()
    np.testing.assert_allclose(turned, grey, atol=1e-5)  # greys stay grey

    images = batch(n=3)
    unchanged = jitter({"strength": 0.0})(images, Seeds(tf.constant([1, 2]))).numpy()
    np.testing.assert_allclose(unchanged, images.numpy(), atol=1e-5)
    strong = jitter({"strength": 1.0})(images, Seeds(tf.constant([1, 2]))).numpy()
    assert strong.min() >= 0 and strong.max() <= 1 and not np.allclose(strong, images.numpy(), atol=0.05)


def test_sometimes_and_probabilities():
    x = batch(n=200)
    never = build_augmenter({"Invert": {"p": 1.0, "sometimes": 0.0}}, SHAPE, 3, seed=0)
    assert not never.steps
    half = build_augmenter({"Invert": {"sometimes": 0.5}}, SHAPE, 3, seed=0)(x).numpy()
    changed = np.abs(half - x.numpy()).reshape(200, -1).max(1) > 1e-6
    assert 70 < changed.sum() < 130


def test_preset_expansion_and_overrides():
    assert [n for n, _ in expand_recipe({"preset": "simclr"})] == list(PRESETS["simclr"])
    assert [n for n, _ in expand_recipe({})] == list(PRESETS["default"])
    assert expand_recipe({"preset": "none"}) == []
    steps = dict(expand_recipe({"preset": "simclr", "jitter": 0.5, "gaussian_blur": {"sigma": [0.1, 1.0]},
                                "Fliplr": 0.5}))
    assert steps["jitter"]["strength"] == 0.5 and steps["jitter"]["sometimes"] == 0.8
    assert steps["gaussian_blur"]["p"] == 0.5 and steps["gaussian_blur"]["sigma"] == [0.1, 1.0]
    assert list(steps)[-1] == "Fliplr"
    aug = build_augmenter({"preset": "simclr", "gaussian_blur": 0}, SHAPE, 3)
    assert "gaussian_blur" not in [n for n, _ in aug.steps]
    with pytest.raises(ConfigError, match="did you mean 'Fliplr'"):
        expand_recipe({"Fliplrr": 0.5})


def test_presets_work_for_multiband_images():
    aug = build_augmenter({"preset": "default"}, SHAPE, 5, seed=0)
    names = [n for n, _ in aug.steps]
    assert "hue_delta" not in names and "saturation_delta" not in names and "drop_color" in names
    assert aug(batch(channels=5)).shape == (4, *SHAPE, 5)
    assert build_augmenter({"preset": "simclr"}, SHAPE, 5, seed=0)(batch(channels=5)).shape[-1] == 5
    with pytest.raises(ConfigError, match="needs RGB"):
        build_augmenter({"hue_delta": 0.1}, SHAPE, 5)


def test_non_square_images():
    aug = build_augmenter({"rot90": True, "Affine": {"rotate": 30}, "zoom_scale": 0.3}, (16, 24), 3, seed=0)
    assert aug(tf.zeros((2, 16, 24, 3))).shape == (2, 16, 24, 3)


def test_schema_file_matches_the_registry():
    text = (ROOT / "schemas" / "augmentation.schema.json").read_text()
    assert text == schema_text(), "regenerate: patchcfg schema --update-schemas --update-docs"
    schema = json.loads(text)
    assert schema["$id"] == "augmentation.schema.json" and schema["additionalProperties"] is False
    assert set(schema["properties"]) == set(OPS) | {"preset", "engine"}
    for name, prop in schema["properties"].items():
        assert prop.get("description"), name
        for pname, param in prop.get("then", {}).get("properties", {}).items():
            assert param.get("description"), f"{name}.{pname}"


def test_data_schema_is_strict_and_documented():
    schema = json.loads((ROOT / "schemas" / "data.schema.json").read_text())
    assert schema["$id"] == "data.schema.json" and schema["additionalProperties"] is False
    for key, prop in schema["properties"].items():
        assert prop.get("description"), key
        assert "default" in prop, key


def test_every_name_is_documented():
    docs = (ROOT / "docs" / "data.md").read_text()
    missing = [name for name in list(OPS) + list(PRESETS) if f"`{name}`" not in docs]
    assert not missing, f"not in docs/data.md (run `patchcfg schema --update-docs`): {missing}"


def test_masks_follow_the_geometry_and_nothing_else():
    """Masks passed along take the image's flips, crops and warps (same draws), not its colours."""
    x = batch(n=6)
    recipe = {"zoom_scale": 0.3, "Fliplr": 0.5, "Affine": {"rotate": [-20, 20]}, "jitter": 1.0, "drop_color": 0.5,
              "gaussian_blur": 1.0, "Cutout": {"nb_iterations": 1}}
    aug = build_augmenter(recipe, SHAPE, 3, seed=0)
    images, masks = aug(x, tf.constant([3, 4], tf.int64), masks=x)
    np.testing.assert_array_equal(images.numpy(), aug(x, tf.constant([3, 4], tf.int64)).numpy())  # images as without
    # the geometric steps come first in the recipe, so a recipe of them alone numbers them alike and
    # draws the same crops, flips and rotations
    geometry = build_augmenter({k: v for k, v in recipe.items() if OPS[k].geometric}, SHAPE, 3, seed=0)
    np.testing.assert_allclose(masks.numpy(), geometry(x, tf.constant([3, 4], tf.int64)).numpy(), atol=1e-6)
    ones = tf.ones((6, *SHAPE, 2))
    _, untouched = build_augmenter({"jitter": 1.0, "gaussian_blur": 1.0, "Invert": 1.0}, SHAPE, 3, seed=0)(
        x, tf.constant([1, 1], tf.int64), masks=ones)
    np.testing.assert_array_equal(untouched.numpy(), ones.numpy())


def test_blur_radius_spreads_a_point_as_far_as_asked():
    """On 32-px images the default kernel (radius 1/20 of the height: 1 pixel) cannot show a sigma
    of 2; ``radius`` gives the whole Gaussian, as torchvision's and PIL's blurs apply it."""
    point = np.zeros((1, 32, 32, 1), np.float32)
    point[0, 16, 16, 0] = 1.0
    x = tf.constant(point)

    def spread(radius):
        aug = build_augmenter({"gaussian_blur": {"p": 1.0, "sigma": [2.0, 2.0], "radius": radius}}, (32, 32), 1, seed=0)
        row = aug(x).numpy()[0, 16, :, 0]
        return np.flatnonzero(row > 1e-6)

    assert spread(None).tolist() == [15, 16, 17]
    assert spread(6).tolist() == list(range(10, 23))
    out = build_augmenter({"gaussian_blur": {"p": 1.0, "sigma": [2.0, 2.0], "radius": 6}}, (32, 32), 1, seed=0)(x)
    assert float(tf.reduce_sum(out)) == pytest.approx(1.0, abs=1e-5)
