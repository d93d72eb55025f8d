"""Musket ``stages``, the training phases, as ours: epochs, lr, loss, negatives, (un)freezing,
initial weights, callbacks."""

from __future__ import annotations

import copy
from typing import Any

from patchcfg.interop.musket.callbacks import convert_callbacks
from patchcfg.interop.musket.losses import convert_loss
from patchcfg.interop.musket.report import Report
from patchcfg.interop.musket.values import as_int, as_number, negatives, show


def convert_phase(phase: Any, path: tuple, global_callbacks: dict, report: Report) -> dict | None:
    """One entry of Musket's ``stages`` as an entry of ``finetune.stages``; None when it is no mapping."""
    if not isinstance(phase, dict):
        report.lost(path, f"expected a mapping (epochs, lr, ...), got {show(phase)}")
        return None
    out: dict = {}
    own_callbacks = None
    for key, value in phase.items():
        where = path + (key,)
        if key == "epochs":
            epochs = as_int(value)
            if epochs is None or epochs < 1:
                report.lost(where, f"expected a whole number >= 1, got {show(value)}")
            else:
                out["epochs"] = epochs
        elif key == "lr":
            if as_number(value) is None or value <= 0:
                report.lost(where, f"expected a number > 0, got {show(value)}")
            else:
                out["lr"] = value
        elif key == "loss":
            loss = convert_loss(value, where, report)
            if loss is not None:
                out["loss"] = loss
        elif key == "negatives":
            count = negatives(value)
            if count is None:
                report.lost(where, f"expected none, real or a whole number >= 0, got {show(value)}")
            else:
                out["negatives"] = count
        elif key == "validation_negatives":
            report.lost(where, "validation always uses every validation row of the label table")
        elif key in ("unfreeze_encoder", "freeze_encoder"):
            if isinstance(value, bool):
                out[key] = value
            else:
                report.lost(where, f"expected true or false, got {show(value)}")
        elif key == "initial_weights":
            if isinstance(value, str) and value:
                out["initial_weights"] = value
                report.note(where, "must be a patchcfg model.keras or .weights.h5 file; Musket's weight "
                                   "files do not load into a patchcfg model")
            else:
                report.lost(where, f"expected a file path, got {show(value)}")
        elif key == "callbacks":
            own_callbacks = convert_callbacks(value, where, report)
        elif key == "extra_callbacks":
            continue  # below, once the phase's own callbacks are known
        else:
            report.lost(where, "no equivalent stage setting; a stage takes epochs, lr, loss, negatives, "
                               "unfreeze_encoder, initial_weights and callbacks")
    if "extra_callbacks" in phase:
        extra = convert_callbacks(phase["extra_callbacks"], path + ("extra_callbacks",), report)
        base = own_callbacks if own_callbacks is not None else global_callbacks
        own_callbacks = {**copy.deepcopy(base), **extra}
        replaced = [name for name in extra if name in base]
        detail = f" ({', '.join(replaced)} replacing the one above)" if replaced else ""
        report.note(path + ("extra_callbacks",), f"added to this stage's callbacks{detail}")
    if own_callbacks is not None:
        out["callbacks"] = own_callbacks
    if "epochs" not in out:
        out["epochs"] = 10
        if "epochs" not in phase:
            report.lost(path, "a stage needs epochs; set to 10")
        else:
            report.note(path + ("epochs",), "set to 10")
    return out
