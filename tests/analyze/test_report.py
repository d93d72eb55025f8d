"""patchcfg.analyze.report: table, CSV, Markdown and JSON output, number formatting, plot; import cost."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys

import numpy as np
import pytest

from patchcfg import analyze as lib
from patchcfg.errors import UserError


@pytest.fixture
def two_configs(tmp_path, config, curves, make_run):
    for seed in range(2):
        make_run(tmp_path, f"a.seed-{seed}", config(seed=seed), metrics=curves(start=0.5 + 0.1 * seed))
    make_run(tmp_path, "b", config(backbone__width=1.0, backbone__weights="imagenet"), metrics=curves(folds=1))
    make_run(tmp_path, "c", {k: v for k, v in config().items() if k != "backbone"}, metrics=curves())
    return lib.analyze([tmp_path], metrics=["val_auc", "val_loss"])


def test_table_format(two_configs):
    lines = lib.render(two_configs, "table", precision=3).splitlines()
    assert lines[0].split() == ["name", "stage", "state", "runs", "n", "backbone.name", "backbone.width",
                                "backbone.weights", "val_auc", "val_loss"]
    assert set(lines[1]) <= {"-", " "}
    a_row = next(line for line in lines if line.startswith("a.seed-*"))
    assert "0.755 ± 0.058" in a_row  # best val_auc per fold: 0.70, 0.71, 0.80, 0.81
    c_row = next(line for line in lines if line.startswith("c "))
    assert c_row.split()[5:8] == ["-", "-", "-"]  # keys the config lacks
    assert len({len(line) for line in lines[:2]}) == 1


def test_markdown_format(two_configs):
    text = lib.render(two_configs, "md", precision=2)
    assert text.rstrip().endswith(f"*{lib.CAPTIONS['kept']}*")
    lines = text.split("\n\n")[0].splitlines()
    assert lines[0].startswith("| name | stage | state | runs | n |")
    assert lines[1].startswith("| --- | --- | --- | ---: | ---: |")
    assert len(lines) == 2 + len(two_configs.rows)
    assert all(line.count("|") == lines[0].count("|") for line in lines)
    assert re.search(r"\| \d\.\d\d ± \d\.\d\d \|", lines[2])


def test_csv_format(two_configs):
    rows = list(csv.DictReader(io.StringIO(lib.render(two_configs, "csv"))))
    assert [row["name"] for row in rows] == ["a.seed-*", "b", "c"]
    a = rows[0]
    assert (a["runs"], a["n"], a["val_auc_n"]) == ("2", "4", "4")
    assert float(a["val_auc"]) == pytest.approx(0.755)
    assert float(a["val_auc_std"]) == pytest.approx(np.std([0.70, 0.71, 0.80, 0.81], ddof=1))
    assert a["names"] == "a.seed-0;a.seed-1"
    assert rows[1]["backbone.weights"] == "imagenet" and a["backbone.weights"] == "null"
    assert rows[2]["backbone.width"] == ""  # missing
    assert rows[1]["val_auc_std"] == ""


def test_json_format(two_configs):
    data = json.loads(lib.render(two_configs, "json"))
    assert data["keys"] == ["backbone.name", "backbone.width", "backbone.weights"]
    assert data["metrics"] == {"val_auc": "max", "val_loss": "min"}
    a, b, c = data["rows"]
    assert a["seeds"] == [0, 1] and a["n"] == 4 and a["names"] == ["a.seed-0", "a.seed-1"]
    assert a["config"]["backbone.weights"] is None
    assert a["metrics"]["val_auc"]["mean"] == pytest.approx(0.755)
    assert b["metrics"]["val_auc"]["std"] is None
    assert c["config"] == {}  # missing keys are absent, not null
    assert data["problems"] == []


def test_unknown_format_is_a_user_error(two_configs):
    with pytest.raises(UserError):
        lib.render(two_configs, "xml")


def test_precision_and_number_formatting():
    assert lib.format_number(0.123456, 3) == "0.123"
    assert lib.format_number(1.5e-6, 4) == "1.5e-06"
    assert lib.format_number(float("nan"), 4) == "-"
    assert [lib.format_value(v) for v in (True, None, [32, 32], lib.MISSING, 1e-4)] == [
        "true", "null", "[32, 32]", "-", "0.0001"]


def test_plot_writes_a_png(tmp_path, config, curves, make_run):
    for seed in range(2):
        make_run(tmp_path / "exps", f"a.seed-{seed}", config(seed=seed), metrics=curves(epochs=5))
    frame = curves(epochs=4).assign(stage=lambda f: (f["epoch"] >= 2).astype(int))
    frame["epoch"] = frame["epoch"] % 2  # epochs restart per stage
    make_run(tmp_path / "exps", "staged", config(backbone__width=3.0), metrics=frame, state="interrupted")
    result = lib.analyze([tmp_path / "exps"])
    out = lib.plot(result, "val_auc", tmp_path / "plots" / "val_auc.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(UserError, match="--plot 'nope'"):
        lib.plot(result, "nope", tmp_path / "x.png")


def test_import_is_light():
    code = "import sys, patchcfg.analyze; print(sorted(m for m in ('tensorflow', 'matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
