"""Building backbones: shapes, widths, channels, your own builders, keras.applications, weights files,
saving. Names and specs: test_registry.py; imagenet without network: test_download.py."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from patchcfg.errors import UserError  # noqa: E402
from patchcfg.models.backbones import build_backbone, load_encoder  # noqa: E402

pytestmark = [
    # Keras's own get_weights/set_weights under numpy 2; not ours to fix
    pytest.mark.filterwarnings(
        "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
    ),
    # keras.applications: ImageNet weights for 224 px are used at other sizes
    pytest.mark.filterwarnings("ignore:`input_shape` is undefined or non-square:UserWarning"),
]

WIDTH = 0.125
# feature size at width 1 and the total downsampling factor of each built-in backbone
BUILTIN = {"resnet18": (512, 8), "resnet34": (512, 8), "resnet50": (2048, 8), "tiny": (16, 4)}


def images(channels: int, size: int = 16, n: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, size, size, channels), dtype=np.float32)


def outputs(model, x) -> np.ndarray:
    return keras.ops.convert_to_numpy(model(x, training=False))


@pytest.mark.parametrize("channels", [1, 3, 5])
@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_builtin_backbone_shapes(name, channels):
    dim, _ = BUILTIN[name]
    model = build_backbone({"name": name, "width": WIDTH}, (16, 16, channels))
    expected = round(dim * WIDTH)
    assert model.name == "encoder"
    assert model.output_shape == (None, expected)
    assert outputs(model, images(channels)).shape == (2, expected)


@pytest.mark.parametrize("name", ["resnet18", "tiny"])
def test_pooling_none_returns_feature_map_and_max_pools(name):
    dim, stride = BUILTIN[name]
    feature_map = build_backbone({"name": name, "width": WIDTH, "pooling": "none"}, (16, 16, 3), name="f")
    side = 16 // stride
    assert feature_map.output_shape == (None, side, side, round(dim * WIDTH))
    assert feature_map.name == "f"
    pooled = build_backbone({"name": name, "width": WIDTH, "pooling": "max"}, (16, 16, 3))
    assert pooled.output_shape == (None, round(dim * WIDTH))


def test_width_scales_parameters_quadratically():
    small = build_backbone({"name": "resnet18", "width": 0.125}, (16, 16, 3)).count_params()
    large = build_backbone({"name": "resnet18", "width": 0.25}, (16, 16, 3)).count_params()
    # conv kernels dominate and scale with width**2; BatchNorm and the stem's input side scale less
    assert 3.5 < large / small < 4.05
    assert build_backbone({"name": "resnet18", "width": 0.25}, (16, 16, 3)).output_shape == (None, 128)


@pytest.mark.parametrize(
    ("spec", "pattern"),
    [
        ({"name": "tiny", "widht": 0.5}, "unknown key 'widht'; did you mean 'width'"),
        ({"name": "tiny", "width": 0}, "width: expected a number > 0"),
        ({"name": "tiny", "pooling": "mean"}, "pooling: mean pools a vision transformer's tokens: it needs name: keras_hub"),
        ({"name": "tiny", "pooling": "first"}, "pooling: expected one of avg, max, none, cls, mean, cls\\+mean"),
        ({"name": "tiny", "weights": 3}, "weights: expected null, imagenet or a file path"),
        ({"name": "tiny", "kwargs": {"depth": 3}}, "bad arguments"),
        ({"name": "tiny", "weights": "/no/such/file.weights.h5"}, "file not found"),
        ({"name": "resnet18", "weights": "imagenet"}, "imagenet exists only for keras.applications"),
    ],
)
def test_bad_specs_are_user_errors(spec, pattern):
    with pytest.raises(UserError, match=pattern):
        build_backbone(spec, (16, 16, 3))


def test_module_function_backbone(tmp_path, monkeypatch):
    (tmp_path / "my_test_encoders.py").write_text(
        textwrap.dedent(
            """
            import keras

            def conv_encoder(input_shape, width=1.0, filters=4):
                inputs = keras.Input(input_shape)
                x = keras.layers.Conv2D(int(filters * width), 3, padding="same")(inputs)
                return keras.Model(inputs, x)

            def vector_encoder(input_shape, **kwargs):
                inputs = keras.Input(input_shape)
                return keras.Model(inputs, keras.layers.Flatten()(inputs))
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = {"name": "my_test_encoders:conv_encoder", "width": 2.0, "kwargs": {"filters": 3}}
    model = build_backbone(spec, (8, 8, 5))
    assert model.output_shape == (None, 6)
    assert outputs(model, images(5, size=8)).shape == (2, 6)
    unpooled = build_backbone({"name": "my_test_encoders:vector_encoder", "pooling": "avg"}, (4, 4, 2))
    assert unpooled.output_shape == (None, 32)
    with pytest.raises(UserError, match="did you mean 'conv_encoder'"):
        build_backbone({"name": "my_test_encoders:conv_encodr"}, (8, 8, 3))
    with pytest.raises(UserError, match="cannot import module"):
        build_backbone({"name": "no_such_module_here:f"}, (8, 8, 3))


