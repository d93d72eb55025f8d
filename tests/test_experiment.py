"""The experiment folder: skip, refuse, resume, lock, interrupted, atomic metrics."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from patchcfg.errors import ExperimentError
from patchcfg.experiment import Experiment


def config(**extra):
    return {"name": "exp", "seed": 1, "pretrain": {"epochs": 2}, **extra}


def run_stage(root, cfg, fail=None, force=False):
    run = Experiment(cfg, root=root, force=force).stage("pretrain")
    if run.is_complete():
        return "skipped"
    with run:
        run.append_metrics({"epoch": 0, "loss": 1.5})
        if fail:
            raise fail
        run.append_metrics({"epoch": 1, "loss": 1.0})
        run.write_summary({"final": {"loss": 1.0}})
    return "ran"


def test_layout_and_skip(tmp_path):
    assert run_stage(tmp_path, config()) == "ran"
    stage = tmp_path / "exp" / "pretrain"
    status = json.loads((stage / "status.json").read_text())
    assert status["state"] == "complete" and status["ended"]
    env = json.loads((stage / "env.json").read_text())
    assert env["versions"]["patchcfg"] and env["command_line"]
    assert (tmp_path / "exp" / "config.yaml").read_text().startswith("name: exp")
    assert (stage / "metrics.csv").read_text() == "epoch,loss\n0,1.5\n1,1.0\n"
    assert run_stage(tmp_path, config()) == "skipped"
    assert "already complete" in Experiment(config(), root=tmp_path).stage("pretrain").skip_message()


def test_different_config_is_refused_then_forced(tmp_path):
    run_stage(tmp_path, config())
    changed = config(pretrain={"epochs": 3})
    with pytest.raises(ExperimentError, match=r"differs in: pretrain.epochs.*new name.*--force"):
        run_stage(tmp_path, changed)
    assert run_stage(tmp_path, changed, force=True) == "ran"
    assert "epochs: 3" in (tmp_path / "exp" / "config.yaml").read_text()


def test_sections_of_stages_not_yet_run_may_change(tmp_path):
    run_stage(tmp_path, config())
    later = config(finetune={"folds_count": 3})
    assert run_stage(tmp_path, later) == "skipped"  # pretrain unchanged: still complete
    with Experiment(later, root=tmp_path).stage("finetune"):
        pass
    assert "folds_count: 3" in (tmp_path / "exp" / "config.yaml").read_text()
    with pytest.raises(ExperimentError, match="differs in: finetune.folds_count"):
        run_stage(tmp_path, config(finetune={"folds_count": 5}))


def test_query_and_label_settings_may_change(tmp_path):
    run_stage(tmp_path, config(query={"n": 5}, label={"grid": 4}))
    assert run_stage(tmp_path, config(query={"n": 9}, label={"grid": 6})) == "skipped"


def test_failure_is_recorded_and_resumes(tmp_path):
    with pytest.raises(RuntimeError):
        run_stage(tmp_path, config(), fail=RuntimeError("out of memory"))
    run = Experiment(config(), root=tmp_path).stage("pretrain")
    assert run.state == "failed" and "out of memory" in run.status()["error"]
    (run.checkpoint_dir).mkdir(parents=True)
    (run.checkpoint_dir / "ckpt-1.index").write_text("x")
    with run:
        assert run.resuming
        assert run.read_metrics() == [{"epoch": 0, "loss": 1.5}]
        run.append_metrics({"epoch": 0, "loss": 1.4})  # a resumed epoch replaces its old row
    assert run.read_metrics() == [{"epoch": 0, "loss": 1.4}]


def test_keyboard_interrupt_marks_interrupted(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        run_stage(tmp_path, config(), fail=KeyboardInterrupt())
    assert Experiment(config(), root=tmp_path).stage("pretrain").state == "interrupted"


def test_sigterm_marks_interrupted(tmp_path):
    script = textwrap.dedent(f"""
        import os, signal, time
        from patchcfg.experiment import Experiment
        run = Experiment({config()!r}, root={str(tmp_path)!r}).stage("pretrain")
        with run:
            print("ready", flush=True)
            time.sleep(30)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)
    assert Experiment(config(), root=tmp_path).stage("pretrain").state == "interrupted"


