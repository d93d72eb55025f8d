"""Backbone names and specs: the registry, did-you-mean errors, the spec's defaults (from the schema)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

keras = pytest.importorskip("keras")

from patchcfg.errors import UserError  # noqa: E402
from patchcfg.models import registry  # noqa: E402
from patchcfg.models.backbones import build_backbone  # noqa: E402
from patchcfg.models.registry import SPEC_DEFAULTS, available_backbones, register_backbone  # noqa: E402

SCHEMA = Path(__file__).resolve().parents[2] / "schemas" / "backbone.schema.json"
BUILTIN = ("resnet18", "resnet34", "resnet50", "tiny")


def test_importing_models_package_does_not_import_tensorflow():
    code = (
        "import sys, patchcfg.models; assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_builtin_names_are_registered():
    assert set(BUILTIN) <= set(available_backbones())
    assert available_backbones() == sorted(available_backbones())


def test_unknown_name_suggests_closest():
    with pytest.raises(UserError) as info:
        build_backbone({"name": "resnet81"}, (16, 16, 3))
    message = str(info.value)
    assert "did you mean 'resnet18'" in message
    assert "tiny" in message and "MobileNetV2" in message and "module:function" in message


def test_ambiguous_case_and_case_insensitive_names():
    with pytest.raises(UserError, match="ambiguous"):
        build_backbone({"name": "Resnet50"}, (16, 16, 3))
    assert build_backbone({"name": "TINY"}, (16, 16, 3)).output_shape == (None, 16)


def test_register_backbone(request):
    request.addfinalizer(lambda: registry.unregister_backbone("flat_test_net"))

    @register_backbone("flat_test_net")
    def flat_test_net(input_shape, *, width=1.0, sync_batchnorm=False):
        inputs = keras.Input(input_shape)
        return keras.Model(inputs, keras.layers.Conv2D(max(1, int(8 * width)), 1)(inputs))

    assert "flat_test_net" in available_backbones()
    assert build_backbone({"name": "flat_test_net", "width": 0.5}, (8, 8, 3)).output_shape == (None, 4)
    with pytest.raises(ValueError):
        register_backbone("a:b")


def test_schema_matches_defaults():
    import jsonschema

    schema = json.loads(SCHEMA.read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == "backbone.schema.json"
    jsonschema.Draft202012Validator.check_schema(schema)
    properties = schema["properties"]
    assert set(properties) == set(SPEC_DEFAULTS)
    for key, prop in properties.items():
        assert prop.get("description"), key
        assert prop["default"] == SPEC_DEFAULTS[key], key
    validator = jsonschema.Draft202012Validator(schema)
    assert validator.is_valid({"name": "resnet18", "width": 0.5, "weights": None})
    assert not validator.is_valid({"name": "resnet18", "width": 0})
    assert not validator.is_valid({"name": "resnet18", "widht": 0.5})
