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
                     name: str = "classifier") -> keras.Model:
    """``encoder`` (nested, named ``encoder``) + head + a sigmoid or softmax output of ``n_classes``."""
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
    activation = output["type"]
    outputs = keras.layers.Dense(n_classes, activation=activation, dtype="float32", name="output")(x)
    return keras.Model(inputs, outputs, name=name)
