"""The pretrain stage end to end on tiny images: outputs, probe, resume, schema and registry."""

from __future__ import annotations

import glob
import json
import os
import signal

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from patchcfg.config.schema import fill_defaults, load_schemas  # noqa: E402
from patchcfg.experiment import Experiment  # noqa: E402
from patchcfg.pretrain import get_method, method_names  # noqa: E402
from patchcfg.stages import run_pretrain  # noqa: E402

CLASSES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "even"]


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """64 16x16 PNG digits; rows 0-31 labelled, 32-47 unlabelled, 48-63 labelled validation."""
    from PIL import Image
    from sklearn.datasets import load_digits

    folder = tmp_path_factory.mktemp("digits")
    data = load_digits()
    lines = ["filepath,validation," + ",".join(CLASSES)]
    for i in range(64):
        pixels = (data.images[i] / 16.0 * 255).astype("uint8")
        Image.fromarray(pixels).resize((16, 16)).convert("RGB").save(folder / f"d{i:03d}.png")
        digit = int(data.target[i])
        labelled = i < 32 or i >= 48
        cells = [str(int(digit == c)) for c in range(10)] + [str(int(digit % 2 == 0))] if labelled else [""] * 11
        lines.append(f"d{i:03d}.png,{i >= 48}," + ",".join(cells))
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return folder


def make_config(digits, method="simclr", **pretrain):
    """The resolved config of a short run: what the test chooses, the schema's defaults for the rest."""
    # float32 unless a test says otherwise: runs are compared with each other to 1e-5
    params = {"method": method, "epochs": 2, "batch_size": 16, "steps_per_epoch": 2, "temperature": 0.5,
              "projection": {"units": 16, "dim": 8}, "mixed_precision": False}
    if method == "moco":
        params.update(queue_size=32, momentum=0.9)
    if method == "deepcluster":
        params.update(clusters=6, pca_dim=8)
    if method == "context_encoder":
        params.update(decoder_filters=16)
    if method in ("detcon", "detcon_b"):
        params.update(num_masks=4, grid=2, felzenszwalb={"scale": 50.0, "min_size": 5})
    if method in ("byol", "simsiam", "nnclr", "detcon_b"):
        params.update(predictor={"units": 16})
    if method == "nnclr":
        params.update(queue_size=32)
    params.update(pretrain)
    return fill_defaults({"name": f"test-{method}", "seed": 5,
                          "data": {"labels": str(digits / "labels.csv"), "imshape": [16, 16],
                                   "num_parallel_calls": 2},
                          "backbone": {"name": "tiny", "width": 0.5},
                          "augmentation": {"preset": "simclr"},
                          "distribute": {"strategy": "default"},
                          "pretrain": params})


