"""Foundation encoders from KerasHub presets: the preset's normalisation inside the model, token
pooling against numpy, 1-band images, frozen encoders, image sizes, and handles offline."""

import numpy as np
import pytest

from patchcfg.errors import UserError
from patchcfg.models.backbones import build_backbone
from patchcfg.models.layers import TokenPool

keras_hub = pytest.importorskip("keras_hub")


def hub(preset, **spec):
    return {"name": "keras_hub", "preset": str(preset), **spec}


def test_token_pool_modes_against_numpy_with_register_tokens():
    rng = np.random.default_rng(0)
    tokens = rng.normal(size=(2, 1 + 4 + 9, 5)).astype("float32")  # class, 4 registers, 3x3 patches
    patches = tokens[:, 5:, :]
    expected = {"cls": tokens[:, 0], "mean": patches.mean(1), "avg": patches.mean(1), "max": patches.max(1),
                "cls+mean": np.concatenate([tokens[:, 0], patches.mean(1)], -1),
                "none": patches.reshape(2, 3, 3, 5)}
    for mode, want in expected.items():
        layer = TokenPool(mode, grid=(3, 3))
        got = np.asarray(layer(tokens))
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=mode)
        assert layer.compute_output_shape(tokens.shape) == want.shape[:1] + want.shape[1:] or mode == "none"
    with pytest.raises(ValueError, match="expected one of"):
        TokenPool("first")


def test_the_encoder_applies_the_presets_converter_then_the_model(hub_preset):
    from patchcfg.models.foundation import load_preset

    preset = hub_preset("dinov2")
    encoder = build_backbone(hub(preset, pooling="cls"), (28, 28, 3))
    backbone, converter, info = load_preset(preset)
    x = np.random.default_rng(1).uniform(size=(2, 28, 28, 3)).astype("float32")
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    normalised = ((x - mean) / std).astype("float32")  # what the converter's scale and offset do to x * 255
    np.testing.assert_allclose(np.asarray(converter(x * 255.0)), normalised, rtol=1e-4, atol=1e-4)
    tokens = np.asarray(backbone({"images": normalised}))
    np.testing.assert_allclose(np.asarray(encoder(x)), tokens[:, 0], rtol=1e-4, atol=1e-4)
    assert info.patch_size == 4 and encoder.output_shape == (None, 32)


def test_a_one_band_image_reaches_the_model_as_grey_rgb(hub_preset):
    preset = hub_preset("dinov2")
    grey = np.random.default_rng(2).uniform(size=(2, 28, 28, 1)).astype("float32")
    one_band = build_backbone(hub(preset, pooling="mean"), (28, 28, 1))
    rgb = build_backbone(hub(preset, pooling="mean"), (28, 28, 3))
    np.testing.assert_allclose(np.asarray(one_band(grey)), np.asarray(rgb(np.repeat(grey, 3, -1))),
                               rtol=1e-4, atol=1e-5)
    assert "channel_adapter" in [layer.name for layer in one_band.layers]


def test_image_size_resizes_inside_and_dinov2_interpolates_its_positions(hub_preset):
    preset = hub_preset("dinov2")
    encoder = build_backbone(hub(preset, pooling="none", image_size=32), (16, 16, 3))
    assert encoder.output_shape == (None, 8, 8, 32)  # 32 px / patch 4: an 8x8 map of patch tokens
    assert np.asarray(encoder(np.zeros((1, 16, 16, 3), "float32"))).shape == (1, 8, 8, 32)
    with pytest.raises(UserError, match="30 is not a multiple of the preset's patch size 4"):
        build_backbone(hub(preset, image_size=30), (16, 16, 3))


def test_a_siglip_tower_pools_itself_and_refuses_other_sizes(hub_preset):
    preset = hub_preset("siglip")
    encoder = build_backbone(hub(preset), (16, 16, 3))
    assert encoder.output_shape == (None, 32)
    with pytest.raises(UserError, match="takes only 28-px images"):
        build_backbone(hub(preset, image_size=32), (16, 16, 3))
    with pytest.raises(UserError, match="pools its tokens itself"):
        build_backbone(hub(preset, pooling="cls"), (16, 16, 3))


def test_trainable_false_freezes_the_encoder(hub_preset):
    encoder = build_backbone(hub(hub_preset("dinov2"), trainable=False), (16, 16, 3))
    assert not encoder.trainable and encoder.trainable_weights == []
    assert build_backbone(hub(hub_preset("dinov2")), (16, 16, 3)).trainable_weights


def test_a_handle_offline_fails_at_once_with_the_fetch_command(monkeypatch):
    import patchcfg.models.download as download

    monkeypatch.setattr(download, "can_reach", lambda url, timeout=3.0: False)
    monkeypatch.setattr(keras_hub.models.Backbone, "from_preset",
                        classmethod(lambda cls, *a, **k: pytest.fail("must not try to load")))
    with pytest.raises(UserError) as error:
        build_backbone(hub("kaggle://keras/dinov2/keras/dinov2_small"), (16, 16, 3))
    message = str(error.value)
    assert "https://www.kaggle.com cannot be reached" in message
    assert "patchcfg weights fetch kaggle://keras/dinov2/keras/dinov2_small --out DIR" in message


def test_an_encoder_pretrained_from_a_preset_loads_back_as_weights(hub_preset, tmp_path):
    preset = hub_preset("dinov2")
    encoder = build_backbone(hub(preset, pooling="mean"), (16, 16, 3))
    rng = np.random.default_rng(4)
    for variable in encoder.trainable_weights:  # as if pretrained: every weight moved
        variable.assign(variable + rng.normal(scale=0.1, size=variable.shape).astype("float32"))
    encoder.save(tmp_path / "encoder.keras")
    again = build_backbone(hub(preset, pooling="mean", weights=str(tmp_path / "encoder.keras")), (16, 16, 3))
    x = rng.uniform(size=(2, 16, 16, 3)).astype("float32")
    # the same weights; float32 sums in another order differ in the 6th digit
    np.testing.assert_allclose(np.asarray(again(x)), np.asarray(encoder(x)), rtol=1e-4, atol=1e-4)
    fresh = build_backbone(hub(preset, pooling="mean"), (16, 16, 3))
    assert np.abs(np.asarray(fresh(x)) - np.asarray(encoder(x))).max() > 1e-2
