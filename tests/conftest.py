"""Shared test data: a small labelled digits table and a tiny fine-tuning config."""

import numpy as np
import pandas as pd
import pytest


def small_digits_table(folder, n=72):
    """Digits 0/1/2 as 16x16 PNGs; classes zero, one; every row labelled, 24 validation rows."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    keep = np.flatnonzero(digits.target < 3)[:n]
    (folder / "img").mkdir(parents=True)
    rows = []
    for j, i in enumerate(keep):
        pixels = (digits.images[i] / 16 * 255).astype(np.uint8)
        Image.fromarray(pixels).resize((16, 16)).convert("RGB").save(folder / "img" / f"{j}.png")
        t = digits.target[i]
        rows.append({"filepath": f"img/{j}.png", "validation": j % 3 == 0,
                     "zero": int(t == 0), "one": int(t == 1) if j % 5 else ""})
    pd.DataFrame(rows).to_csv(folder / "labels.csv", index=False)
    return folder / "labels.csv"


def small_finetune_config(folder, labels, **finetune):
    import yaml

    section = {"encoder": None, "batch_size": 16, "steps_per_epoch": 2, "head": {"units": [8], "dropout": 0.0},
               "stages": [{"epochs": 2, "lr": 0.01, "freeze_encoder": True},
                          {"epochs": 1, "lr": 0.01, "unfreeze_encoder": True}], **finetune}
    config = {"name": "ft", "seed": 3, "data": {"labels": str(labels), "imshape": [16, 16]},
              "backbone": {"name": "tiny"}, "augmentation": {"preset": "none"}, "finetune": section}
    path = folder / "ft.yaml"
    path.write_text(yaml.safe_dump(config))
    return path




@pytest.fixture(scope="session")
def digits_table():
    """``digits_table(folder, n=72)`` -> path of a labels.csv (classes zero, one) beside 16x16 PNGs."""
    return small_digits_table


@pytest.fixture(scope="session")
def finetune_config():
    """``finetune_config(folder, labels, **finetune_keys)`` -> path of a tiny, fast finetune config."""
    return small_finetune_config
