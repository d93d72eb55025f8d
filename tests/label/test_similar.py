"""More like this (``m``, ``GET /api/similar``): the nearest unlabelled rows by cosine similarity on the
cached features, near duplicates grouped; in the API and in a real browser."""

import json
import signal

import numpy as np
import pandas as pd
import pytest
from browsing import IDLE, current_row, press, wait

from patchcfg.label.similar import cosine_to, group_near_duplicates, nearest, row_norms
from patchcfg.label_table import read_label_table

# --------------------------------------------------------------------------- helpers


def save_features(labels, root, features):
    folder = root / "lab" / "embed"
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "features.npy", np.asarray(features, np.float32))
    pd.DataFrame({"filepath": read_label_table(labels).resolved_paths()}).to_csv(folder / "index.csv",
                                                                                 index=False)


@pytest.fixture
def no_fits(monkeypatch):
    """No quick-head fit and no worker process: these tests need only the features."""
    from patchcfg.label.learner import Learner
    from patchcfg.label.worker import Worker

    monkeypatch.setattr(Learner, "refit_async", lambda self: False)
    monkeypatch.setattr(Worker, "warm_up", lambda self: None)


def unit(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def brute_force(features, query_rows, candidates):
    """Candidate rows by cosine similarity to the mean of the query rows' unit vectors, most similar
    first (ties: lower row first), and their similarities."""
    f = np.asarray(features, np.float64)
    q = unit(unit(f[query_rows]).mean(axis=0))
    sims = {r: float(unit(f[r]) @ q) for r in range(len(f)) if candidates[r]}
    order = sorted(sims, key=lambda r: (-sims[r], r))
    return order, sims


def brute_force_groups(features, order, threshold, n):
    """Greedy star groups, one candidate at a time (the definition the app follows)."""
    f = unit(np.asarray(features, np.float64))
    groups = []
    for r in order:
        best = max(range(len(groups)), key=lambda g: f[groups[g][0]] @ f[r], default=None)
        if best is not None and f[groups[best][0]] @ f[r] >= threshold:
            groups[best].append(r)
        elif len(groups) < n:
            groups.append([r])
    return groups


# --------------------------------------------------------------------------- the numerics


def test_blocked_cosine_and_the_nearest_match_a_brute_force_ranking():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(1000, 16)).astype(np.float32)
    features[7] = 0  # no direction: never a neighbour
    norms = row_norms(features, block=97)
    assert np.allclose(norms, np.linalg.norm(features, axis=1), rtol=1e-5)
    query = unit(features[3]).astype(np.float32)
    similarity = cosine_to(features, norms, query, block=97)
    assert np.isnan(similarity[7])
    expected = unit(np.delete(features, 7, 0).astype(np.float64)) @ query
    assert np.allclose(np.delete(similarity, 7), expected, atol=1e-5)
    candidates = np.ones(1000, bool)
    candidates[[3, 7]] = False
    candidates[::5] = False
    got = nearest(similarity, candidates, 50)
    order, _ = brute_force(features, [3], candidates)
    assert got.tolist() == order[:50]
    assert nearest(similarity, candidates, 5000).tolist() == order  # fewer candidates than asked
    ties = np.array([0.5, 0.9, 0.5, 0.5, 0.1], np.float32)
    assert nearest(ties, np.ones(5, bool), 3).tolist() == [1, 0, 2]


def test_near_duplicates_group_behind_the_most_similar():
    rng = np.random.default_rng(1)
    base = unit(rng.normal(size=(4, 32)))
    rows = [base[0], base[0] + 0.01 * rng.normal(size=32), base[1], base[0] + 0.01 * rng.normal(size=32),
            base[2], base[1] + 0.01 * rng.normal(size=32), base[3]]
    vectors = unit(np.array(rows)).astype(np.float32)
    assert group_near_duplicates(vectors, 0.98, 10) == [[0, 1, 3], [2, 5], [4], [6]]
    assert group_near_duplicates(vectors, 0.98, 2) == [[0, 1, 3], [2, 5]]  # members of the shown ones still join
    assert group_near_duplicates(vectors, None, 3) == [[0], [1], [2]]


# --------------------------------------------------------------------------- the route