def event_tags(folder):
    tags = set()
    for path in glob.glob(os.path.join(folder, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(value.tag for value in event.summary.value)
    return tags


def test_simclr_stage_writes_every_output(digits, tmp_path, capsys):
    config = make_config(digits, export_savedmodel=True)
    summary = run_pretrain(config, root=tmp_path, verbose=1)
    stage = tmp_path / "test-simclr" / "pretrain"
    assert json.loads((stage / "status.json").read_text())["state"] == "complete"
    rows = Experiment(config, root=tmp_path).stage("pretrain").read_metrics()
    assert [r["epoch"] for r in rows] == [1, 2]
    for key in ("loss", "contrastive_acc", "lr", "probe_accuracy", "probe_macro_auc", "align", "uniform"):
        assert all(isinstance(r[key], float) for r in rows), key
    assert 0.0 <= rows[-1]["probe_accuracy"] <= 1.0 and 0.0 <= rows[-1]["probe_macro_auc"] <= 1.0
    saved = json.loads((stage / "summary.json").read_text())
    assert saved == json.loads(json.dumps(summary))
    assert saved["epochs_completed"] == 2 and saved["skipped_images"] == 0 and saved["images"] == 64
    assert saved["probe_accuracy_kind"] == "exclusive" and saved["probe_heldout_rows"] == 16
    assert saved["best"]["probe_macro_auc"]["mode"] == "max" and saved["images_per_second"] > 0
    assert {"loss", "probe_accuracy", "probe_macro_auc", "align", "uniform", "augmented_views",
            "_hparams_/session_start_info"} <= event_tags(stage / "tensorboard")
    env = json.loads((stage / "env.json").read_text())
    assert env["replicas"] == 1 and env["strategy"]
    import patchcfg.models.backbones  # noqa: F401  (registers the custom layers)

    encoder = keras.saving.load_model(stage / "encoder.keras")
    assert encoder.predict(np.zeros((2, 16, 16, 3), "float32"), verbose=0).shape == (2, 8)
    assert (stage / "encoder_savedmodel" / "saved_model.pb").is_file()
    # run again: complete with the same config -> skipped
    capsys.readouterr()
    assert run_pretrain(config, root=tmp_path, verbose=1) == saved
    assert "already complete" in capsys.readouterr().out


class SignalAt(keras.callbacks.Callback):
    def __init__(self, epoch, batch):
        super().__init__()
        self.at, self.epoch = (epoch, batch), None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.parametrize("method,extra", [
    ("simclr", {}),
    ("moco", {"mochi": {"n": 8, "s": 4, "s_prime": 2}, "eqco": {"alpha": 16}}),
    ("deepcluster", {}),
    ("context_encoder", {"context_weight": 0.1, "adversarial": {"weight": 0.01, "lr": 1e-3}}),
    ("detcon", {"masks": "grid"}),
    ("multitask", {"task_weighting": "adaptive"}),
    ("byol", {}),
    ("simsiam", {}),
    ("vicreg", {}),
    ("nnclr", {}),
    ("barlow_twins", {"off_diagonal_weight": "1/d"}),
    ("detcon_b", {"masks": "grid"}),
])
def test_interrupt_then_resume_equals_straight_run(digits, tmp_path, method, extra):
    """2 epochs + SIGINT mid-epoch + resume == the same epochs straight: data order, augmentation,
    optimizer, MoCo queue and key encoder and MoCHi's draws all come back."""
    config = make_config(digits, method, epochs=3, monitor={"every": 0, "C": 1.0, "validation_fraction": 0.2,
                                                            "views_image": False}, **extra)
    _, straight = run_pretrain(config, root=tmp_path / "a", verbose=0, return_method=True)
    with pytest.raises(KeyboardInterrupt):
        run_pretrain(config, root=tmp_path / "b", verbose=0, callbacks=[SignalAt(epoch=1, batch=0)])
    stage = Experiment(config, root=tmp_path / "b").stage("pretrain")
    assert stage.state == "interrupted"
    summary, resumed = run_pretrain(config, root=tmp_path / "b", verbose=0, return_method=True)
    assert summary["resumed"] and summary["epochs_completed"] == 3 and stage.state == "complete"
    pairs = [(straight.encoder, resumed.encoder), (straight.head, resumed.head)]
    if hasattr(straight, "momentum_encoder"):  # the momentum targets, and the step their schedule follows
        targets = straight.momentum_encoder.targets.values(), resumed.momentum_encoder.targets.values()
        pairs += list(zip(*targets, strict=True))
        assert int(resumed.optimizer.iterations.numpy()) == int(straight.optimizer.iterations.numpy()) == 6
    if hasattr(straight, "queue"):  # a queue of keys, or a support set
        np.testing.assert_allclose(straight.queue.numpy(), resumed.queue.numpy(), rtol=1e-5, atol=1e-6)
    if straight.predictor is not None:
        pairs.append((straight.predictor, resumed.predictor))
    if method == "context_encoder":  # the discriminator and its optimizer come back too
        pairs.append((straight.discriminator, resumed.discriminator))
        np.testing.assert_allclose(straight.discriminator_optimizer.variables[-1].numpy(),
                                   resumed.discriminator_optimizer.variables[-1].numpy(), rtol=1e-5, atol=1e-6)
    if method == "deepcluster":  # the interrupted epoch kept its pseudo-labels; the next re-clustered alike
        np.testing.assert_array_equal(straight.assignments.numpy(), resumed.assignments.numpy())
    for a, b in pairs:
        for x, y in zip(a.get_weights(), b.get_weights(), strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_hcl_without_labels_has_no_probe_but_alignment(digits, tmp_path):
    listing = tmp_path / "images.txt"
    listing.write_text("\n".join(sorted(str(p) for p in digits.glob("*.png"))))
    config = make_config(digits, "hcl")
    config["data"].update(labels=None, images=str(listing))
    summary = run_pretrain(config, root=tmp_path, verbose=0)
    assert "probe_accuracy" not in summary["final"] and "align" in summary["final"]
    assert np.isfinite(summary["final"]["loss"])


def test_mixed_precision_with_lars(digits, tmp_path):
    """On CPU mixed precision is bfloat16 (no loss scaling); variables and the loss stay float32."""
    config = make_config(digits, "moco", epochs=1, mixed_precision=True, mochi={"n": 8, "s": 4, "s_prime": 2},
                         optimizer={"name": "lars", "lr": 0.1, "weight_decay": 1e-4, "momentum": 0.9,
                                    "trust_coefficient": 0.001, "nesterov": False, "schedule": "constant",
                                    "clipnorm": None},
                         monitor={"every": 0, "C": 1.0, "validation_fraction": 0.2, "views_image": False})
    summary, method = run_pretrain(config, root=tmp_path, verbose=0, return_method=True)
    assert np.isfinite(summary["final"]["loss"])
    assert method.encoder.dtype_policy.compute_dtype == "bfloat16"
    assert all(v.dtype == "float32" for v in method.encoder.trainable_variables)
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    stage = tmp_path / "test-moco" / "pretrain"
    assert summary["precision"] == "mixed_bfloat16"
    assert json.loads((stage / "env.json").read_text())["precision"] == "mixed_bfloat16"
    # the saved encoder runs in float32, with the trained weights
    saved = keras.saving.load_model(stage / "encoder.keras")
    assert {layer.dtype_policy.name for layer in saved.layers} == {"float32"}
    images = np.random.default_rng(0).random((4, 16, 16, 3), dtype=np.float32)
    features = saved(images, training=False)
    assert features.dtype == "float32"
    np.testing.assert_allclose(features.numpy(), method.encoder(images, training=False).numpy().astype(np.float32),
                               rtol=0.05, atol=0.05)


def test_schema_methods_are_the_registered_methods():
    schema = load_schemas()["pretrain.schema.json"]
    assert sorted(schema["properties"]["method"]["enum"]) == method_names()
    for name in method_names():
        assert get_method(name).name == name
    with pytest.raises(KeyError, match="unknown pretraining method"):
        get_method("nosuchmethod")


def test_every_schema_property_has_a_description():
    def walk(node, path):
        if isinstance(node, dict):
            for key, prop in (node.get("properties") or {}).items():
                assert "description" in prop, f"{path}.{key}"
                walk(prop, f"{path}.{key}")
            for sub in node.get("allOf", []):
                walk(sub.get("then", {}), path)

    for name in ("pretrain.schema.json", "optimizer.schema.json"):
        walk(load_schemas()[name], name)


def test_typo_in_a_method_key_is_reported(tmp_path):
    from patchcfg.config import load_config
    from patchcfg.errors import ConfigError

    path = tmp_path / "c.yaml"
    path.write_text("name: x\npretrain:\n  method: simclr\n  temprature: 0.2\n  queue_size: 64\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    text = str(error.value)
    assert "pretrain.temprature: unknown key (did you mean 'temperature'?)" in text
    assert "pretrain.queue_size: unknown key" in text  # a MoCo key under SimCLR
    path.write_text("name: x\npretrain:\n  method: moco\n  queue_size: 64\n  mochi: {n: 8}\n")
    config = load_config(path)["pretrain"]
    assert config["mochi"] == {"n": 8, "s": 512, "s_prime": 256} and config["eqco"] is None
    assert config["optimizer"]["name"] == "adam" and config["temperature"] == 0.1


def test_deepcluster_reclusters_every_epoch_and_logs_stability(digits, tmp_path):
    config = make_config(digits, "deepcluster", epochs=3)
    summary, method = run_pretrain(config, root=tmp_path, verbose=0, return_method=True)
    rows = Experiment(config, root=tmp_path).stage("pretrain").read_metrics()
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    for row in rows:
        assert np.isfinite(row["loss"]) and 0 <= row["cluster_acc"] <= 1 and 2 <= row["clusters_used"] <= 6
        assert "probe_macro_auc" in row and "align" in row
    assert not isinstance(rows[0].get("cluster_nmi"), float)  # nothing to compare with yet
    assert all(0 <= r["cluster_nmi"] <= 1 for r in rows[1:])
    assert int(method.clustered_epoch.numpy()) == 2 and method.assignments.numpy().min() >= 0
    assert method.head.output_shape == (None, 6)  # one unit per cluster


def test_deepcluster_fresh_classifier_each_clustering(digits, tmp_path):
    """Re-clustering re-initialises only the last layer, and zeroes its optimizer moments."""
    from patchcfg.data.images import resolve_image_paths
    from patchcfg.train.loop import TrainLoop

    config = make_config(digits, "deepcluster", epochs=1, monitor={"every": 0, "C": 1.0, "validation_fraction": 0.2,
                                                                     "views_image": False})
    method = get_method("deepcluster")(config, resolve_image_paths(config["data"]))
    TrainLoop(method, epochs=1, steps_per_epoch=2, global_batch_size=16, verbose=0,
              optimizer_config={"name": "adam", "lr": 1e-2}).fit()
    last, hidden = method.head.get_layer("projection"), method.head.get_layer("hidden_0")
    before_last, before_hidden = last.kernel.numpy(), hidden.kernel.numpy()
    slots = [v for v in method.optimizer.variables if v.name.startswith(last.kernel.path.replace("/", "_") + "_")]
    assert slots and any(np.abs(v.numpy()).max() > 0 for v in slots)
    method.recluster(1)
    assert not np.allclose(last.kernel.numpy(), before_last)
    np.testing.assert_array_equal(hidden.kernel.numpy(), before_hidden)
    assert all(np.abs(v.numpy()).max() == 0 for v in slots)
    assert int(method.clustered_epoch.numpy()) == 1


def test_deepcluster_more_clusters_than_images_is_a_user_error(digits, tmp_path):
    from patchcfg.errors import UserError

    with pytest.raises(UserError, match="pretrain.clusters: 500 clusters for 64 images"):
        run_pretrain(make_config(digits, "deepcluster", clusters=500), root=tmp_path, verbose=0)


def test_context_encoder_inpaints_and_shows_it(digits, tmp_path):
    config = make_config(digits, "context_encoder", epochs=2)
    summary = run_pretrain(config, root=tmp_path, verbose=0)
    stage = tmp_path / "test-context_encoder" / "pretrain"
    rows = Experiment(config, root=tmp_path).stage("pretrain").read_metrics()
    for row in rows:
        assert row["loss"] == pytest.approx(row["hidden_mse"], rel=1e-5)  # context_weight 0: hidden pixels only
        assert row["visible_mse"] > 0 and "probe_macro_auc" in row and "align" in row
    assert {"inpainting", "augmented_views", "hidden_mse"} <= event_tags(stage / "tensorboard")
    import patchcfg.models.backbones  # noqa: F401

    encoder = keras.saving.load_model(stage / "encoder.keras")
    assert encoder.predict(np.zeros((2, 16, 16, 3), "float32"), verbose=0).shape == (2, 8)  # pooled, as finetune wants
    assert summary["epochs_completed"] == 2


def test_detcon_contrasts_regions_and_saves_a_pooled_encoder(digits, tmp_path):
    config = make_config(digits, "detcon", epochs=2)
    summary, method = run_pretrain(config, root=tmp_path, verbose=0, return_method=True)
    rows = Experiment(config, root=tmp_path).stage("pretrain").read_metrics()
    for row in rows:
        assert np.isfinite(row["loss"]) and 0 <= row["region_acc"] <= 1 and 1 <= row["regions_per_image"] <= 4
        assert "probe_macro_auc" in row
    segments = method.segments()
    assert segments.shape == (64, 16, 16) and segments.max() == 3  # the 4 largest segments
    import patchcfg.models.backbones  # noqa: F401

    encoder = keras.saving.load_model(tmp_path / "test-detcon" / "pretrain" / "encoder.keras")
    assert encoder.predict(np.zeros((2, 16, 16, 3), "float32"), verbose=0).shape == (2, 8)
    assert summary["epochs_completed"] == 2


def test_multitask_learns_every_table_with_adaptive_weights(digits, tmp_path):
    """Two tables (the digits, and parity of other images) learnt at once; weights move from 1."""
    parity = tmp_path / "parity.csv"
    parity.write_text("filepath,validation,even\n" + "".join(
        f"{digits / f'd{i:03d}.png'},false,{i % 2}\n" for i in range(32, 48)))
    config = make_config(digits, "multitask", epochs=2, task_weighting="adaptive",
                         tasks=[{"labels": str(digits / "labels.csv"), "name": "digits", "weight": 1.0},
                                {"labels": str(parity), "weight": 1.0}])
    summary, method = run_pretrain(config, root=tmp_path, verbose=0, return_method=True)
    assert method.task_names == ["digits", "parity"] and len(method.task_paths) == 48  # rows 48-63 are validation
    rows = Experiment(config, root=tmp_path).stage("pretrain").read_metrics()
    for row in rows:
        for key in ("loss_digits", "loss_parity", "weight_digits", "weight_parity", "probe_macro_auc"):
            assert np.isfinite(row[key]), key
    assert not np.allclose(method.log_variances.numpy(), 0.0)  # learnt
    assert method.head.output_shape == (None, 12)  # 11 digit-table classes + even


def test_multitask_without_labels_is_a_user_error(digits, tmp_path):
    from patchcfg.errors import UserError

    listing = tmp_path / "images.txt"
    listing.write_text("\n".join(sorted(str(p) for p in digits.glob("*.png"))))
    config = make_config(digits, "multitask")
    config["data"].update(labels=None, images=str(listing))
    with pytest.raises(UserError, match="multitask needs label tables"):
        run_pretrain(config, root=tmp_path, verbose=0)


@pytest.mark.parametrize("method,extra,message", [
    ("multitask", {"tasks": [{"labels": "nosuch.csv"}]}, r"pretrain.tasks\[0\].labels: nosuch.csv: label table not found"),
    ("context_encoder", {"mask_size": [0.6, 0.3]}, r"pretrain.mask_size: \[0.6, 0.3\] has low > high"),
    ("multitask", {"tasks": [{"labels": "LABELS", "name": "a"}, {"labels": "LABELS", "name": "a"}]},
     r"pretrain.tasks\[1\].name: 'a' names another task too"),
])
def test_method_settings_that_cannot_work_are_user_errors(digits, tmp_path, method, extra, message):
    from patchcfg.errors import UserError

    for task in extra.get("tasks", []):
        task["labels"] = task["labels"].replace("LABELS", str(digits / "labels.csv"))
    with pytest.raises(UserError, match=message):
        run_pretrain(make_config(digits, method, **extra), root=tmp_path, verbose=0)


def test_context_encoder_with_the_adversarial_loss_trains_its_discriminator(digits, tmp_path):
    config = make_config(digits, "context_encoder", epochs=1, adversarial={"weight": 0.1, "lr": 1e-3},
                         monitor={"every": 0, "C": 1.0, "validation_fraction": 0.2, "views_image": False})
    method_cls = get_method("context_encoder")
    from patchcfg.data.images import resolve_image_paths
    from patchcfg.train.loop import TrainLoop

    method = method_cls(config, resolve_image_paths(config["data"]))
    loop = TrainLoop(method, epochs=1, steps_per_epoch=2, global_batch_size=16, verbose=0,
                     optimizer_config={"name": "adam", "lr": 1e-3})
    loop.build()
    before = [w.copy() for w in method.discriminator.get_weights()]
    row = loop.fit()["history"][-1]
    assert np.isfinite(row["adversarial_loss"]) and np.isfinite(row["discriminator_loss"])
    # the generator's loss mixes reconstruction and fooling the discriminator, 0.9 : 0.1
    assert row["loss"] == pytest.approx(0.9 * row["hidden_mse"] + 0.1 * row["adversarial_loss"], rel=1e-4)
    assert not all(np.allclose(a, b) for a, b in zip(before, method.discriminator.get_weights(), strict=True))
    assert int(method.discriminator_optimizer.iterations.numpy()) == 2


def test_crops_pretrain_on_every_cell_as_an_image(digits, tmp_path):
    config = make_config(digits, epochs=1, monitor={"every": 0})
    config["data"].update(crops=2, imshape=[8, 8])
    summary = run_pretrain(config, root=tmp_path, verbose=0)
    cells = sorted((tmp_path / "test-simclr" / "pretrain" / "cells").glob("*.npy"))
    assert summary["images"] == 4 * 64 and len(cells) == 4 * 64
    assert np.load(cells[0]).shape == (8, 8, 3) and np.isfinite(summary["final"]["loss"])
