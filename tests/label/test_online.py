"""Online learning: the learner's fit equals `patchcfg query`'s, refits never touch labels, versions
apply in order, stop_when fires exactly when its metrics hold, the validation split is stable."""

import json
import threading
import time

import numpy as np
import pandas as pd
import pytest

from patchcfg.label_table import read_label_table


def with_features(labels, root, dims=6, seed=0):
    """Digit pixels (plus noise) as the cached features of the embed stage, aligned with the table."""
    from PIL import Image

    table = read_label_table(labels)
    paths = table.resolved_paths()
    rng = np.random.default_rng(seed)
    pixels = np.stack([np.asarray(Image.open(p).convert("L"), np.float32).ravel() / 255 for p in paths])
    features = np.concatenate([pixels, rng.normal(size=(len(paths), dims))], axis=1).astype(np.float32)
    folder = root / "lab" / "embed"
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "features.npy", features)
    pd.DataFrame({"filepath": paths}).to_csv(folder / "index.csv", index=False)
    return features


def truth(labels):
    """The digit of each row of the `lab` table (from the conftest table's order: digits 0, 1, 2)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    keep = np.flatnonzero(digits.target < 3)
    return digits.target[keep][:len(read_label_table(labels).df)]


def label_rows(store, rows, digits, client="one", **extra):
    for r in rows:
        store.label([int(r)], {"zero": int(digits[r] == 0), "one": int(digits[r] == 1), **extra}, client)


@pytest.fixture
def online(lab):
    """(app builder, config, labels, root) with cached features; apps are stopped at the end."""
    from patchcfg.label.server import build

    config, labels, root = lab
    with_features(labels, root)
    apps = []

    def make(**label_settings):
        config["label"].update(label_settings)
        app = build(config, root, embed=False, log=lambda text: None, idle_seconds=0.2)
        app.start()
        app.learner.join()
        apps.append(app)
        return app

    yield make, config, labels, root
    for app in apps:
        app.stop()


@pytest.mark.parametrize("output", ["sigmoid", "softmax"])
def test_the_learner_fits_what_patchcfg_query_fits(online, output):
    from patchcfg import active
    from patchcfg.config import load_config
    from patchcfg.stages import run_query

    make, config, labels, root = online
    overrides = ["query={}", "label={}", f"finetune.output.type={output}"]
    resolved = load_config(labels.parents[1] / "lab.yaml", overrides)
    config.clear()
    config.update(resolved)
    app = make(retrain_every=0)
    digits = truth(labels)
    label_rows(app.store, range(10), digits)
    label_rows(app.store, [10, 11, 12], digits, validation=True)
    fitted = app.learner.refit()
    assert fitted["applied"] and fitted["labels"] == 10 and fitted["validation_labels"] == 3
    app.store.flush()
    snapshot = app.learner.snapshot()
    table = read_label_table(labels)
    for strategy in ("entropy", "margin", "high:one"):
        query = {**config["query"], "strategy": strategy, "n": 8, "explore": 0.25, "scorer": "quick_head",
                 "out": str(root / f"q-{strategy}.csv")}
        run_query({**config, "query": query}, root=root, verbose=0, log=lambda text: None)
        ours = active.rank(strategy, probabilities=snapshot.probabilities, features=snapshot.features,
                           classes=table.classes, candidates=active.candidate_mask(table, query["subset"]),
                           n=8, labels=table.label_matrix(), explore=0.25, sampling=query["sampling"],
                           mix=float(query["mix"]), exclusive=output == "softmax", seed=int(config["seed"]))
        theirs = pd.read_csv(root / f"q-{strategy}.csv")
        assert [table.df["filepath"][r] for r in ours["row"]] == theirs["filepath"].tolist()
        assert list(ours["picked_by"]) == theirs["picked_by"].tolist()
        for c, cls in enumerate(table.classes):
            np.testing.assert_allclose(snapshot.probabilities[ours["row"].to_numpy(), c], theirs[f"p_{cls}"],
                                       rtol=1e-5, atol=1e-6)


def test_refits_during_a_burst_of_labels_change_none_and_lose_none(online):
    make, config, labels, root = online
    app = make(retrain_every=2, retrain_after_pause=None)
    digits = truth(labels)
    versions = []
    done = threading.Event()

    def watch():
        while not done.is_set():
            versions.append(app.learner.version)
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for wave in range(3):  # 8 labels, as fast as the store takes them; the next 8 while a fit runs
            issued = app.learner._issued
            for r in range(8 * wave, 8 * wave + 8):
                app.store.label([r], {"zero": int(digits[r] == 0), "one": int(digits[r] == 1)}, "one")
                app.learner.notify(1)
            deadline = time.time() + 60
            while app.learner._issued == issued and time.time() < deadline:  # a fit has read the table
                time.sleep(0.01)
        app.learner.join()
    finally:
        done.set()
        watcher.join()
    assert app.learner.version >= 4  # the fit at start, then one per wave at least
    # labels sent during a fit are learnt by the next: fewer than retrain_every are left for later (a
    # fit that read the table one label before the end leaves that one until the next label)
    assert 24 - app.learner.curve[-1]["labels"] < 2
    app.learner.refit()  # what the pause timer does when it is on (next test)
    assert app.learner.curve[-1]["labels"] == 24
    assert versions == sorted(versions)  # the applied version never goes back
    app.store.flush()
    df = read_label_table(labels).df
    assert df["zero"].tolist() == [int(d == 0) for d in digits]
    assert df["one"].tolist() == [int(d == 1) for d in digits]
    curve = pd.read_csv(root / "lab" / "label" / "learning_curve.csv")
    assert curve["version"].tolist() == sorted(curve["version"]) and curve["epoch"].tolist() == list(
        range(1, len(curve) + 1))


def test_the_last_labels_of_a_burst_are_learnt_when_labelling_pauses(online):
    make, config, labels, root = online
    app = make(retrain_every=10, retrain_after_pause=1.5)
    digits = truth(labels)
    start = app.learner.version
    for r in range(3):  # fewer than retrain_every, each within the pause of the last
        label_rows(app.store, [r], digits)
        app.learner.notify(1)
        time.sleep(0.1)
    assert app.learner.version == start and not app.learner.fitting  # no fit while labelling goes on
    deadline = time.time() + 60
    while app.learner.version == start and time.time() < deadline:
        time.sleep(0.02)
    app.learner.join()
    assert app.learner.version == start + 1  # one fit for the three, not one per label
    assert app.learner.curve[-1]["labels"] == 3
    time.sleep(1.0)
    assert app.learner.version == start + 1  # nothing left to learn: no further fit


def test_without_a_pause_setting_fewer_labels_than_retrain_every_wait(online):
    make, config, labels, root = online
    app = make(retrain_every=10, retrain_after_pause=None)
    start = app.learner.version
    label_rows(app.store, [0, 1, 2], truth(labels))
    app.learner.notify(3)
    time.sleep(1.0)
    assert app.learner.version == start and not app.learner.fitting


def test_a_stale_result_is_never_applied(online):
    make, config, labels, root = online
    app = make(retrain_every=0)
    learner = app.learner
    older, newer = learner.issue(), learner.issue()
    p = np.full((24, 2), 0.25, np.float32)
    assert learner.apply(newer, p, ["zero", "one"], None, "quick head", {})
    assert not learner.apply(older, p * 2, ["zero", "one"], None, "quick head", {})  # finished later: dropped
    assert learner.version == newer and learner.stale == 1
    assert float(learner.snapshot().probabilities[0, 0]) == 0.25


def test_versions_are_issued_with_their_inputs(online):
    """A fit started before a label carries an older version than one started after it."""
    make, config, labels, root = online
    app = make(retrain_every=0)
    digits = truth(labels)
    label_rows(app.store, range(6), digits)
    first = app.learner.training_inputs()
    label_rows(app.store, range(6, 12), digits)
    second = app.learner.training_inputs()
    assert first[-1] < second[-1]
    labelled = [int(((inputs[2] >= 0).any(axis=1) & inputs[3]).sum()) for inputs in (first, second)]
    assert labelled == [6, 12]


def test_stop_when_fires_exactly_when_its_metrics_hold():
    from patchcfg.label.metrics import stop_holds

    assert not stop_holds({}, {"val_macro_auc": 1.0})
    assert stop_holds({"val_macro_auc": 0.9}, {"val_macro_auc": 0.9})
    assert not stop_holds({"val_macro_auc": 0.9}, {"val_macro_auc": 0.8999})
    assert not stop_holds({"val_macro_auc": 0.9}, {"val_macro_auc": None})
    both = {"val_macro_auc": 0.9, "val_auc_one": 0.95}
    assert not stop_holds(both, {"val_macro_auc": 0.95, "val_auc_one": 0.9})
    assert stop_holds(both, {"val_macro_auc": 0.95, "val_auc_one": 0.95})


def test_the_learner_stops_at_the_first_fit_where_stop_when_holds(online):
    from patchcfg.label.metrics import stop_holds

    make, config, labels, root = online
    app = make(retrain_every=0, stop_when={"val_macro_auc": 0.9, "val_auc_zero": 0.9})
    learner = app.learner
    digits = truth(labels)
    label_rows(app.store, range(12, 24), digits, validation=True)
    fits = []
    for end in range(2, 13, 2):
        label_rows(app.store, range(end - 2, end), digits)
        fits.append(learner.refit(asked=False))
        if learner.stopped:
            break
    holds = [stop_holds(config["label"]["stop_when"], f["metrics"]) for f in fits]
    assert holds[-1] and not any(holds[:-1]), [f["metrics"] for f in fits]
    held = {k: fits[-1]["metrics"][k] for k in ("val_macro_auc", "val_auc_zero")}
    last = fits[-1]
    assert learner.stopped_at == {"labels": last["labels"], "version": last["version"], "metrics": held}
    assert any(f"at {fits[-1]['labels']} labels" in m["text"] for m in app.store.messages)
    assert not learner.refit_async()  # automatic refits stop ...
    assert learner.refit()["version"] > fits[-1]["version"]  # ... one asked for still runs


def test_stop_when_names_a_class_metric_of_the_table(lab):
    from patchcfg.errors import UserError
    from patchcfg.label.server import build

    config, labels, root = lab
    config["label"]["stop_when"] = {"val_auc_two": 0.9}
    with pytest.raises(UserError, match=r"val_auc_two.*val_auc_<class> \(classes: zero, one\)"):
        build(config, root, embed=False, log=lambda text: None)


def test_per_class_and_exclusive_metrics():
    from patchcfg.label.metrics import validation_metrics

    labels = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0], [-1, -1, -1]])
    p = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.65, 0.1, 0.4], [0.7, 0.2, 0.1], [0.3, 0.3, 0.4]])
    rows = np.ones(5, bool)
    m = validation_metrics(p, labels, rows, ["a", "b", "c"], exclusive=True)
    assert m["val_accuracy"] == 0.75  # row 2: highest is a, truth c
    assert m["val_auc_a"] == 0.75 and m["val_auc_b"] == 1.0 and m["val_auc_c"] == 1.0
    assert m["val_macro_auc"] == pytest.approx(2.75 / 3)
    multi = validation_metrics(p, labels, rows, ["a", "b", "c"])
    assert multi["val_accuracy"] == pytest.approx(10 / 12)  # known cells on the right side of 0.5


def test_the_validation_split_is_stable_across_restarts(online):
    make, config, labels, root = online
    original = labels.read_text()
    app = make(retrain_every=0, validation_fraction=0.5)
    digits = truth(labels)
    label_rows(app.store, range(24), digits)
    app.stop()
    first = read_label_table(labels).df["validation"].tolist()
    assert 4 <= sum(first) <= 20
    labels.write_text(original)  # the same images, unlabelled, labelled again in another order
    labels.with_name(labels.name + ".journal.jsonl").unlink()
    again = make(retrain_every=0, validation_fraction=0.5)
    label_rows(again.store, reversed(range(24)), digits)
    again.store.flush()
    assert read_label_table(labels).df["validation"].tolist() == first
    journal = [line for line in open(str(labels) + ".journal.jsonl") if '"validation"' in line]
    assert len(journal) == sum(first)  # each move to validation is journalled


def test_patchcfg_analyze_and_tensorboard_see_the_labelling_session(online):
    import yaml
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from patchcfg.analyze import analyze

    make, config, labels, root = online
    (root / "lab" / "config.yaml").write_text(yaml.safe_dump(config))  # as the embed stage writes it
    app = make(retrain_every=0)
    digits = truth(labels)
    label_rows(app.store, range(12, 24), digits, validation=True)
    label_rows(app.store, range(8), digits)
    fits = [app.learner.refit()]
    label_rows(app.store, range(8, 12), digits)
    fits.append(app.learner.refit())
    app.stop()
    folder = root / "lab" / "label"
    assert json.loads((folder / "status.json").read_text())["state"] == "complete"
    result = analyze([root])
    row = next(r for r in result.rows if r.stage == "label")
    assert row.state == "complete" and "val_macro_auc" in result.metrics
    assert row.metrics["val_macro_auc"][0] == pytest.approx(fits[-1]["metrics"]["val_macro_auc"])
    events = EventAccumulator(str(folder / "tensorboard"))
    events.Reload()
    scalars = events.Scalars("quick_head/val_macro_auc")
    assert [s.step for s in scalars] == [8, 12]  # the fit at start had no validation label to score
    assert scalars[-1].value == pytest.approx(fits[-1]["metrics"]["val_macro_auc"])


def test_the_worker_maps_the_cached_features_and_a_new_class_neither_copies_nor_resends_them(online):
    """At a million 512-d rows the features are 2 GB: the server uses the memory-mapped file as is
    when the table's rows are its rows, the worker maps the same file instead of receiving a copy,
    and adding a class (rows unchanged) keeps both."""
    make, config, labels, root = online
    app = make(retrain_every=0)
    digits = truth(labels)
    label_rows(app.store, range(12), digits)
    before = app.learner.snapshot().features
    assert isinstance(before, np.memmap)
    app.learner.refit()
    sent = app.learner.worker._sent_key
    app.store.add_class("two", "one")
    assert app.learner.snapshot().features is before
    label_rows(app.store, range(12, 18), digits, two=0)
    fitted = app.learner.refit()
    assert fitted["applied"] and app.learner.worker._sent_key == sent


def test_rows_read_again_in_another_order_get_their_own_features(online):
    """Another program reorders the table: each row still gets its own image's features."""
    make, config, labels, root = online
    app = make(retrain_every=0)
    cached = np.load(root / "lab" / "embed" / "features.npy")
    frame = pd.read_csv(labels, dtype=str, keep_default_na=False)
    frame.iloc[::-1].to_csv(labels, index=False)
    assert app.store.merge_external()
    features, has = app.learner.snapshot().features, app.learner.snapshot().has_features
    assert not isinstance(features, np.memmap) and has.all()
    np.testing.assert_array_equal(features, cached[::-1])