def test_the_nearest_unlabelled_rows_in_order_of_similarity(lab, client_of, no_fits):
    config, labels, root = lab
    config["label"]["duplicate_threshold"] = None  # every row its own tile: the plain ranking
    features = np.random.default_rng(2).normal(size=(24, 8))
    save_features(labels, root, features)
    c = client_of(config, root)
    c.post("/api/label", json={"rows": [1, 4, 9], "changes": {"zero": 1}})
    c.post("/api/label", json={"row": 6, "changes": {"one": 0}})
    c.post("/api/label", json={"row": 11, "changes": {"exclude": True}})  # excluded, no label
    c.post("/api/label", json={"row": 13, "changes": {"validation": True}})  # a flag, no label: a candidate
    reply = c.get("/api/similar?rows=3&n=30")
    assert reply.status_code == 200, reply.text
    body = reply.json()
    candidates = np.ones(24, bool)
    candidates[[1, 3, 4, 6, 9, 11]] = False
    order, sims = brute_force(features, [3], candidates)
    got = [item["row"] for item in body["rows"]]
    assert got == order and body["candidates"] == len(order) == 18 and body["query"] == [3]
    assert all(abs(item["similarity"] - sims[item["row"]]) < 1e-3 for item in body["rows"])
    assert [item["similarity"] for item in body["rows"]] == sorted((i["similarity"] for i in body["rows"]),
                                                                   reverse=True)
    assert all(item["group"] == [item["row"]] for item in body["rows"])
    assert all(all(v is None for v in item["labels"].values()) and not item["exclude"]
               for item in body["rows"])
    assert body["threshold"] is None
    assert [i["row"] for i in c.get("/api/similar?rows=3&n=5").json()["rows"]] == order[:5]

    # several rows: the mean of their normalised features
    body = c.get("/api/similar?rows=0,2,5&n=8").json()
    candidates[[0, 2, 5]] = False
    order, _ = brute_force(features, [0, 2, 5], candidates)
    assert [item["row"] for item in body["rows"]] == order[:8] and body["query"] == [0, 2, 5]


def test_above_the_index_threshold_the_features_graph_answers(lab, client_of, no_fits, monkeypatch):
    pytest.importorskip("faiss")
    import time

    import patchcfg.active.index as feature_index

    monkeypatch.setattr(feature_index, "EXACT_ROWS", 10)
    config, labels, root = lab
    config["label"]["duplicate_threshold"] = None
    features = np.random.default_rng(2).normal(size=(24, 8))
    save_features(labels, root, features)
    c = client_of(config, root)
    c.post("/api/label", json={"rows": [1, 4], "changes": {"zero": 1}})
    deadline = time.time() + 30
    while (body := c.get("/api/similar?rows=3&n=30").json())["index"] != "hnsw" and time.time() < deadline:
        time.sleep(0.1)  # the graph is built in the background at start
    assert body["index"] == "hnsw"
    assert (root / "lab" / "embed" / "features.index").is_file()  # cached beside the mapped features
    candidates = np.ones(24, bool)
    candidates[[1, 3, 4]] = False
    order, sims = brute_force(features, [3], candidates)
    assert [item["row"] for item in body["rows"]] == order and body["candidates"] == 21
    assert all(abs(item["similarity"] - sims[item["row"]]) < 1e-3 for item in body["rows"])


def test_rows_held_by_another_annotator_are_left_out_and_the_neighbours_are_held(lab, client_of, no_fits):
    config, labels, root = lab
    config["label"]["duplicate_threshold"] = None
    features = np.random.default_rng(3).normal(size=(24, 8))
    save_features(labels, root, features)
    c = client_of(config, root)
    other = {"X-Patchcfg-Client": "two"}
    held = [r["row"] for r in c.get("/api/queue?strategy=random&n=6", headers=other).json()["rows"]]
    query = next(r for r in range(24) if r not in held)
    body = c.get(f"/api/similar?rows={query}&n=40").json()
    got = [item["row"] for item in body["rows"]]
    assert not set(got) & set(held) and len(got) == 24 - 1 - len(held)
    # handed to this page: held from the other one, which cannot label them
    refused = c.post("/api/label", json={"row": got[0], "changes": {"zero": 1}}, headers=other)
    assert refused.status_code == 409 and "another annotator" in refused.json()["error"]
    assert c.post("/api/label", json={"row": got[0], "changes": {"zero": 1}}).status_code == 200
    # a narrower search lets go of the rows it no longer shows, not of those the queue handed
    mine = [r["row"] for r in c.get("/api/queue?strategy=random&n=3").json()["rows"]]
    body = c.get(f"/api/similar?rows={query}&n=2").json()
    shown = {item["row"] for item in body["rows"]}
    reservations = c.label_app.queue.reservations
    assert all(reservations[r][0] == "one" for r in shown | set(mine))
    free = set(got) - shown - set(mine) - {got[0]}
    assert all(r not in reservations for r in free)


