"""Training machinery shared by every trainer: one strategy-aware loop, optimizers, monitoring.

Importing this package is cheap; the submodules import TensorFlow:

- :mod:`patchcfg.train.loop`: :class:`~patchcfg.train.loop.TrainLoop` and the
  :class:`~patchcfg.train.loop.TrainTask` a trainer implements.
- :mod:`patchcfg.train.optim`: optimizers (adam, adamw, sgd, lars) and learning-rate schedules.
- :mod:`patchcfg.train.distribute`: the ``tf.distribute`` strategy from the config.
- :mod:`patchcfg.train.callbacks`: Keras callbacks from the config.
- :mod:`patchcfg.train.monitor`: linear-probe, alignment and uniformity metrics of an encoder.
"""
