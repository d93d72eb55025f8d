"""weights: imagenet without network: one message naming the file, its URL and where to put it."""

from __future__ import annotations

import pytest

keras = pytest.importorskip("keras")

from patchcfg.errors import UserError  # noqa: E402
from patchcfg.models import download  # noqa: E402
from patchcfg.models.backbones import build_backbone  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:`input_shape` is undefined or non-square:UserWarning")

MNV2_IMAGENET_FILE = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"


@pytest.fixture
def offline_keras(monkeypatch, tmp_path):
    """Keras's cache in an empty folder and a get_file that fails as it does without network."""
    from keras.src.backend import config as keras_config
    from keras.src.utils import file_utils

    requested = []

    def failing_get_file(fname=None, origin=None, *args, **kwargs):
        requested.append(fname)
        raise Exception(
            f"URL fetch failure on {origin}: None -- [Errno -3] Temporary failure in name resolution"
        )

    (tmp_path / "keras_home").mkdir()
    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(tmp_path / "keras_home"))
    monkeypatch.setattr(file_utils, "get_file", failing_get_file)
    return requested, failing_get_file, tmp_path / "keras_home"


def test_imagenet_without_network_names_the_file(offline_keras, monkeypatch):
    requested, failing_get_file, home = offline_keras
    monkeypatch.setattr(download, "can_reach", lambda url, timeout=3.0: True)  # the download itself fails
    spec = {"name": "MobileNetV2", "width": 0.35, "weights": "imagenet"}
    with pytest.raises(UserError) as info:
        build_backbone(spec, (32, 32, 3))
    message = str(info.value)
    assert requested == [MNV2_IMAGENET_FILE]
    assert str(home / "models" / MNV2_IMAGENET_FILE) in message
    assert "~/.keras/models/" in message
    assert f"weights: /path/to/{MNV2_IMAGENET_FILE}" in message
    assert "weights: /path/to/file.weights.h5" in message
    assert "https://storage.googleapis.com/" in message
    from keras.src.utils import file_utils

    assert file_utils.get_file is failing_get_file  # the wrapper is removed again


def test_imagenet_offline_is_detected_before_downloading(offline_keras, monkeypatch):
    requested, _, home = offline_keras
    monkeypatch.setattr(download, "can_reach", lambda url, timeout=3.0: False)
    with pytest.raises(UserError, match="no network connection") as info:
        build_backbone({"name": "MobileNetV2", "kwargs": {"alpha": 0.35}, "weights": "imagenet"}, (32, 32, 1))
    assert requested == []  # no download attempted
    assert str(home / "models" / MNV2_IMAGENET_FILE) in str(info.value)
