"""Label Studio: tasks with annotations and predictions out, the JSON export back in, the same table
after a round trip; every refusal names the task and leaves the table as it was."""

from __future__ import annotations

import json
import os
import stat
import xml.etree.ElementTree as ET

import pytest

from patchcfg.errors import UserError
from patchcfg.interop.label_studio import (
    PARTLY_KNOWN,
    RowMatcher,
    config_path,
    export_label_studio,
    import_label_studio,
)
from patchcfg.label_table import read_label_table

TABLE = """filepath,exclude,validation,cat,dog
images/a.png,False,False,1,0
images/b b.png,False,True,1,1
images/c.png,False,False,0,0
images/d.png,False,False,1,
images/e.png,False,False,,
images/f.png,True,False,0,1
"""


@pytest.fixture
def make_table(table_on_disk):
    """``make_table(folder, text=TABLE)``: the path of the table written with its images."""
    return lambda folder, text=TABLE: table_on_disk(folder, text)


def as_exported(tasks, drop_filepath=False):
    """The tasks as Label Studio's JSON export gives them back: ids, annotation bookkeeping."""
    exported = json.loads(json.dumps(tasks))
    for number, task in enumerate(exported, start=1):
        task.update(id=number, project=1)
        if drop_filepath:
            del task["data"]["filepath"]
        for annotation in task.get("annotations", []):
            annotation.update(id=1000 + number, was_cancelled=False, ground_truth=False, completed_by=1,
                              created_at="2024-05-01T10:00:00Z", updated_at="2024-05-01T10:00:00Z")
    return exported


def choices(*names, from_name="label"):
    return [{"from_name": from_name, "to_name": "image", "type": "choices", "value": {"choices": list(names)}}]


@pytest.fixture
def export(make_table):
    """``export(tmp_path, **options) -> (table path, tasks, report)``: TABLE exported to tasks.json."""

    def run(tmp_path, **options):
        path = make_table(tmp_path / "t")
        report = export_label_studio(read_label_table(path), tmp_path / "tasks.json", **options)
        return path, json.loads((tmp_path / "tasks.json").read_text()), report

    return run


def test_known_rows_are_annotations_partly_known_ones_pre_annotations(tmp_path, export):
    _, tasks, report = export(tmp_path)
    by_file = {t["data"]["filepath"]: t for t in tasks}
    assert "images/f.png" not in by_file and dict(report.left_out) == {"excluded": 1}
    assert by_file["images/b b.png"]["annotations"] == [{"result": choices("cat", "dog")}]
    assert by_file["images/c.png"]["annotations"] == [{"result": []}]
    assert "annotations" not in by_file["images/d.png"]
    assert by_file["images/d.png"]["predictions"] == [{"model_version": PARTLY_KNOWN, "result": choices("cat")}]
    assert set(by_file["images/e.png"]) == {"data"}
    assert by_file["images/a.png"]["data"]["image"] == str(tmp_path / "t" / "images" / "a.png")


def test_the_labelling_config_is_written_beside_the_tasks(tmp_path, make_table):
    path = make_table(tmp_path / "t", 'filepath,cat,"a&b ""c"""\nimages/a.png,1,0\n')
    export_label_studio(read_label_table(path), tmp_path / "tasks.json", from_name="tags", to_name="img")
    view = ET.fromstring(config_path(tmp_path / "tasks.json").read_text())
    image, control = list(view)
    assert (image.tag, image.get("name"), image.get("value")) == ("Image", "img", "$image")
    assert (control.get("name"), control.get("toName"), control.get("choice")) == ("tags", "img", "multiple")
    assert [c.get("value") for c in control] == ["cat", 'a&b "c"']


def test_predictions_come_with_a_score_and_the_classes_over_the_threshold(tmp_path, monkeypatch, export):
    (tmp_path / "preds.csv").write_text("filepath,cat,dog\nt/images/a.png,0.9,0.2\nt/images/e.png,0.45,0.7\n")
    monkeypatch.chdir(tmp_path)  # patchcfg predict writes the paths as given, from where it ran
    _, tasks, _ = export(tmp_path, predictions=tmp_path / "preds.csv")
    by_file = {t["data"]["filepath"]: t for t in tasks}
    assert by_file["images/a.png"]["predictions"] == [
        {"model_version": "preds.csv", "score": 0.8, "result": choices("cat")}]
    assert by_file["images/e.png"]["predictions"][0]["score"] == 0.55
    assert by_file["images/e.png"]["predictions"][0]["result"] == choices("dog")


