"""Every route of the labelling app through Starlette's TestClient: labels land on disk, refusals are 4xx."""

import json
import os

import pandas as pd
import pytest

from patchcfg.label_table import read_label_table


def on_disk(labels):
    return read_label_table(labels).df


def test_page_and_state(lab, client_of):
    config, labels, root = lab
    c = client_of(config, root)
    page = c.get("/")
    assert page.status_code == 200 and 'content="T"' in page.text and "/static/app.js" in page.text
    assert c.get("/static/app.js").status_code == 200
    state = c.get("/api/state").json()
    assert state["classes"] == ["zero", "one"] and state["counts"]["rows"] == 24
    assert state["counts"]["classes"]["zero"]["train"] == {"present": 0, "absent": 0, "unknown": 24}
    assert state["settings"]["grid"] == 4 and state["query"] == {"strategy": "auto", "subset": "unlabeled"}
    assert "random over unlabeled" in c.get("/api/queue?n=3").json()["ordered_by"]
    session = json.loads((root / "lab" / "label" / "session.json").read_text())
    assert session["label"]["grid"] == 4 and session["classes"] == ["zero", "one"]
    assert state["subset_values"] == [] and "subset:<name>" in state["subsets"]


def test_the_page_has_an_icon_and_favicon_ico_answers(lab, client_of):
    config, labels, root = lab
    c = client_of(config, root)
    assert '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">' in c.get("/").text
    svg = c.get("/static/favicon.svg")
    assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
    assert svg.text.startswith("<svg") and len(svg.content) < 2000
    icon = c.get("/favicon.ico")  # what a browser asks when a page links no icon
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/x-icon"
    assert icon.content[:4] == b"\0\0\1\0" and len(icon.content) < 8000  # an ICO, small
    c.cookies.clear()
    assert c.get("/favicon.ico", headers={"X-Patchcfg-Token": ""}).status_code == 401  # the token, as everywhere


def test_subsets_of_the_subset_column(lab, client_of):
    config, labels, root = lab
    frame = pd.read_csv(labels, dtype=str, keep_default_na=False)
    frame["subset"] = ["north" if i % 2 else "south" for i in range(len(frame))]
    frame.to_csv(labels, index=False)
    c = client_of(config, root)
    assert c.get("/api/state").json()["subset_values"] == ["north", "south"]
    rows = c.get("/api/queue?subset=subset:north&n=30").json()["rows"]
    assert len(rows) == 12 and all(r["subset"] == "north" for r in rows)
    assert "west" in c.get("/api/queue?subset=subset:west").json()["error"]


def test_label_one_row_journal_then_csv(lab, client_of):
    config, labels, root = lab
    c = client_of(config, root)
    reply = c.post("/api/label", json={"row": 3, "changes": {"zero": 1, "one": 0}})
    assert reply.status_code == 200, reply.text
    assert reply.json()["rows"][0]["labels"] == {"zero": 1, "one": 0}
    journal = [json.loads(line) for line in open(str(labels) + ".journal.jsonl")]
    cells = {(e["row"], e["column"]): (e["old"], e["new"], e["client"]) for e in journal if "column" in e}
    assert cells == {(3, "zero"): (None, 1, "one"), (3, "one"): (None, 0, "one")}
    assert c.post("/api/flush").json()["written"]
    df = on_disk(labels)
    assert df.at[3, "zero"] == 1 and df.at[3, "one"] == 0 and df["zero"].isna().sum() == 23
    assert c.get("/api/state").json()["session"]["rows_labelled"] == 1


