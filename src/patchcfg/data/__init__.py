"""Images in, batches out: loading, augmentation recipes, sampling and folds.

Importing this package is cheap (no TensorFlow); the submodules that build ``tf.data`` pipelines
import it themselves:

- :mod:`patchcfg.data.images` -- ``resolve_image_paths(data_cfg)``: which images a config means.
- :mod:`patchcfg.data.readers` -- formats, value scaling and the cached validation pass (no TF).
- :mod:`patchcfg.data.loading` -- ``check_images``, ``make_dataset`` (TF).
- :mod:`patchcfg.data.passes` -- ``one_pass``: a dataset read once, without autotuning (TF).
- :mod:`patchcfg.data.ops` -- the augmentation ops, one module each, on a registry (no TF until built).
- :mod:`patchcfg.data.recipes` -- presets, recipes expanded, the schema and reference (no TF).
- :mod:`patchcfg.data.augment` -- ``build_augmenter``: recipes compiled to in-graph ops (TF).
- :mod:`patchcfg.data.kernels` -- the batched TensorFlow helpers the ops share (TF).
- :mod:`patchcfg.data.sampling` -- ``StratifiedSampler`` (NumPy), ``make_labelled_dataset`` (TF).
- :mod:`patchcfg.data.folds` -- ``assign_folds``, ``load_or_assign_folds`` (no TF).
"""
