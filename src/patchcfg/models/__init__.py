"""Models: backbones (feature extractors) by name, heads, output layers, saving and loading.

Importing this package is cheap: nothing here imports TensorFlow or Keras. Import the submodule you
need, e.g. ``from patchcfg.models.backbones import build_backbone``; that import loads Keras.
"""
