"""The FiftyOneImageClassificationDataset layout: data/ and labels.json, multilabel lists of targets."""

from __future__ import annotations

import json
import os

import pytest

from patchcfg.errors import UserError
from patchcfg.interop.fiftyone import export_fiftyone
from patchcfg.label_table import read_label_table

TABLE = """filepath,exclude,validation,cat,dog
images/a.png,False,False,1,0
images/sub/b.jpg,False,True,1,1
images/c.png,False,False,0,0
images/d.png,False,False,,
images/e.png,False,False,,1
images/f.png,True,False,1,0
"""


@pytest.fixture
def make_table(table_on_disk):
    """``make_table(folder, text=TABLE)``: the table written with its images, as read."""
    return lambda folder, text=TABLE: read_label_table(table_on_disk(folder, text))


def fiftyone_uuids(data):
    """What FiftyOne's importer keys the images of data/ by: their relative paths without extension."""
    return {os.path.splitext(os.path.relpath(os.path.join(d, f), data))[0]
            for d, _, names in os.walk(data) for f in names}


def test_labels_json_lists_the_positives_of_each_row_as_class_indices(tmp_path, make_table):
    report = export_fiftyone(make_table(tmp_path / "t"), tmp_path / "out")
    labels = json.loads((tmp_path / "out" / "labels.json").read_text())
    assert labels == {"classes": ["cat", "dog"], "labels": {
        "images/a": [0], "images/sub/b": [0, 1], "images/c": [], "images/d": None, "images/e": [1]}}
    assert fiftyone_uuids(tmp_path / "out" / "data") == set(labels["labels"])
    assert (tmp_path / "out" / "data" / "images" / "sub" / "b.jpg").is_symlink()
    assert dict(report.left_out) == {"excluded": 1}
    assert sum(report.notes.values()) == 1  # images/e.png: a blank cell FiftyOne cannot keep


def test_split_writes_one_dataset_per_split(tmp_path, make_table):
    export_fiftyone(make_table(tmp_path / "t"), tmp_path / "out", "copy", split_validation=True)
    train = json.loads((tmp_path / "out" / "train" / "labels.json").read_text())
    val = json.loads((tmp_path / "out" / "val" / "labels.json").read_text())
    assert set(train["labels"]) == {"images/a", "images/c", "images/d", "images/e"}
    assert val["labels"] == {"images/sub/b": [0, 1]}
    assert not (tmp_path / "out" / "val" / "data" / "images" / "sub" / "b.jpg").is_symlink()


def test_two_images_that_differ_only_by_extension_are_refused(tmp_path, make_table):
    table = make_table(tmp_path / "t", "filepath,cat\nimages/a.png,1\nimages/a.jpg,0\n")
    with pytest.raises(UserError, match="rows 2 and 3 .* differ only by extension"):
        export_fiftyone(table, tmp_path / "out")
    assert not (tmp_path / "out").exists()
