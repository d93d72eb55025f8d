"""``patchcfg init`` and ``patchcfg labels``: the label table is what the user's hours produce, so every
write is locked, atomic, keeps one intact .bak, goes through symlinks, keeps the mode and never
replaces a read-only table; every refusal is one message and exit code 2."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import time
import warnings

import pytest
from click.testing import CliRunner

from patchcfg.cli import main

TABLE = "filepath,validation,cat\na.png,False,1\nb.png,True,\n"


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def table(tmp_path, text=TABLE, name="labels.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def assert_one_message(result, *parts):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    for part in parts:
        assert part in result.output, result.output


def test_add_class_splits_commas_like_init(tmp_path):
    path = table(tmp_path)
    result = invoke("labels", "add-class", path, "dog,bird", "fish")
    assert result.exit_code == 0, result.output
    assert path.read_text().splitlines()[0] == "filepath,exclude,validation,cat,dog,bird,fish"


def test_add_class_waits_for_the_lock_and_no_class_is_lost(tmp_path):
    from pathlib import Path

    from patchcfg.atomic import file_lock

    path = table(tmp_path)
    command = [sys.executable, "-m", "patchcfg.cli", "labels", "add-class", str(path)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    with file_lock(path):
        pipes = {"env": env, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
        first = subprocess.Popen([*command, "dog"], **pipes)
        second = subprocess.Popen([*command, "bird"], **pipes)
        time.sleep(4)  # long enough for both to start, read and (without a lock) write
        assert first.poll() is None and second.poll() is None, "a writer did not wait for the table's lock"
        assert path.read_text() == TABLE
    for proc in (first, second):
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    header = path.read_text().splitlines()[0].split(",")
    assert {"dog", "bird"} <= set(header)


def test_write_through_a_symlink_keeps_the_link_and_the_mode(tmp_path):
    (tmp_path / "store").mkdir()
    real = table(tmp_path / "store")
    os.chmod(real, 0o640)
    link = tmp_path / "labels.csv"
    link.symlink_to(real)
    result = invoke("labels", "add-class", link, "dog")
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_text().splitlines()[0].endswith(",cat,dog")
    assert stat.S_IMODE(real.stat().st_mode) == 0o640
    assert (real.parent / "labels.csv.bak").read_text() == TABLE


def test_new_files_get_the_umask_mode(tmp_path):
    from PIL import Image

    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    old = os.umask(0o022)
    try:
        result = invoke("init", tmp_path, "--classes", "x", "--out", tmp_path / "labels.csv")
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE((tmp_path / "labels.csv").stat().st_mode) == 0o644
    result = invoke("init", tmp_path, "--out", tmp_path / "new" / "folder" / "labels.csv")
    assert result.exit_code == 0, result.output  # its folder is made, as before


def test_experiment_files_get_the_umask_mode(tmp_path):
    from patchcfg.experiment import Experiment

    old = os.umask(0o027)
    try:
        run = Experiment({"name": "e", "pretrain": {}}, root=tmp_path).stage("pretrain")
        with run:
            run.write_summary({"final": {}})
    finally:
        os.umask(old)
    for name in ("status.json", "summary.json", "env.json"):
        assert stat.S_IMODE((run.dir / name).stat().st_mode) == 0o640, name
    assert stat.S_IMODE((tmp_path / "e" / "config.yaml").stat().st_mode) == 0o640


def test_read_only_table_is_refused_and_kept(tmp_path):
    path = table(tmp_path)
    os.chmod(path, 0o444)
    result = invoke("labels", "add-class", path, "dog")
    assert_one_message(result, str(path), "read-only", "chmod")
    assert path.read_text() == TABLE and stat.S_IMODE(path.stat().st_mode) == 0o444


def test_read_only_folder_is_one_message(tmp_path, run_cli):
    folder = tmp_path / "ro"
    folder.mkdir()
    path = table(folder)
    os.chmod(folder, 0o555)
    try:
        result = run_cli("labels", "add-class", path, "dog", drop_privileges=True)
    finally:
        os.chmod(folder, 0o755)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and str(folder) in result.stderr and "writable" in result.stderr
    assert path.read_text() == TABLE


def test_init_into_a_read_only_folder_is_one_message(tmp_path, run_cli):
    from PIL import Image

    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "imgs" / "a.png")
    folder = tmp_path / "ro"
    folder.mkdir()
    os.chmod(folder, 0o555)
    try:
        result = run_cli("init", tmp_path / "imgs", "--out", folder / "labels.csv", drop_privileges=True)
    finally:
        os.chmod(folder, 0o755)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and str(folder) in result.stderr
    assert "permission denied" in result.stderr.lower()


def test_full_disk_keeps_the_table_and_its_backup(tmp_path, monkeypatch):
    path = table(tmp_path)
    bak = tmp_path / "labels.csv.bak"
    bak.write_text("the previous backup\n")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    result = invoke("labels", "add-class", path, "dog")
    assert_one_message(result, "no space left", "labels.csv")
    assert path.read_text() == TABLE
    assert bak.read_text() == "the previous backup\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.csv", "labels.csv.bak", "labels.csv.lock"]


def test_backup_is_written_atomically(tmp_path, monkeypatch):
    """The .bak is replaced by rename, never truncated in place (a failed copy keeps the old one)."""
    path = table(tmp_path)
    bak = tmp_path / "labels.csv.bak"
    bak.write_text("old backup\n")
    inode = bak.stat().st_ino
    assert invoke("labels", "add-class", path, "dog").exit_code == 0
    assert bak.read_text() == TABLE and bak.stat().st_ino != inode


def test_same_image_spelled_twice_is_refused_with_both_rows(tmp_path):
    path = table(tmp_path, "filepath,validation,cat\nimages/a.png,False,1\n./images/a.png,True,0\n")
    result = invoke("labels", "stats", path)
    assert_one_message(result, "row 3", "row 2", "./images/a.png", "images/a.png")


def test_wide_table_without_fragmentation_warnings(tmp_path):
    import pandas as pd

    classes = [f"c{i}" for i in range(3000)]
    rows = ["filepath," + ",".join(classes)] + [f"{r}.png," + ",".join("1" if i % 7 == r else "" for i in
                                                                       range(len(classes))) for r in range(5)]
    path = table(tmp_path, "\n".join(rows) + "\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = invoke("labels", "add-class", path, "new")
    assert result.exit_code == 0, result.output
    assert not [w for w in caught if issubclass(w.category, pd.errors.PerformanceWarning)]
    header = path.read_text().splitlines()[0].split(",")
    assert len(header) == 3 + len(classes) + 1


@pytest.mark.parametrize("spelling", ["a.png", "./a.png", "sub/../a.png"])
def test_duplicate_spellings_in_the_library(tmp_path, spelling):
    from patchcfg.errors import LabelTableError
    from patchcfg.label_table import read_label_table

    path = table(tmp_path, f"filepath,cat\na.png,1\n{spelling},0\n")
    with pytest.raises(LabelTableError, match="row 3: .* already appears on row 2"):
        read_label_table(path)


def test_add_class_to_a_missing_table_leaves_nothing_behind(tmp_path):
    result = invoke("labels", "add-class", tmp_path / "sub" / "labels.csv", "dog")
    assert_one_message(result, "label table not found", "patchcfg init")
    assert list(tmp_path.iterdir()) == []
