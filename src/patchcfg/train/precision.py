"""Mixed precision: which Keras dtype policy a training stage runs under, and float32 copies to save.

Mixed-precision training (Micikevicius et al. 2018, "Mixed Precision Training") computes
activations and gradients in 16-bit floats while the variables, and the updates to them, stay in
float32; float16 needs the loss scaled so small gradients do not vanish, bfloat16 (float32's
exponent range) does not. A stage's ``mixed_precision`` setting:

- ``auto``: ``mixed_float16`` when a GPU is visible; ``mixed_bfloat16`` when the CPU computes
  bfloat16 natively (Linux: ``avx512_bf16`` or ``amx_bf16`` among the CPU flags); float32
  otherwise, where 16-bit compute is emulated and slower.
- ``true``: the mixed policy of the device, ``mixed_float16`` on GPU and ``mixed_bfloat16`` on CPU
  (emulated where the CPU lacks it).
- ``false``: float32.

:func:`float32_copy` gives the model to save: the same weights under float32 layers, so a saved
``.keras`` file loads and runs in float32 whatever policy trained it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import keras

FLOAT32 = "float32"
MIXED_FLOAT16 = "mixed_float16"
MIXED_BFLOAT16 = "mixed_bfloat16"
#: CPU flags (Linux ``/proc/cpuinfo``) of native bfloat16 arithmetic: AVX-512 BF16 and AMX
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def gpu_visible() -> bool:
    """Whether TensorFlow sees a GPU."""
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str] | None:
    """The CPU's feature flags, or None where they cannot be read (not Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return None


def native_bf16_cpu(flags: frozenset[str] | None = None) -> bool:
    """Whether the CPU computes bfloat16 natively (unknown counts as no)."""
    flags = cpu_flags() if flags is None else flags
    return bool(flags and flags & NATIVE_BF16_FLAGS)


def precision_policy(setting: bool | str, *, gpu: bool | None = None, native_bf16: bool | None = None) -> str:
    """The Keras dtype policy for a ``mixed_precision`` setting (``auto``, true or false) on this
    machine; ``gpu`` and ``native_bf16`` override what is detected."""
    if setting not in (True, False, "auto"):
        raise ValueError(f"mixed_precision: expected auto, true or false, got {setting!r}")
    if setting is False:
        return FLOAT32
    if gpu_visible() if gpu is None else gpu:
        return MIXED_FLOAT16
    if setting is True:
        return MIXED_BFLOAT16
    return MIXED_BFLOAT16 if (native_bf16_cpu() if native_bf16 is None else native_bf16) else FLOAT32


def float32_copy(model: keras.Model) -> keras.Model:
    """``model`` itself when every layer computes in float32, else a copy with float32 layers and
    the same weights (variables are float32 under the mixed policies too)."""
    from patchcfg.models.util import all_layers

    if all(layer.dtype_policy.name == FLOAT32 for layer in all_layers(model)):
        return model

    def as_float32(layer):
        return type(layer).from_config({**layer.get_config(), "dtype": FLOAT32})

    copy = keras.models.clone_model(model, clone_function=as_float32, recursive=True)
    copy.set_weights(model.get_weights())
    return copy