def test_sync_batchnorm():
    model = build_backbone({"name": "tiny", "sync_batchnorm": True}, (16, 16, 3))
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and all(layer.synchronized for layer in norms)
    assert outputs(model, images(3)).shape == (2, 16)
    plain = build_backbone({"name": "tiny"}, (16, 16, 3))
    assert not any(getattr(layer, "synchronized", False) for layer in plain.layers)


def test_weights_file_round_trip(tmp_path):
    spec = {"name": "resnet18", "width": WIDTH}
    source = build_backbone(spec, (16, 16, 3))
    x = images(3)
    source.save_weights(tmp_path / "encoder.weights.h5")
    source.save(tmp_path / "encoder.keras")
    # an encoder nested in a bigger saved model (e.g. a classifier) also gives its weights
    inputs = keras.Input((16, 16, 3))
    classifier = keras.Model(inputs, keras.layers.Dense(2)(source(inputs)))
    classifier.save(tmp_path / "classifier.keras")
    for file_name in ("encoder.weights.h5", "encoder.keras", "classifier.keras"):
        target = build_backbone({**spec, "weights": str(tmp_path / file_name)}, (16, 16, 3))
        np.testing.assert_allclose(outputs(target, x), outputs(source, x), rtol=1e-5, atol=1e-6)


def test_mismatched_weights_file_is_a_clear_error(tmp_path):
    build_backbone({"name": "resnet18", "width": WIDTH}, (16, 16, 3)).save_weights(tmp_path / "a.weights.h5")
    with pytest.raises(UserError) as info:
        build_backbone(
            {"name": "resnet18", "width": 0.25, "weights": str(tmp_path / "a.weights.h5")}, (16, 16, 3)
        )
    message = str(info.value)
    assert "does not fit backbone resnet18" in message
    assert "layer stem_conv weight #0: backbone (3, 3, 3, 16), file (3, 3, 3, 8)" in message
    build_backbone({"name": "tiny"}, (16, 16, 3)).save(tmp_path / "tiny.keras")
    with pytest.raises(UserError, match="does not fit backbone tiny"):
        build_backbone({"name": "tiny", "weights": str(tmp_path / "tiny.keras")}, (16, 16, 4))
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(UserError, match="unsupported file type"):
        build_backbone({"name": "tiny", "weights": str(tmp_path / "weights.bin")}, (16, 16, 3))


def test_save_and_load_encoder(tmp_path):
    model = build_backbone({"name": "resnet50", "width": WIDTH}, (16, 16, 2))
    model.save(tmp_path / "encoder.keras")
    loaded = load_encoder(tmp_path / "encoder.keras")
    x = images(2)
    np.testing.assert_array_equal(outputs(loaded, x), outputs(model, x))
    with pytest.raises(UserError, match="not found"):
        load_encoder(tmp_path / "missing.keras")


def test_keras_application_builds_saves_and_loads(tmp_path):
    spec = {"name": "MobileNetV2", "kwargs": {"alpha": 0.35}, "weights": None, "channel_adapter": True}
    model = build_backbone(spec, (32, 32, 5))
    assert model.output_shape == (None, 1280)
    assert [layer.name for layer in model.layers[:3]] == ["image", "channel_adapter", "imagenet_preprocess"]
    model.save(tmp_path / "mnv2.keras")
    loaded = load_encoder(tmp_path / "mnv2.keras")  # needs the registered ImagenetPreprocess layer
    x = images(5, size=32)
    np.testing.assert_allclose(outputs(loaded, x), outputs(model, x), rtol=1e-5, atol=1e-6)
    model.save_weights(tmp_path / "mnv2.weights.h5")
    again = build_backbone({**spec, "weights": str(tmp_path / "mnv2.weights.h5")}, (32, 32, 5))
    np.testing.assert_allclose(outputs(again, x), outputs(model, x), rtol=1e-5, atol=1e-6)
    # no pretrained weights: the application takes the 5 channels as they are
    plain = build_backbone({"name": "MobileNetV2", "width": 0.35}, (32, 32, 5))
    assert plain.layers[1].name == "imagenet_preprocess"
    with pytest.raises(UserError, match="width 0.5 applies to the built-in backbones"):
        build_backbone({"name": "DenseNet121", "width": 0.5}, (32, 32, 3))


def test_keras_application_weights_file_with_channel_adapter(tmp_path):
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    app = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(32, 32, 3), alpha=0.35)
    path = tmp_path / "mobilenet_v2_no_top.h5"  # the format Keras distributes ImageNet weights in
    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, app)
    model = build_backbone({"name": "MobileNetV2", "width": 0.35, "weights": str(path)}, (32, 32, 2))
    assert model.layers[1].name == "channel_adapter"  # auto: 2 channels + pretrained weights
    kernel = model.layers[1].get_weights()[0]
    np.testing.assert_allclose(kernel, np.full((1, 1, 2, 3), 0.5))  # starts as the channel mean
    inner = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    for loaded, saved in zip(inner.get_weights(), app.get_weights(), strict=True):
        np.testing.assert_array_equal(loaded, saved)
    with pytest.raises(UserError, match="does not fit"):
        build_backbone({"name": "MobileNetV2", "width": 0.5, "weights": str(path)}, (32, 32, 3))
