"""``patchcfg weights check`` and ``patchcfg weights fetch``: a preset folder's facts and digest, a
copy made from a handle or a folder, and every refusal (no network, not a preset, an occupied
--out) one message with exit code 2. Nothing here downloads: the presets are tiny and random."""

from __future__ import annotations

import hashlib
import json
import time

import pytest
from click.testing import CliRunner

from patchcfg.cli import main


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_message(result, *parts):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.output.count("error:") == 1, result.output
    for part in parts:
        assert part in result.output, result.output


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def parameters(folder) -> int:
    import keras_hub

    return keras_hub.models.Backbone.from_preset(str(folder)).count_params()


@pytest.fixture(scope="module")
def presets(tmp_path_factory):
    from patchcfg.models.foundation import save_random_preset

    root = tmp_path_factory.mktemp("presets")
    return {name: save_random_preset(str(root / name), name, image_size=16, patch_size=4)
            for name in ("dinov2", "siglip")}


def facts_lines(output: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in output.splitlines() if ": " in line)


def test_check_prints_the_weights_sha256_and_the_parameter_count(presets, tmp_path):
    from pathlib import Path

    folder = Path(presets["dinov2"])
    result = invoke("weights", "check", folder)
    assert result.exit_code == 0, result.output
    facts = facts_lines(result.output)
    assert facts["weights sha256"] == sha256(folder / "model.weights.h5")
    assert facts["parameters"] == f"{parameters(folder):,}"
    assert facts["architecture"] == "DINOV2Backbone"
    assert facts["feature width"] == "32"
    assert facts["expected input"] == "16x16 px, patch 4, 3 channels"
    assert facts["image sizes"] == "any multiple of the patch size 4"
    assert "scale" in facts["normalisation"] and "offset" in facts["normalisation"]
    assert facts["keras_hub version"][0].isdigit()


def test_check_of_a_composite_preset_counts_its_image_tower_and_json_gives_the_same_facts(presets):
    from pathlib import Path

    folder = Path(presets["siglip"])
    text = facts_lines(invoke("weights", "check", folder).output)
    result = invoke("weights", "check", folder, "--json")
    assert result.exit_code == 0, result.output
    facts = json.loads(result.output)
    assert facts["parameters"] == parameters(folder) > facts["image_tower_parameters"]
    assert text["parameters"] == f"{facts['parameters']:,} (image tower {facts['image_tower_parameters']:,})"
    assert text["image sizes"] == "only 16 px (fixed position embeddings)"
    assert facts["weights_sha256"] == sha256(folder / "model.weights.h5") == text["weights sha256"]
    assert facts["input"]["sizes"] == "fixed" and facts["input"]["patch_size"] == 4


