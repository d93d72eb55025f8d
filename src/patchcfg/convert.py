"""Musket classification-pipeline configs turned into patchcfg configs.

Musket (``musket-ml/classification_training_pipeline``) describes an experiment in one YAML file
much like ours: an architecture, an imgaug augmentation recipe, an optimizer, callbacks and
training stages. :func:`musket_to_patchcfg` maps each of its keys onto our sections and says, one
line per key, what it could not map and why::

    >>> config, messages = musket_to_patchcfg(
    ...     {"architecture": "ResNet50", "shape": [224, 224, 3], "activation": "sigmoid",
    ...      "loss": "binary_crossentropy+0.1*dice_loss", "stages": [{"epochs": 5}]}, "old")
    >>> config["backbone"]["name"], config["data"]["imshape"], config["finetune"]["loss"]
    ('ResNet50', [224, 224], 'masked_bce+0.1*dice')

The result always validates against ``schemas/`` (anything else is a bug in this module), except
that ``data.labels`` is a placeholder: Musket reads its data through Python code, we read a label
table. :func:`convert_musket_file` reads a file (with line numbers for the messages) and renders
the YAML with a header listing what was not converted. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import copy
import difflib
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from patchcfg.errors import ConfigError

__all__ = ["musket_to_patchcfg", "convert_musket_file", "render_yaml", "name_from_path",
           "LABELS_PLACEHOLDER"]

LABELS_PLACEHOLDER = "labels.csv"
_AUGMENTATION = "augmentation.schema.json"
_FINETUNE = "finetune.schema.json"
NOT_CONVERTED = "not converted"

# keras.applications constructors (Keras 3): Musket's CamelCase names pass through unchanged.
KERAS_APPLICATIONS = (
    "Xception", "VGG16", "VGG19", "ResNet50", "ResNet101", "ResNet152", "ResNet50V2", "ResNet101V2",
    "ResNet152V2", "InceptionV3", "InceptionResNetV2", "MobileNet", "MobileNetV2", "MobileNetV3Small",
    "MobileNetV3Large", "DenseNet121", "DenseNet169", "DenseNet201", "NASNetMobile", "NASNetLarge",
    *(f"EfficientNetB{i}" for i in range(8)), "EfficientNetV2B0", "EfficientNetV2B1",
    "EfficientNetV2B2", "EfficientNetV2B3", "EfficientNetV2S", "EfficientNetV2M", "EfficientNetV2L",
    "ConvNeXtTiny", "ConvNeXtSmall", "ConvNeXtBase", "ConvNeXtLarge", "ConvNeXtXLarge",
)
_KERAS_BY_LOWER = {name.lower(): name for name in KERAS_APPLICATIONS}
# Musket's ResNet-18/34 (classification_models) have no keras.applications twin: our built-ins.
_SMALL_RESNETS = {"resnet18": "resnet18", "resnet34": "resnet34"}

# Musket / Keras loss names -> our registered losses (patchcfg.losses).
LOSS_NAMES = {
    "binary_crossentropy": "masked_bce", "bce": "masked_bce", "dice_loss": "dice",
    "focal_loss": "masked_focal", "focal": "masked_focal", "categorical_crossentropy": "masked_cce",
    "masked_bce": "masked_bce", "masked_focal": "masked_focal", "dice": "dice", "masked_cce": "masked_cce",
}

# Musket metric names (without val_) -> ours (without val_); ours are masked, per class, macro-averaged.
METRIC_NAMES = {
    "loss": "loss",
    "binary_accuracy": "macro_accuracy", "accuracy": "macro_accuracy", "acc": "macro_accuracy",
    "categorical_accuracy": "macro_accuracy", "macro_accuracy": "macro_accuracy",
    "macro_f1": "macro_f1", "f1": "macro_f1", "f1_score": "macro_f1", "fmeasure": "macro_f1",
    "auc": "macro_auc", "roc_auc": "macro_auc", "macro_auc": "macro_auc",
    "precision": "macro_precision", "macro_precision": "macro_precision",
    "recall": "macro_recall", "macro_recall": "macro_recall",
}

_MUSKET_LOSSES = ("binary_crossentropy", "categorical_crossentropy", "dice_loss", "focal_loss")

OPTIMIZERS = {"adam": "adam", "adamw": "adamw", "sgd": "sgd", "lars": "lars"}

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

_AUG_CONTROL_FLOW = ("Sometimes", "OneOf", "SomeOf", "Sequential")
_AUG_SUGGESTIONS = {
    "AverageBlur": "GaussianBlur", "MedianBlur": "GaussianBlur", "MotionBlur": "GaussianBlur",
    "ElasticTransformation": "RandomElasticTransform", "PiecewiseAffine": "RandomElasticTransform",
    "EdgeDetect": "sobel_prob", "DirectedEdgeDetect": "sobel_prob", "Emboss": "Sharpen",
    "AddElementwise": "Add", "MultiplyElementwise": "Multiply", "PerspectiveTransform": "RandomPerspective",
    "CoarseSaltAndPepper": "CoarseDropout", "SaltAndPepper": "Dropout",
}

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
    "crops": "training on crops is not supported; tile the images beforehand and list the tiles",
    "transforms": "no equivalent; images are resized to data.imshape and scaled by data.normalize",
    "manualResize": "images are always resized to data.imshape (data.resize picks the interpolation)",
    "inference_batch": "no separate prediction batch size",
    "clipvalue": "no equivalent; use finetune.optimizer.clipnorm",
    "needsSessionForPrediction": "no equivalent",
}
_NOTE_KEYS = {
    "copyWeights": "not needed (ImageNet weights are adapted to other channel counts by "
                   "backbone.channel_adapter: auto)",
    "verbose": "not needed (every epoch is logged to metrics.csv and TensorBoard)",
    "dumpPredictionsToCSV": "not needed (finetune always writes predictions.csv)",
    "final_metrics": "not needed (summary.json holds every metric per fold, with mean and std)",
}
_HANDLED = {
    "architecture", "classifier", "weights", "encoder_weights", "pooling", "shape", "input_shape",
    "classes", "activation", "dropout", "optimizer", "lr", "clipnorm", "batch", "loss", "metrics",
    "primary_metric", "primary_metric_mode", "callbacks", "stages", "folds_count", "random_state",
    "freeze_encoder", "augmentation", "testTimeAugmentation",
}


# --------------------------------------------------------------------------- small helpers

def name_from_path(path: str | Path) -> str:
    """An experiment name from a file name: its stem with runs of other characters made '-'.

    Musket keeps each experiment as ``experiments/<name>/config.yaml``; a file named ``config``
    takes its folder's name instead.
    """
    path = Path(path)
    stem = path.stem
    if stem.lower() == "config" and path.resolve().parent.name:
        stem = path.resolve().parent.name
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-")
    return name or "musket"


def _dotted(path: tuple) -> str:
    return ".".join(str(p) for p in path)


def _int(value: Any) -> int | None:
    """An integer, also from an integral float (YAML ``10.0``); None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _number(value: Any) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


