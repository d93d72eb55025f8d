"""Learning-rate range test (Smith 2017, "Cyclical Learning Rates for Training Neural Networks").

Train the first fine-tuning phase (of ``finetune.stages``) for a few hundred steps while the
learning rate grows exponentially from ``start_lr`` to ``end_lr``; record the loss, smooth it
(exponential moving average with bias correction), and take its derivative against log10(lr). The suggestion is the
learning rate where the smoothed loss falls fastest, before it reaches its minimum.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from patchcfg.errors import UserError


def smooth(losses, beta: float = 0.98) -> np.ndarray:
    """Exponential moving average with bias correction (the first values are not pulled to 0)."""
    out, average = [], 0.0
    for i, loss in enumerate(losses, start=1):
        average = beta * average + (1 - beta) * loss
        out.append(average / (1 - beta ** i))
    return np.array(out)


def suggest(lrs, smoothed) -> tuple[float, np.ndarray]:
    """(suggested lr, derivative of the smoothed loss against log10 lr)."""
    lrs, smoothed = np.asarray(lrs, float), np.asarray(smoothed, float)
    if len(lrs) < 3:
        return float(lrs[0]) if len(lrs) else math.nan, np.zeros(len(lrs))
    derivative = np.gradient(smoothed, np.log10(lrs))
    end = int(np.argmin(smoothed)) + 1
    steepest = int(np.argmin(derivative[:max(end, 2)]))
    return float(lrs[steepest]), derivative


def lr_range_test(config: dict, *, start_lr: float = 1e-6, end_lr: float = 1.0, steps: int = 100,
                  diverge: float = 4.0, log=print) -> dict:
    """Run the test on the first fold's training rows and the first phase's settings."""
    import keras
    import tensorflow as tf

    from patchcfg.experiment import experiments_root
    from patchcfg.label_table import read_label_table
    from patchcfg.tasks.finetune import FinetuneTask, phase_settings, resolve_encoder_spec
    from patchcfg.train.optim import build_optimizer

    finetune, data_cfg = config["finetune"], config["data"]
    if not data_cfg.get("labels"):
        raise UserError("lr-find needs a label table: set data.labels or pass --labels")
    if not 0 < start_lr < end_lr:
        raise UserError(f"lr-find: need 0 < start lr < end lr (got {start_lr:g}, {end_lr:g})")
    table = read_label_table(data_cfg["labels"])
    from patchcfg.models.outputs import group_classes, resolve_groups

    classes = group_classes(resolve_groups(finetune, finetune.get("classes") or table.classes))  # model order
    labels = table.label_matrix(classes)
    rows = np.flatnonzero((labels >= 0).any(axis=1) & ~table.exclude & ~table.validation)
    if len(rows) == 0:
        raise UserError(f"{data_cfg['labels']}: no labelled training rows")
    experiment_dir = experiments_root() / config["name"]
    encoder_spec, pretrained = resolve_encoder_spec(config, experiment_dir)
    phase = phase_settings(finetune, pretrained)[0]
    paths = table.resolved_paths()
    task = FinetuneTask(config=config, classes=classes, encoder_spec=encoder_spec, phase=phase,
                        train_paths=[paths[i] for i in rows], train_labels=labels[rows], val_paths=[],
                        val_labels=labels[:0], start_weights=phase["initial_weights"], seed=int(config["seed"]))
    gbs = task.global_batch_size = int(finetune["batch_size"])
    task.build()
    schedule = keras.optimizers.schedules.ExponentialDecay(start_lr, decay_steps=max(1, steps - 1),
                                                           decay_rate=end_lr / start_lr)
    optimizer = build_optimizer(finetune.get("optimizer") or {}, 1, 1, task.trainable_variables(),
                                learning_rate=schedule)

    @tf.function
    def step(batch):
        logs, _ = task.train_step(batch, optimizer, gbs)
        return logs["loss"]

    lrs, losses = [], []
    best = math.inf
    for i, batch in enumerate(task.dataset(0).take(steps)):
        lr = float(schedule(i))
        loss = float(step(batch))
        if not math.isfinite(loss):
            break
        lrs.append(lr)
        losses.append(loss)
        smoothed_now = smooth(losses)[-1]
        best = min(best, smoothed_now)
        if i >= 10 and smoothed_now > diverge * best:
            break
    smoothed = smooth(losses)
    suggestion, derivative = suggest(lrs, smoothed)
    log(f"lr-find: {len(lrs)} steps from {start_lr:g} to {lrs[-1] if lrs else start_lr:g}; suggested lr {suggestion:.3g}")
    return {"lr": lrs, "loss": losses, "smoothed": smoothed.tolist(), "derivative": derivative.tolist(),
            "suggested_lr": suggestion}


def write_outputs(result: dict, folder: str | Path) -> tuple[Path, Path]:
    """``lr_find.csv`` and ``lr_find.png`` (loss and its smoothed derivative against the lr)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from patchcfg.atomic import atomic_write_figure, atomic_write_text

    folder = Path(folder)
    frame = pd.DataFrame({k: result[k] for k in ("lr", "loss", "smoothed", "derivative")})
    csv_path = atomic_write_text(folder / "lr_find.csv", frame.to_csv(index=False, lineterminator="\n"))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 7), sharex=True)
    top.plot(frame["lr"], frame["loss"], alpha=0.3, label="loss")
    top.plot(frame["lr"], frame["smoothed"], label="smoothed")
    bottom.plot(frame["lr"], frame["derivative"])
    for ax in (top, bottom):
        ax.axvline(result["suggested_lr"], color="red", linestyle="--", linewidth=1)
        ax.set_xscale("log")
    top.set(ylabel="loss", title=f"suggested lr {result['suggested_lr']:.3g}")
    top.legend()
    bottom.set(xlabel="learning rate", ylabel="d loss / d log10 lr")
    png_path = atomic_write_figure(folder / "lr_find.png", fig)
    plt.close(fig)
    return csv_path, png_path
