"""The label table: errors named by row and column, and lossless round trips."""

import pandas as pd
import pytest

from patchcfg.errors import LabelTableError
from patchcfg.label_table import init_table, list_images, read_label_table, stats


def write(tmp_path, text, name="labels.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_reads_partial_labels_with_unknown_as_minus_one(tmp_path):
    path = write(tmp_path, "filepath,validation,cat,dog\na.png,,1,\nb.png,True,0,1\n")
    table = read_label_table(path)
    assert table.classes == ["cat", "dog"]
    assert table.label_matrix().tolist() == [[1, -1], [0, 1]]
    assert table.validation.tolist() == [False, True]
    assert table.exclude.tolist() == [False, False]
    assert table.resolved_paths()[0] == str(tmp_path / "a.png")


def test_absolute_paths_are_kept(tmp_path):
    path = write(tmp_path, "filepath,c\n/data/x.png,1\n")
    assert read_label_table(path).resolved_paths() == ["/data/x.png"]


@pytest.mark.parametrize("text, message", [
    ("path,cat\na.png,1\n", "no 'filepath' column"),
    ("filepath,cat\na.png,1\nb.png,yes\n", "row 3, column 'cat': 'yes' is not a label"),
    ("filepath,cat\na.png,2\n", "row 2, column 'cat': '2' is not a label"),
    ("filepath,cat\na.png,1\na.png,0\n", "row 3: filepath 'a.png' already appears on row 2"),
    ("filepath,exclude,cat\na.png,maybe,1\n", "row 2, column 'exclude': 'maybe' is not a bool"),
    ("filepath,cat,cat\na.png,1,0\n", "column 'cat' appears more than once"),
    ("filepath,cat\n,1\n", "row 2: empty filepath"),
    ("", "empty"),
])
def test_errors_name_the_row_and_column(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(LabelTableError, match=message) as info:
        read_label_table(path)
    assert str(path) in str(info.value)


def test_missing_and_non_utf8(tmp_path):
    with pytest.raises(LabelTableError, match="not found"):
        read_label_table(tmp_path / "nope.csv")
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"filepath,c\n\xff.png,1\n")
    with pytest.raises(LabelTableError, match="not UTF-8"):
        read_label_table(bad)


def test_round_trip_with_added_class_keeps_blanks_blank(tmp_path):
    original = "filepath,exclude,validation,subset,cat,dog\na.png,False,False,s1,1,\nb.png,True,False,,,0\n"
    path = write(tmp_path, original)
    table = read_label_table(path)
    table.add_class("bird")
    table.write()
    again = read_label_table(path)
    assert again.classes == ["cat", "dog", "bird"]
    assert again.label_matrix().tolist() == [[1, -1, -1], [-1, 0, -1]]
    assert again.exclude.tolist() == [False, True]
    assert again.subsets().tolist() == ["s1", ""]
    lines = path.read_text().splitlines()
    assert lines[1] == "a.png,False,False,s1,1,,"
    assert (tmp_path / "labels.csv.bak").read_text() == original


def test_csv_text_in_chunks_and_whole_numbers_beyond_zero_and_one(monkeypatch):
    import numpy as np

    from patchcfg import label_table as labels
    from patchcfg.label_table import LabelTable

    monkeypatch.setattr(labels, "_WRITE_CHUNK", 2)
    frame = pd.DataFrame({"filepath": ["a", "b", "c"], "validation": [True, False, True],
                          "x": [1.0, np.nan, 0.0], "y": [2.0, 0.0, np.nan]})
    assert LabelTable(df=frame).to_csv_text() == "filepath,validation,x,y\na,True,1,2\nb,False,,0\nc,True,0,\n"


def test_reserved_and_duplicate_class_names(tmp_path):
    table = read_label_table(write(tmp_path, "filepath,cat\na.png,1\n"))
    with pytest.raises(LabelTableError, match="reserved"):
        table.add_class("validation")
    with pytest.raises(LabelTableError, match="already exists"):
        table.add_class("cat")


def test_write_keeps_previous_file_when_interrupted(tmp_path, monkeypatch):
    path = write(tmp_path, "filepath,cat\na.png,1\n")
    table = read_label_table(path)
    table.add_class("dog")

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(OSError):
        table.write()
    assert path.read_text() == "filepath,cat\na.png,1\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_init_from_folder_glob_and_list(tmp_path):
    images = tmp_path / "imgs"
    (images / "sub").mkdir(parents=True)
    for name in ("a.png", "sub/b.jpg", "notes.txt"):
        (images / name).write_bytes(b"x")
    assert len(list_images(images)) == 2
    assert len(list_images(str(images / "*.png"))) == 1
    listing = write(tmp_path, "imgs/a.png\n# comment\nimgs/sub/b.jpg\n", "list.txt")
    assert list_images(listing) == [str(tmp_path / "imgs/a.png"), str(tmp_path / "imgs/sub/b.jpg")]
    table = init_table(list_images(images), ["x", "y"], tmp_path / "labels.csv")
    table.write()
    again = read_label_table(tmp_path / "labels.csv")
    assert again.df["filepath"].tolist() == ["imgs/a.png", "imgs/sub/b.jpg"]
    assert (again.label_matrix() == -1).all()


def test_list_images_errors(tmp_path):
    with pytest.raises(LabelTableError, match="no images found"):
        list_images(tmp_path)
    with pytest.raises(LabelTableError, match="not a folder, a glob"):
        list_images(tmp_path / "nothing")


def test_stats_counts(tmp_path):
    table = read_label_table(write(tmp_path, "filepath,validation,exclude,c\na,False,False,1\nb,False,False,\n"
                                              "c,True,False,0\nd,False,True,1\n"))
    frame = stats(table).set_index(["class", "rows"])
    assert frame.loc[("c", "train")].tolist() == [1, 0, 1]
    assert frame.loc[("c", "validation")].tolist() == [0, 1, 0]
    assert isinstance(frame, pd.DataFrame)


def test_a_byte_order_mark_and_blank_lines_are_read_as_before(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("\ufefffilepath,cat\na.png,1\n\n  \n\"b, c.png\",0\n", encoding="utf-8")
    table = read_label_table(path)
    assert table.df["filepath"].tolist() == ["a.png", "b, c.png"] and table.classes == ["cat"]


def test_resolve_paths_equals_normpath_of_join():
    import itertools
    import os

    from patchcfg.label_table import resolve_paths

    root = "/a/b/../c"
    paths = ["x.png", "./x.png", "d/../x.png", "d//x.png", "/abs/./y.png", "d/", "...", "..", ".hidden/x",
             "a/.b", "x/.", "é/ü.png", "é/./ü.png", "a\n./b/", "a\n/b", "."]
    for as_written, some in itertools.product((False, True), (paths, [p for p in paths if "\n" not in p])):
        want = [p if as_written and os.path.isabs(p) else os.path.normpath(os.path.join(root, p)) for p in some]
        assert resolve_paths(root, some, absolute_as_written=as_written) == want


def test_a_table_read_again_unchanged_is_not_parsed_again_and_a_change_is_seen(tmp_path, monkeypatch):
    """A command reads its table several times (check, stage, image list): at a million rows each
    parse costs seconds. The same bytes give a copy of the last table, which the caller may change
    without changing the next read; any change to the file is read afresh, even in place with the
    same size within the file system's timestamp resolution."""
    from patchcfg import label_table as labels

    path = write(tmp_path, "filepath,cat,dog\na.png,1,\nb.png,,0\n")
    parses = []
    real = labels._csv_frame
    monkeypatch.setattr(labels, "_csv_frame", lambda *a: parses.append(1) or real(*a))
    first = read_label_table(path)
    first.add_class("bird")
    first.df.loc[0, "cat"] = 0.0
    again = read_label_table(path)
    assert len(parses) == 1
    assert again.classes == ["cat", "dog"] and again.label_matrix().tolist() == [[1, -1], [-1, 0]]
    with open(path, "r+", encoding="utf-8") as handle:  # in place, same size
        handle.write("filepath,cat,dog\na.png,0,\nb.png,,1\n")
    changed = read_label_table(path)
    assert len(parses) == 2 and changed.label_matrix().tolist() == [[0, -1], [-1, 1]]
    crlf = write(tmp_path, "filepath,cat\r\na.png,1\r\n", name="crlf.csv")
    assert read_label_table(crlf).label_matrix().tolist() == [[1]]
