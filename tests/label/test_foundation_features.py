"""The labelling app on a KerasHub encoder's cached features: the quick head fits and ranks."""

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from patchcfg.cli import main

pytestmark = pytest.mark.slow
pytest.importorskip("keras_hub")


def test_the_label_app_ranks_on_foundation_features(tmp_path, digits_table, hub_preset, client_of):
    from patchcfg.config import load_config

    labels = digits_table(tmp_path / "data", n=24)
    frame = pd.read_csv(labels, dtype=str, keep_default_na=False)
    frame[["zero", "one"]] = ""
    frame["validation"] = "False"
    frame.to_csv(labels, index=False)
    config_path = tmp_path / "lab.yaml"
    config_path.write_text(yaml.safe_dump({
        "name": "lab", "seed": 1, "data": {"labels": str(labels), "imshape": [16, 16]},
        "backbone": {"name": "keras_hub", "preset": str(hub_preset("dinov2")), "pooling": "mean"},
        "augmentation": {"preset": "none"}}))
    root = tmp_path / "experiments"
    result = CliRunner().invoke(main, ["embed", str(config_path), "--experiments", str(root)])
    assert result.exit_code == 0, result.output
    config = load_config(config_path, ["query={}", "label={}"])
    c = client_of(config, root)
    c.label_app.learner.join()
    c.post("/api/label", json={"rows": [0, 1, 2, 3], "changes": {"zero": 1, "one": 0}})
    c.post("/api/label", json={"rows": [4, 5, 6, 7], "changes": {"zero": 0, "one": 1}})
    fitted = c.post("/api/retrain").json()
    assert fitted["version"] >= 1 and fitted["source"] == "quick head"
    queue = c.get("/api/queue?strategy=entropy&n=5").json()
    assert all(r["probabilities"] is not None for r in queue["rows"])
    assert not {r["row"] for r in queue["rows"]} & set(range(8))