def test_near_duplicates_are_one_group_labelled_at_once(lab, client_of, no_fits):
    config, labels, root = lab
    assert config["label"]["duplicate_threshold"] == 0.98  # the schema's default
    rng = np.random.default_rng(4)
    features = rng.normal(size=(24, 16))
    for copy in (10, 15, 20):  # near copies of row 5
        features[copy] = features[5] + 0.01 * rng.normal(size=16)
    features[8] = features[2] + 0.01 * rng.normal(size=16)
    save_features(labels, root, features)
    c = client_of(config, root)
    body = c.get("/api/similar?rows=5,2&n=30").json()
    candidates = np.ones(24, bool)
    candidates[[5, 2]] = False
    order, sims = brute_force(features, [5, 2], candidates)
    expected = brute_force_groups(features, order, 0.98, 30)
    assert [item["group"] for item in body["rows"]] == expected
    groups = {item["row"]: item["group"] for item in body["rows"]}
    assert sorted(max(groups.values(), key=len)) == [10, 15, 20]
    assert [8] in groups.values()
    assert len(body["rows"]) == 24 - 2 - 2 and body["images"] == 22 and body["threshold"] == 0.98
    item = next(i for i in body["rows"] if len(i["group"]) == 3)
    assert item["group_similarity"] == sorted(item["group_similarity"], reverse=True)
    assert abs(item["similarity"] - sims[item["row"]]) < 1e-3

    # the whole group through the bulk route: one action, one journal entry per row
    labelled = c.post("/api/label", json={"rows": item["group"], "changes": {"zero": 1}}).json()
    assert labelled["changed"] == 3 and len(labelled["rows"]) == 3
    lines = (labels.parent / (labels.name + ".journal.jsonl")).read_text().splitlines()
    entries = [e for e in map(json.loads, lines) if e.get("action") == labelled["action"]]
    assert sorted(e["row"] for e in entries) == sorted(item["group"])
    assert all(e["column"] == "zero" and e["new"] == 1 for e in entries)
    after = c.get("/api/similar?rows=5,2&n=30").json()
    assert not {r for i in after["rows"] for r in i["group"]} & set(item["group"])
    assert c.post("/api/undo").json()["changed"] == 3  # one undo takes the group back
    assert sorted(c.get("/api/similar?rows=5,2&n=30").json()["rows"][0]["group"]) == [10, 15, 20]


def test_a_page_of_groups_widens_the_search_past_many_duplicates(lab, client_of, no_fits):
    config, labels, root = lab
    rng = np.random.default_rng(5)
    features = np.repeat(rng.normal(size=(1, 16)), 24, axis=0) + 0.001 * rng.normal(size=(24, 16))
    features[20:] = rng.normal(size=(4, 16))  # four rows apart from the twenty copies
    save_features(labels, root, features)
    c = client_of(config, root)
    body = c.get("/api/similar?rows=0&n=3").json()
    assert len(body["rows"]) == 3
    assert sorted(body["rows"][0]["group"]) == list(range(1, 20))  # the nineteen copies, one tile
    assert body["images"] == 21


def test_without_features_or_with_bad_rows_a_clear_refusal(lab, client_of, no_fits):
    config, labels, root = lab
    c = client_of(config, root)
    reply = c.get("/api/similar?rows=3")
    assert reply.status_code == 409
    assert "patchcfg embed" in reply.json()["error"] and "more like this" in reply.json()["error"]
    for query, status, words in (("", 400, "give the rows"), ("rows=a", 400, "row numbers"),
                                 ("rows=3,-1", 400, "row numbers"), ("rows=99", 404, "does not exist"),
                                 ("rows=3&n=0", 400, "between 1 and"), ("rows=3&n=x", 400, "whole number")):
        reply = c.get(f"/api/similar?{query}")
        assert reply.status_code == status and words in reply.json()["error"], (query, reply.text)


def test_a_row_without_features_is_refused_and_never_a_neighbour(lab, client_of, no_fits, tmp_path):
    config, labels, root = lab
    config["label"]["duplicate_threshold"] = None
    features = np.random.default_rng(6).normal(size=(24, 8)).astype(np.float32)
    folder = root / "lab" / "embed"
    folder.mkdir(parents=True)
    paths = read_label_table(labels).resolved_paths()
    keep = [r for r in range(24) if r != 7]  # row 7 added since the embed
    np.save(folder / "features.npy", features[keep])
    pd.DataFrame({"filepath": [paths[r] for r in keep]}).to_csv(folder / "index.csv", index=False)
    c = client_of(config, root)
    reply = c.get("/api/similar?rows=7")
    assert reply.status_code == 409 and "no cached features" in reply.json()["error"]
    rows = [i["row"] for i in c.get("/api/similar?rows=3&n=40").json()["rows"]]
    candidates = np.ones(24, bool)
    candidates[[3, 7]] = False
    assert rows == brute_force(features, [3], candidates)[0]


# --------------------------------------------------------------------------- in a real browser


def tile_rows(driver):
    return driver.execute_script("return [...document.querySelectorAll('#grid .tile')].map((t) => +t.dataset.row)")


