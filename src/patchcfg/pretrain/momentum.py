"""A momentum encoder: target networks that follow the trained ones as an exponential moving average.

He, Fan, Wu, Xie & Girshick, "Momentum Contrast for Unsupervised Visual Representation Learning",
CVPR 2020 (MoCo's key encoder); Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020 (BYOL's
target network, whose momentum rises to 1 on a cosine schedule). After each step::

    theta_target <- m * theta_target + (1 - m) * theta_online,   m = schedule(step)

Only the online networks' trainable weights are followed; the targets' batch-norm statistics are
their own (they run in training mode, as MoCo's key encoder does). The targets are checkpointed
under the names they are given (:meth:`MomentumEncoder.state`); the step comes from the
optimizer, so a resumed run follows the same schedule.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf


def cosine_momentum(base: float, total_steps: int):
    """BYOL's schedule (Grill et al. 2020): ``1 - (1 - base) (cos(pi k / K) + 1) / 2`` at step ``k`` of ``K``.

    >>> schedule = cosine_momentum(0.99, 100)
    >>> [round(float(schedule(k)), 4) for k in (0, 50, 100)]
    [0.99, 0.995, 1.0]
    """

    def schedule(step):
        progress = tf.minimum(tf.cast(step, tf.float32) / float(max(1, total_steps)), 1.0)
        return 1.0 - (1.0 - base) * (tf.cos(math.pi * progress) + 1.0) / 2.0

    return schedule


class MomentumEncoder:
    """Momentum copies of ``online`` networks (name -> model, applied in order), e.g.
    ``MomentumEncoder({"key_encoder": encoder, "key_head": head}, momentum=0.999)``.

    Build it inside ``strategy.scope()`` (a method's ``build_state``); call :meth:`update` from the
    cross-replica ``after_step``. ``schedule(step) -> m`` replaces the constant ``momentum``.
    """

    def __init__(self, online: dict[str, keras.Model], momentum: float, schedule=None):
        self.online = dict(online)
        self.momentum = momentum
        self.schedule = schedule
        self.targets = {}
        for name, network in self.online.items():
            target = keras.models.clone_model(network)
            target.set_weights(network.get_weights())
            # Not trainable (not in the model whose variables the optimizer updates), but left
            # "trainable" so that its batch norm runs in training mode.
            self.targets[name] = target

    def __call__(self, inputs, training: bool = True):
        """The targets applied in order (float32)."""
        for target in self.targets.values():
            inputs = target(inputs, training=training)
        return tf.cast(inputs, tf.float32)

    def momentum_at(self, step):
        """The momentum after ``step`` optimizer steps: ``schedule(step)``, else the constant."""
        return self.momentum if self.schedule is None else self.schedule(step)

    def update(self, step=None) -> None:
        """One EMA step of every target towards its online network's trainable weights."""
        m = self.momentum_at(step)
        for name, target in self.targets.items():
            for target_var, online_var in zip(target.weights, self.online[name].weights, strict=True):
                if online_var.trainable:
                    target_var.assign(m * target_var.value + (1.0 - m) * online_var.value)

    def state(self) -> dict[str, keras.Model]:
        """What to checkpoint: the targets by name."""
        return dict(self.targets)


class Bootstrap:
    """BYOL's online and target networks for a :class:`~patchcfg.pretrain.base.PretrainMethod`
    (Grill et al. 2020), mixed in before the method's base: a predictor on the head
    (``params.predictor``) and target networks that follow the online ones with the cosine schedule
    of the momentum from ``params.tau_base`` to 1 over the run's steps. Call :meth:`build_bootstrap`
    from ``build_state`` with the online networks the targets copy (name -> model); the method's ``Params``
    extend :class:`~patchcfg.pretrain.params.BootstrapParams`."""

    config_keys = {
        "tau_base": {
            "description": ("The target network's momentum at the first step, rising to 1 on a cosine "
                            "schedule over the run: tau = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2 at "
                            "step k of K (Grill et al. 2020)."),
            "type": "number",
            "minimum": 0,
            "maximum": 1,
            "default": 0.996,
        },
    }

    def build_bootstrap(self, online: dict[str, keras.Model]) -> MomentumEncoder:
        self.predictor = self.build_predictor(self.params.predictor)
        self.momentum_encoder = MomentumEncoder(online, self.params.tau_base, schedule=self.tau_at)
        return self.momentum_encoder

    def total_steps(self) -> int:
        """K of the schedule: the run's optimizer steps (known once the loop has set steps_per_epoch)."""
        return self.epochs * int(self.steps_per_epoch or self.epoch_steps())

    def tau_at(self, step):
        """The target momentum after ``step`` optimizer steps: :func:`cosine_momentum` from ``tau_base``."""
        return cosine_momentum(self.params.tau_base, self.total_steps())(step)

    def extra_state(self):
        return {**super().extra_state(), **self.momentum_encoder.state()}

    def after_step(self, strategy, aux):
        """The targets' EMA step (cross-replica, after the update; the step counts from 1)."""
        self.momentum_encoder.update(self.optimizer.iterations)
