"""The ``mistakes`` strategy in the labelling app: the queue shows labelled rows only, whatever the
subset, most likely mislabelled first; a label fixed from it is one journal entry and undo restores
it; and the same in a real browser, choosing the strategy in the page's dropdown."""

import json

import numpy as np
import pandas as pd
import pytest
from browsing import IDLE, press, wait

from patchcfg.label_table import read_label_table

LABELLED = 48  # of 60 rows; the rest stay unlabelled
FLIPPED = 6  # a digit 0 labelled as a 1
EXCLUDED = 7  # labelled, but excluded: never shown, never fitted on


def digits_of(labels):
    """The digit of each row of the conftest table (digits 0, 1, 2 in load_digits order)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    keep = np.flatnonzero(digits.target < 3)
    return digits.target[keep][:len(read_label_table(labels).df)]


def write_features(labels, root, name="lab"):
    """The digits' own pixels as the cached features of the embed stage."""
    from PIL import Image

    table = read_label_table(labels)
    paths = table.resolved_paths()
    features = np.stack([np.asarray(Image.open(p).convert("L"), np.float32).ravel() / 255 for p in paths])
    folder = root / name / "embed"
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "features.npy", features)
    pd.DataFrame({"filepath": paths}).to_csv(folder / "index.csv", index=False)


@pytest.fixture
def reviewed(tmp_path, digits_table, config_file):
    """(config path, label table, experiments root, digits): 48 of 60 rows labelled, row 6 wrongly."""
    labels = digits_table(tmp_path / "data", n=60)
    digits = digits_of(labels)
    frame = pd.read_csv(labels, dtype=str, keep_default_na=False)
    frame["validation"] = "False"
    frame["exclude"] = "False"
    zero = np.where(digits == 0, "1", "0").astype(object)
    one = np.where(digits == 1, "1", "0").astype(object)
    assert digits[FLIPPED] == 0
    zero[FLIPPED], one[FLIPPED] = "0", "1"
    zero[LABELLED:], one[LABELLED:] = "", ""
    frame["zero"], frame["one"] = zero, one
    frame.loc[EXCLUDED, "exclude"] = "True"
    frame.to_csv(labels, index=False)
    root = tmp_path / "experiments"
    write_features(labels, root)
    config_path = config_file(tmp_path, labels, query={"strategy": "entropy", "explore": 0.25},
                              label={"retrain_every": 0})
    return config_path, labels, root, digits


def started(client_of, config_path, root, fitted=True):
    from patchcfg.config import load_config

    client = client_of(load_config(config_path, sections=("query", "label")), root)
    client.label_app.learner.join()  # the first fit, on the features loaded at start
    assert (client.label_app.learner.version >= 1) == fitted
    return client


def journal_cells(labels):
    return [json.loads(line) for line in open(str(labels) + ".journal.jsonl") if '"column"' in line]


def test_the_mistakes_queue_shows_labelled_rows_only(reviewed, client_of):
    config_path, labels, root, _ = reviewed
    c = started(client_of, config_path, root)
    assert "mistakes" in c.get("/api/state").json()["strategies"]
    table = read_label_table(labels)
    labelled = set(np.flatnonzero(table.labelled() & ~table.exclude).tolist())
    for subset in ("unlabeled", "all", "partial", "unlabeled:zero"):
        reply = c.get(f"/api/queue?strategy=mistakes&subset={subset}&n=100")
        assert reply.status_code == 200, reply.json()
        got = reply.json()
        rows = [item["row"] for item in got["rows"]]
        assert set(rows) <= labelled, subset
        assert EXCLUDED not in rows
        assert "labelled rows" in got["ordered_by"], got["ordered_by"]
    got = c.get("/api/queue?strategy=mistakes&subset=unlabeled&n=100").json()
    rows = [item["row"] for item in got["rows"]]
    assert sorted(rows) == sorted(labelled), "the pool holds no labelled row: every labelled row instead"
    assert {item["picked_by"] for item in got["rows"]} == {"mistakes"}, "a review explores nothing"
    assert rows[0] == FLIPPED, [(i["row"], i["picked_by"], i["score"]) for i in got["rows"][:6]]
    assert got["rows"][0]["picked_by"] == "mistakes" and got["rows"][0]["score"] > 0.5
    assert "scored out of fold" in got["ordered_by"]
    # a subset with labelled rows: only those
    zeros = c.get("/api/queue?strategy=mistakes&subset=contains:zero&n=100").json()["rows"]
    assert zeros and all(item["labels"]["zero"] == 1 for item in zeros)
    # the other strategies are untouched: entropy over the pool shows unlabelled rows
    pool = c.get("/api/queue?strategy=entropy&subset=unlabeled&n=5").json()["rows"]
    assert all(item["row"] >= LABELLED for item in pool)