def digits_with_features(tmp_path, digits_table, n, features=True):
    labels = digits_table(tmp_path / "data", n=n)
    frame = pd.read_csv(labels, dtype=str, keep_default_na=False)
    frame["zero"], frame["one"], frame["validation"] = "", "", "False"
    frame.to_csv(labels, index=False)
    root = tmp_path / "experiments"
    vectors = None
    if features:  # rows in pairs of near duplicates (2k, 2k + 1), the pairs far apart
        rng = np.random.default_rng(7)
        base = rng.normal(size=(n // 2, 64))
        vectors = np.repeat(base, 2, axis=0) + 0.005 * rng.normal(size=(n, 64))
        save_features(labels, root, vectors)
    return labels, root, vectors


def test_more_like_this_fills_the_grid_with_neighbours_label_one_and_back(tmp_path, digits_table, served,
                                                                         browser, config_file):
    from selenium.webdriver.common.keys import Keys

    labels, root, features = digits_with_features(tmp_path, digits_table, 40)
    app = served(config_file(tmp_path, labels, query={"strategy": "random"}, label={"retrain_every": 0}), root)
    driver = browser
    driver.get(app.url)
    wait(driver, "return document.querySelectorAll('#classes .cls').length === 2", "the classes")
    wait(driver, "const i = document.getElementById('full'); return i.complete && i.naturalWidth > 0",
         "the first image")
    wait(driver, IDLE, "the page")
    assert driver.execute_script("return window.patchcfg.view") == "single"
    query = current_row(driver)
    queue_rows = driver.execute_script("return window.patchcfg.batch.map((it) => it.row)")

    press(driver, "m")
    wait(driver, "return document.querySelectorAll('#grid .tile').length === 16", "the neighbours")
    bar = driver.find_element("id", "like")
    assert bar.is_displayed() and f"More like row {query}" in bar.text and "back to the queue" in bar.text
    candidates = np.ones(40, bool)
    candidates[query] = False
    order, _ = brute_force(features, [query], candidates)
    groups = brute_force_groups(features, order, 0.98, 16)
    assert tile_rows(driver) == [g[0] for g in groups]
    assert groups[0] == [query ^ 1]  # its own near duplicate first, alone: the query is not a candidate
    counts = driver.execute_script(
        "return [...document.querySelectorAll('#grid .tile')].map((t) => "
        "(t.querySelector('.count') || {textContent: ''}).textContent)")
    assert counts == [""] + ["×2"] * 15
    driver.save_screenshot(str(tmp_path / "like.png"))

    press(driver, "1")  # the tile under the cursor: the query's near duplicate
    wait(driver, "return document.querySelector('#grid .tile.cursor .chip.present') !== null", "the label")
    press(driver, Keys.ARROW_RIGHT)
    press(driver, "2")  # a tile of two near duplicates: both labelled
    wait(driver, "return document.querySelectorAll('#grid .tile .chip.present').length === 2", "two labels")
    press(driver, Keys.ESCAPE)
    wait(driver, "return !window.patchcfg.like && window.patchcfg.view === 'single'", "back to the queue")
    assert not driver.find_element("id", "like").is_displayed()
    assert current_row(driver) == query
    assert driver.execute_script("return window.patchcfg.batch.map((it) => it.row)") == queue_rows

    press(driver, "m")  # again: the labelled ones are gone, and m leaves
    wait(driver, "return document.querySelectorAll('#grid .tile').length === 16", "the neighbours again")
    labelled = {query ^ 1, *groups[1]}
    assert not set(tile_rows(driver)) & labelled
    press(driver, "m")
    wait(driver, "return !window.patchcfg.like", "back to the queue")
    assert app.stop(signal.SIGINT) == 0, app.output
    df = read_label_table(labels).df
    assert df.loc[df["zero"] == 1].index.tolist() == [query ^ 1]
    assert sorted(df.loc[df["one"] == 1].index.tolist()) == sorted(groups[1])
    assert df["zero"].notna().sum() + df["one"].notna().sum() == 3


def test_more_like_this_without_features_says_to_run_embed(tmp_path, digits_table, served, browser,
                                                          config_file):
    labels, root, _ = digits_with_features(tmp_path, digits_table, 6, features=False)
    app = served(config_file(tmp_path, labels, query={"strategy": "random"}), root)
    driver = browser
    driver.get(app.url)
    wait(driver, "return document.querySelectorAll('#classes .cls').length === 2", "the classes")
    current_row(driver)
    wait(driver, IDLE, "the page")
    press(driver, "m")
    text = wait(driver, "return document.getElementById('log').innerText", "a message")
    assert "patchcfg embed" in text and "more like this" in text
    assert not driver.execute_script("return window.patchcfg.like")
    assert driver.execute_script("return window.patchcfg.view") == "single"
    assert app.stop(signal.SIGINT) == 0, app.output
