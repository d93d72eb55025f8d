"""``patchcfg analyze`` through the click group: exit codes, messages, output files, plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from patchcfg.cli import main

METRICS = "epoch,fold,loss,val_loss,val_macro_auc,lr\n"


def write_experiment(root: Path, name: str, seed: int, lr: float, auc: float, state: str = "complete") -> None:
    folder = root / name
    (folder / "finetune").mkdir(parents=True)
    config = {"name": name, "seed": seed, "backbone": {"name": "resnet18", "pretrained": False},
              "finetune": {"stages": [{"epochs": 2, "lr": lr}]}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (folder / "finetune" / "status.json").write_text(json.dumps({"state": state, "error": None}))
    rows = [f"{e},{f},{1 - e / 10},{1.1 - e / 10},{auc + e / 100 + f / 100},{lr}" for f in (0, 1) for e in (0, 1)]
    (folder / "finetune" / "metrics.csv").write_text(METRICS + "\n".join(rows) + "\n")


@pytest.fixture
def experiments(tmp_path) -> Path:
    root = tmp_path / "experiments"
    for seed in (1, 2):
        write_experiment(root, f"lr-0.001.seed-{seed}", seed, 1e-3, 0.80)
    write_experiment(root, "lr-0.01", 3, 1e-2, 0.90)
    write_experiment(root, "lr-0.1", 3, 1e-1, 0.50, state="failed")
    return root


def invoke(*args: str):
    return CliRunner().invoke(main, ["analyze", *args], catch_exceptions=False)


def test_table_on_the_terminal(experiments):
    result = invoke(str(experiments), "--metric", "val_macro_auc", "--sort-by", "val_macro_auc")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    rows = lines[2:lines.index("")]
    assert lines[0].split() == ["name", "stage", "state", "runs", "n", "finetune.stages.0.lr", "val_macro_auc"]
    assert [line.split()[0] for line in rows] == ["lr-0.01", "lr-0.001.seed-*", "lr-0.1"]
    assert lines[lines.index("") + 1].startswith("figures: what each run's kept model scores")
    assert "failed" in rows[-1]
    assert "0.8150 ± 0.0058" in lines[3]  # folds x seeds: 0.81, 0.82, 0.81, 0.82


def test_ascending_and_default_dir(experiments, monkeypatch):
    monkeypatch.chdir(experiments.parent)
    result = invoke("--metric", "val_macro_auc", "--sort-by", "val_macro_auc", "--ascending")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines[2:lines.index("")]] == ["lr-0.1", "lr-0.001.seed-*", "lr-0.01"]


def test_output_file_format_from_suffix(experiments, tmp_path):
    out = tmp_path / "out" / "results.json"
    result = invoke(str(experiments), "--output", str(out), "--filter", "state=complete")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    data = json.loads(out.read_text())
    assert [row["name"] for row in data["rows"]] == ["lr-0.001.seed-*", "lr-0.01"]
    assert set(data["metrics"]) == {"loss", "val_loss", "val_macro_auc"}


@pytest.mark.parametrize(("fmt", "first"), [("csv", "name,stage,state"), ("md", "| name | stage |")])
def test_csv_and_markdown_on_stdout(experiments, fmt, first):
    result = invoke(str(experiments), "--format", fmt, "--all", "--precision", "2")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(first)
    assert "backbone.pretrained" in result.stdout.splitlines()[0]


def test_plot_writes_png(experiments, tmp_path):
    png = tmp_path / "auc.png"
    result = invoke(str(experiments), "--plot", "val_macro_auc", "--out", str(png))
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert f"wrote {png}" in result.stderr


def test_broken_folder_is_a_warning_not_a_failure(experiments):
    (experiments / "lr-0.01" / "config.yaml").write_text("name: [oops\n")
    result = invoke(str(experiments))
    assert result.exit_code == 0, result.output
    assert "warning: skipped" in result.stderr and "lr-0.01/config.yaml: invalid YAML" in result.stderr
    assert "lr-0.01 " not in result.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["{root}/missing"], "missing: no such directory"),
    (["{root}/empty"], "empty: no experiments found"),
    (["{root}/experiments", "--sort-by", "val_macro_acu"], "did you mean val_macro_auc"),
    (["{root}/experiments", "--filter", "nothing"], "expected KEY=VALUE"),
    (["{root}/experiments", "--plot", "val_loss"], "--plot needs --out"),
    (["{root}/experiments", "--plot", "nope", "--out", "{root}/x.png"], "--plot 'nope'"),
])
def test_user_errors_exit_2_with_one_message(experiments, tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    result = invoke(*(arg.format(root=tmp_path) for arg in args))
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_help_explains_options_with_an_example():
    result = CliRunner().invoke(main, ["analyze", "--help"])
    assert result.exit_code == 0
    for text in ("--sort-by", "--only-changed / --all", "--filter KEY=VALUE", "--plot M",
                 "patchcfg analyze experiments/ --metric val_macro_auc --sort-by val_macro_auc"):
        assert text in result.output


def dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_stage_whose_process_was_killed_shows_interrupted(experiments):
    """After SIGKILL status.json still says running; the dead pid says otherwise."""
    status = experiments / "lr-0.01" / "finetune" / "status.json"
    status.write_text(json.dumps({"state": "running", "error": None, "pid": dead_pid()}))
    alive = experiments / "lr-0.1" / "finetune" / "status.json"
    alive.write_text(json.dumps({"state": "running", "error": None, "pid": __import__("os").getpid()}))
    result = invoke(str(experiments), "--metric", "val_macro_auc")
    assert result.exit_code == 0, result.output
    row = next(line for line in result.stdout.splitlines() if line.startswith("lr-0.01"))
    assert row.split()[2] == "interrupted"
    assert "lr-0.01: interrupted (process gone)" in result.stdout
    other = next(line for line in result.stdout.splitlines() if line.startswith("lr-0.1 "))
    assert other.split()[2] == "running"


def test_output_replaces_an_earlier_result_but_not_a_file_of_the_user(experiments, tmp_path):
    out = tmp_path / "results.csv"
    for _ in range(2):  # an earlier result is replaced
        assert invoke(str(experiments), "--output", str(out)).exit_code == 0
    mine = tmp_path / "labels.csv"
    mine.write_text("filepath,cat\na.png,1\n")
    result = CliRunner().invoke(main, ["analyze", str(experiments), "--output", str(mine)])
    assert result.exit_code == 2 and "already exists and was not written by this command" in result.output
    assert mine.read_text() == "filepath,cat\na.png,1\n"
    forced = CliRunner().invoke(main, ["analyze", str(experiments), "--output", str(mine), "--force"])
    assert forced.exit_code == 0
