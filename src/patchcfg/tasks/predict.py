"""Batched inference: test-time augmentation (flips, dihedral) and fold ensembling.

The probability of an image is the mean over models (folds) and over TTA views of each model's
output, so ``--folds all --tta flips`` equals averaging the individual predictions by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from patchcfg.errors import UserError

TTA_VIEWS = {"none": 1, "flips": 4, "flips_rot90": 8}


def tta_views(images, tta: str) -> list:
    """The views of a batch: identity, then flips (and 90-degree rotations) of it."""
    import tensorflow as tf

    if tta not in TTA_VIEWS:
        raise UserError(f"tta: {tta!r} is not one of: {', '.join(TTA_VIEWS)}")
    views = [images]
    if tta in ("flips", "flips_rot90"):
        views += [tf.reverse(images, [2]), tf.reverse(images, [1]), tf.reverse(images, [1, 2])]
    if tta == "flips_rot90":
        transposed = tf.transpose(images, [0, 2, 1, 3])
        views += [transposed, tf.reverse(transposed, [2]), tf.reverse(transposed, [1]),
                  tf.reverse(transposed, [1, 2])]
    return views


def predict_arrays(models: list, images: np.ndarray, data_cfg: dict, tta: str = "none",
                   batch_size: int = 256) -> np.ndarray:
    """Mean probability over ``models`` and TTA views for images in [0, 1] (N, H, W, C)."""
    import tensorflow as tf

    from patchcfg.data.loading import normalizer
    from patchcfg.models.classifier import output_width, probabilities

    if images.shape[1] != images.shape[2] and tta == "flips_rot90":
        raise UserError("tta flips_rot90 needs square images (data.imshape with equal sides); use flips")
    normalize = normalizer(data_cfg, images.shape[-1])
    total = None
    for model in models:
        def forward(x, m=model):
            return tf.cast(probabilities(m(normalize(x), training=False)), tf.float32)

        outputs = []
        for start in range(0, len(images), batch_size):
            batch = tf.constant(images[start:start + batch_size])
            views = tta_views(batch, tta)
            outputs.append(tf.add_n([forward(v) for v in views]).numpy() / len(views))
        predictions = np.concatenate(outputs, 0) if outputs else np.zeros((0, output_width(model)), np.float32)
        total = predictions if total is None else total + predictions
    return total / len(models)


def predict_paths(models: list, paths, data_cfg: dict, tta: str = "none") -> np.ndarray:
    """:func:`predict_arrays` on image files; with ``data.crops`` > 1 on each image's cells, their
    probabilities reduced per image by ``data.crop_reduce``."""
    from patchcfg.data import crops
    from patchcfg.data.loading import load_images

    n = crops.crops_of(data_cfg)
    if n == 1:
        return predict_arrays(models, load_images(list(paths), data_cfg), data_cfg, tta)
    cells = predict_arrays(models, crops.load_cells(paths, data_cfg), data_cfg, tta)
    return crops.reduce(cells, n, data_cfg["crop_reduce"])


class Predictor:
    """An actor of ``predict --engine ray`` (:func:`patchcfg.tasks.ray_engine.map_in_order`): the
    models of ``source`` (:func:`resolve_models`, loaded once), and a batch of rows
    ``{position, path}`` -> ``{position, probabilities}`` (:func:`predict_paths`)."""

    def __init__(self, source: str, folds: str, data_cfg: dict, tta: str, threads: int | None = None):
        from patchcfg.tasks.ray_engine import set_threads

        set_threads(threads)
        self.models, _, _ = resolve_models(source, folds)
        self.data_cfg, self.tta = data_cfg, tta

    def __call__(self, batch: dict) -> dict:
        probabilities = predict_paths(self.models, batch["path"].tolist(), self.data_cfg, self.tta)
        return {"position": np.asarray(batch["position"]), "probabilities": np.asarray(probabilities, np.float32)}


def _load(path: Path):
    import keras

    import patchcfg.models.backbones  # noqa: F401  (registers custom layers)

    try:
        return keras.saving.load_model(str(path), compile=False)
    except (ValueError, OSError) as error:
        raise UserError(f"{path}: cannot load the model ({str(error)[:300]})") from None


def finetune_stage(source: Path) -> tuple[Path, dict | None]:
    """The finetune stage folder of an experiment folder (or that folder itself) and its
    ``summary.json`` (None until the stage is complete)."""
    stage = source if source.name == "finetune" and (source / "summary.json").is_file() else source / "finetune"
    try:
        return stage, json.loads((stage / "summary.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        return stage, None


def resolve_models(source: str | Path, folds: str = "all") -> tuple[list, dict, list[str] | None]:
    """Models, data config and class names from an experiment folder, its finetune stage, or a model file.

    ``folds``: ``all`` (ensemble every fold) or a comma-separated list of fold numbers.
    """
    import yaml

    source = Path(source)
    if source.is_file():
        model = _load(source)
        shape = model.input_shape[1:]
        return [model], {"imshape": [shape[0], shape[1]], "channels": shape[2], "normalize": "unit"}, None
    stage, summary = finetune_stage(source)
    if summary is None:
        raise UserError(f"{source}: not a model file nor an experiment with a complete finetune stage "
                        "(expected finetune/summary.json); run `patchcfg finetune` first")
    config = yaml.safe_load((stage.parent / "config.yaml").read_text(encoding="utf-8"))
    available = sorted(int(p.parent.name.split("_")[1]) for p in stage.glob("fold_*/model.keras"))
    if not available:
        raise UserError(f"{stage}: no fold_*/model.keras")
    if folds == "all":
        chosen = available
    else:
        try:
            chosen = [int(f) for f in str(folds).split(",")]
        except ValueError:
            raise UserError(f"--folds: expected 'all' or fold numbers like 0,2 (got {folds!r})") from None
        unknown = [f for f in chosen if f not in available]
        if unknown:
            raise UserError(f"--folds: no fold {unknown[0]} in {stage} (folds: {available})")
    models = [_load(stage / f"fold_{f}" / "model.keras") for f in chosen]
    return models, config["data"], summary.get("classes")


def output_groups(source: str | Path, classes: list[str] | None, models: list | None = None) -> list:
    """The output groups of the models :func:`resolve_models` finds at ``source``: those its
    finetune ``summary.json`` records, else those of the model's named outputs (one per group),
    else the one sigmoid group over every class."""
    from patchcfg.models.outputs import OutputGroup, groups_from_summary

    source = Path(source)
    summary = None if source.is_file() else finetune_stage(source)[1]
    if summary is not None:
        return groups_from_summary(summary.get("outputs"), summary.get("classes") or classes or [])
    model = models[0] if models else None
    if model is not None and isinstance(model.output_shape, list) and len(model.outputs) > 1:
        groups, start = [], 0
        for name, shape in zip(model.output_names, model.output_shape, strict=True):
            layer = model.get_layer(name)
            n, activation = int(shape[-1]), layer.get_config().get("activation", "sigmoid")
            names = (classes or [])[start:start + n] or [f"class_{i}" for i in range(start, start + n)]
            groups.append(OutputGroup(layer.name.removeprefix("output_"), tuple(names),
                                      "softmax" if activation == "softmax" else "sigmoid", None, 1.0, start, start + n))
            start += n
        return groups
    width = len(classes) if classes else 0
    return groups_from_summary(None, classes or [f"class_{i}" for i in range(width)])


def predict_images(source, images: list[str], *, tta: str = "none", folds: str = "all",
                   on_bad_image: str = "error", engine: str = "local", address: str | None = None,
                   actors: int | None = None, ray_actor: type | None = None):
    """(A DataFrame: filepath, then one probability column per class; the images skipped).
    ``engine="ray"``: the actors of the Ray cluster at ``address`` (:mod:`patchcfg.tasks.ray_engine`,
    ``actors`` of them, each a ``ray_actor``) compute the probabilities."""
    import pandas as pd

    from patchcfg.data.loading import check_images
    from patchcfg.label_table import list_images
    from patchcfg.tasks.ray_engine import check_engine

    check_engine(engine, address=address, actors=actors)
    if engine == "ray":
        from patchcfg.tasks.ray_engine import connect

        connect(address)

    paths: list[str] = []
    for spec in images:
        paths += [spec] if Path(spec).is_file() and Path(spec).suffix.lower() != ".txt" else list_images(spec)
    models, data_cfg, classes = resolve_models(source, folds)
    data_cfg = {**data_cfg, "on_bad_image": on_bad_image}
    good, skipped = check_images(paths, on_bad_image, data_cfg=data_cfg)
    if engine == "ray" and good:
        import os

        from patchcfg.data import crops
        from patchcfg.tasks.ray_engine import PREDICT_BATCH, map_in_order

        constructor = {"source": os.path.abspath(source), "folds": folds, "data_cfg": data_cfg, "tta": tta}
        probabilities = np.concatenate(list(map_in_order(
            good, ray_actor or Predictor, constructor, "probabilities", address=address, actors=actors,
            batch_size=max(1, PREDICT_BATCH // crops.crops_of(data_cfg) ** 2))), 0)
    else:
        probabilities = predict_paths(models, good, data_cfg, tta)
    classes = classes or [f"class_{i}" for i in range(probabilities.shape[1])]
    frame = pd.DataFrame(probabilities, columns=classes)
    frame.insert(0, "filepath", good)
    return frame, skipped


def ensemble_probabilities(models, model_data, paths, classes: int, data_cfg: dict, tta: str, fill):
    """(probabilities, rows): the fold ensemble's scores of every readable image of ``paths``
    (``fill`` on the others), read in blocks of 2048 images (bounded memory for large tables)."""
    from patchcfg.data.loading import check_images, load_images

    good, _ = check_images(paths, "skip", data_cfg=data_cfg)
    good_set = set(good)
    rows = np.array([i for i, p in enumerate(paths) if p in good_set], int)
    probabilities = np.full((len(paths), classes), fill, np.float32)
    for start in range(0, len(rows), 2048):
        chunk = rows[start:start + 2048]
        images = load_images([paths[i] for i in chunk], model_data)
        probabilities[chunk] = predict_arrays(models, images, model_data, tta)
    return probabilities, rows