def test_a_label_fixed_from_the_review_is_one_journal_entry_and_undo_restores_it(reviewed, client_of):
    config_path, labels, root, _ = reviewed
    c = started(client_of, config_path, root)
    first = c.get("/api/queue?strategy=mistakes&n=4").json()["rows"][0]
    assert first["row"] == FLIPPED and first["labels"] == {"zero": 0, "one": 1}
    before = len(journal_cells(labels))
    fixed = c.post("/api/label", json={"row": FLIPPED, "changes": {"zero": 1}})
    assert fixed.status_code == 200, fixed.json()
    assert fixed.json()["changed"] == 1 and fixed.json()["rows"][0]["labels"] == {"zero": 1, "one": 1}
    cells = journal_cells(labels)
    assert len(cells) == before + 1
    assert {k: cells[-1][k] for k in ("row", "column", "old", "new")} == {"row": FLIPPED, "column": "zero",
                                                                         "old": 0, "new": 1}
    undone = c.post("/api/undo").json()
    assert undone["changed"] == 1 and undone["rows"][0]["labels"] == {"zero": 0, "one": 1}
    assert c.get(f"/api/row/{FLIPPED}").json()["labels"] == {"zero": 0, "one": 1}
    assert journal_cells(labels)[-1]["undo_of"] == cells[-1]["action"]
    assert c.post("/api/flush").status_code == 200
    assert read_label_table(labels).df.loc[FLIPPED, ["zero", "one"]].tolist() == [0, 1]


def test_mistakes_waits_for_the_features(reviewed, client_of, tmp_path):
    config_path, labels, root, _ = reviewed
    c = started(client_of, config_path, tmp_path / "elsewhere", fitted=False)  # no cached features there
    got = c.get("/api/queue?strategy=mistakes&n=100").json()
    table = read_label_table(labels)
    labelled = set(np.flatnonzero(table.labelled() & ~table.exclude).tolist())
    assert {item["row"] for item in got["rows"]} <= labelled
    assert "mistakes waits" in got["ordered_by"]


# --------------------------------------------------------------------------- in a real browser


def test_review_mistakes_in_the_browser(reviewed, served, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    config_path, labels, root, _ = reviewed
    app = served(config_path, root)
    api = app.client("probe")
    driver = browser
    driver.get(app.url)
    wait(driver, "return document.querySelectorAll('#classes .cls').length === 2", "the classes")
    wait(driver, "return window.patchcfg.batchVersion >= 1", "images ranked by the first model", timeout=60)
    wait(driver, IDLE, "the first images")
    dropdown = Select(driver.find_element(By.ID, "strategy"))
    assert "mistakes" in [o.get_attribute("value") for o in dropdown.options]
    dropdown.select_by_value("mistakes")
    wait(driver, IDLE, "the review queue")
    wait(driver, f"return document.getElementById('single').dataset.row === '{FLIPPED}'",
         "the mislabelled image first", timeout=30)
    assert "labelled rows" in driver.find_element(By.ID, "order").text
    before = len(journal_cells(labels))
    press(driver, "1")  # zero: present
    assert api.get(f"/api/row/{FLIPPED}").json()["labels"] == {"zero": 1, "one": 1}
    cells = journal_cells(labels)
    assert len(cells) == before + 1 and cells[-1]["column"] == "zero" and cells[-1]["new"] == 1
    press(driver, "z")  # undo
    assert api.get(f"/api/row/{FLIPPED}").json()["labels"] == {"zero": 0, "one": 1}
    assert journal_cells(labels)[-1]["undo_of"] == cells[-1]["action"]
