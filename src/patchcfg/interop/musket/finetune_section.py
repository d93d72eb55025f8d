"""Musket's training keys as our ``finetune`` section: head, output, loss, batch, optimizer, folds,
primary metric, callbacks, stages and test-time augmentation."""

from __future__ import annotations

import copy
from typing import Any

from patchcfg.interop.musket.callbacks import convert_callbacks
from patchcfg.interop.musket.losses import convert_loss
from patchcfg.interop.musket.metrics import convert_metric
from patchcfg.interop.musket.phases import convert_phase
from patchcfg.interop.musket.report import Report
from patchcfg.interop.musket.values import FINETUNE, as_int, as_number, schema_node, show

OPTIMIZERS = {"adam": "adam", "adamw": "adamw", "sgd": "sgd", "lars": "lars"}


def convert_finetune(musket: dict, report: Report, pooling: str | None) -> dict:
    m = musket
    out: dict = {}
    head: dict = {"type": "linear"}  # Musket: pooled features -> [Dropout] -> Dense(classes)
    head["pooling"] = pooling or "avg"
    dropout = m.get("dropout", 0)
    if as_number(dropout) is None or not 0 <= dropout < 1:
        report.lost(("dropout",), f"expected a number in [0, 1), got {show(dropout)}")
        dropout = 0
    head["dropout"] = dropout
    out["head"] = head

    groups = convert_outputs(m, report)
    if groups is not None:
        out["outputs"] = groups
    if groups is None and "activation" in m:
        activation = m["activation"]
        if activation in ("sigmoid", "softmax"):
            out["output"] = {"type": activation}
        elif isinstance(activation, list):
            report.lost(("activation",), "one activation per output (multi-output models) is not "
                                         "supported; patchcfg has one sigmoid or softmax output")
        else:
            report.lost(("activation",), f"expected sigmoid or softmax, got {show(activation)} "
                                         "(regression outputs are not supported)")

    if "loss" in m and groups is None:
        loss = convert_loss(m["loss"], ("loss",), report)
        if loss is not None:
            out["loss"] = loss
    if "loss" not in out and out.get("output", {}).get("type") == "softmax":
        out["loss"] = "masked_cce"

    batch = m.get("batch", 16)  # Musket's default batch size
    if as_int(batch) is None or as_int(batch) < 1:
        report.lost(("batch",), f"expected a whole number >= 1, got {show(batch)}")
    else:
        out["batch_size"] = as_int(batch)

    optimizer: dict = {}
    if "optimizer" in m:
        name = m["optimizer"]
        ours = OPTIMIZERS.get(name.lower()) if isinstance(name, str) else None
        if ours is None:
            report.lost(("optimizer",), f"no patchcfg optimizer like {show(name)}; ours are adam, adamw, "
                                        "sgd and lars; adam is used")
            ours = "adam"
        optimizer["name"] = ours
    if "lr" in m:
        if as_number(m["lr"]) is None or m["lr"] <= 0:
            report.lost(("lr",), f"expected a number > 0, got {show(m['lr'])}")
        else:
            optimizer["lr"] = m["lr"]
    if "clipnorm" in m:
        if as_number(m["clipnorm"]) is None or m["clipnorm"] <= 0:
            report.lost(("clipnorm",), f"expected a number > 0, got {show(m['clipnorm'])}")
        else:
            optimizer["clipnorm"] = m["clipnorm"]
    if optimizer:
        out["optimizer"] = optimizer

    folds = m.get("folds_count", 5)  # Musket trains 5 folds unless told otherwise
    if as_int(folds) is None or as_int(folds) < 1:
        report.lost(("folds_count",), f"expected a whole number >= 1, got {show(folds)}")
    else:
        out["folds_count"] = as_int(folds)

    if "primary_metric" in m:
        metric = convert_metric(m["primary_metric"], ("primary_metric",), report)
        if metric is not None:
            out["primary_metric"] = metric
    if "primary_metric_mode" in m:
        mode = m["primary_metric_mode"]
        if mode in ("auto", "min", "max"):
            out["primary_metric_mode"] = mode
        else:
            report.lost(("primary_metric_mode",), f"expected auto, min or max, got {show(mode)}")

    callbacks = convert_callbacks(m["callbacks"], ("callbacks",), report) if "callbacks" in m else {}
    if callbacks:
        out["callbacks"] = callbacks

    stages = m.get("stages")
    converted = []
    if isinstance(stages, list):
        for i, phase in enumerate(stages):
            result = convert_phase(phase, ("stages", i), callbacks, report)
            if result is not None:
                converted.append(result)
    elif "stages" in m:
        report.lost(("stages",), f"expected a list of stages, got {show(stages)}; patchcfg's default stages "
                                 "are used")
    if not converted:
        if "stages" not in m or isinstance(stages, list) and not stages:
            report.lost(("stages",), "no stages given; patchcfg's default stages are used")
        converted = copy.deepcopy(schema_node(FINETUNE, "/properties/stages/default"))
    first = converted[0]
    if "unfreeze_encoder" not in first and "freeze_encoder" not in first:
        # Musket trains the encoder from the start unless freeze_encoder is true.
        freeze = m.get("freeze_encoder", False)
        if not isinstance(freeze, bool):
            report.lost(("freeze_encoder",), f"expected true or false, got {show(freeze)}")
            freeze = False
        first["freeze_encoder"] = freeze
    elif "freeze_encoder" in m:
        report.note(("freeze_encoder",), "the first stage sets the encoder's state itself")
    out["stages"] = converted

    if "testTimeAugmentation" in m:
        tta = convert_tta(m["testTimeAugmentation"], report)
        if tta is not None:
            out["tta"] = tta
    return out


