"""``--engine ray``: Ray Data batch inference writes what the local engine writes (features within
float32 rounding, the same rows in the same order, the same skipped images), resumes a cut embed
with only the rows left, survives an actor's death, and says plainly what is wrong when Ray is
missing or the cluster cannot be reached. One Ray instance (2 CPUs) serves the module.

The tests that need no cluster come first: they run before it starts."""

import json
import os
import socket
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from patchcfg.errors import UserError

#: the features and probabilities of the two engines: float32 sums in other batches
TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}


class Stop(Exception):
    pass


@pytest.fixture(scope="module")
def data(tmp_path_factory, digits_table):
    """72 digits and one unreadable file in the label table, and a small classifier saved as a file."""
    import keras

    folder = tmp_path_factory.mktemp("ray_data")
    labels = digits_table(folder)
    (folder / "img" / "bad.png").write_bytes(b"not a png")
    table = pd.read_csv(labels)
    pd.concat([table, pd.DataFrame({"filepath": ["img/bad.png"]})]).to_csv(labels, index=False)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2, activation="sigmoid")])
    model.save(folder / "model.keras")
    return folder


def embed_config(folder, name, path=None):
    config = {"name": name, "seed": 3, "backbone": {"name": "tiny"}, "augmentation": {"preset": "none"},
              "data": {"labels": str(folder / "labels.csv"), "imshape": [16, 16], "on_bad_image": "skip"},
              "embed": {"batch_size": 8}}
    if path is not None:
        path.write_text(yaml.safe_dump(config))
        return path
    return config


# ---------------------------------------------------------------------------- no cluster needed


def test_the_local_engine_imports_no_ray_and_the_ray_engine_says_how_to_install_it(data, tmp_path, monkeypatch):
    from patchcfg.stages import run_embed
    from patchcfg.tasks.predict import predict_images

    monkeypatch.setitem(sys.modules, "ray", None)  # every `import ray` raises ImportError
    assert run_embed(embed_config(data, "local"), root=tmp_path, verbose=0)["images"] == 72
    frame, skipped = predict_images(data / "model.keras", [str(data / "img")], on_bad_image="skip")
    assert len(frame) == 72 and len(skipped) == 1
    with pytest.raises(UserError, match=r"needs Ray, which is not installed: pip install 'patchcfg\[ray\]'"):
        run_embed(embed_config(data, "ray"), root=tmp_path, verbose=0, engine="ray")
    with pytest.raises(UserError, match=r"pip install 'patchcfg\[ray\]'"):
        predict_images(data / "model.keras", [str(data / "img")], engine="ray")


def test_an_unreachable_cluster_and_ray_with_shards_are_refused_in_one_message(data, tmp_path, monkeypatch):
    import ray

    from patchcfg.cli import main

    def unreachable(address=None, **options):
        raise ConnectionError("Could not find any running Ray instance. Please specify the one to connect to.\n"
                              "more lines")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", unreachable)
    with socket.socket() as free:  # a port no one listens on: refused at once, not after Ray's minutes of retries
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    config = embed_config(data, "far", tmp_path / "far.yaml")
    for args in (["embed", str(config), "--experiments", str(tmp_path / "exp")],
                 ["predict", str(data / "model.keras"), str(data / "img"), "--out", str(tmp_path / "p.csv")]):
        result = CliRunner().invoke(main, [*args, "--engine", "ray", "--address", "auto"])
        assert result.exit_code == 2, result.output
        assert "cannot connect to the Ray cluster at auto (Could not find any running Ray instance" \
            in result.output and "more lines" not in result.output and "Traceback" not in result.output
        result = CliRunner().invoke(main, [*args, "--engine", "ray", "--address", f"ray://127.0.0.1:{port}"])
        assert result.exit_code == 2 and f"cannot connect to the Ray cluster at ray://127.0.0.1:{port} (" \
            in result.output and "Traceback" not in result.output, result.output
    for option in (["--shard", "0/2"], ["--merge"]):
        result = CliRunner().invoke(main, ["embed", str(config), "--engine", "ray", *option])
        assert result.exit_code == 2 and f"--engine ray and {option[0]}: one or the other" in result.output
    result = CliRunner().invoke(main, ["embed", str(config), "--actors", "2"])
    assert result.exit_code == 2 and "--actors: only with --engine ray" in result.output


def test_the_actor_pool_is_one_actor_per_gpu_else_one_per_two_cpus():
    from patchcfg.tasks.ray_engine import actor_pool

    class Cluster:
        def __init__(self, **resources):
            self.resources = resources

        def cluster_resources(self):
            return self.resources

    assert actor_pool(Cluster(CPU=8.0)) == (4, {"num_cpus": 1}, 2)
    assert actor_pool(Cluster(CPU=2.0)) == (1, {"num_cpus": 1}, 2)
    assert actor_pool(Cluster(CPU=8.0), actors=8) == (8, {"num_cpus": 1}, 1)
    assert actor_pool(Cluster(CPU=32.0, GPU=4.0)) == (4, {"num_gpus": 1}, None)
    with pytest.raises(UserError, match="has 4 GPU"):
        actor_pool(Cluster(CPU=32.0, GPU=4.0), actors=5)
    with pytest.raises(UserError, match="not a positive number"):
        actor_pool(Cluster(CPU=2.0), actors=0)