def test_a_feature_file_replaced_since_it_was_mapped_is_sent_as_rows(tmp_path):
    """A new embed published while the app runs: the worker must not fit on the new file's rows
    under the old alignment; it refuses the mapping and the server sends the rows it holds."""
    from patchcfg.label.worker import MappedFeatures, Worker

    path = tmp_path / "features.npy"
    rng = np.random.default_rng(0)
    old = rng.normal(size=(40, 3)).astype(np.float32)
    np.save(path, old)
    mapped_old = np.load(path, mmap_mode="r")
    mapped = MappedFeatures(str(path), MappedFeatures.identify(path))
    np.save(tmp_path / "new.npy", rng.normal(size=(40, 3)).astype(np.float32))
    (tmp_path / "new.npy").replace(path)
    assert mapped.open() is None
    labels = np.full((40, 1), -1.0, np.float32)
    labels[:10, 0] = (old[:10, 0] > 0).astype(np.float32)
    labels[:2, 0] = [0.0, 1.0]
    train = np.ones(40, bool)
    worker = Worker()
    try:
        result = worker.fit("k", mapped_old, labels, train, ~train, 0, ["c"], False, mapped=mapped)
    finally:
        worker.close()
    from patchcfg import active

    want = active.quick_head_probabilities(old, labels, train, seed=0, exclusive=False)
    np.testing.assert_allclose(result["probabilities"], want, atol=1e-6)