def convert_outputs(m: dict, report: Report) -> list[dict] | None:
    """Musket's several outputs (``classes: [4, 4]``, one activation and loss per output) as output
    groups, each taking its number of the label table's classes in column order; None for one output."""
    classes = m.get("classes")
    if not isinstance(classes, list):
        return None
    counts = [as_int(c) for c in classes]
    if not counts or any(c is None or c < 1 for c in counts):
        report.lost(("classes",), f"expected one whole number >= 1 per output, got {show(classes)}")
        return None
    n = len(counts)
    activation = m.get("activation", "sigmoid")
    activations = activation if isinstance(activation, list) else [activation] * n
    if len(activations) != n:
        report.lost(("activation",), f"{len(activations)} activations for {n} outputs; every output is sigmoid")
        activations = ["sigmoid"] * n
    loss = m.get("loss")
    if isinstance(loss, list) and len(loss) != n:
        report.lost(("loss",), f"{len(loss)} losses for {n} outputs; each output gets its type's default loss")
        loss = None
    groups = []
    for i, count in enumerate(counts):
        group: dict = {"classes": count}
        kind = activations[i]
        where = ("activation", i) if isinstance(activation, list) else ("activation",)
        if kind in ("sigmoid", "softmax"):
            group["type"] = kind
        else:
            report.lost(where, f"expected sigmoid or softmax, got {show(kind)}; output {i} is sigmoid")
            group["type"] = "sigmoid"
        if loss is not None:
            text = convert_loss(loss[i], ("loss", i), report) if isinstance(loss, list) else (
                convert_loss(loss, ("loss",), report) if i == 0 else groups[0].get("loss"))
            if text is not None:
                group["loss"] = text
        groups.append(group)
    spans, start = [], 0
    for i, count in enumerate(counts):
        spans.append(f"group_{i}: classes {start + 1}-{start + count}")
        start += count
    report.note(("classes",), f"{show(classes)}: one output group per output, each taking its number of the "
                              f"label table's classes in column order ({'; '.join(spans)})")
    return groups


def convert_tta(value: Any, report: Report) -> str | None:
    path = ("testTimeAugmentation",)
    if value in (None, False, "none", "None", ""):
        return "none"
    if isinstance(value, str):
        lower = value.lower()
        if any(word in lower for word in ("flip", "horizontal", "vertical")):
            ours = "flips_rot90" if any(w in lower for w in ("rot", "transpose")) else "flips"
            report.note(path, f"{value} -> {ours} (patchcfg averages over "
                              f"{'the 8 dihedral views' if ours == 'flips_rot90' else 'the 4 flips'})")
            return ours
    report.lost(path, "patchcfg's test-time augmentation, finetune.tta, is none, flips or flips_rot90")
    return None
