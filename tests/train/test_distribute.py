"""tf.distribute: strategy choice, 2-replica equivalence, two workers on one machine."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from patchcfg.config.schema import fill_defaults
from patchcfg.errors import UserError
from patchcfg.train import distribute

pytest.importorskip("tensorflow")


def test_chief_and_strategy_names_from_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute.is_chief() and distribute.tf_config() is None
    assert distribute.resolve_name("default") == "default"
    cluster = {"worker": ["a:1", "b:2"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}}))
    assert not distribute.is_chief() and distribute.worker_count() == 2
    assert distribute.resolve_name("auto") == "multi_worker"
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}}))
    assert distribute.is_chief()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["c:3"], **cluster},
                                                "task": {"type": "worker", "index": 0}}))
    assert not distribute.is_chief()
    with pytest.raises(UserError):
        distribute.resolve_name("tpu")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(UserError, match="TF_CONFIG"):
        distribute.tf_config()


def write_images(folder, n=32, size=16):
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        image = np.zeros((size, size, 3), "uint8")
        y, x = rng.integers(0, size - 6, 2)
        image[y:y + 6, x:x + 6] = rng.integers(60, 255, 3)
        path = folder / f"im{i:02d}.png"
        Image.fromarray(image).save(path)
        paths.append(str(path))
    return paths


def base_config(listing, method="simclr", **pretrain):
    params = {"method": method, "epochs": 1, "batch_size": 16, "steps_per_epoch": 1, "temperature": 0.5,
              "projection": {"depth": 2, "units": 16, "dim": 8}, "monitor": {"every": 0},
              "optimizer": {"name": "sgd", "lr": 1.0, "momentum": 0.0},
              "mixed_precision": False}  # float32: replicas are compared with one device to 1e-5
    params.update(pretrain)
    return fill_defaults({"name": f"dist-{method}", "seed": 3,
                          "data": {"images": str(listing), "imshape": [16, 16], "num_parallel_calls": 2},
                          "augmentation": {"preset": "simclr"},
                          "backbone": {"name": "tiny", "sync_batchnorm": True},
                          "distribute": {"strategy": "auto"}, "pretrain": params})


def run_python(code, env=None, timeout=240):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


MIRRORED = """
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import numpy as np
    from patchcfg.pretrain import get_method
    from patchcfg.train.loop import TrainLoop

    def first_step(config, paths, strategy):
        method = get_method(config["pretrain"]["method"])(config, paths)
        loop = TrainLoop(method, epochs=1, steps_per_epoch=1, global_batch_size=16, strategy=strategy,
                         optimizer_config=config["pretrain"]["optimizer"], verbose=0)
        loop.build()
        before = [v.numpy().copy() for v in method.trainable_variables()]
        loss = loop.fit()["final"]["loss"]
        # plain SGD with lr 1: the update is the gradient
        grads = [b - v.numpy() for b, v in zip(before, method.trainable_variables())]
        state = []  # momentum targets (MoCo, BYOL, DetCon_B) and queues (MoCo, NNCLR) after the step
        if hasattr(method, "momentum_encoder"):
            state += [v.numpy() for t in method.momentum_encoder.targets.values() for v in t.weights]
        if hasattr(method, "queue"):
            state.append(method.queue.numpy())
        return loss, grads, state

    configs, paths = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    out = {}
    # one strategy for the whole process: two MirroredStrategy objects share collective keys
    two = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    for config in configs:
        one_loss, one_grads, one_state = first_step(config, paths, tf.distribute.get_strategy())
        two_loss, two_grads, two_state = first_step(config, paths, two)
        out[config["name"]] = {
            "replicas": two.num_replicas_in_sync, "one": one_loss, "two": two_loss,
            "grad_diff": max(float(np.max(np.abs(a - b))) for a, b in zip(one_grads, two_grads)),
            "grad_scale": max(float(np.max(np.abs(a))) for a in one_grads),
            "state_diff": max([float(np.max(np.abs(a - b))) for a, b in zip(one_state, two_state)] or [0.0])}
    print("RESULT " + json.dumps(out))

    from patchcfg.train import distribute

    def gathered():
        replica = tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group, tf.float32)
        (a, b), offset = distribute.gather_rows(tf.fill([2, 3], replica), tf.fill([2, 1], 10.0 + replica))
        return a, b, offset, distribute.replica_rows(2)[1]

    local = [two.experimental_local_results(v) for v in two.run(gathered)]
    print("GATHER " + json.dumps({"a": local[0][1].numpy().tolist(), "b": local[1][1].numpy().tolist(),
                                  "offsets": [int(v) for v in local[2]], "total": int(local[3][0])}))