@pytest.mark.parametrize(("text", "message"), [
    ("filepath,bird\nimages/a.png,0.5\n", "column 'bird' is not a class"),
    ("filepath,cat\nimages/a.png,high\n", "row 2, column 'cat': 'high' is not a probability"),
    ("path,cat\nimages/a.png,0.5\n", "no 'filepath' column"),
])
def test_a_predictions_csv_that_does_not_fit_is_refused(tmp_path, text, message, export):
    (tmp_path / "preds.csv").write_text(text)
    with pytest.raises(UserError, match=message):
        export(tmp_path, predictions=tmp_path / "preds.csv")
    assert not (tmp_path / "tasks.json").exists()


def test_a_url_prefix_is_followed_by_the_quoted_relative_path(tmp_path, export):
    _, tasks, _ = export(tmp_path, url_prefix="/data/local-files/?d=project/")
    assert tasks[1]["data"]["image"] == "/data/local-files/?d=project/images/b%20b.png"


@pytest.mark.parametrize("drop_filepath", [False, True])
def test_export_then_import_gives_the_same_table(tmp_path, drop_filepath, export):
    path, tasks, _ = export(tmp_path, url_prefix="/data/local-files/?d=project/")
    before = path.read_bytes()
    (tmp_path / "export.json").write_text(json.dumps(as_exported(tasks, drop_filepath)))
    report = import_label_studio(tmp_path / "export.json", path)
    assert path.read_bytes() == before and report.changed_cells == 0 and report.annotated == 3
    assert not (tmp_path / "t" / "labels.csv.bak").exists()  # nothing changed: nothing written


def test_an_annotation_states_every_class_and_a_task_without_one_changes_nothing(tmp_path, export):
    path, tasks, _ = export(tmp_path)
    exported = as_exported(tasks)
    exported[3]["annotations"] = [{"id": 1, "result": choices("dog")}]  # images/d.png: cat 1, dog blank
    exported[4]["annotations"] = [  # images/e.png: the latest annotation that is not cancelled speaks
        {"id": 2, "result": choices("cat"), "updated_at": "2024-05-01T10:00:00Z"},
        {"id": 3, "result": choices("cat", "dog"), "updated_at": "2024-05-02T10:00:00Z"},
        {"id": 4, "result": choices("dog"), "updated_at": "2024-05-03T10:00:00Z", "was_cancelled": True}]
    (tmp_path / "export.json").write_text(json.dumps(exported))
    report = import_label_studio(tmp_path / "export.json", path)
    table = read_label_table(path)
    assert table.df.loc[3, ["cat", "dog"]].tolist() == [0.0, 1.0]
    assert table.df.loc[4, ["cat", "dog"]].tolist() == [1.0, 1.0]
    assert (report.changed_cells, report.changed_rows) == (4, 2)
    assert (tmp_path / "t" / "labels.csv.bak").read_text() == TABLE


def test_a_ground_truth_annotation_wins_over_a_later_one(tmp_path, make_table):
    path = make_table(tmp_path / "t")
    task = {"id": 7, "data": {"image": "images/e.png"}, "annotations": [
        {"result": choices("cat"), "ground_truth": True, "updated_at": "2024-01-01"},
        {"result": choices("dog"), "updated_at": "2024-06-01"}]}
    (tmp_path / "export.json").write_text(json.dumps([task]))
    import_label_studio(tmp_path / "export.json", path)
    assert read_label_table(path).df.loc[4, ["cat", "dog"]].tolist() == [1.0, 0.0]


