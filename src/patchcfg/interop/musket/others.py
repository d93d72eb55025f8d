"""Every other Musket key: handled elsewhere, not needed (a note), or not converted (and why)."""

from __future__ import annotations

from patchcfg.interop.musket.callbacks import VERBOSE_NOTE
from patchcfg.interop.musket.report import Report
from patchcfg.interop.musket.values import as_int, show

_DATA_KEYS = {
    "dataset": "patchcfg reads images and labels from a label table: set data.labels to a CSV with "
               "filepath, validation and one column per class (`patchcfg init` builds one)",
    "datasets": "patchcfg reads images and labels from a label table (data.labels)",
    "dataset_augmenter": "patchcfg reads images and labels from a label table (data.labels)",
    "extra_train_data": "add the rows to the label table (data.labels) instead",
    "add_to_train": "add the rows to the label table (data.labels) instead",
    "testSplit": "mark held-out rows in the label table's validation column, e.g. "
                 "`patchcfg init IMAGES --validation-fraction 0.2`",
    "testSplitSeed": "held-out rows are the label table's validation column, fixed when the table is written",
    "validationSplit": "mark held-out rows in the label table's validation column, e.g. "
                       "`patchcfg init IMAGES --validation-fraction 0.2`",
    "holdout": "mark held-out rows in the label table's validation column",
    "holdoutSplit": "mark held-out rows in the label table's validation column",
    "groupFunc": "no equivalent; folds are drawn over the labelled training rows, fixed by seed",
    "stratified": "no equivalent; folds are fixed by seed and batches are drawn by finetune.sampler",
}
_OTHER_KEYS = {
    "imports": "custom Musket code is not loaded; give your own losses and backbones as module:function",
    "transforms": "no equivalent; images are resized to data.imshape and scaled by data.normalize",
    "manualResize": "images are always resized to data.imshape (data.resize picks the interpolation)",
    "inference_batch": "no separate prediction batch size",
    "clipvalue": "no equivalent; use finetune.optimizer.clipnorm",
    "needsSessionForPrediction": "no equivalent",
}
_NOTE_KEYS = {
    "copyWeights": "not needed (ImageNet weights are adapted to other channel counts by "
                   "backbone.channel_adapter: auto)",
    "verbose": VERBOSE_NOTE,
    "dumpPredictionsToCSV": "not needed (finetune always writes predictions.csv)",
    "final_metrics": "not needed (summary.json holds every metric per fold, with mean and std)",
}
_HANDLED = {
    "architecture", "classifier", "weights", "encoder_weights", "pooling", "shape", "input_shape",
    "classes", "activation", "dropout", "optimizer", "lr", "clipnorm", "batch", "loss", "metrics",
    "primary_metric", "primary_metric_mode", "callbacks", "stages", "folds_count", "random_state",
    "freeze_encoder", "augmentation", "testTimeAugmentation", "crops",
}


def convert_others(musket: dict, report: Report) -> None:
    m = musket
    for key in m:
        if key in _HANDLED:
            continue
        if key in _DATA_KEYS:
            report.lost((key,), _DATA_KEYS[key])
        elif key in _OTHER_KEYS:
            report.lost((key,), _OTHER_KEYS[key])
        elif key in _NOTE_KEYS:
            report.note((key,), _NOTE_KEYS[key])
        else:
            report.lost((key,), "unknown Musket key")
    if "classes" in m:
        classes = m["classes"]
        if not isinstance(classes, list):  # several outputs: finetune.outputs (see finetune.py)
            report.note(("classes",), f"{show(classes)} classes: patchcfg takes the classes from the label "
                                      "table's columns (finetune.classes picks a subset)")
    if "metrics" in m:
        report.note(("metrics",), "not needed (patchcfg always computes masked per-class and macro AUC, "
                                  "F1, precision, recall and accuracy, and the loss)")
    if "random_state" in m:
        seed = as_int(m["random_state"])
        if seed is None or seed < 0:
            report.lost(("random_state",), f"expected a whole number >= 0, got {show(m['random_state'])}")
        else:
            report.note(("random_state",), "-> seed (it fixes the folds, and every other random choice)")
