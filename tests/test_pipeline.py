"""embed, query and run: the loop from images to a queue of what to label next."""

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from patchcfg.cli import main

pytestmark = pytest.mark.slow


def pipeline_config(tmp_path, digits_table, finetune_config, **sections):
    labels = digits_table(tmp_path)
    frame = pd.read_csv(labels)
    frame.loc[frame.index % 4 == 1, ["zero", "one"]] = np.nan  # some rows unlabelled
    frame.to_csv(labels, index=False)
    path = finetune_config(tmp_path, labels, stages=[{"epochs": 1, "lr": 0.01}])
    raw = yaml.safe_load(path.read_text())
    raw.update(sections)
    path.write_text(yaml.safe_dump(raw))
    return path


def test_embed_caches_features_of_every_image(tmp_path, digits_table, finetune_config):
    path = pipeline_config(tmp_path, digits_table, finetune_config)
    result = CliRunner().invoke(main, ["embed", str(path), "--experiments", str(tmp_path / "exp")])
    assert result.exit_code == 0, result.output
    stage = tmp_path / "exp" / "ft" / "embed"
    features = np.load(stage / "features.npy")
    index = pd.read_csv(stage / "index.csv")
    assert features.shape[0] == len(index) == 72 and features.dtype == np.float32
    assert index["filepath"].str.endswith(".png").all()


def test_run_declared_stages_then_skip(tmp_path, digits_table, finetune_config):
    path = pipeline_config(tmp_path, digits_table, finetune_config, query={"strategy": "entropy", "n": 5})
    args = ["run", str(path), "--experiments", str(tmp_path / "exp")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "== ft: finetune" in result.output and "== ft: query" in result.output and "pretrain" not in result.output
    queue = pd.read_csv(tmp_path / "exp" / "ft" / "query" / "queue.csv")
    assert len(queue) == 5 and list(queue["rank"]) == [1, 2, 3, 4, 5]
    assert {"filepath", "score", "picked_by", "p_zero", "p_one"} <= set(queue.columns)
    table = pd.read_csv(tmp_path / "labels.csv")
    unlabelled = set(table.loc[table[["zero", "one"]].isna().all(axis=1), "filepath"])
    assert set(queue["filepath"]) <= unlabelled
    result = CliRunner().invoke(main, args)
    assert "already complete" in result.output


def test_query_options_override_the_config(tmp_path, digits_table, finetune_config):
    path = pipeline_config(tmp_path, digits_table, finetune_config)
    out = tmp_path / "queue.csv"
    result = CliRunner().invoke(main, ["query", str(path), "--strategy", "diversity", "--n", "4", "--explore", "0.5",
                                       "--out", str(out), "--experiments", str(tmp_path / "exp")])
    assert result.exit_code == 0, result.output
    queue = pd.read_csv(out)
    assert len(queue) == 4 and sorted(queue["picked_by"].value_counts().tolist()) == [2, 2]
    result = CliRunner().invoke(main, ["query", str(path), "--strategy", "maxent:zer",
                                       "--experiments", str(tmp_path / "exp")])
    assert result.exit_code == 2 and "zero" in result.output
