"""A KerasHub foundation encoder through every stage, on tiny random presets (nothing downloads):
embed -> query -> the labelling app's API -> finetune (frozen, then unfrozen) -> predict -> distill,
and the saved model reloads in a fresh process."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from patchcfg.cli import main

pytestmark = pytest.mark.slow
pytest.importorskip("keras_hub")


def hub_config(tmp_path, digits_table, finetune_config, preset, **backbone):
    labels = digits_table(tmp_path)
    frame = pd.read_csv(labels)
    frame.loc[frame.index % 4 == 1, ["zero", "one"]] = np.nan  # some rows unlabelled
    frame.to_csv(labels, index=False)
    path = finetune_config(tmp_path, labels)  # a frozen stage, then an unfrozen one
    raw = yaml.safe_load(path.read_text())
    raw["backbone"] = {"name": "keras_hub", "preset": str(preset), **backbone}
    raw["query"] = {"strategy": "entropy", "n": 5}
    raw["distill"] = {"student": {"name": "tiny"}, "epochs": 1, "batch_size": 16, "steps_per_epoch": 2}
    path.write_text(yaml.safe_dump(raw))
    return path


def invoke(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def test_a_dinov2_preset_runs_every_stage_and_the_model_reloads_elsewhere(
        tmp_path, digits_table, finetune_config, hub_preset, run_cli):
    preset = hub_preset("dinov2")
    path = hub_config(tmp_path, digits_table, finetune_config, preset, pooling="cls+mean")
    root = tmp_path / "exp"
    invoke("validate", path)

    invoke("embed", path, "--experiments", root)
    features = np.load(root / "ft" / "embed" / "features.npy")
    assert features.shape == (72, 64)  # cls + mean of 32-wide tokens

    invoke("query", path, "--experiments", root)
    queue = pd.read_csv(root / "ft" / "query" / "queue.csv")
    assert len(queue) == 5 and queue["filepath"].is_unique

    invoke("run", path, "--experiments", root)
    stage = root / "ft" / "finetune"
    summary = json.loads((stage / "summary.json").read_text())
    assert summary and (stage / "fold_0" / "model.keras").is_file()
    env = json.loads((stage / "env.json").read_text())
    assert env["versions"]["keras-hub"]

    out = tmp_path / "preds.csv"
    invoke("predict", root / "ft", tmp_path / "img", "--out", out)
    predictions = pd.read_csv(out)
    assert len(predictions) == 72 and ((predictions[["zero", "one"]] >= 0) & (predictions[["zero", "one"]] <= 1)).all().all()

    assert (root / "ft" / "distill" / "model.keras").is_file()

    # a fresh process (nothing imported yet) reloads the saved model and predicts the same
    model_path = stage / "fold_0" / "model.keras"
    invoke("predict", model_path, tmp_path / "img", "--out", tmp_path / "here.csv")
    process = run_cli("predict", model_path, tmp_path / "img", "--out", tmp_path / "fresh.csv", timeout=300)
    assert process.returncode == 0, process.stderr[-3000:]
    here, fresh = pd.read_csv(tmp_path / "here.csv"), pd.read_csv(tmp_path / "fresh.csv")
    assert list(here["filepath"]) == list(fresh["filepath"])
    columns = [c for c in here.columns if c != "filepath"]
    assert len(columns) == 2 and list(fresh.columns) == list(here.columns)
    np.testing.assert_allclose(fresh[columns], here[columns], rtol=1e-5, atol=1e-6)


def test_the_encoder_is_frozen_in_the_first_stage_and_trains_in_the_second(
        tmp_path, digits_table, finetune_config, hub_preset):
    from patchcfg.config import load_config
    from patchcfg.stages import run_finetune

    preset = hub_preset("dinov2")
    path = hub_config(tmp_path, digits_table, finetune_config, preset, pooling="cls")
    config = load_config(path, ['finetune.stages=[{"epochs": 1, "lr": 0.01}]'])  # a preset: frozen by default
    run_finetune(config, root=tmp_path / "frozen", verbose=0)
    import keras

    from patchcfg.models.foundation import load_preset

    original = load_preset(str(preset))[0]
    trained = keras.saving.load_model(tmp_path / "frozen" / "ft" / "finetune" / "fold_0" / "model.keras",
                                      compile=False)
    hub = next(layer for layer in trained.get_layer("encoder").layers if layer.name == original.name)
    for a, b in zip(original.get_weights(), hub.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)  # frozen: the preset's weights, untouched

    config = load_config(path, ['finetune.stages=[{"epochs": 1, "lr": 0.01, "unfreeze_encoder": true}]'])
    run_finetune(config, root=tmp_path / "open", verbose=0)
    trained = keras.saving.load_model(tmp_path / "open" / "ft" / "finetune" / "fold_0" / "model.keras",
                                      compile=False)
    hub = next(layer for layer in trained.get_layer("encoder").layers if layer.name == original.name)
    changed = [not np.allclose(a, b) for a, b in zip(original.get_weights(), hub.get_weights(), strict=True)]
    assert sum(changed) > len(changed) // 2


@pytest.mark.parametrize("architecture", ["dinov2", "siglip", "efficientnet"])
def test_each_kind_of_preset_embeds_and_finetunes_one_band_images_in_mixed_precision(
        tmp_path, digits_table, finetune_config, hub_preset, architecture):
    preset = hub_preset(architecture)
    path = hub_config(tmp_path, digits_table, finetune_config, preset)
    raw = yaml.safe_load(path.read_text())
    raw["data"]["channels"] = 1  # grey images reach the RGB model through the channel adapter
    raw["finetune"]["mixed_precision"] = True
    path.write_text(yaml.safe_dump(raw))
    root = tmp_path / "exp"
    invoke("embed", path, "--experiments", root)
    width = 1280 if architecture == "efficientnet" else 32
    assert np.load(root / "ft" / "embed" / "features.npy").shape == (72, width)
    invoke("finetune", path, "--experiments", root)
    summary = json.loads((root / "ft" / "finetune" / "summary.json").read_text())
    assert "bfloat16" in json.dumps(summary) or "float16" in json.dumps(summary)
    assert (root / "ft" / "finetune" / "fold_0" / "model.keras").is_file()


def test_pretraining_starts_from_the_preset_and_finetuning_from_what_it_learned(
        tmp_path, digits_table, finetune_config, hub_preset):
    """DetCon trains on the patch tokens as a map (pooling none under the pooled encoder); the
    finetune stage then starts from the pretrained encoder, not from the preset."""
    import keras

    preset = hub_preset("dinov2")
    path = hub_config(tmp_path, digits_table, finetune_config, preset, pooling="mean")
    raw = yaml.safe_load(path.read_text())
    raw["finetune"]["encoder"] = "auto"
    raw["finetune"]["stages"] = [{"epochs": 1, "lr": 0.01}]
    raw["pretrain"] = {"method": "detcon", "masks": "grid", "grid": 2, "epochs": 1, "batch_size": 16,
                       "steps_per_epoch": 2, "monitor": {"every": 0}, "projection": {"units": 16, "dim": 8}}
    path.write_text(yaml.safe_dump(raw))
    root = tmp_path / "exp"
    invoke("pretrain", path, "--experiments", root)
    invoke("finetune", path, "--experiments", root)
    pretrained = keras.saving.load_model(root / "ft" / "pretrain" / "encoder.keras", compile=False)
    model = keras.saving.load_model(root / "ft" / "finetune" / "fold_0" / "model.keras", compile=False)
    encoder = model.get_layer("encoder")
    assert pretrained.output_shape == encoder.output_shape == (None, 32)
    for a, b in zip(pretrained.get_weights(), encoder.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)  # the first stage froze the pretrained encoder
    from patchcfg.models.backbones import build_backbone

    untrained = build_backbone(raw["backbone"], (16, 16, 3)).get_weights()
    assert sum(not np.allclose(a, b) for a, b in zip(untrained, encoder.get_weights(), strict=True)) > 10