def test_an_error_of_ours_in_an_actor_comes_back_as_its_one_message():
    """Ray Data keeps only the text of an actor's traceback (a UserCodeException)."""
    from patchcfg.errors import DataError
    from patchcfg.tasks.ray_engine import user_error

    remote = RuntimeError("ray::MapWorker(MapBatches(Embedder)).submit() (pid=1)\n  File \"x.py\", line 3\n"
                          "patchcfg.errors.DataError: /data/a.png: file is truncated\n\nThe above exception ...\n"
                          "ray.exceptions.UserCodeException: UDF failed to process a data block.")
    assert str(user_error(remote)) == "/data/a.png: file is truncated"
    assert user_error(RuntimeError("ValueError: something else")) is None
    mine = DataError("/b.png: gone")
    assert user_error(mine) is mine


# ---------------------------------------------------------------------------- on the module's cluster


@pytest.fixture(scope="module")
def cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


def dies_once(marker, log):
    """An :class:`Embedder` whose actor exits on its first batch (once: ``marker``), and that
    lists the paths of each batch it embeds in ``log``."""
    from patchcfg.tasks.embed import Embedder

    class DiesOnce(Embedder):
        def __call__(self, batch):
            if not os.path.exists(marker):
                open(marker, "w").close()
                os._exit(1)
            with open(log, "a", encoding="utf-8") as handle:
                handle.write("".join(f"{path}\n" for path in batch["path"].tolist()))
            return super().__call__(batch)

    return DiesOnce


@pytest.mark.slow
def test_a_cut_embed_resumed_on_ray_equals_the_local_one_though_an_actor_died(data, tmp_path, monkeypatch, cluster):
    """Interrupted after two chunks, the embed resumes on Ray with the 40 rows left only (a new
    dataset, the cut one's actors gone); the one actor dies on its first batch, is restarted and the batch runs again: every row is written
    once, in order, and the files are those of the local engine."""
    from patchcfg.stages import embed as embed_stage
    from patchcfg.stages import run_embed
    from patchcfg.tasks import ray_engine
    from patchcfg.tasks.embed import load_features

    monkeypatch.setattr(embed_stage, "CHUNK", 16)  # 72 readable images in batches of 8: 5 chunks
    monkeypatch.setattr(ray_engine, "BATCHES_PER_CALL", 1)  # an actor's call: one batch of 8
    root = tmp_path / "exp"
    local = run_embed(embed_config(data, "local"), root=root, verbose=0)

    def stop(done):
        if done == 32:
            raise Stop()

    config = embed_config(data, "ray")
    with pytest.raises(Stop):  # cut on ray too: the dataset's iteration left half-way
        run_embed(config, root=root, verbose=0, on_chunk=stop, engine="ray")
    seen, said = [], []
    marker, log = tmp_path / "died", tmp_path / "embedded.txt"
    resumed = run_embed(config, root=root, verbose=1, log=said.append, on_chunk=seen.append, engine="ray",
                        ray_actor=dies_once(marker, log))
    assert marker.exists() and resumed["resumed_at"] == 32 and seen == [48, 64, 72] and resumed["engine"] == "ray"
    assert any("ray: 40 images in 5 batches over 1 actor(s)" in line for line in said), said

    got, paths = load_features(root / "ray")
    want, want_paths = load_features(root / "local")
    embedded = log.read_text(encoding="utf-8").splitlines()
    assert len(embedded) == len(set(embedded)) == 40 and sorted(embedded) == sorted(paths[32:])
    assert paths == want_paths and len(set(paths)) == 72 and got.shape == want.shape == (72, want.shape[1])
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), **TOLERANCE)
    index = [pd.read_csv(root / name / "embed" / "index.csv") for name in ("ray", "local")]
    assert index[0].equals(index[1])
    for key in ("images", "dimensions", "dtype", "files", "skipped_images", "skipped"):
        assert resumed[key] == local[key], key
    assert resumed["skipped"][0]["path"].endswith("bad.png")
    summary = json.loads((root / "ray" / "embed" / "summary.json").read_text())
    assert summary["skipped"] == local["skipped"]


@pytest.mark.slow
def test_predict_on_ray_writes_the_csv_of_the_local_engine(data, tmp_path, cluster):
    from patchcfg.cli import main

    frames = {}
    for engine in ("local", "ray"):
        out = tmp_path / f"{engine}.csv"
        result = CliRunner().invoke(main, ["predict", str(data / "model.keras"), str(data / "img"), "--out", str(out),
                                           "--tta", "flips", "--on-bad-image", "skip", "--engine", engine])
        assert result.exit_code == 0, result.output
        assert result.output.strip().endswith("72 images, skipped 1")
        frames[engine] = pd.read_csv(out)
    assert frames["ray"]["filepath"].equals(frames["local"]["filepath"])
    assert list(frames["ray"].columns) == list(frames["local"].columns) == ["filepath", "class_0", "class_1"]
    np.testing.assert_allclose(frames["ray"].iloc[:, 1:].to_numpy(), frames["local"].iloc[:, 1:].to_numpy(),
                               **TOLERANCE)
