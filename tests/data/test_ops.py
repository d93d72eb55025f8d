"""The op registry: every op declares what the schema says; an op written outside the package (as
the Extending page, docs/extending.md, shows) runs in a recipe and appears in the schema and reference."""

from pathlib import Path

import jsonschema
import numpy as np
import pytest
import tensorflow as tf

from patchcfg.config import docs
from patchcfg.config.docs import augmentation_schema_text as schema_text
from patchcfg.config.schema import schema_dir
from patchcfg.data.augment import build_augmenter
from patchcfg.data.ops import FAMILIES, OPS, PROB, Param, register, unregister
from patchcfg.data.recipes import augmentation_schema, expand_recipe, reference_markdown

EXTENDING = Path(__file__).resolve().parents[2] / "docs" / "extending.md"


@pytest.fixture
def example_op():
    """The Extending page's example op, registered from its text; yields its builder and the page's test."""
    module, test = docs.page_examples(EXTENDING.read_text(encoding="utf-8"), "### An augmentation op")
    namespace = {}
    exec(compile(module, "channel_dropout.py", "exec"), namespace)
    yield namespace["channel_dropout"], test
    unregister("channel_dropout")


def test_every_op_is_consistent():
    for name, op in OPS.items():
        assert op.family in FAMILIES and op.doc, name
        assert "sometimes" in op.params, name
        assert op.primary is None or op.primary in op.params, name
        assert op.off_at_zero is None or op.off_at_zero in op.params, name
        assert set(op.required) <= set(op.params), name


def test_an_op_registered_outside_the_package_works_end_to_end(example_op):
    _, page_test = example_op
    namespace = {}
    exec(compile(page_test, "test_channel_dropout.py", "exec"), namespace)
    namespace["test_channel_dropout_zeroes_one_channel_per_image"]()
    assert expand_recipe({"channel_dropout": 1.0}) == [("channel_dropout", {"p": 1.0, "sometimes": 1.0})]
    images = tf.constant(np.random.default_rng(0).uniform(0.1, 1.0, (8, 6, 6, 3)), tf.float32)
    out = build_augmenter({"channel_dropout": 1.0}, (6, 6), 3, seed=0)(images).numpy()
    zeroed = (out == 0).all(axis=(1, 2))  # (images, channels): which channels were dropped
    assert (zeroed.sum(axis=1) == 1).all()
    np.testing.assert_array_equal(out[~zeroed[:, None, None, :].repeat(6, 1).repeat(6, 2)],
                                  images.numpy()[~zeroed[:, None, None, :].repeat(6, 1).repeat(6, 2)])
    assert not build_augmenter({"channel_dropout": 0}, (6, 6), 3).steps  # off at zero

    schema = augmentation_schema()
    assert "channel_dropout" in schema["properties"]
    jsonschema.validate({"channel_dropout": 0.5}, schema)
    jsonschema.validate({"channel_dropout": {"p": 0.5, "sometimes": 0.5}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"channel_dropout": {"q": 0.5}}, schema)
    assert "| `channel_dropout` | `p` | `p` (0.1) | With this probability, zero one channel" in reference_markdown()


def test_unregistering_restores_the_schema(example_op):
    unregister("channel_dropout")
    assert "channel_dropout" not in OPS
    assert schema_text() == (schema_dir() / "augmentation.schema.json").read_text(encoding="utf-8")
    register("channel_dropout", "patchwork", "Again.", {"p": Param(PROB, 0.1, "Probability.")})(example_op[0])


def test_registering_refuses_mistakes():
    with pytest.raises(ValueError, match="registered twice"):
        register("Fliplr", "imgaug", "Twice.", {})(lambda params: None)
    with pytest.raises(ValueError, match="family must be one of"):
        register("new_op", "torchvision", "Unknown family.", {})
    with pytest.raises(ValueError, match="primary 'q' is not one of its parameters"):
        register("new_op", "patchwork", "Bad primary.", {"p": Param(PROB, 0.1, "Probability.")}, primary="q")