@pytest.mark.parametrize(("task", "message"), [
    ({"id": 12, "data": {"image": "images/a.png"}, "annotations": [{"result": choices("bird")}]},
     "task 12: class 'bird' is not a class of .*labels.csv \\(cat, dog\\); add it first"),
    ({"id": 13, "data": {"image": "images/zz.png"}, "annotations": []},
     "task 13: its image 'images/zz.png' matches no row .* --skip-unmatched"),
    ({"id": 14, "data": {"image": "images/a.png"}, "annotations": [{"result": choices("cat", from_name="tags")}]},
     "task 14: its annotation has no choices from 'label' \\(it has tags\\)"),
    ({"image": "images/a.png", "label": "cat"}, "task 1 has no 'data' object; export the project as 'JSON'"),
])
def test_a_task_that_cannot_be_read_into_the_table_is_named_and_nothing_is_written(tmp_path, task, message, make_table):
    path = make_table(tmp_path / "t")
    fine = {"id": 1, "data": {"image": "images/e.png"}, "annotations": [{"result": choices("cat")}]}
    (tmp_path / "export.json").write_text(json.dumps([fine, task] if "data" in task else [task]))
    with pytest.raises(UserError, match=message):
        import_label_studio(tmp_path / "export.json", path)
    assert path.read_text() == TABLE and not (tmp_path / "t" / "labels.csv.bak").exists()


def test_two_annotated_tasks_of_one_image_are_refused(tmp_path, make_table):
    path = make_table(tmp_path / "t")
    tasks = [{"id": n, "data": {"image": f"/data/local-files/?d=x/images/{name}"},
              "annotations": [{"result": choices("cat")}]} for n, name in ((1, "a.png"), (2, "a.png"))]
    (tmp_path / "export.json").write_text(json.dumps(tasks))
    with pytest.raises(UserError, match="task 2 and task 1 both annotate 'images/a.png'"):
        import_label_studio(tmp_path / "export.json", path)


def test_skip_unmatched_leaves_out_tasks_of_other_images(tmp_path, make_table):
    path = make_table(tmp_path / "t")
    tasks = [{"id": 1, "data": {"image": "other/zz.png"}, "annotations": [{"result": choices("cat")}]},
             {"id": 2, "data": {"image": "http://host/static/images/e.png"}, "annotations": [{"result": []}]}]
    (tmp_path / "export.json").write_text(json.dumps(tasks))
    report = import_label_studio(tmp_path / "export.json", path, skip_unmatched=True)
    assert report.unmatched == ["task 1: other/zz.png"]
    assert read_label_table(path).df.loc[4, ["cat", "dog"]].tolist() == [0.0, 0.0]


def test_the_matcher_finds_rows_by_path_tail_then_by_a_unique_file_name(tmp_path, make_table):
    path = make_table(tmp_path / "t", "filepath,cat\nimages/a.png,1\nimages/b b.png,1\nx/c.png,1\ny/c.png,1\n")
    matcher = RowMatcher(read_label_table(path))
    assert matcher.match("/data/local-files/?d=project/images/b%20b.png") == 1
    assert matcher.match(str(tmp_path / "t" / "x" / "c.png")) == 2
    assert matcher.match("/data/upload/3/5d2a9c1e-a.png") == 0  # an upload: '<8 hex>-' + the file name
    assert matcher.match("https://host/files/elsewhere/a.png") == 0
    assert matcher.match("/data/upload/3/c.png") is None  # two rows hold a c.png: no guess


def test_the_table_is_written_through_its_symlink_and_keeps_its_mode(tmp_path, make_table):
    path = make_table(tmp_path / "t")
    os.chmod(path, 0o640)
    link = tmp_path / "link.csv"
    link.symlink_to(path)
    task = {"id": 1, "data": {"image": "images/e.png"}, "annotations": [{"result": choices("dog")}]}
    (tmp_path / "export.json").write_text(json.dumps([task]))
    import_label_studio(tmp_path / "export.json", link)
    assert link.is_symlink() and stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert read_label_table(path).df.loc[4, ["cat", "dog"]].tolist() == [0.0, 1.0]


def test_an_export_replaces_its_own_tasks_but_not_a_file_the_user_wrote(tmp_path, export):
    path, _, _ = export(tmp_path)
    export_label_studio(read_label_table(path), tmp_path / "tasks.json")  # ours: replaced
    (tmp_path / "notes.json").write_text('{"mine": 1}')
    with pytest.raises(UserError, match="notes.json already exists and was not written by this command"):
        export_label_studio(read_label_table(path), tmp_path / "notes.json")
    assert (tmp_path / "notes.json").read_text() == '{"mine": 1}'
    with pytest.raises(UserError, match="is the label table this command reads"):
        export_label_studio(read_label_table(path), path, force=True)
