"""The embed stage at scale: features streamed to a memory map, resumable, float16 on request,
memory-mapped when loaded; the query reads them through an index and gives the queue of the
in-memory path."""

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from patchcfg.tasks.embed import FeatureWriter, load_features

pytestmark = pytest.mark.slow


class Stop(Exception):
    pass


def embed_config(tmp_path, digits_table, name="ft", **embed):
    labels = digits_table(tmp_path) if not (tmp_path / "labels.csv").exists() else tmp_path / "labels.csv"
    config = {"name": name, "seed": 3, "data": {"labels": str(labels), "imshape": [16, 16]},
              "backbone": {"name": "tiny"}, "augmentation": {"preset": "none"}}
    if embed:
        config["embed"] = embed
    return config


def test_writer_resumes_only_what_it_recorded(tmp_path):
    key = {"paths_sha256": "abc"}
    writer = FeatureWriter(tmp_path, 5, "float16", key)
    writer.write(np.ones((2, 3)))
    writer.checkpoint()
    writer.write(np.full((1, 3), 9.0))  # written, not checkpointed: written again on a rerun
    assert not (tmp_path / "features.npy").exists()
    again = FeatureWriter(tmp_path, 5, "float16", key)
    assert again.done == again.written == 2
    with pytest.raises(ValueError, match="6 rows written, 5 expected"):
        again.write(np.ones((4, 3)))
    with pytest.raises(ValueError, match="2 of 5 rows written"):
        again.publish()
    again.write(np.full((3, 3), 2.0))
    again.publish()
    saved = np.load(tmp_path / "features.npy")
    assert saved.dtype == np.float16 and saved[:, 0].tolist() == [1, 1, 2, 2, 2]
    assert not (tmp_path / "features.progress.json").exists() and not (tmp_path / "features.npy.partial").exists()
    third = FeatureWriter(tmp_path, 5, "float16", key)
    third.write(np.ones((2, 3)))
    third.checkpoint()
    assert FeatureWriter(tmp_path, 5, "float16", {"paths_sha256": "other"}).done == 0  # other images: afresh
    assert not (tmp_path / "features.npy.partial").exists()
    assert np.load(tmp_path / "features.npy")[:, 0].tolist() == [1, 1, 2, 2, 2]  # the published file stays


def test_writer_puts_rows_at_their_positions_and_keeps_the_reused_ones(tmp_path):
    old = np.arange(12, dtype=np.float32).reshape(4, 3)  # rows 0..3 of an earlier file
    key = {"files": "new"}
    writer = FeatureWriter(tmp_path, 6, "float32", key, positions=np.array([1, 4]))
    writer.reuse(old, into=np.array([5, 0, 3, 2]), rows=np.array([0, 1, 2, 3]))
    writer.write(np.full((1, 3), -1.0))
    writer.checkpoint()  # the kept rows are on disk with the first checkpoint
    again = FeatureWriter(tmp_path, 6, "float32", key, positions=np.array([1, 4]))
    assert again.done == 1
    again.write(np.full((1, 3), -2.0))
    again.publish()
    saved = np.load(tmp_path / "features.npy")
    assert saved[:, 0].tolist() == [3, -1, 9, 6, -2, 0]


def test_images_added_removed_and_replaced_after_an_embed_are_the_only_ones_embedded(tmp_path, digits_table):
    """A million-image project grows: the next embed computes the new and changed images only, and
    its features equal a fresh embed's, row for row."""
    import shutil

    from PIL import Image

    from patchcfg.stages import run_embed

    config = embed_config(tmp_path, digits_table, name="grown", batch_size=8)
    first = run_embed(config, root=tmp_path / "exp", verbose=0)
    assert first["images"] == 72 and first["kept"] == 0
    said = []
    assert run_embed(config, root=tmp_path / "exp", verbose=1, log=said.append)["kept"] == 0  # unchanged: skipped
    assert any("already complete" in line for line in said)
    before, before_paths = load_features(tmp_path / "exp" / "grown")
    before = np.array(before)

    table = pd.read_csv(tmp_path / "labels.csv")
    for j in (72, 73, 74):  # three new images (copies of others under new names: the same features)
        shutil.copy(tmp_path / "img" / f"{j - 70}.png", tmp_path / "img" / f"{j}.png")
    table = pd.concat([table.drop(index=5), pd.DataFrame({"filepath": [f"img/{j}.png" for j in (72, 73, 74)]})])
    table.to_csv(tmp_path / "labels.csv", index=False)  # row 5 removed, three added at the end
    Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(tmp_path / "img" / "9.png")  # replaced in place
    said.clear()
    grown = run_embed(config, root=tmp_path / "exp", verbose=1, log=said.append)
    assert grown["images"] == 74 and grown["kept"] == 70  # 71 left, one of them replaced
    assert any("4 of 74 images new or changed" in line for line in said)

    fresh = run_embed(embed_config(tmp_path, digits_table, name="fresh", batch_size=8), root=tmp_path / "exp",
                      verbose=0)
    assert fresh["kept"] == 0
    got, paths = load_features(tmp_path / "exp" / "grown")
    want, want_paths = load_features(tmp_path / "exp" / "fresh")
    assert paths == want_paths and got.shape == want.shape
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)
    nine = str(tmp_path / "img" / "9.png")
    assert not np.allclose(got[paths.index(nine)], before[before_paths.index(nine)])  # replaced: new features


