"""`patchcfg convert musket`: Musket classification configs become valid patchcfg configs."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from patchcfg.cli import main
from patchcfg.config import load_config
from patchcfg.config.yaml_loader import load_yaml_file
from patchcfg.errors import ConfigError
from patchcfg.interop.musket import (
    LABELS_PLACEHOLDER,
    convert_musket_file,
    musket_to_patchcfg,
    name_from_path,
    render_yaml,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "musket"
EXAMPLE = FIXTURES / "example.yaml"
STAGED = FIXTURES / "staged.yaml"


BASE = {"architecture": "ResNet50", "shape": [32, 32, 3], "stages": [{"epochs": 1}]}


def convert(musket, name="t"):
    """Convert ``musket`` over a minimal config (so that only what the test gives is reported)."""
    return musket_to_patchcfg({**BASE, **musket}, name)


def lost(messages):
    return [m for m in messages if ": not converted (" in m]


def line_of(path, text):
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if text in line:
            return number
    raise AssertionError(f"{text!r} not in {path}")


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


# --------------------------------------------------------------------------- the README example

def test_readme_example_converts_to_a_config_that_loads(tmp_path):
    text, config, messages = convert_musket_file(EXAMPLE)
    out = tmp_path / "new.yaml"
    out.write_text(text)
    loaded = load_config(out)
    assert loaded["name"] == "example"
    assert loaded["data"]["labels"] == LABELS_PLACEHOLDER
    assert loaded["data"]["imshape"] == [224, 224] and loaded["data"]["channels"] == 3
    assert loaded["backbone"]["name"] == "DenseNet201"
    assert loaded["backbone"]["weights"] == "imagenet"
    assert config["augmentation"] == {"Fliplr": 0.5, "Flipud": 0.5}
    assert {k: v for k, v in loaded["augmentation"].items() if k != "engine"} == {"Fliplr": 0.5, "Flipud": 0.5}
    assert loaded["finetune"]["callbacks"]["EarlyStopping"]["monitor"] == "val_macro_f1"
    ft = config["finetune"]  # as converted, before defaults are filled in
    assert ft["head"]["type"] == "linear" and ft["head"]["pooling"] == "avg" and ft["head"]["dropout"] == 0
    assert ft["output"]["type"] == "sigmoid"
    assert ft["loss"] == "masked_bce"
    assert ft["batch_size"] == 16
    assert ft["optimizer"]["name"] == "adam" and ft["optimizer"]["lr"] == 0.005
    assert ft["primary_metric"] == "val_macro_accuracy" and ft["primary_metric_mode"] == "max"
    assert ft["callbacks"] == {
        "EarlyStopping": {"patience": 3, "monitor": "val_macro_f1", "mode": "max"},
        "ReduceLROnPlateau": {"patience": 2, "factor": 0.3, "monitor": "val_macro_accuracy", "mode": "max"},
    }
    assert ft["stages"] == [{"epochs": 10, "freeze_encoder": False}]
    assert ft["folds_count"] == 5  # Musket's default: 5 folds
    # What could not be mapped, with the line it was on; what needs no mapping, as notes.
    cooldown = line_of(EXAMPLE, "cooldown: 1")
    assert lost(messages) == [
        f"{EXAMPLE}:{cooldown}: callbacks.ReduceLROnPlateau.cooldown: not converted (ReduceLROnPlateau "
        "has no 'cooldown' in patchcfg; it takes monitor, factor, patience, min_lr, mode)"]
    assert any(m.startswith(f"{EXAMPLE}:{line_of(EXAMPLE, 'classes: 28')}: classes: note: 28 classes")
               for m in messages)
    assert any("metrics: note:" in m for m in messages)
    assert any("copyWeights: note:" in m for m in messages)
    assert [int(m.split(":")[1]) for m in messages] == sorted(int(m.split(":")[1]) for m in messages)


def test_readme_example_yaml_has_the_header_and_the_labels_comment():
    text, config, messages = convert_musket_file(EXAMPLE)
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert any("Not converted (1):" in line for line in header)
    assert any("callbacks.ReduceLROnPlateau.cooldown" in line for line in header)
    assert any("Notes (" in line for line in header)
    labels_line = next(line for line in text.splitlines() if line.startswith("  labels:"))
    assert "SET THIS" in labels_line
    assert yaml.safe_load(text) == config


# --------------------------------------------------------------------------- the staged fixture

def test_staged_fixture_converts_every_section(tmp_path):
    text, config, messages = convert_musket_file(STAGED)
    out = tmp_path / "staged.yaml"
    out.write_text(text)
    loaded = load_config(out)
    assert loaded["name"] == "staged" and loaded["seed"] == 7
    assert loaded["data"]["imshape"] == [96, 128] and loaded["data"]["channels"] == 4
    assert loaded["backbone"]["name"] == "resnet18" and loaded["backbone"]["weights"] is None
    assert loaded["backbone"]["pooling"] == "max"
    aug = config["augmentation"]
    assert list(aug) == ["Fliplr", "Flipud", "rot90", "Affine", "Multiply", "GaussianBlur",
                         "AddToHueAndSaturation", "Grayscale", "Crop", "AdditiveGaussianNoise"]
    assert aug["Affine"] == {"scale": [0.8, 1.5], "translate_percent": {"x": [-0.2, 0.2], "y": [-0.2, 0.2]},
                             "rotate": [-16, 16], "shear": [-16, 16]}
    assert aug["rot90"] is True and aug["Crop"] == {"percent": [0, 0.1]}
    ft = config["finetune"]
    assert ft["head"] == {"type": "linear", "pooling": "max", "dropout": 0.2}
    assert ft["loss"] == "masked_bce+0.1*dice"
    assert ft["optimizer"] == {"name": "sgd", "lr": 0.01, "clipnorm": 1.0}
    assert ft["batch_size"] == 24 and ft["folds_count"] == 4
    assert ft["primary_metric"] == "val_macro_f1" and ft["primary_metric_mode"] == "max"
    assert set(ft["callbacks"]) == {"EarlyStopping", "ReduceLROnPlateau", "CyclicLR"}
    assert ft["callbacks"]["CyclicLR"] == {"base_lr": 0.0001, "max_lr": 0.01, "mode": "triangular2",
                                           "step_size": 300}
    assert ft["tta"] == "flips"
    first, second, third = ft["stages"]
    assert first == {"epochs": 6, "negatives": "none", "freeze_encoder": True}
    assert second == {"epochs": 10, "lr": 0.001, "negatives": 2, "unfreeze_encoder": True,
                      "loss": "masked_focal", "callbacks": {"EarlyStopping": {"patience": 3, "monitor": "val_loss"}}}
    assert third["negatives"] == "real" and third["initial_weights"] == "./weights/best-0.1.weights"
    assert "loss" not in third  # lovasz_loss has no equivalent: the stage falls back to finetune.loss
    assert third["callbacks"]["ReduceLROnPlateau"] == {"patience": 1, "factor": 0.2}
    assert set(third["callbacks"]) == {"EarlyStopping", "ReduceLROnPlateau", "CyclicLR"}

    keys = {m.split(": ")[1] for m in lost(messages)}  # each is "file:line: key: not converted (...)"
    assert keys == {"weights", "clipvalue", "testSplit", "dataset", "augmentation.ElasticTransformation",
                    "callbacks.ReduceLROnPlateau.cooldown", "callbacks.LRVariator",
                    "stages.0.validation_negatives", "stages.2.loss"}
    assert f"{STAGED}:{line_of(STAGED, 'LRVariator:')}: callbacks.LRVariator: not converted (no equivalent; " \
           "use finetune.callbacks.CyclicLR or finetune.optimizer.schedule)" in messages
    assert any("augmentation.ElasticTransformation: not converted" in m and "RandomElasticTransform" in m
               for m in messages)
    assert any("stages.2.loss: not converted" in m and "lovasz_loss" in m for m in messages)
    assert any("testSplit: not converted" in m and "validation column" in m for m in messages)
    assert any("callbacks.TensorBoard: note:" in m for m in messages)


# --------------------------------------------------------------------------- each mapping

@pytest.mark.parametrize("architecture, weights, name, expect_weights, is_lost", [
    ("ResNet50", "imagenet", "ResNet50", "imagenet", False),
    ("DenseNet121", None, "DenseNet121", None, False),
    ("resnet50", "imagenet", "ResNet50", "imagenet", False),       # lower-case Musket name
    ("mobilenetv2", "imagenet", "MobileNetV2", "imagenet", False),
    ("resnet18", None, "resnet18", None, False),                   # our small ResNet
    ("ResNet34", "imagenet", "resnet34", None, True),              # no ImageNet weights for ours
])
def test_architecture_and_weights(architecture, weights, name, expect_weights, is_lost):
    musket = {"architecture": architecture, "stages": [{"epochs": 1}]}
    if weights is not None:
        musket["weights"] = weights
    config, messages = convert(musket)
    assert config["backbone"]["name"] == name
    assert config["backbone"].get("weights") == expect_weights
    assert bool([m for m in lost(messages) if m.startswith("weights:")]) == is_lost


def test_unknown_architecture_is_reported_and_left_to_the_default():
    config, messages = convert({"architecture": "SEResNeXt50", "weights": "imagenet", "stages": [{"epochs": 1}]})
    assert "name" not in config["backbone"] and config["backbone"].get("weights") is None
    assert any(m.startswith("architecture: not converted (") for m in messages)


def test_classifier_is_an_older_name_for_architecture():
    config, _ = musket_to_patchcfg({"classifier": "VGG16", "stages": [{"epochs": 1}]}, "t")
    assert config["backbone"]["name"] == "VGG16"


def test_shape_pooling_dropout():
    config, messages = convert({"shape": [64, 48], "pooling": "max", "dropout": 0.3, "stages": [{"epochs": 1}]})
    assert config["data"]["imshape"] == [64, 48] and "channels" not in config["data"]
    assert config["backbone"]["pooling"] == "max" and config["finetune"]["head"]["pooling"] == "max"
    assert config["finetune"]["head"]["dropout"] == 0.3
    config, messages = convert({"shape": [4, 4, 3], "stages": [{"epochs": 1}]})
    assert "imshape" not in config["data"] and any(m.startswith("shape: not converted") for m in messages)


def test_crops_become_data_crops():
    config, messages = convert({"crops": 3})
    assert config["data"]["crops"] == 3 and not lost(messages)
    config, messages = convert({"crops": 0})
    assert "crops" not in config["data"] and any(m.startswith("crops: not converted") for m in messages)


def test_classes_is_a_note_and_several_outputs_become_output_groups():
    _, messages = convert({"classes": 12, "stages": [{"epochs": 1}]})
    assert messages == ["classes: note: 12 classes: patchcfg takes the classes from the label table's columns "
                        "(finetune.classes picks a subset)"]
    config, messages = convert({"classes": [4, 3], "activation": ["softmax", "sigmoid"],
                                "loss": ["categorical_crossentropy", "binary_crossentropy+0.1*dice_loss"],
                                "stages": [{"epochs": 1}]})
    assert lost(messages) == []
    assert config["finetune"]["outputs"] == [{"classes": 4, "type": "softmax", "loss": "masked_cce"},
                                             {"classes": 3, "type": "sigmoid", "loss": "masked_bce+0.1*dice"}]
    assert "output" not in config["finetune"] and "loss" not in config["finetune"]
    assert any("group_0: classes 1-4; group_1: classes 5-7" in m for m in messages)
    config, messages = convert({"classes": [2, 2], "activation": ["softmax", "relu"], "loss": ["dice_loss"],
                                "stages": [{"epochs": 1}]})
    assert {m.split(":")[0] for m in lost(messages)} == {"activation.1", "loss"}
    assert config["finetune"]["outputs"] == [{"classes": 2, "type": "softmax"}, {"classes": 2, "type": "sigmoid"}]


def test_a_converted_multi_output_config_validates_and_trains_a_step(tmp_path, digits_table):
    import pandas as pd

    from patchcfg.config import load_config
    from patchcfg.stages import run_finetune

    labels = digits_table(tmp_path)
    frame = pd.read_csv(labels)
    frame["two"] = ((frame["zero"] == 0) & (frame["one"] == 0)).astype(float)
    frame["small"] = (frame.index % 2).astype(float)
    frame.to_csv(labels, index=False)
    musket = tmp_path / "musket.yaml"
    musket.write_text("architecture: ResNet50\nclasses: [3, 1]\nactivation: [softmax, sigmoid]\n"
                      "loss: [categorical_crossentropy, binary_crossentropy]\nbatch: 16\nfolds_count: 1\n"
                      "stages:\n  - {epochs: 1}\n")
    text, _, _ = convert_musket_file(musket)
    path = tmp_path / "converted.yaml"
    path.write_text(text)
    config = load_config(path, [f"data.labels={labels}", "data.imshape=[16, 16]", "backbone.name=tiny",
                                "backbone.weights=null", "finetune.steps_per_epoch=1", "finetune.roc_plot=false",
                                "augmentation.preset=none", "finetune.primary_metric=val_group_0_accuracy"])
    summary = run_finetune(config, root=tmp_path / "experiments", verbose=0)
    assert summary["outputs"] == [{"name": "group_0", "classes": ["zero", "one", "two"], "type": "softmax"},
                                  {"name": "group_1", "classes": ["small"], "type": "sigmoid"}]
    assert "val_group_0_accuracy" in summary["mean"]


def test_activation_maps_to_the_output_type():
    config, _ = convert({"activation": "softmax", "stages": [{"epochs": 1}]})
    assert config["finetune"]["output"] == {"type": "softmax"}
    assert config["finetune"]["loss"] == "masked_cce"  # a softmax output needs the categorical loss
    config, messages = convert({"activation": "linear", "stages": [{"epochs": 1}]})
    assert "output" not in config["finetune"] and lost(messages)


@pytest.mark.parametrize("musket, ours", [("Adam", "adam"), ("SGD", "sgd"), ("adamw", "adamw"), ("AdamW", "adamw")])
def test_optimizer_names(musket, ours):
    config, messages = convert({"optimizer": musket, "lr": 0.02, "batch": 8, "stages": [{"epochs": 1}]})
    assert config["finetune"]["optimizer"] == {"name": ours, "lr": 0.02}
    assert config["finetune"]["batch_size"] == 8 and not lost(messages)


def test_unknown_optimizer_falls_back_to_adam():
    config, messages = convert({"optimizer": "RMSprop", "stages": [{"epochs": 1}]})
    assert config["finetune"]["optimizer"]["name"] == "adam"
    assert any(m.startswith("optimizer: not converted (") and "RMSprop" in m for m in messages)


@pytest.mark.parametrize("musket, ours", [
    ("binary_crossentropy", "masked_bce"),
    ("binary_crossentropy+0.1*dice_loss", "masked_bce+0.1*dice"),
    ("0.5*focal_loss+2*dice_loss", "0.5*masked_focal+2*dice"),
    ("categorical_crossentropy", "masked_cce"),
    ("binary_crossentropy + dice_loss*0.25", "masked_bce + dice*0.25"),
    ("binary_crossentropy+1e-3*dice_loss", "masked_bce+1e-3*dice"),
    ("masked_bce+0.1*dice", "masked_bce+0.1*dice"),
])
def test_composite_losses_are_rewritten_keeping_their_weights(musket, ours):
    from patchcfg.losses import parse_loss

    config, messages = convert({"loss": musket, "stages": [{"epochs": 1, "loss": musket}]})
    assert config["finetune"]["loss"] == ours and config["finetune"]["stages"][0]["loss"] == ours
    assert not lost(messages)
    assert [t.weight for t in parse_loss(ours)] == [t.weight for t in parse_loss(
        musket.replace("binary_crossentropy", "masked_bce").replace("dice_loss", "dice")
        .replace("focal_loss", "masked_focal").replace("categorical_crossentropy", "masked_cce"))]


@pytest.mark.parametrize("loss", ["lovasz_loss", "binary_crossentropy+0.1*jaccard_loss", "binary_crossentropy+*"])
def test_losses_without_equivalent_are_reported(loss):
    config, messages = convert({"loss": loss, "stages": [{"epochs": 1}]})
    assert "loss" not in config["finetune"]
    assert any(m.startswith("loss: not converted (") for m in messages)


def test_loss_names_match_the_loss_registry():
    from patchcfg.interop.musket import LOSS_NAMES
    from patchcfg.losses import ALIASES, LOSSES

    for musket, ours in LOSS_NAMES.items():
        assert ours in LOSSES
        assert ALIASES.get(musket, musket) == ours


@pytest.mark.parametrize("musket, ours", [
    ("val_binary_accuracy", "val_macro_accuracy"), ("val_accuracy", "val_macro_accuracy"),
    ("val_macro_f1", "val_macro_f1"), ("val_f1", "val_macro_f1"), ("val_loss", "val_loss"),
    ("val_auc", "val_macro_auc"), ("val_precision", "val_macro_precision"), ("binary_accuracy", "val_macro_accuracy"),
])
def test_primary_metric(musket, ours):
    config, messages = convert({"primary_metric": musket, "primary_metric_mode": "max", "stages": [{"epochs": 1}]})
    assert config["finetune"]["primary_metric"] == ours
    assert config["finetune"]["primary_metric_mode"] == "max"
    assert not lost(messages)
    assert bool(messages) == (musket != ours)


def test_unknown_metric_is_reported():
    config, messages = convert({"primary_metric": "val_iou", "stages": [{"epochs": 1}]})
    assert "primary_metric" not in config["finetune"]
    assert any(m.startswith("primary_metric: not converted (") for m in messages)


def test_metrics_are_a_note():
    _, messages = convert({"metrics": ["binary_accuracy", "macro_f1"], "stages": [{"epochs": 1}]})
    assert len(messages) == 1 and messages[0].startswith("metrics: note: ")


def test_callbacks_mapped_and_reported():
    config, messages = convert({
        "callbacks": {
            "EarlyStopping": {"patience": 4, "monitor": "val_loss", "min_delta": 0.01, "baseline": 0.5},
            "ReduceLROnPlateau": {"factor": 1.5, "patience": 2, "min_lr": 1e-6},
            "CyclicLR": {"base_lr": 0.001, "max_lr": 0.006, "step_size": 100, "mode": "exp_range", "gamma": 0.99},
            "LRVariator": {"toVal": 0.1},
            "ModelCheckpoint": {"monitor": "val_loss"},
            "Custom": {},
        },
        "stages": [{"epochs": 1}]})
    callbacks = config["finetune"]["callbacks"]
    assert callbacks["EarlyStopping"] == {"patience": 4, "monitor": "val_loss", "min_delta": 0.01}
    assert callbacks["ReduceLROnPlateau"] == {"patience": 2, "min_lr": 1e-6}  # factor 1.5 is not < 1
    assert callbacks["CyclicLR"] == {"base_lr": 0.001, "max_lr": 0.006, "step_size": 100, "mode": "exp_range",
                                     "gamma": 0.99}
    reported = {m.split(": ")[0] for m in lost(messages)}
    assert reported == {"callbacks.EarlyStopping.baseline", "callbacks.ReduceLROnPlateau.factor",
                        "callbacks.LRVariator", "callbacks.Custom"}
    assert any(m.startswith("callbacks.ModelCheckpoint: note:") for m in messages)


def test_callbacks_as_a_list():
    config, _ = convert({"callbacks": [{"EarlyStopping": {"patience": 2}}, {"CyclicLR": {"max_lr": 0.01}}],
                         "stages": [{"epochs": 1}]})
    assert config["finetune"]["callbacks"] == {"EarlyStopping": {"patience": 2}, "CyclicLR": {"max_lr": 0.01}}


def test_stages_map_with_negatives_unfreeze_and_their_callbacks():
    config, messages = convert({
        "freeze_encoder": True,
        "callbacks": {"EarlyStopping": {"patience": 5}},
        "stages": [
            {"epochs": 3, "negatives": "none", "validation_negatives": "real"},
            {"epochs": 4.0, "lr": 1e-4, "negatives": 1, "unfreeze_encoder": True,
             "callbacks": {"ReduceLROnPlateau": {"patience": 1}}},
            {"epochs": 2, "negatives": "3", "initial_weights": "best.weights.h5",
             "extra_callbacks": {"CyclicLR": {"base_lr": 1e-5, "max_lr": 1e-3}}},
            {"lr": 0.1, "shuffle": True},
        ]})
    stages = config["finetune"]["stages"]
    assert stages[0] == {"epochs": 3, "negatives": "none", "freeze_encoder": True}
    assert stages[1] == {"epochs": 4, "lr": 1e-4, "negatives": 1, "unfreeze_encoder": True,
                         "callbacks": {"ReduceLROnPlateau": {"patience": 1}}}
    assert stages[2] == {"epochs": 2, "negatives": 3, "initial_weights": "best.weights.h5",
                         "callbacks": {"EarlyStopping": {"patience": 5},
                                       "CyclicLR": {"base_lr": 1e-5, "max_lr": 1e-3}}}
    assert stages[3] == {"epochs": 10, "lr": 0.1}
    reported = {m.split(": ")[0] for m in lost(messages)}
    assert reported == {"stages.0.validation_negatives", "stages.3", "stages.3.shuffle"}


def test_musket_trains_the_encoder_from_the_start_unless_frozen():
    config, _ = convert({"stages": [{"epochs": 1}, {"epochs": 1}]})
    assert config["finetune"]["stages"][0]["freeze_encoder"] is False
    config, _ = convert({"freeze_encoder": True, "stages": [{"epochs": 1}, {"epochs": 1, "unfreeze_encoder": True}]})
    assert config["finetune"]["stages"] == [{"epochs": 1, "freeze_encoder": True},
                                            {"epochs": 1, "unfreeze_encoder": True}]


def test_missing_stages_use_our_defaults():
    config, messages = musket_to_patchcfg({"architecture": "VGG19"}, "t")
    assert config["finetune"]["stages"][0]["epochs"] >= 1
    assert any(m.startswith("stages: not converted") for m in messages)


def test_folds_count_and_random_state():
    config, messages = convert({"folds_count": 3, "random_state": 11, "stages": [{"epochs": 1}]})
    assert config["finetune"]["folds_count"] == 3 and config["seed"] == 11
    assert any(m.startswith("random_state: note:") for m in messages)
    config, _ = convert({"stages": [{"epochs": 1}]})
    assert config["finetune"]["folds_count"] == 5


@pytest.mark.parametrize("key", ["dataset", "testSplit", "validationSplit", "holdout"])
def test_data_keys_say_what_to_do_instead(key):
    _, messages = convert({key: 0.2, "stages": [{"epochs": 1}]})
    (message,) = messages
    assert message.startswith(f"{key}: not converted (") and ("label table" in message)


def test_unknown_key_is_reported():
    _, messages = convert({"frobnicate": 1, "stages": [{"epochs": 1}]})
    assert messages == ["frobnicate: not converted (unknown Musket key)"]


def test_augmentation_recipes():
    config, messages = convert({"augmentation": {
        "Fliplr": 0.5,
        "Affine": {"rotate": [-10, 10], "order": 1, "fit_output": True},
        "Multiply": [0.9, 1.1],
        "Rotate90": False,
        "CropAndPad": {"percent": [0, 0.1]},
        "Sometimes": [{"Fliplr": 1}],
        "MedianBlur": {"k": 3},
        "GaussianBlur": {"sigma": 50},
    }, "stages": [{"epochs": 1}]})
    assert config["augmentation"] == {"Fliplr": 0.5, "Affine": {"rotate": [-10, 10], "order": 1},
                                      "Multiply": [0.9, 1.1]}
    reported = {m.split(": ")[0] for m in lost(messages)}
    assert reported == {"augmentation.Affine.fit_output", "augmentation.CropAndPad", "augmentation.Sometimes",
                        "augmentation.MedianBlur", "augmentation.GaussianBlur"}
    assert "augmentation.GaussianBlur: not converted ({sigma: 50}: sigma: 50 is greater than the maximum of 20)" \
        in messages
    assert any("MedianBlur: not converted" in m and "GaussianBlur" in m for m in messages)
    assert any(m.startswith("augmentation.Rotate90: note:") for m in messages)


def test_augmentation_as_a_list_and_none():
    config, _ = convert({"augmentation": [{"Fliplr": 0.5}, {"Flipud": 0.5}], "stages": [{"epochs": 1}]})
    assert config["augmentation"] == {"Fliplr": 0.5, "Flipud": 0.5}
    # No augmenters in Musket means none; our empty section would mean the default preset.
    config, _ = convert({"stages": [{"epochs": 1}]})
    assert config["augmentation"] == {"preset": "none"}


def test_tta():
    config, _ = convert({"testTimeAugmentation": "Horizontal", "stages": [{"epochs": 1}]})
    assert config["finetune"]["tta"] == "flips"
    config, messages = convert({"testTimeAugmentation": "Crazy", "stages": [{"epochs": 1}]})
    assert "tta" not in config["finetune"] and lost(messages)


def test_messages_carry_file_and_line(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("architecture: ResNet50\nshape: [32, 32, 3]\ncallbacks:\n  LRVariator:\n    toVal: 0.1\n"
                    "stages:\n  - epochs: 2\n    validation_negatives: real\n")
    musket, locations = load_yaml_file(path)
    _, messages = musket_to_patchcfg(musket, "old", locations)
    assert messages == [
        f"{path}:4: callbacks.LRVariator: not converted (no equivalent; use finetune.callbacks.CyclicLR or "
        "finetune.optimizer.schedule)",
        f"{path}:8: stages.0.validation_negatives: not converted (validation always uses every validation row "
        "of the label table)",
    ]


def test_every_output_validates_even_from_odd_input():
    odd = {"architecture": 3, "weights": 5, "shape": "big", "pooling": "sum", "dropout": 2, "batch": 0, "lr": -1,
           "optimizer": None, "clipnorm": "x", "folds_count": 0, "primary_metric_mode": "best", "random_state": -3,
           "freeze_encoder": "yes", "callbacks": "EarlyStopping", "augmentation": 7, "stages": "many",
           "testTimeAugmentation": 4, "activation": None, "loss": 3, "classes": "x"}
    config, messages = convert(odd)  # must not raise: every bad value is reported instead
    assert len(lost(messages)) >= 15
    text = render_yaml(config, messages, "odd.yaml")
    assert yaml.safe_load(text) == config


def test_an_invalid_result_is_a_converter_bug(monkeypatch):
    import patchcfg.interop.musket as musket_module

    monkeypatch.setattr(musket_module, "convert_data", lambda musket, report: {"imshape": "oops"})
    with pytest.raises(ConfigError, match="bug in patchcfg's Musket converter"):
        convert({"stages": [{"epochs": 1}]})


def test_not_a_mapping():
    with pytest.raises(ConfigError):
        musket_to_patchcfg(["a"], "t")


# --------------------------------------------------------------------------- names

@pytest.mark.parametrize("path, name", [
    ("old.yaml", "old"), ("my exp (v2).yaml", "my-exp-v2"), ("a.b_c-d.yml", "a.b_c-d"), ("___.yaml", "___"),
    ("ü.yaml", "musket"),
])
def test_name_from_path(path, name):
    assert name_from_path(path) == name


def test_config_yaml_takes_its_folder_name(tmp_path):
    folder = tmp_path / "exp 01"
    folder.mkdir()
    assert name_from_path(folder / "config.yaml") == "exp-01"


# --------------------------------------------------------------------------- command line

def test_cli_prints_yaml_on_stdout_and_messages_on_stderr(tmp_path):
    result = invoke("convert", "musket", EXAMPLE)
    assert result.exit_code == 0, result.output
    config = yaml.safe_load(result.stdout)
    assert config["name"] == "example" and config["backbone"]["name"] == "DenseNet201"
    assert "callbacks.ReduceLROnPlateau.cooldown: not converted" in result.stderr
    assert "1 key(s) not converted" in result.stderr
    out = tmp_path / "new.yaml"
    out.write_text(result.stdout)
    assert load_config(out)["finetune"]["loss"] == "masked_bce"


def test_cli_out_writes_the_file(tmp_path, monkeypatch):
    out = tmp_path / "configs" / "new.yaml"
    result = invoke("convert", "musket", STAGED, "--out", out, "--name", "exp-7")
    assert result.exit_code == 0, result.output
    assert result.stdout == "" and f"wrote {out}" in result.stderr
    assert load_config(out)["name"] == "exp-7"
    # validate reads the label table the config names: the placeholder, until a table is there
    monkeypatch.chdir(tmp_path)
    placeholder = load_config(out)["data"]["labels"]
    result = invoke("validate", out)
    assert result.exit_code == 2 and f"{placeholder}: label table not found" in result.output
    (tmp_path / placeholder).write_text("filepath,cat\na.png,1\n")
    assert invoke("validate", out).exit_code == 0


def test_cli_bad_name(tmp_path):
    result = invoke("convert", "musket", EXAMPLE, "--name", "a b")
    assert result.exit_code == 2 and "name 'a b'" in result.stderr


def test_cli_missing_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    result = invoke("convert", "musket", missing)
    assert result.exit_code == 2
    assert str(missing) in result.stderr and "not found" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize("text, expected", [
    ("architecture: [unclosed\n", "YAML syntax error"),
    ("- a\n- b\n", "a mapping of keys to values"),
    ("", "empty"),
])
def test_cli_bad_input(tmp_path, text, expected):
    path = tmp_path / "old.yaml"
    path.write_text(text)
    result = invoke("convert", "musket", path)
    assert result.exit_code == 2
    assert str(path) in result.stderr and expected in result.stderr


def test_cli_help_has_an_example():
    result = invoke("convert", "musket", "--help")
    assert result.exit_code == 0 and "patchcfg convert musket OLD.yaml > new.yaml" in result.output


def test_import_does_not_load_tensorflow():
    code = ("import sys, patchcfg.interop.musket, patchcfg.commands.convert; "
            "sys.exit(1 if 'tensorflow' in sys.modules or 'keras' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def test_cli_out_never_writes_over_the_config_it_reads(tmp_path):
    old = tmp_path / "config.yaml"
    old.write_text(Path(EXAMPLE).read_text())
    for source in (old, tmp_path):
        result = invoke("convert", "musket", source, "--out", old)
        assert result.exit_code == 2 and "is the Musket config this command reads" in result.output
    assert old.read_text() == Path(EXAMPLE).read_text()


def test_cli_out_replaces_only_what_it_wrote(tmp_path):
    out = tmp_path / "new.yaml"
    assert invoke("convert", "musket", EXAMPLE, "--out", out).exit_code == 0
    assert invoke("convert", "musket", EXAMPLE, "--out", out).exit_code == 0  # its own earlier output
    mine = tmp_path / "mine.yaml"
    mine.write_text("name: mine\n")
    result = invoke("convert", "musket", EXAMPLE, "--out", mine)
    assert result.exit_code == 2 and "--force" in result.output and mine.read_text() == "name: mine\n"
    assert invoke("convert", "musket", EXAMPLE, "--out", mine, "--force").exit_code == 0