def test_flags_bulk_and_undo(lab, client_of):
    config, labels, root = lab
    c = client_of(config, root)
    assert c.post("/api/label", json={"row": 0, "changes": {"exclude": True}}).status_code == 200
    assert c.post("/api/label", json={"row": 1, "changes": {"validation": True}}).status_code == 200
    bulk = c.post("/api/label", json={"rows": [4, 5, 6, 7], "changes": {"one": 1}})
    assert bulk.status_code == 200 and bulk.json()["changed"] == 4
    undone = c.post("/api/undo").json()
    assert undone["changed"] == 4 and all(r["labels"]["one"] is None for r in undone["rows"])
    c.post("/api/flush")
    df = on_disk(labels)
    assert df.at[0, "exclude"] and df.at[1, "validation"] and df["one"].isna().all()
    assert c.post("/api/undo").json()["rows"][0]["validation"] is False
    assert c.post("/api/undo").json()["rows"][0]["exclude"] is False
    nothing = c.post("/api/undo")
    assert nothing.status_code == 409 and "nothing to undo" in nothing.json()["error"]


def test_undo_is_per_client_and_keeps_newer_changes(lab, client_of):
    config, labels, root = lab
    c = client_of(config, root)
    c.post("/api/label", json={"row": 2, "changes": {"zero": 1}})
    other = {"X-Patchcfg-Client": "two"}
    c.post("/api/label", json={"row": 2, "changes": {"zero": 0}}, headers=other)
    assert c.post("/api/undo", headers=other).json()["changed"] == 1
    assert c.get("/api/row/2").json()["labels"]["zero"] == 1
    c.post("/api/label", json={"row": 2, "changes": {"zero": 0}}, headers=other)
    mine = c.post("/api/undo").json()  # my 1 was overwritten by the other client's 0: kept
    assert mine["changed"] == 0 and mine["kept"] == ["row 2 zero"]


def test_add_and_rename_class_change_the_table_at_once(lab, client_of):
    config, labels, root = lab
    c = client_of(config, root)
    c.post("/api/label", json={"row": 0, "changes": {"one": 1}})
    assert c.post("/api/classes", json={"add": "round"}).json()["classes"] == ["zero", "one", "round"]
    assert list(on_disk(labels).columns)[-1] == "round" and on_disk(labels)["round"].isna().all()
    assert c.post("/api/classes", json={"rename": "one", "to": "single"}).status_code == 200
    df = on_disk(labels)
    assert "one" not in df.columns and df.at[0, "single"] == 1
    assert c.post("/api/label", json={"row": 1, "changes": {"round": 1}}).status_code == 200
    assert c.post("/api/undo").status_code == 200
    undone = c.post("/api/undo").json()  # the label set before the rename, on the renamed column
    assert undone["rows"][0]["labels"]["single"] is None
    for body, status, words in [({"add": "round"}, 409, "already exists"),
                                ({"add": "filepath"}, 400, "reserved"), ({"add": " x"}, 400, "spaces"),
                                ({"rename": "nope", "to": "x"}, 404, "unknown class"),
                                ({"rename": "zero", "to": "single"}, 409, "already"), ({}, 400, "give")]:
        reply = c.post("/api/classes", json=body)
        assert reply.status_code == status and words in reply.json()["error"], (body, reply.text)


@pytest.mark.parametrize("body, status, words", [
    ({"row": 99, "changes": {"zero": 1}}, 404, "does not exist"),
    ({"row": "img/0.png", "changes": {"zero": 1}}, 400, "row number"),
    ({"row": 1, "changes": {"nine": 1}}, 404, "unknown column 'nine'"),
    ({"row": 1, "changes": {"zero": 2}}, 400, "1 (present), 0 (absent) or null"),
    ({"row": 1, "changes": {"exclude": "yes"}}, 400, "true or false"),
    ({"row": 1, "changes": {}}, 400, "non-empty"),
    ({"row": 1}, 400, "non-empty"),
    ({"rows": [1, 1], "changes": {"zero": 1}}, 400, "twice"),
    ({"rows": [], "changes": {"zero": 1}}, 400, "non-empty list"),
    ({"changes": {"zero": 1}}, 400, "give"),
])
def test_bad_label_requests_are_refused_with_a_message(lab, client_of, body, status, words):
    config, labels, root = lab
    c = client_of(config, root)
    reply = c.post("/api/label", json=body)
    assert reply.status_code == status and words in reply.json()["error"], reply.text
    assert os.path.getsize(str(labels) + ".journal.jsonl") == 0
    assert any(m.startswith("refused POST /api/label") and words in m for m in c.messages)  # the terminal