def test_an_interrupted_embed_resumes_and_equals_an_uninterrupted_one(tmp_path, digits_table, monkeypatch):
    from patchcfg.stages import embed as embed_stage
    from patchcfg.stages import run_embed

    monkeypatch.setattr(embed_stage, "CHUNK", 16)  # 72 images in batches of 8: 5 chunks
    whole = run_embed(embed_config(tmp_path, digits_table, name="whole", batch_size=8), root=tmp_path / "exp",
                      verbose=0)
    assert whole["images"] == 72 and whole["replicas"] == 1 and whole["resumed_at"] == 0

    seen = []

    def stop_after_two(done):
        seen.append(done)
        if done == 32:
            raise Stop()

    config = embed_config(tmp_path, digits_table, name="cut", batch_size=8)
    with pytest.raises(Stop):
        run_embed(config, root=tmp_path / "exp", verbose=0, on_chunk=stop_after_two)
    folder = tmp_path / "exp" / "cut" / "embed"
    assert not (folder / "features.npy").exists()
    assert json.loads((folder / "features.progress.json").read_text())["done"] == 32
    resumed = run_embed(config, root=tmp_path / "exp", verbose=0, on_chunk=seen.append)
    assert seen == [16, 32, 48, 64, 72] and resumed["resumed_at"] == 32
    got, paths = load_features(tmp_path / "exp" / "cut")
    want, want_paths = load_features(tmp_path / "exp" / "whole")
    assert isinstance(got, np.memmap) and got.dtype == np.float32 and got.shape == (72, want.shape[1])
    assert paths == want_paths and np.array_equal(np.asarray(got), np.asarray(want))
    assert not (folder / "features.progress.json").exists() and not (folder / "features.npy.partial").exists()


