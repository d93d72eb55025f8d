"""``/api/queue``'s ``suspect``: in the ``mistakes`` review, the cell of each shown row that
confident learning flags as likely wrong (class, given label, out-of-fold probability); None for
the rows of the other strategies."""

import pytest
import test_review_queue as review
from test_review_queue import FLIPPED, started

reviewed = review.reviewed  # the fixture: 48 of 60 digits labelled, row FLIPPED wrongly


def test_the_review_names_the_suspect_cell_of_each_row(reviewed, client_of):
    config_path, _, root, _ = reviewed
    c = started(client_of, config_path, root)
    rows = c.get("/api/queue?strategy=mistakes&subset=all&n=100").json()["rows"]
    first = rows[0]
    assert first["row"] == FLIPPED
    suspect = first["suspect"]
    # the flipped digit 0 (zero 0, one 1): either cell is wrong, and the review doubts its label
    assert suspect["class"] in ("zero", "one"), suspect
    assert suspect["given"] == first["labels"][suspect["class"]]
    assert abs(suspect["given"] - suspect["p"]) == pytest.approx(first["score"], abs=1e-3)
    assert abs(suspect["given"] - suspect["p"]) > 0.5
    flagged = [item for item in rows if item["suspect"] is not None]
    assert rows[:len(flagged)] == flagged, "the rows with a suspect come first"
    for item in flagged:
        cell = item["suspect"]
        assert set(cell) == {"class", "given", "p"} and cell["given"] == item["labels"][cell["class"]]
    # another strategy names none
    pool = c.get("/api/queue?strategy=entropy&subset=unlabeled&n=5").json()["rows"]
    assert pool and all(item["suspect"] is None for item in pool)