def test_check_of_a_folder_that_is_not_a_preset_is_one_line_naming_it(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    result = invoke("weights", "check", tmp_path)
    assert_one_message(result, str(tmp_path), "not a KerasHub preset folder", "patchcfg weights fetch")
    assert len(result.output.strip().splitlines()) == 1
    missing = invoke("weights", "check", tmp_path / "absent")
    assert_one_message(missing, str(tmp_path / "absent"), "is not a folder")


@pytest.mark.parametrize("handle", ["kaggle://keras/dinov2/keras/dinov2_small", "dinov2_small"])
def test_fetch_without_network_fails_at_once_saying_how_to_fetch_elsewhere(handle, tmp_path, monkeypatch):
    import keras_hub

    import patchcfg.models.download
    import patchcfg.models.foundation

    hosts = []

    def unreachable(url, *args, **kwargs):
        hosts.append(url)
        return False

    monkeypatch.setattr(patchcfg.models.download, "can_reach", unreachable)

    def never(*args, **kwargs):
        raise AssertionError("KerasHub must not be asked to load an unreachable handle")

    monkeypatch.setattr(keras_hub.models.Backbone, "from_preset", never)
    started = time.monotonic()
    result = invoke("weights", "fetch", handle, "--out", tmp_path / "model")
    assert time.monotonic() - started < 10
    assert_one_message(result, handle, "cannot be reached", "network access",
                       f"patchcfg weights fetch {handle} --out DIR")
    assert hosts == ["https://www.kaggle.com"]
    assert not (tmp_path / "model").exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no partial folder left behind


def test_fetch_of_a_local_preset_writes_a_loadable_copy_whose_check_matches(presets, tmp_path):
    import keras_hub
    import numpy as np

    source = presets["dinov2"]
    out = tmp_path / "models" / "copy"
    result = invoke("weights", "fetch", source, "--out", out)
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} >= {"config.json", "model.weights.h5", "metadata.json",
                                               "image_converter.json"}
    assert [p.name for p in out.parent.iterdir()] == ["copy"]  # the temporary folder is gone
    printed = facts_lines(result.output)
    checked = facts_lines(invoke("weights", "check", out).output)
    original = facts_lines(invoke("weights", "check", source).output)
    assert printed == checked
    assert checked["weights sha256"] == sha256(out / "model.weights.h5")
    assert checked["weights sha256"] == original["weights sha256"]  # copied as it is
    for key in ("architecture", "parameters", "feature width", "expected input", "image sizes", "normalisation"):
        assert checked[key] == original[key], key
    copied = keras_hub.models.Backbone.from_preset(str(out)).get_weights()
    for a, b in zip(copied, keras_hub.models.Backbone.from_preset(source).get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_fetch_into_an_occupied_folder_needs_force_and_replaces_only_a_preset(presets, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    refused = invoke("weights", "fetch", presets["dinov2"], "--out", out)
    assert_one_message(refused, str(out), "not empty", "--force")
    forced = invoke("weights", "fetch", presets["dinov2"], "--out", out, "--force")
    assert_one_message(forced, str(out), "holds no KerasHub preset")
    assert (out / "keep.txt").read_text() == "mine"

    target = tmp_path / "preset"
    assert invoke("weights", "fetch", presets["dinov2"], "--out", target).exit_code == 0
    assert_one_message(invoke("weights", "fetch", presets["siglip"], "--out", target), "--force")
    replaced = invoke("weights", "fetch", presets["siglip"], "--out", target, "--force")
    assert replaced.exit_code == 0, replaced.output
    assert facts_lines(replaced.output)["architecture"].startswith("SigLIPBackbone")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "preset"]  # nothing left beside it

    file = tmp_path / "file"
    file.write_text("x")
    assert_one_message(invoke("weights", "fetch", presets["dinov2"], "--out", file), "is a file")


def test_fetch_of_a_folder_that_is_not_a_preset_names_it(tmp_path):
    (tmp_path / "src").mkdir()
    result = invoke("weights", "fetch", tmp_path / "src", "--out", tmp_path / "out")
    assert_one_message(result, str(tmp_path / "src"), "not a KerasHub preset folder")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("source", ["local", "kaggle://keras/dinov2/keras/dinov2_small"])
def test_a_failure_inside_keras_hub_is_one_line(source, presets, tmp_path, monkeypatch):
    import keras_hub

    import patchcfg.models.foundation

    monkeypatch.setattr(patchcfg.models.download, "can_reach", lambda url, *args, **kwargs: True)

    def broken(*args, **kwargs):
        raise ValueError("Unknown preset identifier.\nThe details, over several lines.")

    monkeypatch.setattr(keras_hub.models.Backbone, "from_preset", broken)
    handle = presets["dinov2"] if source == "local" else source
    result = invoke("weights", "fetch", handle, "--out", tmp_path / "out")
    assert_one_message(result, f"cannot load the KerasHub preset {handle}: Unknown preset identifier.")
    assert len(result.output.strip().splitlines()) == 1
    assert "several lines" not in result.output
    assert [p.name for p in tmp_path.iterdir()] == []
