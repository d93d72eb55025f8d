"""Training on crops (Musket's ``crops``): each image cut into N x N cells.

With ``data.crops: N`` an image is read at N x ``data.imshape`` and cut into N² cells of
``imshape``, row by row (top-left, top-right, ..., bottom-right). Fine-tuning trains on the cells,
each with its image's labels; folds are assigned to images before the cells are made, so an
image's cells are always on the same side. Predictions cut the same way and reduce the cells'
probabilities to the image's (``data.crop_reduce``: mean or max); ``embed`` gives an image the
mean of its cells' features.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

REDUCE = {"mean": np.mean, "max": np.max}


def crops_of(data_cfg: dict) -> int:
    return int(data_cfg.get("crops") or 1)


def whole_config(data_cfg: dict) -> dict:
    """The data config that reads an image whole, at ``crops`` x ``imshape``, before it is cut."""
    n = crops_of(data_cfg)
    return {**data_cfg, "imshape": [int(v) * n for v in data_cfg["imshape"]]}


def cut(images, n: int):
    """(B, n·H, n·W, C) -> (B·n², H, W, C): each image's cells in turn, row by row. A numpy
    array gives a numpy array; a tensor (inside a ``tf.data`` map) a tensor."""
    import tensorflow as tf

    x = tf.convert_to_tensor(images)
    shape = tf.shape(x)
    h, w, c = shape[1] // n, shape[2] // n, shape[3]
    cells = tf.reshape(x[:, :h * n, :w * n], [-1, n, h, n, w, c])
    cells = tf.reshape(tf.transpose(cells, [0, 1, 3, 2, 4, 5]), [-1, h, w, c])
    return cells.numpy() if isinstance(images, np.ndarray) else cells


def reduce(probabilities: np.ndarray, n: int, how: str) -> np.ndarray:
    """(B·n², K) cell probabilities -> (B, K) per image, by ``how`` (mean or max) over its cells."""
    probabilities = np.asarray(probabilities)
    return REDUCE[how](probabilities.reshape(-1, n * n, probabilities.shape[-1]), axis=1)


def load_cells(paths, data_cfg: dict) -> np.ndarray:
    """Every image's cells at ``imshape``, (len(paths)·n², H, W, C) in [0, 1]."""
    from patchcfg.data.loading import load_images

    return cut(load_images(list(paths), whole_config(data_cfg)), crops_of(data_cfg))


def cell_files(paths, data_cfg: dict, folder: Path) -> list[list[str]]:
    """The cells of each image as ``.npy`` files (float32 in [0, 1]) under ``folder``, written
    once (named after the image's path and the cut), so training reads them as images."""
    n, folder = crops_of(data_cfg), Path(folder)
    out, missing = [], []
    for path in map(str, paths):
        key = hashlib.sha1(f"{path}|{n}|{list(data_cfg['imshape'])}".encode()).hexdigest()[:20]
        files = [str(folder / f"{key}_{i}.npy") for i in range(n * n)]
        out.append(files)
        if not all(Path(f).is_file() for f in files):
            missing.append((path, files))
    folder.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(missing), 256):
        chunk = missing[start:start + 256]
        cells = load_cells([p for p, _ in chunk], data_cfg)
        for j, (_, files) in enumerate(chunk):
            for i, file in enumerate(files):
                tmp = f"{file}.tmp.npy"
                np.save(tmp, cells[j * n * n + i].astype(np.float32))
                Path(tmp).replace(file)
    return out


def expand(labels: np.ndarray, cells: list[list[str]], overrides: dict | None = None,
           images=None) -> tuple[list[str], np.ndarray]:
    """Rows -> cell rows: each image's cell files in order, each with the image's labels, or where
    ``overrides`` (:func:`read_cell_labels`, keyed by the real path of ``images[i]`` and the cell)
    knows a label, that one."""
    import os

    labels = np.asarray(labels)
    per_image = len(cells[0]) if cells else 1
    expanded = np.repeat(labels, per_image, axis=0)
    for i, image in enumerate(images if overrides else []):
        for j in range(per_image):
            own = overrides.get((os.path.realpath(image), j))
            if own is not None:
                row = expanded[i * per_image + j]
                expanded[i * per_image + j] = np.where(own >= 0, own, row)
    return [c for files in cells for c in files], expanded


def read_cell_labels(path: str, classes: list[str], n: int) -> dict[tuple[str, int], np.ndarray]:
    """``data.cell_labels``: (real image path, cell) -> labels over ``classes`` (-1 where blank)."""
    import os

    import pandas as pd

    from patchcfg.errors import UserError

    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise UserError(f"data.cell_labels: cannot read {path} ({str(error)[:200]})") from None
    missing = [c for c in ("filepath", "cell") if c not in frame.columns]
    if missing:
        raise UserError(f"data.cell_labels: {path}:1: no {' or '.join(missing)} column (columns: filepath, cell, "
                        "then classes)")
    unknown = [c for c in frame.columns if c not in ("filepath", "cell", *classes)]
    if unknown:
        raise UserError(f"data.cell_labels: {path}:1: {', '.join(unknown)} not among the classes "
                        f"({', '.join(classes)})")
    root, out = os.path.dirname(os.path.abspath(path)), {}
    for line, row in enumerate(frame.to_dict("records"), start=2):
        if not row["cell"].strip().isdigit() or not 0 <= int(row["cell"]) < n * n:
            raise UserError(f"data.cell_labels: {path}:{line}: cell {row['cell']!r} is not a whole number from 0 "
                            f"to {n * n - 1} (data.crops {n}: cells row by row)")
        values = np.full(len(classes), -1.0, np.float32)
        for k, cls in enumerate(classes):
            text = str(row.get(cls, "")).strip()
            if text not in ("", "0", "1", "0.0", "1.0"):
                raise UserError(f"data.cell_labels: {path}:{line}: {cls} is {text!r}; write 1, 0 or leave it blank")
            values[k] = float(text) if text else -1.0
        image = row["filepath"] if os.path.isabs(row["filepath"]) else os.path.join(root, row["filepath"])
        out[(os.path.realpath(image), int(row["cell"]))] = values
    return out
