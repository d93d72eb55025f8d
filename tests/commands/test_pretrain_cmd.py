"""``patchcfg pretrain``: validation before TensorFlow, runs, sweeps, SIGTERM and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from patchcfg.cli import main


def write_data(folder, n=48, size=16):
    from PIL import Image

    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["filepath,validation,square,wide"]
    for i in range(n):
        image = np.zeros((size, size, 3), "uint8")
        wide = i % 2
        h, w = (4, 10) if wide else (6, 6)
        y, x = rng.integers(0, size - h), rng.integers(0, size - w)
        image[y:y + h, x:x + w] = 200
        Image.fromarray(image).save(folder / f"im{i:02d}.png")
        labelled = i < 16 or i >= 36
        cells = f"{1 - wide},{wide}" if labelled else ","
        lines.append(f"im{i:02d}.png,{i >= 36},{cells}")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return folder / "labels.csv"


def write_config(tmp_path, epochs=2, extra="", steps=2, every=1):
    labels = write_data(tmp_path / "data")
    path = tmp_path / "cfg.yaml"
    path.write_text(f"""
name: cli-simclr
seed: 1
data: {{labels: {labels}, imshape: [16, 16], channels: 3, num_parallel_calls: 2}}
backbone: {{name: tiny, width: 0.5}}
augmentation: {{preset: simclr}}
distribute: {{strategy: default}}
pretrain:
  method: simclr
  epochs: {epochs}
  batch_size: 16
  steps_per_epoch: {steps}
  temperature: 0.5
  projection: {{depth: 2, units: 16, dim: 8}}
  monitor: {{every: {every}}}
{extra}""")
    return path


def test_config_errors_exit_2_before_tensorflow_is_imported(tmp_path):
    path = write_config(tmp_path, extra="  temprature: 0.2\n")
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from patchcfg.cli import main\n"
        f"result = CliRunner().invoke(main, ['pretrain', {str(path)!r}])\n"
        "print(result.exit_code)\n"
        "print(result.output)\n"
        "print('tensorflow' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "2", out.stdout + out.stderr
    assert "cfg.yaml:16: pretrain.temprature: unknown key (did you mean 'temperature'?)" in out.stdout
    assert lines[-1] == "False"
    assert "Traceback" not in out.stdout + out.stderr


def test_pretrain_and_sweep_from_the_command_line(tmp_path):
    path = write_config(tmp_path, epochs=1)
    root = tmp_path / "experiments"
    runner = CliRunner()
    result = runner.invoke(main, ["pretrain", str(path), "pretrain.temperature=0.3", "--experiments", str(root),
                                  "--sweep", "pretrain.decoupled=false,true"])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in root.iterdir())
    assert names == ["cli-simclr_decoupled-False", "cli-simclr_decoupled-True"]
    for name in names:
        stage = root / name / "pretrain"
        assert json.loads((stage / "status.json").read_text())["state"] == "complete"
        assert (stage / "encoder.keras").is_file()
        assert "probe_macro_auc" in (stage / "metrics.csv").read_text()
    again = runner.invoke(main, ["pretrain", str(path), "pretrain.temperature=0.3", "--experiments", str(root),
                                 "--sweep", "pretrain.decoupled=false,true"])
    assert again.exit_code == 0 and again.output.count("already complete") == 2
    changed = runner.invoke(main, ["pretrain", str(path), "--experiments", str(root),
                                   "--sweep", "pretrain.decoupled=false,true"])
    assert changed.exit_code == 2 and "different config" in changed.output


@pytest.mark.slow
def test_sigterm_checkpoints_and_the_same_command_resumes(tmp_path):
    path = write_config(tmp_path, epochs=4, steps=48, every=2)
    root = tmp_path / "experiments"
    command = [sys.executable, "-m", "patchcfg.cli", "pretrain", str(path), "--experiments", str(root)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    stage = root / "cli-simclr" / "pretrain"
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (stage / "checkpoints" / "checkpoint").is_file():
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 130, output
    assert json.loads((stage / "status.json").read_text())["state"] == "interrupted"
    assert "checkpoint saved" in output
    done = stage / "metrics.csv"
    epochs_before = len(done.read_text().splitlines()) - 1
    assert 1 <= epochs_before < 4
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "resuming at epoch" in rerun.stdout
    summary = json.loads((stage / "summary.json").read_text())
    assert summary["resumed"] and summary["epochs_completed"] == 4
    assert [int(line.split(",")[0]) for line in done.read_text().splitlines()[1:]] == [1, 2, 3, 4]


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.slow
def test_a_damaged_checkpoint_is_named_and_the_previous_one_resumes(tmp_path):
    """A damaged newest checkpoint: resume from the one before, saying so. None intact: one message
    with the way out, and --force starts afresh. A stage left ``running`` by a killed process shows
    as interrupted (process gone)."""
    path = write_config(tmp_path, epochs=2)
    root = tmp_path / "experiments"
    runner = CliRunner()
    args = ["pretrain", str(path), "--experiments", str(root)]
    assert runner.invoke(main, args).exit_code == 0
    stage = root / "cli-simclr" / "pretrain"
    checkpoints = stage / "checkpoints"
    data = sorted(checkpoints.glob("ckpt-*.data-*"), key=lambda p: int(p.name.split("-")[1].split(".")[0]))
    assert len(data) == 2
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    status = json.loads((stage / "status.json").read_text())
    (stage / "status.json").write_text(json.dumps({**status, "state": "running", "pid": dead.pid}))
    _truncate(data[-1])
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "interrupted (process gone" in result.output
    assert f"checkpoint {data[-1].name.split('.')[0]}" in result.output.replace(str(checkpoints) + "/", "")
    assert "is damaged; resuming from the previous one" in result.output
    assert json.loads((stage / "status.json").read_text())["state"] == "complete"

    status = json.loads((stage / "status.json").read_text())
    (stage / "status.json").write_text(json.dumps({**status, "state": "failed"}))
    for damaged in checkpoints.glob("ckpt-*.data-*"):
        _truncate(damaged)
    result = runner.invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "is damaged and no intact checkpoint is left" in result.output
    assert f"remove {checkpoints}" in result.output and "--force" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(main, [*args, "--force"])
    assert result.exit_code == 0, result.output
    assert json.loads((stage / "status.json").read_text())["state"] == "complete"


def test_full_disk_under_tensorboard_is_one_message(tmp_path, monkeypatch):
    import tensorflow as tf

    from patchcfg.train.loop import TrainLoop

    path = write_config(tmp_path, epochs=1, steps=1)
    events = tmp_path / "experiments" / "cli-simclr" / "pretrain" / "tensorboard" / "events.out.tfevents.1"

    def full(self, epoch, row):
        raise tf.errors.ResourceExhaustedError(
            None, None, "{{function_node __wrapped__WriteSummary_device_/job:localhost/replica:0/task:0/"
            f"device:CPU:0}}}} {events}; No space left on device\n\tFailed to flush 3 events to {events}")

    monkeypatch.setattr(TrainLoop, "_write_scalars", full)
    result = CliRunner().invoke(main, ["pretrain", str(path), "--experiments", str(tmp_path / "experiments")])
    assert result.exit_code == 2, result.output
    assert f"error: {events}: no space left on the device" in result.output
    assert "Traceback" not in result.output


def test_a_command_that_loads_tensorflow_prints_no_failure_lines(tmp_path):
    """On a CPU machine TensorFlow announces oneDNN, probes CUDA and logs 'failed call to cuInit'."""
    import re

    from PIL import Image

    (tmp_path / "imgs").mkdir()
    for i in range(2):
        Image.new("RGB", (8, 8), (60 * i, 0, 0)).save(tmp_path / "imgs" / f"{i}.png")
    (tmp_path / "c.yaml").write_text("name: p\ndata: {images: imgs, imshape: [8, 8]}\n"
                                     "augmentation: {preset: none}\n")
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2] / "src")
    command = [sys.executable, "-m", "patchcfg.cli", "augment", "c.yaml", "--out", "p.png", "--n", "2",
               "--views", "1"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    noisy = [line for line in result.stderr.splitlines()
             if re.search(r"^[IWEF]\d{4} |error|fail|cuInit|CUDA|oneDNN|absl", line, re.IGNORECASE)]
    assert noisy == [], "\n".join(noisy)
    verbose = subprocess.run([*command[:3], "--verbose", *command[3:]], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
    assert verbose.returncode == 0 and "oneDNN" in verbose.stderr  # --verbose brings them back
