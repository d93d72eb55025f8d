"""Small-image ResNets and a tiny conv net, built from standard Keras layers.

ImageNet ResNets open with a 7×7 stride-2 convolution and a max-pool, which throws away three
quarters of a 32×32 patch before the first residual block. The variants here use the small-image
stem of the CIFAR ResNets and of SimCLR's CIFAR experiments: one 3×3 stride-1 convolution and no
max-pool, so a 32×32 input reaches the last stage as a 4×4 map.

- ``resnet18`` / ``resnet34``: BasicBlock (two 3×3 convolutions), stages of [2, 2, 2, 2] and
  [3, 4, 6, 3] blocks, 64·width … 512·width channels; feature size ``512 * width``.
- ``resnet50``: Bottleneck (1×1, 3×3, 1×1 with expansion 4; stride on the 3×3 as in "ResNet v1.5"),
  stages of [3, 4, 6, 3] blocks; feature size ``2048 * width``.
- ``tiny``: three 3×3 convolutions with 8, 16, 16 filters (times width); feature size ``16 * width``.
  Meant for fast tests and CI-sized demos, not for results.

Every builder here returns the *feature map* model ``(batch, h, w, D)``; pooling and weights are
added by :func:`patchcfg.models.backbones.build_backbone`. Only standard Keras layers are used, so
a model saved as ``.keras`` loads without any custom object. Any number of input channels works.

Reference: He et al., "Deep Residual Learning for Image Recognition", CVPR 2016.
"""

from __future__ import annotations

import keras
from keras import layers

from patchcfg.models.layers import BatchNormalization

#: Channels of the four stages at ``width == 1``.
STAGE_FILTERS = (64, 128, 256, 512)
#: Channel expansion of the last 1×1 convolution of a bottleneck block.
BOTTLENECK_EXPANSION = 4


def scaled(channels: int, width: float) -> int:
    """``channels * width`` rounded, at least 1: the channel count of a layer at a given width."""
    return max(1, int(round(channels * width)))


def _bn(name: str, sync_batchnorm: bool) -> BatchNormalization:
    return BatchNormalization(momentum=0.9, epsilon=1e-5, synchronized=sync_batchnorm, name=name)


def _conv(filters: int, kernel: int, stride: int, name: str) -> layers.Conv2D:
    return layers.Conv2D(
        filters,
        kernel,
        strides=stride,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name=name,
    )


def _shortcut(x, filters: int, stride: int, name: str, sync_batchnorm: bool):
    """Identity when shapes agree, else a 1×1 projection (with the block's stride) and BatchNorm."""
    if stride == 1 and x.shape[-1] == filters:
        return x
    x = _conv(filters, 1, stride, f"{name}_proj_conv")(x)
    return _bn(f"{name}_proj_bn", sync_batchnorm)(x)


def _conv_bn(x, filters: int, kernel: int, stride: int, name: str, index: int, sync_batchnorm: bool,
             relu: bool):
    """conv -> batch norm (-> ReLU), layers named ``{name}_conv{index}``, ``_bn{index}``, ``_relu{index}``."""
    y = _conv(filters, kernel, stride, f"{name}_conv{index}")(x)
    y = _bn(f"{name}_bn{index}", sync_batchnorm)(y)
    return layers.ReLU(name=f"{name}_relu{index}")(y) if relu else y


def basic_block(x, filters: int, stride: int, name: str, sync_batchnorm: bool = False):
    """Two 3×3 convolutions with a residual connection (ResNet-18/34)."""
    shortcut = _shortcut(x, filters, stride, name, sync_batchnorm)
    y = _conv_bn(x, filters, 3, stride, name, 1, sync_batchnorm, relu=True)
    y = _conv_bn(y, filters, 3, 1, name, 2, sync_batchnorm, relu=False)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.ReLU(name=f"{name}_out")(y)


def bottleneck_block(x, filters: int, stride: int, name: str, sync_batchnorm: bool = False):
    """1×1 reduce, 3×3 (strided), 1×1 expand to ``filters * 4``, with a residual connection."""
    out_filters = filters * BOTTLENECK_EXPANSION
    shortcut = _shortcut(x, out_filters, stride, name, sync_batchnorm)
    y = _conv_bn(x, filters, 1, 1, name, 1, sync_batchnorm, relu=True)
    y = _conv_bn(y, filters, 3, stride, name, 2, sync_batchnorm, relu=True)
    y = _conv_bn(y, out_filters, 1, 1, name, 3, sync_batchnorm, relu=False)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.ReLU(name=f"{name}_out")(y)


def small_resnet(
    input_shape: tuple,
    blocks: tuple[int, ...],
    block: str = "basic",
    width: float = 1.0,
    sync_batchnorm: bool = False,
    name: str = "resnet",
) -> keras.Model:
    """A ResNet with the small-image stem; returns the last stage's feature map.

    Args:
        input_shape: ``(height, width, channels)``; any channel count.
        blocks: residual blocks per stage, e.g. ``(2, 2, 2, 2)`` for ResNet-18.
        block: ``"basic"`` (two 3×3) or ``"bottleneck"`` (1×1, 3×3, 1×1 ×4).
        width: channel multiplier for every layer (0.5 halves every layer's channels).
        sync_batchnorm: use ``BatchNormalization(synchronized=True)`` (statistics across replicas).
        name: the model's name.
    """
    if block not in ("basic", "bottleneck"):
        raise ValueError(f"block must be 'basic' or 'bottleneck', got {block!r}")
    block_fn = basic_block if block == "basic" else bottleneck_block
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = _conv(scaled(STAGE_FILTERS[0], width), 3, 1, "stem_conv")(inputs)
    x = _bn("stem_bn", sync_batchnorm)(x)
    x = layers.ReLU(name="stem_relu")(x)
    for stage, (n_blocks, filters) in enumerate(zip(blocks, STAGE_FILTERS, strict=True), start=1):
        for index in range(n_blocks):
            stride = 2 if (stage > 1 and index == 0) else 1
            x = block_fn(x, scaled(filters, width), stride, f"stage{stage}_block{index + 1}", sync_batchnorm)
    return keras.Model(inputs, x, name=name)


def tiny_convnet(
    input_shape: tuple, width: float = 1.0, sync_batchnorm: bool = False, name: str = "tiny"
) -> keras.Model:
    """Three 3×3 conv + BatchNorm + ReLU layers (8, 16, 16 filters × width; strides 1, 2, 2)."""
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    for index, (filters, stride) in enumerate(((8, 1), (16, 2), (16, 2)), start=1):
        x = _conv(scaled(filters, width), 3, stride, f"conv{index}")(x)
        x = _bn(f"bn{index}", sync_batchnorm)(x)
        x = layers.ReLU(name=f"relu{index}")(x)
    return keras.Model(inputs, x, name=name)
