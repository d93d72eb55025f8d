"""Demo data: scikit-learn's 1,797 handwritten digits as 32x32 RGB PNGs and a partial label table.

Classes ``zero``..``nine`` plus two that overlap them: ``even`` (0, 2, 4, 6, 8) and ``loop``
(digits drawn with a closed loop: 0, 6, 8, 9). About 10% of the rows are validation rows (fully
labelled); of the rest about 10% carry labels, a third of those only partially. Deterministic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from patchcfg.errors import UserError
from patchcfg.label_table import LabelTable, read_label_table

DIGIT_CLASSES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
CLASSES = DIGIT_CLASSES + ["even", "loop"]
LOOP_DIGITS = (0, 6, 8, 9)


def digit_labels(digit: int) -> dict[str, float]:
    labels = {name: float(i == digit) for i, name in enumerate(DIGIT_CLASSES)}
    labels["even"] = float(digit % 2 == 0)
    labels["loop"] = float(digit in LOOP_DIGITS)
    return labels


def build_demo_table(targets: np.ndarray, filepaths: list[str], seed: int = 0,
                     validation_fraction: float = 0.1, labelled_fraction: float = 0.1,
                     partial_fraction: float = 1 / 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = len(targets)
    order = rng.permutation(n)
    n_val = int(round(validation_fraction * n))
    validation = np.zeros(n, bool)
    validation[order[:n_val]] = True
    rest = order[n_val:]
    n_lab = int(round(labelled_fraction * len(rest)))
    labelled = rest[:n_lab]
    partial = set(labelled[: int(round(partial_fraction * n_lab))].tolist())
    table = pd.DataFrame({"filepath": filepaths, "exclude": False, "validation": validation})
    for name in CLASSES:
        table[name] = np.nan
    for row in np.concatenate([order[:n_val], labelled]):
        labels = digit_labels(int(targets[row]))
        if row in partial:  # a labeller who answered only some questions about this image
            known = rng.choice(CLASSES, size=int(rng.integers(1, 4)), replace=False)
            labels = {k: v for k, v in labels.items() if k in known}
        for name, value in labels.items():
            table.at[row, name] = value
    return table


def write_demo(out: str | Path, force: bool = False) -> Path:
    """Write ``out/images/*.png`` and ``out/labels.csv``; return the label table's path."""
    from PIL import Image
    from sklearn.datasets import load_digits

    out = Path(out)
    digits = load_digits()
    images = (digits.images / 16.0 * 255.0).clip(0, 255).astype(np.uint8)
    filepaths = [f"images/digit_{i:04d}.png" for i in range(len(images))]
    table = LabelTable(df=build_demo_table(digits.target, filepaths), root=out.resolve(),
                       path=out / "labels.csv")
    labels_path = out / "labels.csv"
    if labels_path.exists() and not force:
        if labels_path.read_text(encoding="utf-8") != table.to_csv_text():
            raise UserError(
                f"{labels_path} exists and differs from the demo table (labels you added?); "
                "it is kept as it is. Use another --out, or --force to replace it (a .bak is kept)")
    (out / "images").mkdir(parents=True, exist_ok=True)
    for path, pixels in zip(filepaths, images, strict=True):
        target = out / path
        if not target.exists():
            Image.fromarray(pixels).resize((32, 32), Image.BILINEAR).convert("RGB").save(target)
    table.write(labels_path)
    read_label_table(labels_path)  # what we wrote reads back as a valid table
    return labels_path
