"""A sharded embed (``--shard i/N`` tasks, then ``--merge``) writes what one embed writes; each shard
resumes on its own; missing shards, mixed counts and bad ``--shard`` values are one message."""

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from patchcfg.tasks.embed import load_features

pytestmark = pytest.mark.slow


class Stop(Exception):
    pass


def config_file(tmp_path, digits_table, name):
    labels = tmp_path / "labels.csv"
    if not labels.exists():
        digits_table(tmp_path, n=30)
    config = {"name": name, "seed": 3, "data": {"labels": str(labels), "imshape": [16, 16]},
              "backbone": {"name": "tiny"}, "augmentation": {"preset": "none"}, "embed": {"batch_size": 4}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def embed(path, tmp_path, *options):
    from patchcfg.cli import main

    return CliRunner().invoke(main, ["embed", str(path), "--experiments", str(tmp_path / "exp"), *options])


def test_shards_then_merge_equal_one_embed_and_an_interrupted_shard_resumes(tmp_path, digits_table, monkeypatch):
    from patchcfg.stages import embed as embed_stage
    from patchcfg.stages import run_embed

    monkeypatch.setattr(embed_stage, "CHUNK", 4)
    assert embed(config_file(tmp_path, digits_table, "whole"), tmp_path).exit_code == 0
    path = config_file(tmp_path, digits_table, "sharded")
    assert embed(path, tmp_path, "--shard", "1/2").exit_code == 0
    result = embed(path, tmp_path, "--merge")
    assert result.exit_code == 2 and "0-of-2 missing" in result.output and "Traceback" not in result.output

    def stop(done):
        if done == 8:
            raise Stop()

    config = yaml.safe_load(path.read_text())
    with pytest.raises(Stop):
        run_embed(config, root=tmp_path / "exp", verbose=0, shard="0/2", on_chunk=stop)
    result = embed(path, tmp_path, "--merge")
    assert result.exit_code == 2 and "0-of-2 failed" in result.output
    assert run_embed(config, root=tmp_path / "exp", verbose=0, shard="0/2")["resumed_at"] == 8

    result = embed(path, tmp_path, "--merge")
    assert result.exit_code == 0, result.output
    got, paths = load_features(tmp_path / "exp" / "sharded")
    want, want_paths = load_features(tmp_path / "exp" / "whole")
    assert paths == want_paths and got.shape == want.shape == (30, want.shape[1])
    assert np.allclose(np.asarray(got), np.asarray(want), atol=1e-5)
    assert not (tmp_path / "exp" / "sharded" / "embed_shards").exists()
    assert "already complete" in embed(path, tmp_path).output  # the merged folder is a complete embed


def test_mixed_counts_a_plain_embed_over_shards_and_bad_values_are_refused(tmp_path, digits_table):
    path = config_file(tmp_path, digits_table, "mixed")
    assert embed(path, tmp_path, "--shard", "0/3").exit_code == 0
    for options, message in ((["--shard", "1/2"], "N = 3"), ([], "--merge"), (["--shard", "3/2"], "'3/2' is not i/N"),
                             (["--shard", "x"], "'x' is not i/N"), (["--shard", "0/2", "--merge"], "one or the other")):
        result = embed(path, tmp_path, *options)
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, options
    result = embed(path, tmp_path, "--merge")
    assert result.exit_code == 2 and "1-of-3 missing; 2-of-3 missing" in result.output
