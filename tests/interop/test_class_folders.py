"""Class folders (the ImageFolder layout): single-label rows only, each left-out row counted by reason."""

from __future__ import annotations

import os

import pytest

from patchcfg.errors import UserError
from patchcfg.interop.class_folders import export_class_folders
from patchcfg.label_table import read_label_table

TABLE = """filepath,exclude,validation,cat,dog
images/a.png,False,False,1,0
images/b.png,False,True,0,1
images/c.png,False,False,1,1
images/d.png,False,False,0,0
images/e.png,False,False,1,
images/f.png,True,False,1,0
images/g.png,False,False,,
"""


@pytest.fixture
def make_table(table_on_disk):
    """``make_table(folder, text=TABLE)``: the table written with its images, as read."""
    return lambda folder, text=TABLE: read_label_table(table_on_disk(folder, text))


def files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir())


def test_only_single_label_rows_are_linked_and_the_others_counted_by_reason(tmp_path, make_table):
    table = make_table(tmp_path / "t")
    report = export_class_folders(table, tmp_path / "out")
    assert files(tmp_path / "out") == ["cat/images/a.png", "dog/images/b.png"]
    link = tmp_path / "out" / "cat" / "images" / "a.png"
    assert link.is_symlink() and os.path.samefile(link, tmp_path / "t" / "images" / "a.png")
    assert dict(report.written) == {"cat": 1, "dog": 1}
    assert dict(report.left_out) == {"multi-label": 1, "no positive": 2, "unknown cells": 1, "excluded": 1}
    assert report.lines()[-1] == "left out 5 rows: 2 no positive, 1 multi-label, 1 unknown cells, 1 excluded"


def test_exclusive_classes_settle_a_row_with_one_positive_and_blanks(tmp_path, make_table):
    report = export_class_folders(make_table(tmp_path / "t"), tmp_path / "out", exclusive=True)
    assert "cat/images/e.png" in files(tmp_path / "out")
    assert "unknown cells" not in report.left_out


def test_split_puts_validation_rows_under_val_and_copy_copies(tmp_path, make_table):
    table = make_table(tmp_path / "t")
    export_class_folders(table, tmp_path / "out", "copy", split_validation=True)
    assert files(tmp_path / "out") == ["train/cat/images/a.png", "val/dog/images/b.png"]
    copied = tmp_path / "out" / "val" / "dog" / "images" / "b.png"
    assert not copied.is_symlink() and copied.read_bytes() == (tmp_path / "t" / "images" / "b.png").read_bytes()


def test_a_folder_that_holds_files_is_refused_and_kept(tmp_path, make_table):
    table = make_table(tmp_path / "t")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep")
    with pytest.raises(UserError, match="already holds files"):
        export_class_folders(table, tmp_path / "out")
    assert files(tmp_path / "out") == ["mine.txt"]


def test_a_missing_image_is_counted_and_an_image_outside_the_folder_keeps_its_absolute_path(tmp_path, make_table):
    outside = tmp_path / "elsewhere" / "x.png"
    outside.parent.mkdir()
    outside.write_bytes(b"x")
    table = make_table(tmp_path / "t", f"filepath,cat\nimages/a.png,1\n{outside},1\n")
    (tmp_path / "t" / "images" / "a.png").unlink()
    report = export_class_folders(table, tmp_path / "out")
    assert files(tmp_path / "out") == [f"cat/_outside/{str(outside).lstrip('/')}"]
    assert dict(report.left_out) == {"image not found": 1}


def test_a_class_name_that_is_no_folder_name_is_refused(tmp_path, make_table):
    table = make_table(tmp_path / "t", "filepath,cat/dog\nimages/a.png,1\n")
    with pytest.raises(UserError, match="'cat/dog' cannot be a folder name"):
        export_class_folders(table, tmp_path / "out")
    assert not (tmp_path / "out").exists()