"""


def test_two_replicas_give_the_first_step_of_one_device(tmp_path, hub_preset):
    """MirroredStrategy over 2 logical CPUs, same global batch: same loss and gradients for every
    method, and for SimCLR on a KerasHub DINOv2 encoder (negatives and regions are gathered across replicas, and so are the embeddings whose batch
    statistics VICReg and Barlow Twins take; batch norm is synchronised; the context encoder's masks
    and DeepCluster's clusters do not depend on the replica); the same momentum targets and queues."""
    paths = write_images(tmp_path / "images")
    listing = tmp_path / "images.txt"
    listing.write_text("\n".join(paths))
    # (HCL gathers like SimCLR; its per-replica rows are checked in tests/pretrain/test_losses.py)
    labels = tmp_path / "labels.csv"
    labels.write_text("filepath,validation,bright,left\n" + "".join(
        f"{p},false,{i % 2},{'' if i % 3 else i % 4 // 2}\n" for i, p in enumerate(paths)))
    configs = [base_config(listing, "simclr"),
               base_config(listing, "moco", queue_size=32, momentum=0.9,
                           mochi={"n": 8, "s": 4, "s_prime": 2}, eqco={"alpha": 8}),
               base_config(listing, "detcon", masks="grid", grid=2),
               base_config(listing, "deepcluster", clusters=4, pca_dim=4),
               base_config(listing, "context_encoder", mask_size=[0.3, 0.6], decoder_filters=16,
                           adversarial={"weight": 0.1, "lr": 1e-3}),
               base_config(listing, "multitask", tasks=[{"labels": str(labels)}], task_weighting="adaptive"),
               base_config(listing, "byol", tau_base=0.9, predictor={"units": 16}),
               base_config(listing, "simsiam", predictor={"units": 16}),
               base_config(listing, "vicreg"),
               base_config(listing, "nnclr", queue_size=16, predictor={"units": 16}),
               base_config(listing, "barlow_twins"),
               base_config(listing, "detcon_b", masks="grid", grid=2, tau_base=0.9, predictor={"units": 16})]
    if importlib.util.find_spec("keras_hub") is not None:
        configs.append({**base_config(listing, "simclr"), "name": "dist-simclr-keras_hub",
                        "backbone": fill_defaults({"backbone": {"name": "keras_hub", "preset": hub_preset("dinov2")}})[
                            "backbone"]})
    code = MIRRORED.replace("sys.argv[1]", repr(json.dumps(configs))).replace("sys.argv[2]", repr(json.dumps(paths)))
    process = run_python(code)
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    result = json.loads(next(line for line in stdout.splitlines() if line.startswith("RESULT "))[7:])
    gather = json.loads(next(line for line in stdout.splitlines() if line.startswith("GATHER "))[7:])
    assert gather["a"] == [[0.0] * 3] * 2 + [[1.0] * 3] * 2 and gather["b"] == [[10.0]] * 2 + [[11.0]] * 2
    assert gather["offsets"] == [0, 2] and gather["total"] == 4
    assert len(result) == len(configs)
    for method, r in result.items():
        assert r["replicas"] == 2
        assert r["two"] == pytest.approx(r["one"], rel=1e-5), method
        assert r["grad_scale"] > 1e-3 and r["grad_diff"] <= 1e-5 * max(1.0, r["grad_scale"]) + 1e-6, (method, r)
        assert r["state_diff"] <= 1e-5, (method, r)  # MoCo: key encoder (momentum update) and queue


WORKER = """
    import json, os, sys
    import numpy as np
    from patchcfg.stages import run_pretrain
    config, root, out = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
    summary, method = run_pretrain(config, root=root, verbose=0, return_method=True)
    state = [v for item in method.extra_state().values() for v in getattr(item, "weights", [item])]
    statistics = list(method.encoder.non_trainable_weights)  # batch norm's moving mean and variance
    np.savez(out, *[v.numpy() for v in method.trainable_variables() + state + statistics])
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("method,extra", [("simclr", {}), ("moco", {"queue_size": 64, "momentum": 0.9}),
                                          ("deepcluster", {"clusters": 4, "pca_dim": 4}),
                                          ("byol", {"tau_base": 0.9, "predictor": {"units": 16}})])
def test_two_workers_end_with_identical_weights_and_only_the_chief_writes(tmp_path, method, extra):
    """Two worker processes: identical weights, batch-norm statistics and method state (MoCo's key
    encoder and queue, DeepCluster's pseudo-labels, BYOL's predictor and target network) at the end;
    only the chief writes the folder."""
    paths = write_images(tmp_path / "images")
    listing = tmp_path / "images.txt"
    listing.write_text("\n".join(paths))
    config = base_config(listing, method, epochs=2, steps_per_epoch=2,
                         optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.9}, **extra)
    config["backbone"]["sync_batchnorm"] = False
    ports = [free_port(), free_port()]
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]}, "task": {"type": "worker", "index": index}}
        code = WORKER.replace("sys.argv[1]", repr(json.dumps(config))).replace(
            "sys.argv[2]", repr(str(tmp_path / f"root{index}"))).replace("sys.argv[3]", repr(str(tmp_path / f"w{index}.npz")))
        processes.append(run_python(code, env={"TF_CONFIG": json.dumps(tf_config)}))
    outputs = [p.communicate(timeout=300) for p in processes]
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr[-3000:]
    chief, other = np.load(tmp_path / "w0.npz"), np.load(tmp_path / "w1.npz")
    assert len(chief.files) > 4
    for key in chief.files:
        np.testing.assert_array_equal(chief[key], other[key])
    stage = tmp_path / "root0" / f"dist-{method}" / "pretrain"
    assert json.loads((stage / "status.json").read_text())["state"] == "complete"
    assert (stage / "encoder.keras").is_file() and (stage / "metrics.csv").is_file()
    assert json.loads((stage / "env.json").read_text())["workers"] == 2
    assert not (tmp_path / "root1").exists() or not any((tmp_path / "root1").rglob("*"))


def test_replica_helpers_outside_and_inside_one_replica():
    """Out of a replica context and on one replica: no collective, offset 0, the mean over the batch."""
    import tensorflow as tf

    assert distribute.replica_id_and_count() == (0, 1)
    z1, z2 = tf.ones((3, 2)), tf.zeros((3, 4))
    (a, b), offset = distribute.gather_rows(z1, z2)
    assert a is z1 and b is z2 and offset == 0
    assert distribute.all_gather(z1) is z1
    assert float(distribute.global_mean(tf.constant([1.0, 2.0, 6.0]), 4)) == pytest.approx(9 / 4)

    def in_replica():
        offset, total = distribute.replica_rows(5)
        return offset, total

    offset, total = tf.distribute.get_strategy().run(in_replica)
    assert int(offset) == 0 and int(total) == 5
