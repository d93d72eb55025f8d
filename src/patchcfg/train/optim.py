"""Optimizers and learning-rate schedules built from the ``optimizer`` section of a config.

Schedules are :class:`keras.optimizers.schedules.LearningRateSchedule` subclasses registered with
Keras, so an optimizer that uses them serializes and loads like any built-in one. They are
functions of the optimizer step; the config speaks in epochs and :func:`build_optimizer` converts.

Weight decay is *decoupled* (``w <- w - lr * wd * w``, Loshchilov & Hutter 2019) for adam, adamw
and sgd, and an L2 term added to the gradient before the trust ratio for lars (You et al. 2017).
Biases and normalisation parameters (every variable of rank <= 1) are never decayed.

Example (the schedule, in steps)::

    >>> s = WarmupCosine(1.0, warmup_steps=2, total_steps=10)
    >>> [round(float(s(i)), 3) for i in (0, 1, 2, 10)]
    [0.5, 1.0, 1.0, 0.0]
"""

from __future__ import annotations

import math

import keras
from keras import ops

PACKAGE = "patchcfg"


def _step(step):
    return ops.cast(step, "float32")


@keras.saving.register_keras_serializable(package=PACKAGE)
class Constant(keras.optimizers.schedules.LearningRateSchedule):
    """The same learning rate at every step."""

    def __init__(self, learning_rate: float):
        self.learning_rate = float(learning_rate)

    def __call__(self, step):
        return ops.convert_to_tensor(self.learning_rate, "float32") + 0.0 * _step(step)

    def get_config(self):
        return {"learning_rate": self.learning_rate}


@keras.saving.register_keras_serializable(package=PACKAGE)
class Cosine(keras.optimizers.schedules.LearningRateSchedule):
    """Cosine decay from ``learning_rate`` to ``final_ratio * learning_rate`` over ``total_steps``
    (Loshchilov & Hutter, "SGDR", ICLR 2017, without restarts)."""

    def __init__(self, learning_rate: float, total_steps: int, final_ratio: float = 0.0):
        self.learning_rate = float(learning_rate)
        self.total_steps = max(1, int(total_steps))
        self.final_ratio = float(final_ratio)

    def __call__(self, step):
        progress = ops.minimum(_step(step) / self.total_steps, 1.0)
        cosine = 0.5 * (1.0 + ops.cos(math.pi * progress))
        return self.learning_rate * (self.final_ratio + (1.0 - self.final_ratio) * cosine)

    def get_config(self):
        return {"learning_rate": self.learning_rate, "total_steps": self.total_steps,
                "final_ratio": self.final_ratio}


