"""Experiment trees for the analyze tests: configs, metrics tables and stage folders, written in
the documented layout. Each builder is a fixture, so every test module of the package shares it."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from patchcfg import analyze as lib

BASE = {
    "name": "base",
    "seed": 0,
    "backbone": {"name": "resnet18", "width": 0.5, "weights": None},
    "finetune": {"folds_count": 2, "stages": [{"epochs": 3, "lr": 0.001}]},
}


def _config(**changes) -> dict:
    """BASE with dotted-key changes applied (``finetune__stages`` style is not needed here)."""
    out = json.loads(json.dumps(BASE))
    for dotted, value in changes.items():
        node = out
        parts = dotted.split("__")
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else node[part]
        node[parts[-1]] = value
    return out


def _curves(folds=2, epochs=3, start=0.5, step=0.1, **extra) -> pd.DataFrame:
    """A metrics table: val_loss falls by ``step`` per epoch, val_auc rises, fold adds 0.01."""
    rows = []
    for fold in range(folds):
        for epoch in range(epochs):
            rows.append({"epoch": epoch, "fold": fold, "loss": 1.0 - step * epoch,
                         "val_loss": 1.0 - step * epoch + 0.01 * fold,
                         "val_auc": start + step * epoch + 0.01 * fold, "lr": 0.001, **extra})
    return pd.DataFrame(rows)


def _make_run(root: Path, name: str, cfg: dict | None = None, stage: str = "finetune",
              state: str = "complete", metrics: pd.DataFrame | None = None, summary=None,
              error: str | None = None) -> Path:
    """Write one experiment stage in the documented folder layout."""
    folder = root / name
    (folder / stage).mkdir(parents=True, exist_ok=True)
    cfg = dict(cfg if cfg is not None else _config())
    cfg["name"] = Path(name).name
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    status = {"state": state, "started": "2024-01-01T00:00:00", "ended": None, "error": error}
    (folder / stage / "status.json").write_text(json.dumps(status))
    if metrics is not None:
        metrics.to_csv(folder / stage / "metrics.csv", index=False)
    if summary is not None:
        (folder / stage / "summary.json").write_text(json.dumps(summary))
    return folder


def _row_named(analysis, name) -> lib.Row:
    matches = [row for row in analysis.rows if row.name == name]
    assert len(matches) == 1, [row.name for row in analysis.rows]
    return matches[0]


def _sortable_tree(tmp_path):
    """Three runs with val_auc (0.5, 0.9, 0.7 at the start) and one with only val_loss."""
    for i, start in enumerate([0.5, 0.9, 0.7]):
        _make_run(tmp_path, f"r{i}", _config(backbone__width=float(i)), metrics=_curves(start=start))
    _make_run(tmp_path, "no_auc", _config(backbone__width=9.0),
              metrics=pd.DataFrame({"epoch": [0], "fold": [0], "val_loss": [0.1]}))


@pytest.fixture
def config():
    """BASE with dotted-key changes (``config(backbone__width=2.0)``)."""
    return _config


@pytest.fixture
def curves():
    """A metrics table."""
    return _curves


@pytest.fixture
def make_run():
    """Write one experiment stage."""
    return _make_run


@pytest.fixture
def row_named():
    """The one row of an analysis with a given name."""
    return _row_named


@pytest.fixture
def sortable_tree():
    """A tree to sort: three runs with val_auc, one without."""
    return _sortable_tree
