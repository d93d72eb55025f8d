"""No features yet: the queue is random while they are computed in the background, then ranked."""

import time

import pytest


@pytest.mark.slow
def test_features_computed_in_the_background_then_the_queue_is_ranked(lab):
    from patchcfg.label.server import build

    config, labels, root = lab
    messages = []
    app = build(config, root, embed=True, log=messages.append)
    app.start()
    try:
        first = app.queue.next("one", "entropy", "unlabeled", 4)
        assert first["ordered_by"].startswith("random over unlabeled (entropy waits: features not ready")
        deadline = time.time() + 240
        while app.learner.features_state != "ready" and time.time() < deadline:
            assert app.learner.features_state != "failed", app.learner.features_message
            time.sleep(0.5)
        assert app.learner.features_state == "ready" and (root / "lab" / "embed" / "features.npy").is_file()
        app.store.label([0, 1, 2], {"zero": 1, "one": 0}, "one")
        app.store.label([3, 4, 5], {"zero": 0, "one": 1}, "one")
        assert app.learner.refit()["version"] >= 1
        ranked = app.queue.next("one", "entropy", "unlabeled", 4)
        assert "scored by the quick head" in ranked["ordered_by"] and ranked["rows"][0]["probabilities"]
    finally:
        app.stop()
        app.learner.join()


@pytest.mark.slow
def test_a_fine_tuned_ensemble_scores_the_queue(tmp_path, digits_table, finetune_config):
    from patchcfg.config import load_config
    from patchcfg.label.server import build
    from patchcfg.stages import run_finetune

    labels = digits_table(tmp_path / "data", n=36)
    config = load_config(finetune_config(tmp_path, labels, folds_count=2), ["query={}", "label={}"])
    root = tmp_path / "experiments"
    run_finetune(config, root=root, verbose=0)
    app = build(config, root, embed=False, log=lambda text: None)
    app.start()
    try:
        deadline = time.time() + 240
        while app.learner.version < 1 and time.time() < deadline:
            time.sleep(0.5)
        assert app.learner.source == "fine-tuned ensemble", app.store.messages
        ranked = app.queue.next("one", "margin", "all", 5)
        assert "scored by the fine-tuned ensemble v1" in ranked["ordered_by"]
        assert all(0 <= r["probabilities"]["zero"] <= 1 for r in ranked["rows"])
    finally:
        app.stop()
        app.learner.join()


@pytest.mark.slow
def test_images_added_to_the_table_since_the_embed_are_embedded_in_the_background(lab):
    """The cached features rank the queue at once; the added rows get theirs without a restart."""
    import json
    import shutil

    import pandas as pd

    from patchcfg.label.server import build
    from patchcfg.stages import run_embed

    config, labels, root = lab
    run_embed(config, root=root, verbose=0)
    table = pd.read_csv(labels, dtype=str, keep_default_na=False)
    for j in (24, 25):
        shutil.copy(labels.parent / "img" / f"{j - 20}.png", labels.parent / "img" / f"{j}.png")
    added = pd.DataFrame({"filepath": ["img/24.png", "img/25.png"], "validation": "False"})
    pd.concat([table, added]).fillna("").to_csv(labels, index=False)
    app = build(config, root, embed=True, log=lambda text: None)
    app.start()
    try:
        assert app.learner.snapshot().has_features.tolist() == [True] * 24 + [False] * 2  # ranked at once
        deadline = time.time() + 240
        while not app.learner.snapshot().has_features.all() and time.time() < deadline:
            time.sleep(0.2)
        assert app.learner.features_state == "ready", app.learner.features_message
        assert app.learner.snapshot().has_features.tolist() == [True] * 26
        summary = json.loads((root / "lab" / "embed" / "summary.json").read_text())
        assert summary["images"] == 26 and summary["kept"] == 24
    finally:
        app.stop()
        app.learner.join()


@pytest.mark.slow
def test_an_image_the_embed_skipped_as_unreadable_is_not_embedded_again_at_each_start(lab):
    from patchcfg.label.server import build
    from patchcfg.stages import run_embed

    config, labels, root = lab
    config["data"]["on_bad_image"] = "skip"
    (labels.parent / "img" / "3.png").write_bytes(b"not an image")
    assert run_embed(config, root=root, verbose=0)["skipped_images"] == 1
    messages = []
    app = build(config, root, embed=True, log=messages.append)
    app.start()
    try:
        app.learner.join()
        assert app.learner.snapshot().has_features.tolist() == [True] * 3 + [False] + [True] * 20
        assert not any("embedding" in m for m in messages), messages
        assert app.learner.features_state == "ready"
    finally:
        app.stop()
        app.learner.join()