def test_malformed_bodies_and_params(lab, client_of):
    config, labels, root = lab
    c = client_of(config, root)
    assert c.post("/api/label", content=b"{not json").status_code == 400
    assert c.post("/api/label", json=[1, 2]).json()["error"] == "the body must be a JSON object"
    assert "unknown" in c.get("/api/queue?strategy=maxent:nine").json()["error"]
    assert c.get("/api/queue?subset=contains:seven").status_code == 400
    assert c.get("/api/queue?n=abc").status_code == 400
    assert c.get("/api/image/3?size=huge").status_code == 400
    nothing = c.get("/api/nothing")
    assert nothing.status_code == 404 and "no such route" in nothing.json()["error"]
    assert c.get("/api/label").status_code == 405
    assert c.get("/api/events?since=x").status_code == 400
    assert c.post("/api/label", json={"row": 1, "changes": {"zero": 1}},
                  headers={"X-Patchcfg-Client": "a b"}).status_code == 400


def test_security_token_cookie_header_host_and_paths(lab, client_of):
    config, labels, root = lab
    c = client_of(config, root)
    bare = {"X-Patchcfg-Token": ""}
    c.cookies.clear()
    assert c.get("/api/state", headers=bare).status_code == 401
    assert c.get("/", headers=bare).status_code == 401
    assert c.get("/api/state?token=wrong", headers=bare).status_code == 401
    first = c.get("/?token=T", headers=bare, follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"] == "/"
    cookie = first.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert c.get("/api/state", headers=bare).status_code == 200  # the cookie alone reads
    refused = c.post("/api/label", json={"row": 1, "changes": {"zero": 1}}, headers=bare)
    assert refused.status_code == 403 and "x-patchcfg-token" in refused.json()["error"].lower()
    assert c.get("/api/state", headers={"Host": "evil.example:8765"}).status_code == 421
    for path in ("/api/image/..%2F..%2Fetc%2Fpasswd", "/api/image/img/0.png", "/api/image/-1",
                 "/api/image/%2Fetc%2Fpasswd", "/api/row/img%2F0.png"):
        reply = c.get(path)
        assert reply.status_code in (400, 404) and "row number" in reply.json()["error"], (path, reply.text)
    assert c.get("/static/../store.py").status_code == 404


def test_images_render_and_unreadable_ones_explain(lab, client_of, tmp_path):
    config, labels, root = lab
    (labels.parent / "img" / "5.png").write_bytes(b"not a png")
    c = client_of(config, root)
    thumb = c.get("/api/image/0?size=thumb")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/png"
    assert "x-patchcfg-image-error" not in thumb.headers
    from io import BytesIO

    from PIL import Image

    assert max(Image.open(BytesIO(thumb.content)).size) <= 192
    assert max(Image.open(BytesIO(c.get("/api/image/0?size=full").content)).size) > 192
    bad = c.get("/api/image/5")
    assert bad.status_code == 200 and "5.png" in bad.headers["x-patchcfg-image-error"]
    assert c.post("/api/label", json={"row": 5, "changes": {"exclude": True}}).status_code == 200


def test_two_clients_never_get_the_same_image(lab, client_of):
    config, labels, root = lab
    c = client_of(config, root)
    one = [r["row"] for r in c.get("/api/queue?n=10&strategy=random").json()["rows"]]
    other = {"X-Patchcfg-Client": "two"}
    two = [r["row"] for r in c.get("/api/queue?n=10&strategy=random", headers=other).json()["rows"]]
    assert len(one) == len(two) == 10 and not set(one) & set(two)
    three = c.get("/api/queue?n=10", headers={"X-Patchcfg-Client": "three"}).json()["rows"]
    assert len(three) == 4 and not {r["row"] for r in three} & (set(one) | set(two))
    # both clients' labels land
    c.post("/api/label", json={"rows": one, "changes": {"zero": 1}})
    c.post("/api/label", json={"rows": two, "changes": {"zero": 0}}, headers={"X-Patchcfg-Client": "two"})
    # a row held by another client is refused
    stale = c.post("/api/label", json={"row": two[0], "changes": {"one": 1}})
    assert stale.status_code == 409 and "another annotator" in stale.json()["error"]
    c.post("/api/flush")
    df = on_disk(labels)
    assert (df.loc[one, "zero"] == 1).all() and (df.loc[two, "zero"] == 0).all()
    events = c.get("/api/events?since=0", headers={"X-Patchcfg-Client": "three"}).json()
    assert {r["row"] for r in events["rows"]} == set(one) | set(two)


def test_reservations_expire(lab, client_of):
    config, labels, root = lab
    config["label"]["reserve_seconds"] = 1
    c = client_of(config, root)
    one = {r["row"] for r in c.get("/api/queue?n=20&strategy=random").json()["rows"]}
    c.label_app.queue.reservations = {r: (cl, 0.0) for r, (cl, _) in c.label_app.queue.reservations.items()}
    two = {r["row"] for r in c.get("/api/queue?n=20", headers={"X-Patchcfg-Client": "two"}).json()["rows"]}
    assert len(two) == 20 and one & two


def test_journal_replayed_after_a_crash(lab, client_of):
    config, labels, root = lab
    c = client_of(config, root, idle=3600)
    before = labels.read_bytes()
    c.post("/api/label", json={"rows": [1, 2], "changes": {"zero": 1}})
    c.post("/api/classes", json={"add": "tall"})  # writes the CSV at once
    c.post("/api/label", json={"row": 9, "changes": {"tall": 1, "one": 0}})
    assert labels.read_bytes() != before
    crashed = labels.read_bytes()
    c.label_app._stop.set()  # a crash: nothing more is written, and the system frees the journal's lock
    c.label_app.store.flush = lambda: True
    c.label_app.store.close()
    with open(str(labels) + ".journal.jsonl", "ab") as journal:
        journal.write(b'{"seq": 999, "row": 3, "col')  # a line cut short by SIGKILL
    assert labels.read_bytes() == crashed
    d = client_of(config, root)
    assert any("replayed" in m for m in d.messages) and any("incomplete" in m for m in d.messages)
    df = on_disk(labels)
    assert df.at[9, "tall"] == 1 and df.at[9, "one"] == 0 and df.at[1, "zero"] == 1 and df.at[3, "zero"] != 1
    assert d.post("/api/label", json={"row": 4, "changes": {"tall": 0}}).status_code == 200
    lines = open(str(labels) + ".journal.jsonl").read().splitlines()
    assert all(json.loads(line) for line in lines)  # the cut line is gone; new lines parse


def test_external_edit_is_merged_not_overwritten(lab, client_of):
    config, labels, root = lab
    c = client_of(config, root, idle=3600)
    c.post("/api/label", json={"row": 1, "changes": {"zero": 1}})
    frame = pd.read_csv(labels, dtype=str, keep_default_na=False)
    frame.loc[7, "one"] = "1"  # another program labels row 7 and adds a row
    frame.loc[len(frame)] = {**{k: "" for k in frame.columns}, "filepath": "img/23.png", "exclude": "False",
                             "validation": "True"}
    frame = frame.drop(index=[23]).reset_index(drop=True)
    frame.to_csv(labels, index=False)
    c.post("/api/label", json={"row": 2, "changes": {"zero": 0}})
    assert c.post("/api/flush").json()["written"]
    df = on_disk(labels)
    assert df.at[7, "one"] == 1 and df.at[1, "zero"] == 1 and df.at[2, "zero"] == 0
    assert df["validation"].iloc[-1]
    assert any("changed by another program" in m for m in c.messages)
    assert c.get("/api/state").json()["generation"] >= 1


def test_deleted_or_unwritable_table_keeps_every_label(lab, client_of, monkeypatch):
    from patchcfg.label_table import LabelTable

    config, labels, root = lab
    c = client_of(config, root, idle=3600)
    c.post("/api/label", json={"row": 1, "changes": {"zero": 1}})
    labels.unlink()
    assert c.post("/api/flush").json()["written"]
    assert on_disk(labels).at[1, "zero"] == 1
    def refuse(table, text, path=None):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(LabelTable, "write_text", refuse)
    c.post("/api/label", json={"row": 2, "changes": {"zero": 1}})
    failed = c.post("/api/flush")
    assert failed.status_code == 503 and "Permission denied" in failed.json()["error"]
    assert "journal" in c.get("/api/state").json()["error"]
    assert c.post("/api/label", json={"row": 3, "changes": {"zero": 1}}).status_code == 200
    c.label_app.store.close()
    monkeypatch.undo()
    d = client_of(config, root)  # what a restart finds: the journal has rows 2 and 3
    assert d.label_app.store.table.df.loc[[1, 2, 3], "zero"].tolist() == [1, 1, 1]


def hold_writes(monkeypatch):
    """Make every CSV write wait, once it has copied the table, until ``release`` is set;
    ``writing`` is set when one waits. Returns (writing, release)."""
    import threading

    from patchcfg.label_table import LabelTable

    writing, release = threading.Event(), threading.Event()
    to_csv_text = LabelTable.to_csv_text

    def held(table):
        writing.set()
        assert release.wait(30), "the test never released the write"
        return to_csv_text(table)

    monkeypatch.setattr(LabelTable, "to_csv_text", held)
    return writing, release


def label_during_a_flush(c, monkeypatch):
    """Label row 1, then flush with the write held and label row 2 meanwhile; returns that reply."""
    import threading

    store = c.label_app.store
    c.post("/api/label", json={"row": 1, "changes": {"zero": 1}})
    writing, release = hold_writes(monkeypatch)
    flush = threading.Thread(target=store.flush)
    flush.start()
    assert writing.wait(10)
    reply = c.post("/api/label", json={"row": 2, "changes": {"one": 1}})
    assert flush.is_alive()  # acknowledged while the write still waits: the label did not wait for it
    release.set()
    flush.join(30)
    monkeypatch.undo()
    return reply


def test_a_label_during_a_flush_is_acknowledged_at_once_and_written_by_the_next(lab, client_of, monkeypatch):
    config, labels, root = lab
    c = client_of(config, root, idle=3600)
    reply = label_during_a_flush(c, monkeypatch)
    assert reply.status_code == 200 and reply.json()["rows"][0]["labels"]["one"] == 1
    df = on_disk(labels)
    assert df.at[1, "zero"] == 1 and pd.isna(df.at[2, "one"])  # the copy was taken before row 2
    store = c.label_app.store
    assert store.pending() == 1 and store.error is None
    assert c.post("/api/flush").json() == {"written": True, "error": None, "pending": 0}
    assert on_disk(labels).at[2, "one"] == 1


def test_a_crash_after_a_flush_replays_the_label_made_during_it(lab, client_of, monkeypatch):
    from patchcfg.label.store import LabelStore

    config, labels, root = lab
    c = client_of(config, root, idle=3600)
    label_during_a_flush(c, monkeypatch)
    journal = [json.loads(line) for line in open(str(labels) + ".journal.jsonl")]
    assert journal[-1]["op"] == "flush" and journal[-1]["covers"] < journal[-2]["seq"]  # row 2 came after the copy
    assert pd.isna(on_disk(labels).at[2, "one"])
    c.label_app.store.flush = lambda: True  # a crash: nothing more is written
    c.label_app.store.close()
    messages = []
    store = LabelStore(labels, 0.0, log=messages.append)
    assert any("1 change(s) not yet in" in m for m in messages)
    assert store.table.df.at[2, "one"] == 1 and on_disk(labels).at[2, "one"] == 1 and store.pending() == 0
    store.close()


def test_a_journal_without_covers_replays_as_before(lab):
    from patchcfg.label.store import LabelStore

    config, labels, root = lab
    paths = on_disk(labels)["filepath"]
    cell = {"time": 0, "client": "one", "old": None, "new": 1}
    lines = [{"seq": 1, "action": "a1", "row": 1, "path": paths[1], "column": "zero", **cell},
             {"seq": 2, "time": 0, "op": "flush", "sha256": None},  # the CSV held everything before it
             {"seq": 3, "action": "a3", "row": 2, "path": paths[2], "column": "one", **cell}]
    journal = str(labels) + ".journal.jsonl"
    with open(journal, "w") as handle:
        handle.writelines(json.dumps(line) + "\n" for line in lines)
    store = LabelStore(labels, 0.0, log=lambda text: None)
    df = on_disk(labels)
    assert pd.isna(df.at[1, "zero"]) and df.at[2, "one"] == 1 and store.pending() == 0
    assert json.loads(open(journal).read().splitlines()[-1])["covers"] == 3
    store.close()


def test_an_outside_edit_during_a_flush_is_merged_not_overwritten(lab, client_of, monkeypatch):
    import threading

    config, labels, root = lab
    c = client_of(config, root, idle=3600)
    c.post("/api/label", json={"row": 1, "changes": {"zero": 1}})
    writing, release = hold_writes(monkeypatch)
    flush = threading.Thread(target=c.label_app.store.flush)
    flush.start()
    assert writing.wait(10)
    frame = pd.read_csv(labels, dtype=str, keep_default_na=False)
    frame.loc[7, "one"] = "1"  # another program labels row 7 while the app writes
    frame.to_csv(labels, index=False)
    release.set()
    flush.join(30)
    df = on_disk(labels)
    assert df.at[7, "one"] == 1 and df.at[1, "zero"] == 1
    assert any("changed by another program" in m for m in c.messages) and c.label_app.store.pending() == 0


def test_validation_fraction_sends_first_labels_to_validation(lab, client_of):
    config, labels, root = lab
    config["label"]["validation_fraction"] = 0.5
    c = client_of(config, root)
    rows = list(range(24))
    reply = c.post("/api/label", json={"rows": rows, "changes": {"zero": 0}}).json()
    validation = [r["validation"] for r in reply["rows"]]
    assert 4 <= sum(validation) <= 20
    again = c.post("/api/label", json={"rows": rows, "changes": {"one": 0}}).json()
    assert [r["validation"] for r in again["rows"]] == validation  # only first labels move


def write_random_features(labels, root):
    """Cached features of the lab's 24 rows (random, 5 wide), as `patchcfg embed` writes them."""
    import numpy as np

    folder = root / "lab" / "embed"
    folder.mkdir(parents=True)
    np.save(folder / "features.npy", np.random.default_rng(0).normal(size=(24, 5)).astype(np.float32))
    pd.DataFrame({"filepath": read_label_table(labels).resolved_paths()}).to_csv(folder / "index.csv",
                                                                                index=False)


def test_quick_head_scores_rank_the_queue(lab, client_of):

    config, labels, root = lab
    write_random_features(labels, root)
    c = client_of(config, root)
    c.label_app.learner.join()
    c.post("/api/label", json={"rows": [0, 1, 2, 3], "changes": {"zero": 1, "one": 0}})
    c.post("/api/label", json={"rows": [4, 5, 6, 7], "changes": {"zero": 0, "one": 1}})
    fitted = c.post("/api/retrain").json()
    assert fitted["version"] >= 1 and fitted["source"] == "quick head"
    queue = c.get("/api/queue?strategy=entropy&n=5").json()
    assert "entropy over unlabeled, scored by the quick head" in queue["ordered_by"]
    assert all(r["probabilities"] is not None for r in queue["rows"])
    scores = [r["score"] for r in queue["rows"]]
    assert scores == sorted(scores, reverse=True)
    assert (root / "lab" / "label" / "learning_curve.csv").is_file()


def test_background_refits_every_n_labels_until_stop_when_holds(lab, client_of):
    import time

    import numpy as np

    config, labels, root = lab
    config["label"].update(retrain_every=4, stop_when={"val_accuracy": 0.0})
    folder = root / "lab" / "embed"
    folder.mkdir(parents=True)
    paths = read_label_table(labels).resolved_paths()
    np.save(folder / "features.npy", np.random.default_rng(1).normal(size=(24, 4)).astype(np.float32))
    pd.DataFrame({"filepath": paths}).to_csv(folder / "index.csv", index=False)
    c = client_of(config, root)
    learner = c.label_app.learner
    learner.join()
    assert learner.version == 1 and not learner.stopped  # the fit at start: no validation rows yet
    c.post("/api/label", json={"rows": [0, 1, 2], "changes": {"zero": 1, "one": 0, "validation": True}})
    assert learner.version == 1  # three labels: not yet
    c.post("/api/label", json={"rows": [3, 4], "changes": {"zero": 0, "one": 1}})
    deadline = time.time() + 30
    while learner.version < 2 and time.time() < deadline:
        time.sleep(0.05)
    learner.join()
    assert learner.version == 2 and learner.stopped
    assert any("stop_when" in m["text"] for m in c.get("/api/state").json()["messages"])
    c.post("/api/label", json={"rows": [5, 6, 7, 8], "changes": {"zero": 0}})
    learner.join()
    assert learner.version == 2  # stopped: no more refits
    curve = pd.read_csv(root / "lab" / "label" / "learning_curve.csv")
    assert curve["version"].tolist() == [1, 2] and curve["val_accuracy"].notna().tolist() == [False, True]


def test_retrain_without_features_says_why(lab, client_of):
    config, labels, root = lab
    c = client_of(config, root)
    reply = c.post("/api/retrain")
    assert reply.status_code == 409 and "embed" in reply.json()["error"]


def test_an_external_edit_that_breaks_the_table_is_left_alone(lab, client_of):
    config, labels, root = lab
    original = labels.read_text()
    c = client_of(config, root, idle=3600)
    c.post("/api/label", json={"row": 1, "changes": {"zero": 1}})
    labels.write_text("filepath,zero\nimg/0.png,7\n")
    assert c.post("/api/flush").status_code == 503
    assert labels.read_text() == "filepath,zero\nimg/0.png,7\n"
    assert "no longer reads as a label table" in c.get("/api/state").json()["error"]
    assert c.post("/api/label", json={"row": 2, "changes": {"zero": 1}}).status_code == 200
    from patchcfg.errors import UserError

    c.label_app.store.close()
    with pytest.raises(UserError, match="row 2, column 'zero'"):  # a restart refuses the broken table
        client_of(config, root)
    labels.write_text(original)  # mended: the journal brings both labels back
    assert client_of(config, root).label_app.store.table.df.loc[[1, 2], "zero"].tolist() == [1, 1]


def test_hosts_a_browser_may_name():
    from patchcfg.label.server import allowed_hosts, is_loopback

    assert allowed_hosts("127.0.0.1", 8765) == {"127.0.0.1:8765", "localhost:8765", "[::1]:8765"}
    assert allowed_hosts("0.0.0.0", 8765) is None and allowed_hosts("192.168.1.5", 80) >= {"192.168.1.5:80"}
    assert is_loopback("::1") and is_loopback("localhost") and not is_loopback("10.0.0.1")


def test_undo_survives_a_restart_and_a_rename(lab, client_of):
    config, labels, root = lab
    c = client_of(config, root)
    c.post("/api/label", json={"rows": [1, 2], "changes": {"one": 1}})
    c.post("/api/label", json={"row": 3, "changes": {"zero": 0}})
    c.post("/api/undo")
    c.post("/api/classes", json={"rename": "one", "to": "single"})
    c.label_app.store.close()
    d = client_of(config, root)  # the same page after a restart: its undo stack comes from the journal
    undone = d.post("/api/undo").json()
    assert undone["changed"] == 2 and [r["labels"]["single"] for r in undone["rows"]] == [None, None]
    assert d.post("/api/undo").status_code == 409


def test_one_app_per_table(lab, client_of):
    from patchcfg.errors import UserError

    config, labels, root = lab
    c = client_of(config, root)
    with pytest.raises(UserError, match="already being served by another `patchcfg label`"):
        client_of(config, root)
    c.label_app.stop()
    client_of(config, root)  # the first one stopped: the table is free


def test_the_store_keeps_the_only_copy_of_the_table(lab):
    """A labelling server runs for hours: the copy read_label_table keeps for a command's second
    read would be a second table in memory (0.1 GB at a million rows) for as long."""
    from patchcfg import label_table as labels_module
    from patchcfg.label.store import LabelStore

    config, labels, root = lab
    labels_module.read_label_table(labels)
    assert labels_module._LAST_READ is not None
    store = LabelStore(labels, 0.0, log=lambda text: None)
    try:
        assert labels_module._LAST_READ is None and len(store.table.df) == 24
    finally:
        store.close()


@pytest.mark.parametrize("rest", [False, True])
def test_a_class_the_output_groups_would_not_hold_is_refused_before_the_table_changes(tmp_path, lab, config_file,
                                                                                      client_of, rest):
    """Written to the table, such a class would stop every later command on the config, this app's
    next start included; a group that takes the rest holds any new class."""
    from patchcfg.config import load_config

    config, labels, root = lab
    groups = [{"name": "digits", "classes": ["zero", "one"], "type": "softmax"}]
    if rest:
        groups = [{"name": "digits", "classes": ["zero"], "type": "sigmoid"},
                  {"name": "others", "classes": "rest", "type": "sigmoid"}]
    grouped = load_config(config_file(tmp_path, labels, finetune={"outputs": groups}), ["query={}", "label={}"])
    c = client_of(grouped, root)
    before = list(on_disk(labels).columns)
    added = c.post("/api/classes", json={"add": "round"})
    renamed = c.post("/api/classes", json={"rename": "zero", "to": "nil"})
    if rest:
        assert added.status_code == 200 and renamed.status_code == 409  # 'zero' is named in a group
        assert list(on_disk(labels).columns) == [*before, "round"]
    else:
        assert added.status_code == 409 and "classes: rest" in added.json()["error"], added.text
        assert renamed.status_code == 409 and "nil" in renamed.json()["error"]
        assert list(on_disk(labels).columns) == before and c.label_app.store.classes == ["zero", "one"]


def test_auto_ranks_by_its_cold_start_before_any_model_then_hands_over(lab, client_of):

    config, labels, root = lab
    write_random_features(labels, root)
    config = {**config, "query": {**config["query"], "handover": 8}}
    c = client_of(config, root)
    c.label_app.learner.join()
    queue = c.get("/api/queue?strategy=auto&n=4").json()
    assert {r["picked_by"] for r in queue["rows"]} == {"typiclust"}, queue
    assert queue["ordered_by"].startswith("auto (typiclust now) over unlabeled"), queue["ordered_by"]
    c.post("/api/label", json={"rows": [0, 1, 2, 3], "changes": {"zero": 1, "one": 0}})
    c.post("/api/label", json={"rows": [4, 5, 6, 7], "changes": {"zero": 0, "one": 1}})
    c.post("/api/retrain")
    queue = c.get("/api/queue?strategy=auto&n=4").json()
    assert {r["picked_by"] for r in queue["rows"]} == {"badge"}, queue  # 8 labelled rows: the handover
    assert queue["ordered_by"].startswith("auto (badge now) over unlabeled, scored by the quick head")


def test_a_strategy_registered_after_the_app_started_is_on_the_page(lab, client_of):
    """The page's strategy list is read when asked: a plugin imported late is offered at once."""
    from patchcfg.active import strategies

    config, labels, root = lab
    c = client_of(config, root)
    assert "last_rows" not in c.get("/api/state").json()["strategies"]

    @strategies.register
    class LastRows(strategies.Strategy):
        name = "last_rows"
        needs = ()
        ranks_first = "the last rows of the table"

        def score(self, query, rng):
            return query.rows.astype(float)

    try:
        assert "last_rows" in c.get("/api/state").json()["strategies"]
        queue = c.get("/api/queue?strategy=last_rows&n=3")  # accepted; it waits for a first model
        assert queue.status_code == 200 and "(last_rows waits: " in queue.json()["ordered_by"], queue.text
    finally:
        strategies.unregister("last_rows")
    assert "last_rows" not in c.get("/api/state").json()["strategies"]