def _show(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def _schemas() -> dict[str, dict]:
    from patchcfg.config.schema import load_schemas

    return load_schemas()


def _node(schema_id: str, pointer: str) -> dict:
    node: Any = _schemas()[schema_id]
    for part in pointer.strip("/").split("/") if pointer.strip("/") else []:
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def _fits(schema_id: str, pointer: str, value: Any) -> str | None:
    """None when ``value`` is valid for the schema at ``schema_id#pointer``, else why not."""
    from patchcfg.config.schema import validator

    check = validator({"$ref": f"{schema_id}#{pointer}"})
    error = jsonschema.exceptions.best_match(check.iter_errors(value))
    if error is None:
        return None
    kind = _node(schema_id, pointer).get("x-kind")
    if kind and not error.absolute_path:
        return f"expected {kind}"
    where = ".".join(str(p) for p in error.absolute_path)
    return f"{where}: {error.message}" if where else error.message


def _mapping_form(schema_id: str, pointer: str, depth: int = 0) -> str | None:
    """The pointer of the ``{param: ...}`` form of an augmenter or callback schema, if it has one."""
    node = _node(schema_id, pointer)
    if not isinstance(node, dict) or depth > 8:
        return None
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#"):
        return _mapping_form(schema_id, ref[1:], depth + 1)
    if isinstance(node.get("properties"), dict) and node.get("type", "object") in ("object", ["object", "null"]):
        return pointer
    for key in ("then", "else"):
        if key in node and (found := _mapping_form(schema_id, f"{pointer}/{key}", depth + 1)):
            return found
    for key in ("anyOf", "oneOf", "allOf"):
        for i in range(len(node.get(key, []))):
            if found := _mapping_form(schema_id, f"{pointer}/{key}/{i}", depth + 1):
                return found
    return None


def _items(value: Any) -> list[tuple[Any, Any, tuple]] | None:
    """``{name: args}`` or ``[{name: args}, ...]`` as (name, args, relative path); None if neither."""
    if value is None:
        return []
    if isinstance(value, dict):
        return [(k, v, (k,)) for k, v in value.items()]
    if isinstance(value, list):
        out = []
        for i, item in enumerate(value):
            if isinstance(item, str):
                out.append((item, None, (i,)))
            elif isinstance(item, dict) and len(item) == 1:
                (k, v), = item.items()
                out.append((k, v, (i, k)))
            else:
                return None
        return out
    return None


# --------------------------------------------------------------------------- the converter

class _Converter:
    def __init__(self, musket: dict, locations: dict | None):
        self.musket = musket
        self.locations = locations or {}
        self.entries: list[tuple[tuple, str]] = []  # (key path, message text)
        self.pooling_for_head: str | None = None

    # ---- reporting

    def lost(self, path: tuple, reason: str) -> None:
        self.entries.append((path, f"{NOT_CONVERTED} ({reason})"))

    def note(self, path: tuple, text: str) -> None:
        self.entries.append((path, f"note: {text}"))

    def _where(self, path: tuple) -> tuple[str, int] | None:
        for end in range(len(path), -1, -1):
            if path[:end] in self.locations:
                return self.locations[path[:end]]
        return None

    def messages(self) -> list[str]:
        located = []
        for order, (path, text) in enumerate(self.entries):
            where = self._where(path)
            prefix = f"{where[0]}:{where[1]}: " if where else ""
            sort_key = (0, where[1], order) if where else (1, 0, order)
            located.append((sort_key, f"{prefix}{_dotted(path)}: {text}"))
        return [message for _, message in sorted(located)]

    # ---- pieces

    def metric(self, value: Any, path: tuple) -> str | None:
        """Musket metric name -> ours; reports and returns None when there is none."""
        if not isinstance(value, str):
            self.lost(path, f"expected a metric name, got {_show(value)}")
            return None
        base = value[4:] if value.startswith("val_") else value
        ours = METRIC_NAMES.get(base)
        if ours is None:
            self.lost(path, f"no patchcfg metric like '{value}'; ours are val_macro_auc, val_macro_f1, "
                            "val_macro_accuracy, val_macro_precision, val_macro_recall and val_loss")
            return None
        mapped = ours if ours == "loss" and base == value else f"val_{ours}"
        if mapped != value:
            detail = "" if ours == "loss" else " (per class on the known labels, averaged over classes)"
            training = " (Musket's is measured on training batches)" if base == value and ours != "loss" else ""
            self.note(path, f"{value} -> {mapped}{detail}{training}")
        return mapped

    def loss(self, value: Any, path: tuple) -> str | None:
        from patchcfg.losses import LOSSES, parse_loss

        if isinstance(value, list):
            self.lost(path, "one loss per output (multi-output models) is not supported; give one expression")
            return None
        if not isinstance(value, str) or not value.strip():
            self.lost(path, f"expected a loss expression, got {_show(value)}")
            return None
        unknown = []

        def rename(match: re.Match) -> str:
            name = match.group(0)
            if name in LOSS_NAMES:
                return LOSS_NAMES[name]
            unknown.append(name)
            return name

        text = re.sub(r"(?<![0-9.A-Za-z_])[A-Za-z_][A-Za-z0-9_]*", rename, value.strip())
        fallback = "this stage uses finetune.loss" if path[0] == "stages" else "patchcfg's default is used"
        if unknown:
            self.lost(path, f"no patchcfg loss for {', '.join(repr(u) for u in unknown)}; Musket losses "
                            f"we map: {', '.join(_MUSKET_LOSSES)}; {fallback}")
            return None
        try:
            terms = parse_loss(text)
        except ConfigError as error:
            self.lost(path, f"{error}; {fallback}")
            return None
        missing = [t.name for t in terms if t.name not in LOSSES]
        if missing:  # pragma: no cover - LOSS_NAMES only names registered losses
            self.lost(path, f"unknown loss {', '.join(missing)}")
            return None
        return text

    def callbacks(self, value: Any, path: tuple) -> dict:
        items = _items(value)
        if items is None:
            self.lost(path, f"expected a mapping of callback names to arguments, got {_show(value)}")
            return {}
        out: dict = {}
        for name, args, rel in items:
            where = path + rel
            if name in _CALLBACK_NOTES:
                self.note(where, _CALLBACK_NOTES[name])
                continue
            if name not in _OUR_CALLBACKS or name not in _node(_FINETUNE, "/$defs/callbacks/properties"):
                reason = _CALLBACK_LOST.get(name, "no equivalent; patchcfg has " + ", ".join(_OUR_CALLBACKS))
                self.lost(where, reason)
                continue
            if args is None:
                args = {}
            if not isinstance(args, dict):
                self.lost(where, f"expected a mapping of arguments, got {_show(args)}")
                continue
            pointer = f"/$defs/callbacks/properties/{name}"
            form = _mapping_form(_FINETUNE, pointer) or pointer
            props = _node(_FINETUNE, form).get("properties", {})
            converted = {}
            for arg, arg_value in args.items():
                arg_path = where + (arg,)
                if arg == "verbose":
                    self.note(arg_path, _NOTE_KEYS["verbose"])
                elif arg == "monitor":
                    monitor = self.metric(arg_value, arg_path)
                    if monitor is not None:
                        converted["monitor"] = monitor
                elif arg not in props:
                    self.lost(arg_path, f"{name} has no '{arg}' in patchcfg; it takes {', '.join(props)}")
                else:
                    problem = _fits(_FINETUNE, f"{form}/properties/{arg}", arg_value)
                    if problem:
                        self.lost(arg_path, f"{_show(arg_value)}: {problem}")
                    else:
                        converted[arg] = copy.deepcopy(arg_value)
            out[name] = converted
        return out

    def augmenter(self, name: Any, value: Any, path: tuple, props: dict) -> tuple[str, Any] | None:
        if name in ("Rotate90", "Rot90"):
            enabled = value.get("enabled", True) if isinstance(value, dict) else value
            if enabled is False or enabled is None:
                self.note(path, "disabled in the Musket config; left out")
                return None
            return "rot90", True
        if name == "CropAndPad":
            return self._crop_and_pad(value, path)
        if name in _AUG_CONTROL_FLOW:
            self.lost(path, "imgaug control flow is not converted; list the augmenters directly, each "
                            "with `sometimes: <fraction of images>`")
            return None
        if not isinstance(name, str) or name not in props:
            suggestion = _AUG_SUGGESTIONS.get(name) if isinstance(name, str) else None
            if suggestion is None and isinstance(name, str):
                close = difflib.get_close_matches(name, list(props), n=1)
                suggestion = close[0] if close else None
            hint = f"; the closest is {suggestion}" if suggestion else ""
            self.lost(path, f"no equivalent augmenter{hint} (see schemas/augmentation.schema.json)")
            return None
        pointer = f"/properties/{name}"
        if _fits(_AUGMENTATION, pointer, value) is None:
            return name, copy.deepcopy(value)
        form = _mapping_form(_AUGMENTATION, pointer)
        if isinstance(value, dict) and form is not None:
            # Parameters we do not have are reported one by one; the rest must then fit as they are.
            params = _node(_AUGMENTATION, form).get("properties", {})
            for param in value:
                if param not in params:
                    self.lost(path + (param,), f"{name} has no '{param}' in patchcfg; it takes {', '.join(params)}")
            value = {param: param_value for param, param_value in value.items() if param in params}
            if _fits(_AUGMENTATION, pointer, value) is None:
                return name, copy.deepcopy(value)
        self.lost(path, f"{_show(value)}: {_fits(_AUGMENTATION, pointer, value)}")
        return None

    def _crop_and_pad(self, value: Any, path: tuple) -> tuple[str, Any] | None:
        percent = value.get("percent") if isinstance(value, dict) else value
        if isinstance(value, dict):
            for param in value:
                if param != "percent":
                    self.lost(path + (param,), "Crop takes only percent (and keeps the size)")
        values = percent if isinstance(percent, list) else [percent]
        if not values or any(_number(v) is None for v in values) or len(values) > 2:
            self.lost(path, "only `percent` (a number or a [low, high] pair) is converted")
            return None
        if any(v > 0 for v in values):
            self.lost(path, "padding (positive percent) has no equivalent; Crop crops only")
            return None
        cropped = sorted(-v for v in values)
        if cropped[-1] > 0.49:
            self.lost(path, "Crop crops at most 0.49 of a side")
            return None
        self.note(path, f"CropAndPad percent {_show(percent)} -> Crop percent {_show(cropped)}")
        return "Crop", {"percent": cropped if len(cropped) == 2 else cropped[0]}

    def augmentation(self, value: Any) -> dict:
        path = ("augmentation",)
        items = _items(value)
        if items is None:
            self.lost(path, f"expected a mapping of imgaug augmenter names, got {_show(value)}")
            items = []
        props = _node(_AUGMENTATION, "/properties")
        recipe: dict = {}
        for name, args, rel in items:
            converted = self.augmenter(name, args, path + rel, props)
            if converted is None:
                continue
            ours, params = converted
            if ours in recipe:
                self.lost(path + rel, f"{ours} is already set above; one of each augmenter")
                continue
            recipe[ours] = params
        # An empty section means our `default` preset; Musket without augmenters has none.
        return recipe or {"preset": "none"}

    def stage(self, stage: Any, path: tuple, global_callbacks: dict) -> dict | None:
        if not isinstance(stage, dict):
            self.lost(path, f"expected a mapping (epochs, lr, ...), got {_show(stage)}")
            return None
        out: dict = {}
        own_callbacks = None
        for key, value in stage.items():
            where = path + (key,)
            if key == "epochs":
                epochs = _int(value)
                if epochs is None or epochs < 1:
                    self.lost(where, f"expected a whole number >= 1, got {_show(value)}")
                else:
                    out["epochs"] = epochs
            elif key == "lr":
                if _number(value) is None or value <= 0:
                    self.lost(where, f"expected a number > 0, got {_show(value)}")
                else:
                    out["lr"] = value
            elif key == "loss":
                loss = self.loss(value, where)
                if loss is not None:
                    out["loss"] = loss
            elif key == "negatives":
                negatives = _negatives(value)
                if negatives is None:
                    self.lost(where, f"expected none, real or a whole number >= 0, got {_show(value)}")
                else:
                    out["negatives"] = negatives
            elif key == "validation_negatives":
                self.lost(where, "validation always uses every validation row of the label table")
            elif key in ("unfreeze_encoder", "freeze_encoder"):
                if isinstance(value, bool):
                    out[key] = value
                else:
                    self.lost(where, f"expected true or false, got {_show(value)}")
            elif key == "initial_weights":
                if isinstance(value, str) and value:
                    out["initial_weights"] = value
                    self.note(where, "must be a patchcfg model.keras or .weights.h5 file; Musket's weight "
                                     "files do not load into a patchcfg model")
                else:
                    self.lost(where, f"expected a file path, got {_show(value)}")
            elif key == "callbacks":
                own_callbacks = self.callbacks(value, where)
            elif key == "extra_callbacks":
                continue  # below, once the stage's own callbacks are known
            else:
                self.lost(where, "no equivalent stage setting; a stage takes epochs, lr, loss, negatives, "
                                 "unfreeze_encoder, initial_weights and callbacks")
        if "extra_callbacks" in stage:
            extra = self.callbacks(stage["extra_callbacks"], path + ("extra_callbacks",))
            base = own_callbacks if own_callbacks is not None else global_callbacks
            own_callbacks = {**copy.deepcopy(base), **extra}
            replaced = [name for name in extra if name in base]
            detail = f" ({', '.join(replaced)} replacing the one above)" if replaced else ""
            self.note(path + ("extra_callbacks",), f"added to this stage's callbacks{detail}")
        if own_callbacks is not None:
            out["callbacks"] = own_callbacks
        if "epochs" not in out:
            out["epochs"] = 10
            if "epochs" not in stage:
                self.lost(path, "a stage needs epochs; set to 10")
            else:
                self.note(path + ("epochs",), "set to 10")
        return out

    # ---- sections

    def backbone(self) -> dict:
        m = self.musket
        out: dict = {}
        key = "architecture" if "architecture" in m else "classifier" if "classifier" in m else None
        if key == "architecture" and "classifier" in m:
            self.lost(("classifier",), "architecture is used")
        builtin = False
        if key is None:
            self.note(("architecture",), "not given; backbone.name is patchcfg's default (resnet18)")
        else:
            name = m[key]
            if not isinstance(name, str):
                self.lost((key,), f"expected a model name, got {_show(name)}")
            elif name in KERAS_APPLICATIONS:
                out["name"] = name
            elif name.lower() in _SMALL_RESNETS:
                out["name"] = _SMALL_RESNETS[name.lower()]
                builtin = True
                self.note((key,), f"{name} -> {out['name']}, patchcfg's built-in ResNet for small images "
                                  "(3x3 stem, no max-pool), not the ImageNet ResNet that Musket builds")
            elif name.lower() in _KERAS_BY_LOWER:
                out["name"] = _KERAS_BY_LOWER[name.lower()]
                self.note((key,), f"{name} -> {out['name']} (keras.applications)")
            else:
                close = difflib.get_close_matches(name, KERAS_APPLICATIONS, n=1)
                hint = f"; the closest is {close[0]}" if close else ""
                self.lost((key,), f"'{name}' is not a keras.applications model{hint}; backbone.name is "
                                  "patchcfg's default (resnet18): set it, or write a module:function builder")
        wkey = "encoder_weights" if m.get("encoder_weights") is not None else "weights"
        if wkey == "encoder_weights" and "weights" in m:
            self.lost(("weights",), "encoder_weights is used")
        if wkey in m:
            weights = m[wkey]
            if weights is None or weights == "":
                out["weights"] = None
            elif weights == "imagenet":
                if builtin:
                    self.lost((wkey,), f"ImageNet weights exist for keras.applications backbones only; "
                                       f"{out['name']} starts from random weights: pretrain it with "
                                       "`patchcfg pretrain`, or use ResNet50")
                    out["weights"] = None
                elif "name" in out:
                    out["weights"] = "imagenet"
                else:
                    self.lost((wkey,), "ImageNet weights need a keras.applications backbone")
            elif isinstance(weights, str) and weights.startswith("imagenet"):
                self.lost((wkey,), f"'{weights}' weights are not available; only imagenet")
            elif isinstance(weights, str):
                out["weights"] = weights
                self.note((wkey,), "a weights file must fit the patchcfg backbone (see backbone.weights)")
            else:
                self.lost((wkey,), f"expected imagenet or a file path, got {_show(weights)}")
        pooling = self.pooling()
        if pooling is not None:
            out["pooling"] = pooling
        return out

    def pooling(self) -> str | None:
        if "pooling" not in self.musket:
            return None
        value = self.musket["pooling"]
        if value in ("avg", "max"):
            return value
        if value is None or value == "none":
            return None  # Musket then averages the feature map itself
        self.lost(("pooling",), f"expected avg or max, got {_show(value)}")
        return None

    def data(self) -> dict:
        out: dict = {"labels": LABELS_PLACEHOLDER}
        key = "shape" if "shape" in self.musket else "input_shape" if "input_shape" in self.musket else None
        if key is None:
            self.note(("shape",), "not given; data.imshape and data.channels are patchcfg's defaults")
            return out
        shape = self.musket[key]
        dims = [_int(v) for v in shape] if isinstance(shape, list) else []
        if len(dims) not in (2, 3) or any(d is None for d in dims) or min(dims[:2]) < 8 \
                or (len(dims) == 3 and dims[2] < 1):
            self.lost((key,), f"expected [height, width, channels] with sides >= 8, got {_show(shape)}")
            return out
        out["imshape"] = dims[:2]
        if len(dims) == 3:
            out["channels"] = dims[2]
        return out

    def finetune(self) -> dict:
        m = self.musket
        out: dict = {}
        head: dict = {"type": "linear"}  # Musket: pooled features -> [Dropout] -> Dense(classes)
        pooling = self.pooling_for_head
        head["pooling"] = pooling or "avg"
        dropout = m.get("dropout", 0)
        if _number(dropout) is None or not 0 <= dropout < 1:
            self.lost(("dropout",), f"expected a number in [0, 1), got {_show(dropout)}")
            dropout = 0
        head["dropout"] = dropout
        out["head"] = head

        if "activation" in m:
            activation = m["activation"]
            if activation in ("sigmoid", "softmax"):
                out["output"] = {"type": activation}
            elif isinstance(activation, list):
                self.lost(("activation",), "one activation per output (multi-output models) is not "
                                           "supported; patchcfg has one sigmoid or softmax output")
            else:
                self.lost(("activation",), f"expected sigmoid or softmax, got {_show(activation)} "
                                           "(regression outputs are not supported)")

        if "loss" in m:
            loss = self.loss(m["loss"], ("loss",))
            if loss is not None:
                out["loss"] = loss
        if "loss" not in out and out.get("output", {}).get("type") == "softmax":
            out["loss"] = "masked_cce"

        batch = m.get("batch", 16)  # Musket's default batch size
        if _int(batch) is None or _int(batch) < 1:
            self.lost(("batch",), f"expected a whole number >= 1, got {_show(batch)}")
        else:
            out["batch_size"] = _int(batch)

        optimizer: dict = {}
        if "optimizer" in m:
            name = m["optimizer"]
            ours = OPTIMIZERS.get(name.lower()) if isinstance(name, str) else None
            if ours is None:
                self.lost(("optimizer",), f"no patchcfg optimizer like {_show(name)}; ours are adam, adamw, "
                                          "sgd and lars; adam is used")
                ours = "adam"
            optimizer["name"] = ours
        if "lr" in m:
            if _number(m["lr"]) is None or m["lr"] <= 0:
                self.lost(("lr",), f"expected a number > 0, got {_show(m['lr'])}")
            else:
                optimizer["lr"] = m["lr"]
        if "clipnorm" in m:
            if _number(m["clipnorm"]) is None or m["clipnorm"] <= 0:
                self.lost(("clipnorm",), f"expected a number > 0, got {_show(m['clipnorm'])}")
            else:
                optimizer["clipnorm"] = m["clipnorm"]
        if optimizer:
            out["optimizer"] = optimizer

        folds = m.get("folds_count", 5)  # Musket trains 5 folds unless told otherwise
        if _int(folds) is None or _int(folds) < 1:
            self.lost(("folds_count",), f"expected a whole number >= 1, got {_show(folds)}")
        else:
            out["folds_count"] = _int(folds)

        if "primary_metric" in m:
            metric = self.metric(m["primary_metric"], ("primary_metric",))
            if metric is not None:
                out["primary_metric"] = metric
        if "primary_metric_mode" in m:
            mode = m["primary_metric_mode"]
            if mode in ("auto", "min", "max"):
                out["primary_metric_mode"] = mode
            else:
                self.lost(("primary_metric_mode",), f"expected auto, min or max, got {_show(mode)}")

        callbacks = self.callbacks(m["callbacks"], ("callbacks",)) if "callbacks" in m else {}
        if callbacks:
            out["callbacks"] = callbacks

        stages = m.get("stages")
        converted = []
        if isinstance(stages, list):
            for i, stage in enumerate(stages):
                result = self.stage(stage, ("stages", i), callbacks)
                if result is not None:
                    converted.append(result)
        elif "stages" in m:
            self.lost(("stages",), f"expected a list of stages, got {_show(stages)}; patchcfg's default stages "
                                   "are used")
        if not converted:
            if "stages" not in m or isinstance(stages, list) and not stages:
                self.lost(("stages",), "no stages given; patchcfg's default stages are used")
            converted = copy.deepcopy(_node(_FINETUNE, "/properties/stages/default"))
        first = converted[0]
        if "unfreeze_encoder" not in first and "freeze_encoder" not in first:
            # Musket trains the encoder from the start unless freeze_encoder is true.
            freeze = m.get("freeze_encoder", False)
            if not isinstance(freeze, bool):
                self.lost(("freeze_encoder",), f"expected true or false, got {_show(freeze)}")
                freeze = False
            first["freeze_encoder"] = freeze
        elif "freeze_encoder" in m:
            self.note(("freeze_encoder",), "the first stage sets the encoder's state itself")
        out["stages"] = converted

        if "testTimeAugmentation" in m:
            tta = self.tta(m["testTimeAugmentation"])
            if tta is not None:
                out["tta"] = tta
        return out

    def tta(self, value: Any) -> str | None:
        path = ("testTimeAugmentation",)
        if value in (None, False, "none", "None", ""):
            return "none"
        if isinstance(value, str):
            lower = value.lower()
            if any(word in lower for word in ("flip", "horizontal", "vertical")):
                ours = "flips_rot90" if any(w in lower for w in ("rot", "transpose")) else "flips"
                self.note(path, f"{value} -> {ours} (patchcfg averages over "
                                f"{'the 8 dihedral views' if ours == 'flips_rot90' else 'the 4 flips'})")
                return ours
        self.lost(path, "patchcfg's test-time augmentation, finetune.tta, is none, flips or flips_rot90")
        return None

    def others(self) -> None:
        m = self.musket
        for key in m:
            if key in _HANDLED:
                continue
            if key in _DATA_KEYS:
                self.lost((key,), _DATA_KEYS[key])
            elif key in _OTHER_KEYS:
                self.lost((key,), _OTHER_KEYS[key])
            elif key in _NOTE_KEYS:
                self.note((key,), _NOTE_KEYS[key])
            else:
                self.lost((key,), "unknown Musket key")
        if "classes" in m:
            classes = m["classes"]
            if isinstance(classes, list):
                self.lost(("classes",), "several outputs (multi-output models) are not supported")
            else:
                self.note(("classes",), f"{_show(classes)} classes: patchcfg takes the classes from the label "
                                        "table's columns (finetune.classes picks a subset)")
        if "metrics" in m:
            self.note(("metrics",), "not needed (patchcfg always computes masked per-class and macro AUC, "
                                    "F1, precision, recall and accuracy, and the loss)")
        if "random_state" in m:
            seed = _int(m["random_state"])
            if seed is None or seed < 0:
                self.lost(("random_state",), f"expected a whole number >= 0, got {_show(m['random_state'])}")
            else:
                self.note(("random_state",), "-> seed (it fixes the folds, and every other random choice)")

    def convert(self, name: str, source: str | None) -> dict:
        config: dict = {"name": name}
        config["description"] = f"Converted from the Musket config {source}" if source else \
            "Converted from a Musket config"
        seed = _int(self.musket.get("random_state"))
        if seed is not None and seed >= 0:
            config["seed"] = seed
        config["data"] = self.data()
        backbone = self.backbone()
        self.pooling_for_head = backbone.get("pooling")
        config["backbone"] = backbone
        config["augmentation"] = self.augmentation(self.musket.get("augmentation"))
        config["finetune"] = self.finetune()
        self.others()
        return config


def _negatives(value: Any) -> str | int | None:
    if value in ("none", "real"):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    number = _int(value)
    return number if number is not None and number >= 0 else None


# --------------------------------------------------------------------------- public API

def musket_to_patchcfg(musket: dict, name: str, locations: dict | None = None) -> tuple[dict, list[str]]:
    """A Musket classification config as a patchcfg config, and what could not be carried over.

    ``locations`` maps key paths (tuples) to ``(file, line)``, as
    :func:`patchcfg.config.yaml_loader.load_yaml_file` returns them; messages then start with
    ``file:line:``. Each message is ``key.path: not converted (reason)`` or ``key.path: note: ...``.
    The config validates against the schemas; raises :class:`ConfigError` if it would not.
    """
    if not isinstance(musket, dict):
        raise ConfigError(f"a Musket config is a mapping of keys to values, not {type(musket).__name__}")
    converter = _Converter(musket, locations)
    sources = {where[0] for where in (locations or {}).values()}
    config = converter.convert(name, sources.pop() if len(sources) == 1 else None)
    _check(config, f"<converted {name}>")
    return config, converter.messages()


def _check(config: dict, where: str) -> None:
    from patchcfg.config import resolve

    try:
        resolve(config, {}, (where, 0))
    except ConfigError as error:
        raise ConfigError(["the converted config does not validate; this is a bug in patchcfg's Musket "
                           "converter (please report it with the Musket file):"]
                          + [f"  {p}" for p in error.problems]) from None


def render_yaml(config: dict, messages: list[str], source: str | None = None) -> str:
    """The config as YAML, after a comment block listing what was not converted and the notes."""
    lost = [m for m in messages if f": {NOT_CONVERTED} (" in m]
    notes = [m for m in messages if m not in lost]
    lines = [f"# patchcfg config converted from the Musket config {source or '(unnamed)'}",
             "# by `patchcfg convert musket`. Check it with `patchcfg validate`.",
             f"# Before running: set data.labels to your label table (now the placeholder "
             f"'{LABELS_PLACEHOLDER}').", "#"]
    if lost:
        lines.append(f"# Not converted ({len(lost)}):")
        lines += [f"#   {m}" for m in lost]
    else:
        lines.append("# Every Musket key was converted.")
    if notes:
        lines.append(f"# Notes ({len(notes)}):")
        lines += [f"#   {m}" for m in notes]
    header = "\n".join(line.replace("\n", " ") for line in lines) + "\n"
    body = yaml.safe_dump(config, sort_keys=False, default_flow_style=None, allow_unicode=True, width=100)
    comment = "# SET THIS: your label table (CSV: filepath, validation, one column per class)"
    body, found = re.subn(r"(?m)^(  labels: .*)$", lambda match: f"{match.group(1)}   {comment}", body, count=1)
    if not found:
        body = re.sub(r"(?m)^data:", lambda match: f"{comment}\n{match.group(0)}", body, count=1)
    return header + body


def convert_musket_file(path: str | Path, name: str | None = None) -> tuple[str, dict, list[str]]:
    """Read a Musket config file: (YAML text of ours, our config, messages with file:line)."""
    from patchcfg.config import resolve
    from patchcfg.config.yaml_loader import load_yaml_file, load_yaml_text

    path = Path(path)
    musket, locations = load_yaml_file(path)
    if musket is None:
        raise ConfigError(f"{path}: the file is empty; expected a Musket config (architecture, shape, ...)")
    if not isinstance(musket, dict):
        raise ConfigError(f"{path}:1: a Musket config is a mapping of keys to values, "
                          f"not {type(musket).__name__}")
    if name is None:
        name = name_from_path(path)
    elif not re.fullmatch(r"[A-Za-z0-9._-]+", name):
        raise ConfigError(f"name '{name}': must use only letters, digits, '.', '_' and '-' (it names a folder)")
    config, messages = musket_to_patchcfg(musket, name, locations)
    text = render_yaml(config, messages, str(path))
    # What is printed must load as it is (comments and all): parse it back and validate again.
    reread, reread_locations = load_yaml_text(text, f"<converted {path}>")
    if reread != config:  # pragma: no cover - a YAML round trip that changes values is a bug
        raise ConfigError(f"the converted YAML of {path} does not read back as written (a converter bug)")
    resolve(reread, reread_locations, (f"<converted {path}>", 1))
    return text, config, messages
