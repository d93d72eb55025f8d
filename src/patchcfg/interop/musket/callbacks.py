"""Musket ``callbacks`` (and a stage's) as ours: EarlyStopping, ReduceLROnPlateau, CyclicLR."""

from __future__ import annotations

import copy
from typing import Any

from patchcfg.interop.musket.metrics import convert_metric
from patchcfg.interop.musket.report import Report
from patchcfg.interop.musket.values import FINETUNE, fits, items_of, mapping_form, schema_node, show

_OUR_CALLBACKS = ("EarlyStopping", "ReduceLROnPlateau", "CyclicLR")
_CALLBACK_NOTES = {
    "TensorBoard": "not needed (every stage writes TensorBoard logs into the experiment folder)",
    "ModelCheckpoint": "not needed (the best epoch of each stage by primary_metric is always kept)",
    "CSVLogger": "not needed (every epoch is written to the stage's metrics.csv)",
}
_CALLBACK_LOST = {
    "LRVariator": "no equivalent; use finetune.callbacks.CyclicLR or finetune.optimizer.schedule",
    "LearningRateScheduler": "no equivalent; use finetune.optimizer.schedule",
}

VERBOSE_NOTE = "not needed (every epoch is logged to metrics.csv and TensorBoard)"


def convert_callbacks(value: Any, path: tuple, report: Report) -> dict:
    items = items_of(value)
    if items is None:
        report.lost(path, f"expected a mapping of callback names to arguments, got {show(value)}")
        return {}
    out: dict = {}
    for name, args, rel in items:
        where = path + rel
        if name in _CALLBACK_NOTES:
            report.note(where, _CALLBACK_NOTES[name])
            continue
        if name not in _OUR_CALLBACKS or name not in schema_node(FINETUNE, "/$defs/callbacks/properties"):
            reason = _CALLBACK_LOST.get(name, "no equivalent; patchcfg has " + ", ".join(_OUR_CALLBACKS))
            report.lost(where, reason)
            continue
        if args is None:
            args = {}
        if not isinstance(args, dict):
            report.lost(where, f"expected a mapping of arguments, got {show(args)}")
            continue
        pointer = f"/$defs/callbacks/properties/{name}"
        form = mapping_form(FINETUNE, pointer) or pointer
        props = schema_node(FINETUNE, form).get("properties", {})
        converted = {}
        for arg, arg_value in args.items():
            arg_path = where + (arg,)
            if arg == "verbose":
                report.note(arg_path, VERBOSE_NOTE)
            elif arg == "monitor":
                monitor = convert_metric(arg_value, arg_path, report)
                if monitor is not None:
                    converted["monitor"] = monitor
            elif arg not in props:
                report.lost(arg_path, f"{name} has no '{arg}' in patchcfg; it takes {', '.join(props)}")
            else:
                problem = fits(FINETUNE, f"{form}/properties/{arg}", arg_value)
                if problem:
                    report.lost(arg_path, f"{show(arg_value)}: {problem}")
                else:
                    converted[arg] = copy.deepcopy(arg_value)
        out[name] = converted
    return out
