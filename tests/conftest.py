"""Shared test data: a small labelled digits table and a tiny fine-tuning config."""

import numpy as np
import pandas as pd
import pytest


def small_digits_table(folder, n=72):
    """Digits 0/1/2 as 16x16 PNGs; classes zero, one; every row labelled, 24 validation rows."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    keep = np.flatnonzero(digits.target < 3)[:n]
    (folder / "img").mkdir(parents=True)
    rows = []
    for j, i in enumerate(keep):
        pixels = (digits.images[i] / 16 * 255).astype(np.uint8)
        Image.fromarray(pixels).resize((16, 16)).convert("RGB").save(folder / "img" / f"{j}.png")
        t = digits.target[i]
        rows.append({"filepath": f"img/{j}.png", "validation": j % 3 == 0,
                     "zero": int(t == 0), "one": int(t == 1) if j % 5 else ""})
    pd.DataFrame(rows).to_csv(folder / "labels.csv", index=False)
    return folder / "labels.csv"


def small_finetune_config(folder, labels, **finetune):
    import yaml

    section = {"encoder": None, "batch_size": 16, "steps_per_epoch": 2, "head": {"units": [8], "dropout": 0.0},
               "stages": [{"epochs": 2, "lr": 0.01, "freeze_encoder": True},
                          {"epochs": 1, "lr": 0.01, "unfreeze_encoder": True}], **finetune}
    config = {"name": "ft", "seed": 3, "data": {"labels": str(labels), "imshape": [16, 16]},
              "backbone": {"name": "tiny"}, "augmentation": {"preset": "none"}, "finetune": section}
    path = folder / "ft.yaml"
    path.write_text(yaml.safe_dump(config))
    return path




@pytest.fixture(scope="session")
def digits_table():
    """``digits_table(folder, n=72)`` -> path of a labels.csv (classes zero, one) beside 16x16 PNGs."""
    return small_digits_table


@pytest.fixture(scope="session")
def finetune_config():
    """``finetune_config(folder, labels, **finetune_keys)`` -> path of a tiny, fast finetune config."""
    return small_finetune_config


def _run_cli(args, cwd=None, drop_privileges=False, env=None, timeout=120):
    """``python -m patchcfg.cli ARGS`` in a subprocess. ``drop_privileges``: when run as root, without
    the capabilities that let root ignore file modes (so a read-only file or folder is read-only)."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    command = [sys.executable, "-m", "patchcfg.cli", *map(str, args)]
    if drop_privileges and os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root and setpriv (util-linux) is missing: root would ignore file modes")
        caps = "-dac_override,-dac_read_search"
        command = [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}", *command]
    src = str(Path(__file__).resolve().parents[1] / "src")
    path = src + os.pathsep + os.environ.get("PYTHONPATH", "")
    environment = {**os.environ, "PYTHONPATH": path, **(env or {})}
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=environment, timeout=timeout)


@pytest.fixture(scope="session")
def run_cli():
    """``run_cli(*args, cwd=None, drop_privileges=False, env=None)`` -> CompletedProcess of the real CLI."""
    def run(*args, **kwargs):
        return _run_cli(args, **kwargs)
    return run


@pytest.fixture(scope="session")
def hub_preset(tmp_path_factory):
    """``hub_preset("dinov2" | "siglip" | "efficientnet")`` -> a tiny random KerasHub preset folder
    (2 layers, hidden 32, patch 4, 28-px input; made once per session, nothing downloads)."""
    made = {}

    def make(architecture="dinov2"):
        if architecture not in made:
            from patchcfg.models.foundation import save_random_preset

            folder = tmp_path_factory.mktemp(f"preset_{architecture}")
            made[architecture] = save_random_preset(str(folder), architecture)
        return made[architecture]

    return make