@keras.saving.register_keras_serializable(package=PACKAGE)
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup over ``warmup_steps`` (step ``i`` gets ``(i + 1) / warmup_steps`` of the rate),
    then cosine decay to ``final_ratio * learning_rate`` at ``total_steps`` (Goyal et al. 2017;
    the SimCLR schedule)."""

    def __init__(self, learning_rate: float, warmup_steps: int, total_steps: int, final_ratio: float = 0.0):
        self.learning_rate = float(learning_rate)
        self.warmup_steps = max(0, int(warmup_steps))
        self.total_steps = max(self.warmup_steps + 1, int(total_steps))
        self.final_ratio = float(final_ratio)

    def __call__(self, step):
        step = _step(step)
        warm = float(max(1, self.warmup_steps))
        warmup = self.learning_rate * ops.minimum((step + 1.0) / warm, 1.0)
        decay_steps = float(self.total_steps - self.warmup_steps)
        progress = ops.clip((step - self.warmup_steps) / decay_steps, 0.0, 1.0)
        cosine = self.learning_rate * (self.final_ratio + (1.0 - self.final_ratio)
                                       * 0.5 * (1.0 + ops.cos(math.pi * progress)))
        if self.warmup_steps == 0:
            return cosine
        return ops.where(step < self.warmup_steps, warmup, cosine)

    def get_config(self):
        return {"learning_rate": self.learning_rate, "warmup_steps": self.warmup_steps,
                "total_steps": self.total_steps, "final_ratio": self.final_ratio}


@keras.saving.register_keras_serializable(package=PACKAGE)
class Staircase(keras.optimizers.schedules.LearningRateSchedule):
    """``learning_rate * decay_rate ** floor(step / decay_steps)``: a step decay every period."""

    def __init__(self, learning_rate: float, decay_steps: int, decay_rate: float = 0.1):
        self.learning_rate = float(learning_rate)
        self.decay_steps = max(1, int(decay_steps))
        self.decay_rate = float(decay_rate)

    def __call__(self, step):
        periods = ops.floor(_step(step) / self.decay_steps)
        return self.learning_rate * ops.power(self.decay_rate, periods)

    def get_config(self):
        return {"learning_rate": self.learning_rate, "decay_steps": self.decay_steps,
                "decay_rate": self.decay_rate}


def is_excluded_from_decay(variable) -> bool:
    """Biases and normalisation scales/offsets (rank <= 1) are kept out of decay and adaptation."""
    return len(variable.shape) <= 1


@keras.saving.register_keras_serializable(package=PACKAGE)
class LARS(keras.optimizers.Optimizer):
    """Layer-wise Adaptive Rate Scaling (You, Gitman & Ginsburg, "Large Batch Training of
    Convolutional Networks", 2017), with momentum, as used by SimCLR.

    For each weight tensor ``w`` with gradient ``g`` (weight decay ``wd``, trust coefficient ``eta``)::

        g'   = g + wd * w
        lr_w = lr * eta * ||w|| / ||g'||        (lr when either norm is 0)
        m    = momentum * m + lr_w * g'
        w    = w - m                            (nesterov: w - (momentum * m + lr_w * g'))

    Variables of rank <= 1 (biases, batch-norm gamma/beta) skip both the trust ratio and the
    decay: ``m = momentum * m + lr * g``.
    """

    def __init__(self, learning_rate=0.1, momentum=0.9, weight_decay_rate=0.0, trust_coefficient=0.001,
                 nesterov=False, epsilon=0.0, name="lars", **kwargs):
        kwargs.pop("weight_decay", None)  # decay is applied inside the update, not by the base class
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.momentum = float(momentum)
        self.weight_decay_rate = float(weight_decay_rate)
        self.trust_coefficient = float(trust_coefficient)
        self.nesterov = bool(nesterov)
        self.epsilon = float(epsilon)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentums = self.add_optimizer_variables(variables, "momentum")

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        m = self.momentums[self._get_variable_index(variable)]
        if not is_excluded_from_decay(variable):
            if self.weight_decay_rate:
                gradient = gradient + self.weight_decay_rate * variable
            w_norm = ops.sqrt(ops.sum(ops.square(variable)))
            g_norm = ops.sqrt(ops.sum(ops.square(gradient)))
            ratio = ops.where(
                ops.logical_and(w_norm > 0, g_norm > 0),
                self.trust_coefficient * w_norm / (g_norm + self.epsilon),
                ops.ones_like(w_norm))
            lr = lr * ratio
        self.assign(m, self.momentum * m + lr * gradient)
        if self.nesterov:
            self.assign_sub(variable, self.momentum * m + lr * gradient)
        else:
            self.assign_sub(variable, m)

    def get_config(self):
        config = super().get_config()
        config.update({"momentum": self.momentum, "weight_decay_rate": self.weight_decay_rate,
                       "trust_coefficient": self.trust_coefficient, "nesterov": self.nesterov,
                       "epsilon": self.epsilon})
        return config


def _resolved(cfg: dict) -> dict:
    """The section with the optimizer schema's defaults (a resolved config has them already)."""
    from patchcfg.config import schema_defaults

    return schema_defaults("optimizer.schema.json", cfg)


def build_schedule(cfg: dict, steps_per_epoch: int, epochs: int) -> keras.optimizers.schedules.LearningRateSchedule:
    """The schedule named by ``cfg["schedule"]``, its periods converted from epochs to steps."""
    cfg = _resolved(cfg)
    lr = float(cfg["lr"])
    name = cfg["schedule"]
    total = max(1, int(steps_per_epoch) * int(epochs))
    if name == "constant":
        return Constant(lr)
    if name == "cosine":
        return Cosine(lr, total, cfg["final_lr_ratio"])
    if name == "warmup_cosine":
        warmup = int(round(float(cfg["warmup_epochs"]) * steps_per_epoch))
        return WarmupCosine(lr, warmup, total, cfg["final_lr_ratio"])
    if name == "staircase":
        period = max(1, int(round(float(cfg["decay_epochs"]) * steps_per_epoch)))
        return Staircase(lr, period, cfg["decay_rate"])
    raise ValueError(f"unknown learning-rate schedule {name!r}")


def build_optimizer(cfg: dict, steps_per_epoch: int, epochs: int, variables=None,
                    learning_rate=None) -> keras.optimizers.Optimizer:
    """An optimizer from a validated ``optimizer`` config section (see schemas/optimizer.schema.json).

    ``learning_rate`` (a float or a schedule) replaces the configured schedule; a float gives an
    assignable rate (for callbacks such as ReduceLROnPlateau and CyclicLR).

    Call inside ``strategy.scope()``. With ``variables`` the optimizer is built on them, rank <= 1
    variables excluded from weight decay.
    """
    cfg = _resolved(cfg)
    if learning_rate is None and cfg["schedule"] == "constant":
        learning_rate = float(cfg["lr"])  # a variable: callbacks may change it, checkpoints keep it
    schedule = build_schedule(cfg, steps_per_epoch, epochs) if learning_rate is None else learning_rate
    name = cfg["name"]
    wd = float(cfg["weight_decay"]) or None
    common = {}
    if cfg["clipnorm"]:
        common["clipnorm"] = float(cfg["clipnorm"])
    if name == "adam":
        opt = keras.optimizers.Adam(schedule, weight_decay=wd, **common)
    elif name == "adamw":
        opt = keras.optimizers.AdamW(schedule, weight_decay=wd or 0.0, **common)
    elif name == "sgd":
        opt = keras.optimizers.SGD(schedule, momentum=float(cfg["momentum"]), nesterov=bool(cfg["nesterov"]),
                                   weight_decay=wd, **common)
    elif name == "lars":
        opt = LARS(schedule, momentum=float(cfg["momentum"]), weight_decay_rate=wd or 0.0,
                   trust_coefficient=float(cfg["trust_coefficient"]), nesterov=bool(cfg["nesterov"]), **common)
    else:
        raise ValueError(f"unknown optimizer {name!r}")
    if variables is not None:
        variables = list(variables)
        if wd and name != "lars":
            opt.exclude_from_weight_decay(var_list=[v for v in variables if is_excluded_from_decay(v)])
        opt.build(variables)
    return opt


def current_lr(optimizer) -> float:
    """The learning rate the optimizer will use at its next step."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    rate = inner.learning_rate  # a variable, or a tensor under a schedule
    # Variable.numpy() reads its value: convert_to_numpy(variable) would np.array() a tf.Variable,
    # which numpy 2 warns about (its __array__ takes no copy keyword)
    return float(rate.numpy() if hasattr(rate, "numpy") else ops.convert_to_numpy(rate))