def test_second_process_is_locked_out(tmp_path):
    script = textwrap.dedent(f"""
        import time
        from patchcfg.experiment import Experiment
        with Experiment({config()!r}, root={str(tmp_path)!r}).stage("pretrain"):
            print("ready", flush=True)
            time.sleep(30)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        with pytest.raises(ExperimentError, match=rf"being written by pid {proc.pid}"):
            with Experiment(config(), root=tmp_path).stage("pretrain"):
                pass
    finally:
        proc.kill()
        proc.wait()
    with Experiment(config(), root=tmp_path).stage("pretrain"):  # the lock died with its process
        pass


def test_non_chief_writes_nothing(tmp_path):
    run = Experiment(config(), root=tmp_path, is_chief=False).stage("pretrain")
    with run:
        run.append_metrics({"epoch": 0, "loss": 1})
        run.write_summary({"x": 1})
        assert run.checkpoint_dir.is_dir() and str(tmp_path) not in str(run.checkpoint_dir)
    assert not (tmp_path / "exp").exists()


def test_write_killed_midway_leaves_previous_file(tmp_path):
    run_stage(tmp_path, config())
    metrics = tmp_path / "exp" / "pretrain" / "metrics.csv"
    before = metrics.read_text()
    script = textwrap.dedent(f"""
        import os
        import patchcfg.atomic as atomic
        real_fsync = os.fsync
        def die(fd):
            os._exit(9)  # killed after writing the temp file, before the rename
        os.fsync = die
        atomic.atomic_write_text({str(metrics)!r}, "half")
    """)
    assert subprocess.run([sys.executable, "-c", script]).returncode == 9
    assert metrics.read_text() == before


def test_experiments_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("PATCHCFG_EXPERIMENTS", str(tmp_path / "elsewhere"))
    assert Experiment(config()).dir == tmp_path / "elsewhere" / "exp"
    assert os.environ["PATCHCFG_EXPERIMENTS"]


def test_changed_inputs_rerun_a_complete_stage_from_scratch(tmp_path):
    def run(inputs):
        stage = Experiment(config(), root=tmp_path).stage("pretrain", inputs=inputs)
        if stage.is_complete():
            return "skipped"
        with stage:
            stage.append_metrics({"epoch": 0, "loss": 1.0})
        return "ran"

    assert run({"labels": "a"}) == "ran"
    assert run({"labels": "a"}) == "skipped"
    assert run({"labels": "b"}) == "ran"
    metrics = (tmp_path / "exp" / "pretrain" / "metrics.csv").read_text()
    assert metrics.count("\n") == 2  # a fresh start, not appended to the old run


def test_file_digest_changes_with_content(tmp_path):
    from patchcfg.experiment import file_digest

    path = tmp_path / "t.csv"
    path.write_text("a")
    before = file_digest(path)
    path.write_text("b")
    assert file_digest(path) != before


@pytest.mark.parametrize("name", ["..", ".", "a/b", "../x"])
def test_the_experiment_folder_is_strictly_inside_the_root(tmp_path, name):
    with pytest.raises(ExperimentError, match="would not be a folder inside the experiments root"):
        Experiment(config(name=name), root=tmp_path / "experiments")


def test_a_killed_process_leaves_an_interrupted_stage(tmp_path):
    run = Experiment(config(), root=tmp_path).stage("pretrain")
    with run:
        pass
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    status = json.loads((run.dir / "status.json").read_text())
    (run.dir / "status.json").write_text(json.dumps({**status, "state": "running", "pid": proc.pid}))
    assert run.state == "interrupted" and "process gone" in run.status()["error"]


def test_experiments_root_that_is_a_file_is_one_message(tmp_path):
    from click.testing import CliRunner

    from patchcfg.cli import main

    root = tmp_path / "experiments"
    root.write_text("a file\n")
    path = tmp_path / "c.yaml"
    path.write_text("name: c\npretrain: {method: simclr}\n")
    result = CliRunner().invoke(main, ["pretrain", str(path), "--experiments", str(root)])
    assert result.exit_code == 2 and f"{root}: the experiments root is a file, not a folder" in result.output
    assert root.read_text() == "a file\n"


def test_read_only_experiments_root_is_one_message(tmp_path, run_cli):
    root = tmp_path / "experiments"
    root.mkdir()
    path = tmp_path / "c.yaml"
    path.write_text("name: c\npretrain: {method: simclr}\n")
    os.chmod(root, 0o555)
    try:
        result = run_cli("pretrain", path, "--experiments", root, drop_privileges=True)
    finally:
        os.chmod(root, 0o755)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and f"{root}/c: permission denied" in result.stderr


def test_name_of_dots_through_the_command_line_writes_nothing(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from patchcfg.cli import main

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "c.yaml"
    path.write_text("name: c\npretrain: {method: simclr}\n")
    for name in ("..", "."):
        result = CliRunner().invoke(main, ["pretrain", str(path), f"name={name}", "--experiments", "exp"])
        assert result.exit_code == 2 and "not only dots" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]


def test_an_experiment_folder_linked_outside_the_root_is_refused(tmp_path):
    root = tmp_path / "experiments"
    root.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / "exp").symlink_to(elsewhere)
    with pytest.raises(ExperimentError, match="outside the experiments root"):
        Experiment(config(), root=root)
