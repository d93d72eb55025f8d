"""Losses for partially labelled multi-hot targets, and a small grammar to combine them.

Targets use 1 = present, 0 = absent and -1 = unknown. Every loss here ignores unknown entries:
its value and its gradient there are exactly zero. Predictions are probabilities (the model's
sigmoid or softmax output).

A composite loss is written as an expression: ``masked_bce+0.1*dice``, ``0.5*focal(gamma=3)``,
``masked_bce-0.01*entropy``. It is parsed by a tiny grammar (never ``eval``); names come from a
registry that a user extends with ``module:function`` or ``@register_loss``.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass

from patchcfg.errors import ConfigError
from patchcfg.registries import Registry

EPSILON = 1e-7
#: The names a loss expression may use: each ``fn(y_true, y_pred, **params) -> scalar``.
LOSSES = Registry("loss", home=__name__)
#: Decorator: make ``fn(y_true, y_pred, **params) -> scalar`` the loss ``name`` of loss expressions.
register_loss = LOSSES.register


def _masked(y_true, y_pred, label_smoothing=0.0):
    import tensorflow as tf

    y_true = tf.cast(y_true, y_pred.dtype)
    mask = tf.cast(y_true >= 0, y_pred.dtype)
    target = tf.clip_by_value(y_true, 0.0, 1.0)
    if label_smoothing:
        target = target * (1.0 - label_smoothing) + 0.5 * label_smoothing
    pred = tf.clip_by_value(y_pred, EPSILON, 1.0 - EPSILON)
    return tf, mask, target, pred


@register_loss("masked_bce")
def masked_bce(y_true, y_pred, label_smoothing: float = 0.0):
    """Binary cross-entropy over known entries: Σ BCE·m / (Σ m + ε) (patchwork's masked loss)."""
    tf, mask, target, pred = _masked(y_true, y_pred, label_smoothing)
    bce = -(target * tf.math.log(pred) + (1.0 - target) * tf.math.log(1.0 - pred))
    return tf.reduce_sum(bce * mask) / (tf.reduce_sum(mask) + EPSILON)


@register_loss("masked_focal")
def masked_focal(y_true, y_pred, gamma: float = 2.0, alpha: float | None = None, label_smoothing: float = 0.0):
    """Focal loss (Lin et al. 2017, "Focal Loss for Dense Object Detection") over known entries.

    FL = -α_t (1 - p_t)^γ log p_t; ``alpha`` weights positives (1 - alpha the negatives).
    """
    tf, mask, target, pred = _masked(y_true, y_pred, label_smoothing)
    p_t = target * pred + (1.0 - target) * (1.0 - pred)
    loss = -tf.pow(1.0 - p_t, gamma) * tf.math.log(p_t)
    if alpha is not None:
        loss = loss * (target * alpha + (1.0 - target) * (1.0 - alpha))
    return tf.reduce_sum(loss * mask) / (tf.reduce_sum(mask) + EPSILON)


@register_loss("dice")
def dice(y_true, y_pred, smooth: float = 1.0):
    """Soft Dice loss (Milletari et al. 2016, V-Net) per class over known entries, averaged over classes."""
    tf, mask, target, pred = _masked(y_true, y_pred)
    intersection = tf.reduce_sum(pred * target * mask, axis=0)
    total = tf.reduce_sum(pred * mask, axis=0) + tf.reduce_sum(target * mask, axis=0)
    return 1.0 - tf.reduce_mean((2.0 * intersection + smooth) / (total + smooth))


@register_loss("masked_cce")
def masked_cce(y_true, y_pred, label_smoothing: float = 0.0):
    """Categorical cross-entropy for exclusive classes; rows with any unknown class are ignored."""
    tf, mask, target, pred = _masked(y_true, y_pred)
    row_known = tf.reduce_min(mask, axis=-1)
    classes = tf.cast(tf.shape(target)[-1], pred.dtype)
    if label_smoothing:
        target = target * (1.0 - label_smoothing) + label_smoothing / classes
    cce = -tf.reduce_sum(target * tf.math.log(pred), axis=-1)
    return tf.reduce_sum(cce * row_known) / (tf.reduce_sum(row_known) + EPSILON)


ALIASES = {"binary_crossentropy": "masked_bce", "bce": "masked_bce", "focal": "masked_focal",
           "focal_loss": "masked_focal", "dice_loss": "dice", "categorical_crossentropy": "masked_cce"}


# --------------------------------------------------------------------------- expressions

_TOKEN = re.compile(r"\s*(?:(?P<number>\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)"
                    r"|(?P<name>[A-Za-z_][A-Za-z0-9_.]*(?::[A-Za-z_][A-Za-z0-9_]*)?)"
                    r"|(?P<op>[-+*/(),=]))")


@dataclass(frozen=True)
class Term:
    weight: float
    name: str
    params: tuple[tuple[str, float], ...] = ()


def _tokens(text: str):
    pos, out = 0, []
    text = text.strip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise ConfigError(f"loss '{text}': cannot read '{text[pos:]}' (write e.g. masked_bce+0.1*dice)")
        kind = match.lastgroup
        out.append((kind, match.group(kind)))
        pos = match.end()
    return out


def parse_loss(text: str) -> list[Term]:
    """``0.5*masked_focal(gamma=3)+dice`` -> [Term(0.5, 'masked_focal', (('gamma', 3.0),)), Term(1.0, 'dice')]."""
    tokens = _tokens(text)
    terms, i, sign = [], 0, 1.0

    def expect(kind, value=None):
        nonlocal i
        if i >= len(tokens) or tokens[i][0] != kind or (value is not None and tokens[i][1] != value):
            found = tokens[i][1] if i < len(tokens) else "the end"
            raise ConfigError(f"loss '{text}': expected {value or kind} but found {found!r} "
                              "(write e.g. masked_bce+0.1*dice or 0.5*masked_focal(gamma=2))")
        i += 1
        return tokens[i - 1][1]

    while True:
        weight = sign
        if i < len(tokens) and tokens[i][0] == "number":
            weight *= float(expect("number"))
            expect("op", "*")
        name = expect("name")
        params = []
        if i < len(tokens) and tokens[i] == ("op", "("):
            i += 1
            while tokens[i:i + 1] != [("op", ")")]:
                key = expect("name")
                expect("op", "=")
                negative = i < len(tokens) and tokens[i] == ("op", "-")
                i += negative
                params.append((key, float(expect("number")) * (-1 if negative else 1)))
                if tokens[i:i + 1] == [("op", ",")]:
                    i += 1
            expect("op", ")")
        if i < len(tokens) and tokens[i] == ("op", "*"):
            i += 1
            weight *= float(expect("number"))
        terms.append(Term(weight, name, tuple(params)))
        if i == len(tokens):
            return terms
        op = expect("op")
        if op not in "+-":
            raise ConfigError(f"loss '{text}': expected + or - between terms, found {op!r}")
        sign = 1.0 if op == "+" else -1.0


LOSS_SHAPE = ("a loss is a Python function fn(y_true, y_pred, **params) returning a scalar tensor, "
              "in your own module (e.g. my_losses:weighted_bce), or a registered name")


def _check_user_loss(name: str, fn, params: dict | None = None) -> None:
    """Refuse what cannot be a loss: standard-library functions, non-callables, and functions
    that do not take ``(y_true, y_pred, **params)``."""
    import inspect
    import sys

    module = name.partition(":")[0]
    if module.split(".")[0] in sys.stdlib_module_names or module.split(".")[0] == "builtins":
        raise ConfigError(
            f"loss '{name}': {module} is part of Python's standard library, not a loss; {LOSS_SHAPE}")
    if not callable(fn) or inspect.isclass(fn):
        raise ConfigError(f"loss '{name}': {type(fn).__name__} is not a function; {LOSS_SHAPE}")
    try:
        inspect.signature(fn).bind(None, None, **(params or {}))
    except (TypeError, ValueError) as error:
        raise ConfigError(f"loss '{name}': cannot be called as fn(y_true, y_pred"
                          f"{''.join(f', {k}=...' for k in params or {})}) ({error}); {LOSS_SHAPE}") from None


def resolve_loss_function(name: str, params: dict | None = None) -> Callable:
    """A registered name (or alias), or ``module:function`` for a user's own loss."""
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            fn = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as error:
            raise ConfigError(f"loss '{name}': cannot import {attr} from {module} ({error})") from None
        _check_user_loss(name, fn, params)
        return fn
    key = ALIASES.get(name, name)
    if key not in LOSSES:
        import difflib

        options = sorted(set(LOSSES) | set(ALIASES))
        close = difflib.get_close_matches(name, options, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"loss '{name}': unknown{hint}; known losses: {', '.join(options)}")
    return LOSSES[key]


def check_loss(text: str) -> None:
    """Parse ``text`` and resolve every name, without TensorFlow; ConfigError when it cannot run."""
    import inspect

    for term in parse_loss(text):
        fn = resolve_loss_function(term.name, dict(term.params))
        if ":" not in term.name and term.params:
            try:
                inspect.signature(fn).bind(None, None, **dict(term.params))
            except TypeError:
                known = list(inspect.signature(fn).parameters)[2:]
                unknown = ", ".join(k for k, _ in term.params if k not in known)
                raise ConfigError(f"loss '{text}': {term.name} takes no parameter {unknown}; "
                                  f"its parameters: {', '.join(known) or 'none'}") from None


def build_loss(text: str) -> Callable:
    """A callable ``(y_true, y_pred) -> scalar`` for a loss expression; names are checked now."""
    terms = [(term, resolve_loss_function(term.name, dict(term.params))) for term in parse_loss(text)]

    def composite(y_true, y_pred):
        total = 0.0
        for term, fn in terms:
            total = total + term.weight * fn(y_true, y_pred, **dict(term.params))
        return total

    composite.__name__ = re.sub(r"\W+", "_", text)
    composite.terms = [t for t, _ in terms]
    return composite


# --------------------------------------------------------------------------- output groups

def resolve_softmax_targets(y_true):
    """A softmax group's targets (rows, K) resolved in the graph, as
    :func:`patchcfg.label_groups.resolve_softmax` does in numpy: a row with one present class,
    or all but one absent, becomes its one-hot answer in full; every other row all unknown."""
    import tensorflow as tf

    y_true = tf.cast(y_true, tf.float32)
    present = y_true > 0.5
    absent = (y_true >= 0) & ~present
    n_present = tf.reduce_sum(tf.cast(present, tf.int32), -1)
    n_absent = tf.reduce_sum(tf.cast(absent, tf.int32), -1)
    one_present = tf.equal(n_present, 1)
    by_exclusion = tf.equal(n_present, 0) & tf.equal(n_absent, tf.shape(y_true)[-1] - 1)
    target = tf.where(one_present[:, None], tf.cast(present, tf.float32), tf.cast(~absent, tf.float32))
    return tf.where((one_present | by_exclusion)[:, None], target, -tf.ones_like(y_true))


def build_group_loss(groups, stage_loss: str) -> Callable:
    """``(y_true, y_pred) -> scalar`` over every output group (the model's class order):
    Σ weight · loss of the group's columns, a softmax group's targets resolved first, so a row
    that does not resolve it adds nothing to its loss or gradient."""
    parts = [(g, build_loss(g.loss_expression(stage_loss))) for g in groups]
    if len(parts) == 1 and parts[0][0].stage_loss and not parts[0][0].softmax:
        return parts[0][1]  # the plain multi-hot model: the stage's loss as it is

    def grouped(y_true, y_pred):
        total = 0.0
        for group, fn in parts:
            target = y_true[:, group.start:group.stop]
            if group.softmax:
                target = resolve_softmax_targets(target)
            total = total + group.weight * fn(target, y_pred[:, group.start:group.stop])
        return total

    grouped.__name__ = "_".join(f"{g.name}_{fn.__name__}" for g, fn in parts)
    return grouped
