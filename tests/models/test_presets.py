"""KerasHub preset folders read from their files (no Keras): what validate says before TensorFlow loads."""

import json

import pytest
import yaml

from patchcfg.errors import UserError
from patchcfg.models.presets import handle_host, image_size_problem, is_handle, read_preset, spec_problems


def write_preset(folder, class_name="DINOV2Backbone", converter=True, **config):
    """The JSON files of a preset folder (and an empty weights file): enough for reading."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"class_name": class_name, "config": config}))
    (folder / "model.weights.h5").write_bytes(b"")
    if converter:
        (folder / "image_converter.json").write_text(json.dumps(
            {"class_name": "DINOV2ImageConverter", "config": {"image_size": [224, 224], "scale": 0.017,
                                                              "offset": -2.0}}))
    return folder


def test_a_dinov2_folder_says_its_patch_size_and_that_any_multiple_fits(tmp_path):
    info = read_preset(write_preset(tmp_path / "d", patch_size=14, image_shape=[518, 518, 3]))
    assert (info.patch_size, info.sizes, info.tokens, info.default_size) == (14, "any multiple", True, 224)
    assert image_size_problem(info, 112) is None
    assert image_size_problem(info, 30) == ("30 is not a multiple of the preset's patch size 14 "
                                            "(DINOV2Backbone); use 28 or 42")


def test_a_siglip_tower_takes_only_its_own_size_and_pools_itself(tmp_path):
    tower = {"class_name": "SigLIPVisionEncoder", "config": {"patch_size": 16, "image_shape": [224, 224, 3]}}
    folder = write_preset(tmp_path / "s", "SigLIPBackbone", converter=False, vision_encoder=tower,
                          text_encoder={"class_name": "SigLIPTextEncoder", "config": {}})
    info = read_preset(folder)
    assert (info.tower, info.patch_size, info.sizes, info.tokens, info.default_size) == (
        "SigLIPVisionEncoder", 16, "fixed", False, 224)
    assert "takes only 224-px images" in image_size_problem(info, 256)
    problems = dict(spec_problems({"preset": str(folder), "image_size": 256, "pooling": "cls"}))
    assert "only 224-px" in problems["image_size"] and "pools its tokens itself" in problems["pooling"]


def test_a_cnn_takes_any_size_and_has_no_class_token(tmp_path):
    folder = write_preset(tmp_path / "c", "EfficientNetBackbone", converter=False, input_shape=[None, None, 3])
    info = read_preset(folder)
    assert (info.patch_size, info.sizes, info.default_size) == (None, "any", None)
    assert spec_problems({"preset": str(folder), "image_size": 37, "pooling": "mean"}) == []
    assert "no class token" in dict(spec_problems({"preset": str(folder), "pooling": "cls"}))["pooling"]


def test_a_folder_that_is_not_a_preset_says_what_is_missing(tmp_path):
    with pytest.raises(UserError, match="is not a folder"):
        read_preset(tmp_path / "nowhere")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(UserError, match=r"config.json and model.weights.h5 missing \(it holds notes.txt\)"):
        read_preset(tmp_path / "other")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    (tmp_path / "bad" / "model.weights.h5").write_bytes(b"")
    with pytest.raises(UserError, match="not valid JSON"):
        read_preset(tmp_path / "bad")


def test_handles_and_paths_are_told_apart(tmp_path):
    assert is_handle("kaggle://keras/dinov2/keras/dinov2_small") and is_handle("dinov2_small")
    assert not is_handle(str(tmp_path)) and not is_handle("./models/x") and not is_handle("~/m")
    assert handle_host("hf://org/model") == "https://huggingface.co"
    assert handle_host("dinov2_small") == "https://www.kaggle.com"
    assert spec_problems({"preset": "kaggle://keras/dinov2/keras/dinov2_small"}) == []  # read where loaded


def config_with(tmp_path, backbone, **sections):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "data": {"images": str(tmp_path), "imshape": [16, 16]},
                                    "backbone": backbone, **sections}))
    return path


@pytest.mark.parametrize("backbone,words", [
    ({"name": "keras_hub", "preset": "PRESET", "image_size": 30},
     ":2: backbone.image_size: 30 is not a multiple of the preset's patch size 14"),
    ({"name": "keras_hub", "preset": "/nowhere/dinov2_small"}, "backbone.preset: /nowhere/dinov2_small is not a folder"),
    ({"name": "keras_hub"}, "backbone.preset: name: keras_hub needs a preset"),
    ({"name": "resnet18", "pooling": "cls"}, "backbone.pooling: cls pools a vision transformer's tokens"),
    ({"name": "resnet18", "preset": "PRESET"}, "backbone.preset: a preset is read only with name: keras_hub"),
    ({"name": "tiny", "image_size": 32}, "backbone.image_size: applies to name: keras_hub presets"),
])
def test_validate_reports_a_preset_problem_at_its_line_before_tensorflow_loads(tmp_path, run_cli, backbone, words):
    preset = write_preset(tmp_path / "p", patch_size=14, image_shape=[518, 518, 3])
    backbone = {k: (str(preset) if v == "PRESET" else v) for k, v in backbone.items()}
    result = run_cli("validate", config_with(tmp_path, backbone))
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and words in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_validate_refuses_to_pretrain_a_frozen_encoder(tmp_path, run_cli):
    path = config_with(tmp_path, {"name": "tiny", "trainable": False}, pretrain={"method": "simclr"})
    result = run_cli("validate", path)
    assert result.returncode == 2 and "backbone.trainable: false freezes the encoder" in result.stderr


def test_validate_does_not_import_tensorflow_for_a_preset(tmp_path):
    import subprocess
    import sys

    preset = write_preset(tmp_path / "p", patch_size=14, image_shape=[518, 518, 3])
    path = config_with(tmp_path, {"name": "keras_hub", "preset": str(preset), "image_size": 28})
    code = ("import sys; from patchcfg.config import load_config; load_config(sys.argv[1]); "
            "print('TF' if 'tensorflow' in sys.modules or 'keras' in sys.modules else 'NO TF')")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "NO TF", out.stderr
