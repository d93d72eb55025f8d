"""The shipped configs: every one validates, and every pretraining config runs on the demo data as it is."""

from __future__ import annotations

from pathlib import Path

import pytest

from patchcfg.config import load_config
from patchcfg.pretrain import method_names

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
#: each method's shipped config: configs/<method>.yaml
METHOD_CONFIGS = method_names()


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    config = load_config(path)
    assert config["name"]


def test_every_method_has_its_config():
    assert sorted(METHOD_CONFIGS) == method_names()
    assert {"simclr", "moco", "byol", "detcon_b"} <= set(METHOD_CONFIGS)
    for name in METHOD_CONFIGS:
        assert load_config(ROOT / "configs" / f"{name}.yaml")["pretrain"]["method"] == name


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory):
    from patchcfg.demo import write_demo

    root = tmp_path_factory.mktemp("demo")
    write_demo(root / "data" / "demo")
    return root


@pytest.mark.slow
@pytest.mark.parametrize("name", METHOD_CONFIGS)
def test_pretrain_config_runs_on_the_demo_data(name, demo_folder, monkeypatch):
    """Each method's config as shipped (the data paths are the demo's), shortened to one step."""
    from patchcfg.stages import run_pretrain

    monkeypatch.chdir(demo_folder)
    config = load_config(ROOT / "configs" / f"{name}.yaml",
                         ["pretrain.epochs=1", "pretrain.steps_per_epoch=1", "pretrain.batch_size=32"])
    summary = run_pretrain(config, root=demo_folder / "experiments", verbose=0)
    assert summary["epochs_completed"] == 1 and summary["final"]["loss"] == summary["final"]["loss"]  # not NaN
    assert "probe_macro_auc" in summary["final"]  # the demo's labels are probed after the last epoch
