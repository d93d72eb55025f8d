"""The fine-tuning model: encoder + head + output layer.

The encoder is one nested layer named ``encoder``, so a stage freezes it with
``model.get_layer("encoder").trainable = False`` (its BatchNorm then runs in inference mode).
Heads: ``linear`` (output layer only), ``mlp`` (dense layers), ``conv`` (patchwork's conv stack,
e.g. ``"128,p,d,128"``: 3x3 convs, 2x2 max-pools and dropouts on the feature map).
"""

from __future__ import annotations

import keras

from patchcfg.errors import UserError


def encoder_needs_feature_map(head: dict) -> bool:
    return head.get("type") == "conv" or head.get("pooling") == "flatten"


def _pool(x, pooling: str):
    if len(x.shape) == 2:
        return x
    layer = {"avg": keras.layers.GlobalAveragePooling2D, "max": keras.layers.GlobalMaxPooling2D,
             "flatten": keras.layers.Flatten}[pooling]
    return layer(name=f"head_{pooling}_pool")(x)


def _conv_stack(x, spec: str, dropout: float):
    for i, part in enumerate(p.strip() for p in spec.split(",")):
        if part == "p":
            x = keras.layers.MaxPooling2D(2, padding="same", name=f"head_pool_{i}")(x)
        elif part == "d":
            x = keras.layers.Dropout(dropout, name=f"head_dropout_{i}")(x)
        else:
            x = keras.layers.Conv2D(int(part), 3, padding="same", activation="relu", name=f"head_conv_{i}")(x)
    return x


def build_classifier(encoder: keras.Model, n_classes: int, head: dict, output: dict,
                     name: str = "classifier", groups=None) -> keras.Model:
    """``encoder`` (nested, named ``encoder``) + head + a sigmoid or softmax output of ``n_classes``.

    With more than one output group (:mod:`patchcfg.models.outputs`) the model has one output per
    group, a layer named ``output_<group>`` with the group's activation, in the groups' order;
    :func:`probabilities` joins them into one matrix."""
    inputs = keras.Input(encoder.input_shape[1:], name="image")
    features = encoder(inputs)
    if len(features.shape) == 2 and encoder_needs_feature_map(head):
        raise UserError(
            f"finetune.head: type {head['type']} with pooling {head['pooling']} needs the encoder's feature "
            "map, but the encoder gives pooled vectors; use head.type mlp/linear with pooling avg/max")
    x = features
    if head["type"] == "conv":
        x = _conv_stack(x, head["layers"], head["dropout"])
    x = _pool(x, head["pooling"])
    if head["type"] == "mlp":
        for i, units in enumerate(head["units"]):
            x = keras.layers.Dense(units, activation="relu", name=f"head_dense_{i}")(x)
            if head["dropout"]:
                x = keras.layers.Dropout(head["dropout"], name=f"head_dense_dropout_{i}")(x)
    elif head["dropout"] and head["type"] == "linear":
        x = keras.layers.Dropout(head["dropout"], name="head_dropout")(x)
    if groups is not None and len(groups) > 1:
        outputs = [keras.layers.Dense(len(g.classes), activation=g.type, dtype="float32",
                                      name=f"output_{g.name}")(x) for g in groups]
        return keras.Model(inputs, outputs, name=name)
    activation = groups[0].type if groups else output["type"]
    outputs = keras.layers.Dense(n_classes, activation=activation, dtype="float32", name="output")(x)
    return keras.Model(inputs, outputs, name=name)


def probabilities(outputs):
    """A model's output as one (rows, classes) tensor: its groups' outputs side by side."""
    import tensorflow as tf

    if isinstance(outputs, dict):
        outputs = list(outputs.values())
    if isinstance(outputs, list | tuple):
        return outputs[0] if len(outputs) == 1 else tf.concat(list(outputs), axis=-1)
    return outputs


def output_width(model: keras.Model) -> int:
    """The number of classes a (possibly multi-output) classifier predicts."""
    shapes = model.output_shape
    if isinstance(shapes, list):
        return sum(int(s[-1]) for s in shapes)
    return int(shapes[-1])