def test_an_image_replaced_before_the_resume_starts_the_embed_afresh(tmp_path, digits_table, monkeypatch):
    """Rows already written came from the old picture: a resume would mix the two."""
    import os

    from patchcfg.data.images import resolve_image_paths
    from patchcfg.stages import embed as embed_stage
    from patchcfg.stages import run_embed

    monkeypatch.setattr(embed_stage, "CHUNK", 16)
    config = embed_config(tmp_path, digits_table, name="cut", batch_size=8)

    def stop(done):
        if done == 32:
            raise Stop()

    with pytest.raises(Stop):
        run_embed(config, root=tmp_path / "exp", verbose=0, on_chunk=stop)
    first = resolve_image_paths(config["data"])[0]
    stat = os.stat(first)
    os.utime(first, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert run_embed(config, root=tmp_path / "exp", verbose=0)["resumed_at"] == 0


def test_with_crops_an_image_is_embedded_as_the_mean_of_its_cells(tmp_path, digits_table):
    """The encoder trained on cells at full resolution: embed gives each image its cells' mean
    feature (as predict reduces the cells), not the features of the whole image shrunk to a cell."""
    import keras

    from patchcfg.config import resolve_config
    from patchcfg.data.crops import load_cells
    from patchcfg.stages import run_embed
    from patchcfg.tasks.embed import features_of, find_encoder

    config = embed_config(tmp_path, digits_table, batch_size=7)  # 7 cells a pass: 1 image of 4 cells
    config["data"].update(crops=2, imshape=[8, 8])
    summary = run_embed(config, root=tmp_path / "exp", verbose=0)
    got, paths = load_features(tmp_path / "exp" / "ft")
    assert summary["images"] == 72 and got.shape[0] == 72
    keras.utils.set_random_seed(3)
    resolved = resolve_config(config)
    encoder, _ = find_encoder(resolved, tmp_path / "exp" / "ft", "backbone")
    cells = features_of(encoder, load_cells(paths[:5], resolved["data"]), resolved["data"])
    np.testing.assert_allclose(got[:5], cells.reshape(5, 4, -1).mean(axis=1), rtol=1e-5, atol=1e-6)


def test_embed_in_float16_on_request(tmp_path, digits_table):
    from patchcfg.cli import main

    path = tmp_path / "ft.yaml"
    import yaml

    path.write_text(yaml.safe_dump(embed_config(tmp_path, digits_table)))
    result = CliRunner().invoke(main, ["embed", str(path), "--dtype", "float16", "--experiments", str(tmp_path / "exp")])
    assert result.exit_code == 0, result.output
    assert "float16" in result.output
    features, _ = load_features(tmp_path / "exp" / "ft")
    assert features.dtype == np.float16 and features.shape[0] == 72
    result = CliRunner().invoke(main, ["embed", str(path), "--dtype", "float64", "--experiments", str(tmp_path / "exp")])
    assert result.exit_code == 2 and "float64" in result.output and "Traceback" not in result.output


REPLICAS = """
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from patchcfg.config import with_defaults
from patchcfg.tasks.embed import features_of
from patchcfg.models.backbones import build_backbone
encoder = build_backbone({"name": "tiny"}, (16, 16, 3))
images = np.random.default_rng(0).uniform(size=(37, 16, 16, 3)).astype(np.float32)
data = with_defaults("data", {"imshape": [16, 16]})
one = features_of(encoder, images, data, batch_size=8)
two = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
assert two.num_replicas_in_sync == 2
got = features_of(encoder, images, data, batch_size=5, strategy=two)  # 37 = 3 x 10 + 7: an uneven last batch
assert got.shape == one.shape and np.allclose(got, one, atol=1e-5), np.abs(got - one).max()
print("ok")
"""


def test_features_of_splits_batches_across_replicas_in_order():
    import os
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", REPLICAS], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


def test_query_through_the_memory_map_gives_the_in_memory_queue(tmp_path, digits_table, monkeypatch):
    from patchcfg.stages import query as query_stage
    from patchcfg.stages import run_embed, run_query

    config = embed_config(tmp_path, digits_table)
    run_embed(config, root=tmp_path / "exp", verbose=0)
    table = pd.read_csv(tmp_path / "labels.csv")
    table.loc[table.index % 4 == 1, ["zero", "one"]] = np.nan
    table = table.iloc[::-1]  # the table's order differs from the cache's: an index, not the same rows
    table.to_csv(tmp_path / "labels.csv", index=False)
    queues = {}
    for strategy in ("diversity", "badge", "guide:zero", "margin"):
        config["query"] = {"strategy": strategy, "n": 6, "explore": 0.3, "out": str(tmp_path / f"{strategy}.csv")}
        run_query(config, root=tmp_path / "exp", verbose=0)
        queues[strategy] = pd.read_csv(tmp_path / f"{strategy}.csv")

    from patchcfg.active.rows import RowFeatures

    def aligned_copy(stage):  # the path the query took before: a full in-memory copy in the table's order
        features, paths = load_features(stage.experiment.dir)
        where = {p: i for i, p in enumerate(paths)}
        return RowFeatures(np.array(features)[[where[p] for p in stage.table.resolved_paths()]])

    monkeypatch.setattr(query_stage.QueryStage, "cached_features", aligned_copy)
    for strategy, queue in queues.items():
        config["query"] = {"strategy": strategy, "n": 6, "explore": 0.3, "out": str(tmp_path / "memory.csv")}
        run_query(config, root=tmp_path / "exp", verbose=0)
        want = pd.read_csv(tmp_path / "memory.csv")
        # the same picks in the same order; the scores and probabilities are sums taken in another
        # order over the memory map's chunks, equal to float32 precision, not bit for bit
        floats = [c for c in queue.columns if c == "score" or c.startswith("p_")]
        assert list(queue.columns) == list(want.columns), strategy
        assert queue.drop(columns=floats).equals(want.drop(columns=floats)), strategy
        for column in floats:
            np.testing.assert_allclose(queue[column], want[column], rtol=1e-5, atol=1e-6,
                                       err_msg=f"{strategy}: {column}")


def test_a_query_embeds_the_images_added_since_the_last_embed(tmp_path, digits_table):
    """The user adds images to the table and asks what to label next: the query embeds the new
    ones (and only those) instead of refusing."""
    import shutil

    from patchcfg.stages import run_embed, run_query

    config = embed_config(tmp_path, digits_table)
    run_embed(config, root=tmp_path / "exp", verbose=0)
    table = pd.read_csv(tmp_path / "labels.csv")
    table.loc[table.index % 4 == 1, ["zero", "one"]] = np.nan
    for j in (72, 73, 74):
        shutil.copy(tmp_path / "img" / f"{j - 60}.png", tmp_path / "img" / f"{j}.png")
    table = pd.concat([table, pd.DataFrame({"filepath": [f"img/{j}.png" for j in (72, 73, 74)]})])
    table.to_csv(tmp_path / "labels.csv", index=False)
    said = []
    config["query"] = {"strategy": "entropy", "n": 30, "explore": 0.0, "out": str(tmp_path / "q.csv")}
    run_query(config, root=tmp_path / "exp", verbose=1, log=said.append)
    assert any("3 candidate image(s) have no cached features yet; embedding them" in line for line in said)
    summary = json.loads((tmp_path / "exp" / "ft" / "embed" / "summary.json").read_text())
    assert summary["images"] == 75 and summary["kept"] == 72
    queue = pd.read_csv(tmp_path / "q.csv")
    assert len(queue) == 15  # 12 unlabelled training rows and the 3 new ones: every candidate ranked
    assert {f"img/{j}.png" for j in (72, 73, 74)} <= set(queue["filepath"])
