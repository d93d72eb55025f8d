"""Mixed precision: the policy each setting gives on each kind of machine, the schema's values,
float32 copies of models trained under a mixed policy."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

keras = pytest.importorskip("keras")

from patchcfg.cli import main  # noqa: E402
from patchcfg.train import precision  # noqa: E402
from patchcfg.train.precision import cpu_flags, float32_copy, native_bf16_cpu, precision_policy  # noqa: E402


@pytest.mark.parametrize(("setting", "gpu", "native_bf16", "policy"), [
    ("auto", True, False, "mixed_float16"),
    ("auto", True, True, "mixed_float16"),
    ("auto", False, True, "mixed_bfloat16"),
    ("auto", False, False, "float32"),
    (True, True, False, "mixed_float16"),
    (True, False, True, "mixed_bfloat16"),
    (True, False, False, "mixed_bfloat16"),  # asked for: emulated where the CPU lacks it
    (False, True, True, "float32"),
    (False, False, True, "float32"),
])
def test_policy_for_each_setting_and_machine(setting, gpu, native_bf16, policy):
    assert precision_policy(setting, gpu=gpu, native_bf16=native_bf16) == policy


def test_auto_reads_the_gpu_list_and_the_cpu_flags(monkeypatch, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16\n\nprocessor\t: 1\n"
                       "flags\t\t: fpu sse2 avx512f avx512_bf16\n")
    monkeypatch.setattr(precision.sys, "platform", "linux")
    assert "avx512_bf16" in cpu_flags(cpuinfo)
    monkeypatch.setattr(precision, "cpu_flags", lambda: cpu_flags(cpuinfo))
    monkeypatch.setattr(precision, "gpu_visible", lambda: False)
    assert precision_policy("auto") == "mixed_bfloat16"
    monkeypatch.setattr(precision, "gpu_visible", lambda: True)
    assert precision_policy("auto") == "mixed_float16"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 amx_bf16 amx_tile\n")
    assert native_bf16_cpu()
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n")
    assert not native_bf16_cpu()
    monkeypatch.setattr(precision, "gpu_visible", lambda: False)
    assert precision_policy("auto") == "float32"


def test_unreadable_or_foreign_cpu_flags_count_as_no_bf16(monkeypatch, tmp_path):
    monkeypatch.setattr(precision.sys, "platform", "linux")
    assert cpu_flags(tmp_path / "missing") is None
    monkeypatch.setattr(precision.sys, "platform", "darwin")
    assert cpu_flags() is None and not native_bf16_cpu()


@pytest.mark.parametrize("value", ["auto", True, False])
def test_every_training_stage_accepts_auto_true_false(value):
    from patchcfg.config import resolve_config

    stages = ("pretrain", "finetune", "distill")
    config = resolve_config({"name": "x", **{stage: {"mixed_precision": value} for stage in stages}})
    assert [config[stage]["mixed_precision"] for stage in stages] == [value] * 3


def test_other_values_are_refused_with_the_key_path(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "pretrain": {"mixed_precision": "bf16"},
                                    "finetune": {"mixed_precision": 1}}))
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2
    assert "pretrain.mixed_precision: expected auto, true or false (got 'bf16')" in result.output
    assert "finetune.mixed_precision: expected auto, true or false (got 1)" in result.output
    assert "Traceback" not in result.output


def test_float32_copy_of_a_nested_bf16_model_runs_in_float32_with_the_same_weights(tmp_path):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        inner = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5), keras.layers.BatchNormalization(),
                                  keras.layers.ReLU()], name="encoder")
        inputs = keras.Input((6,))
        model = keras.Model(inputs, keras.layers.Dense(2, dtype="float32")(inner(inputs)))
    finally:
        keras.config.set_dtype_policy(previous)
    x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    copy = float32_copy(model)
    assert model.get_layer("encoder").compute_dtype == "bfloat16"
    assert {layer.dtype_policy.name for layer in copy.get_layer("encoder").layers} == {"float32"}
    for a, b in zip(model.get_weights(), copy.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(copy(x).numpy(), model(x).numpy(), rtol=0.05, atol=0.05)  # bf16: ~3 digits
    copy.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded(x).dtype == "float32"
    np.testing.assert_allclose(loaded(x).numpy(), copy(x).numpy(), rtol=1e-6)
    assert float32_copy(copy) is copy  # already float32: nothing to copy
