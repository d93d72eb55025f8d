"""A small digits table and a config for the labelling app."""

import pytest
import yaml


def write_config(folder, labels, **sections):
    config = {"name": "lab", "seed": 1, "data": {"labels": str(labels), "imshape": [16, 16]},
              "backbone": {"name": "tiny"}, "augmentation": {"preset": "none"}, **sections}
    path = folder / "lab.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def lab(tmp_path, digits_table):
    """(config dict, label table path, experiments root) for 24 unlabelled digit images, classes zero, one."""
    import pandas as pd

    from patchcfg.config import load_config

    labels = digits_table(tmp_path / "data", n=24)
    frame = pd.read_csv(labels, dtype=str, keep_default_na=False)
    frame["zero"] = ""
    frame["one"] = ""
    frame["validation"] = "False"
    frame.to_csv(labels, index=False)
    path = write_config(tmp_path, labels)
    config = load_config(path, ["query={}", "label={}"])
    return config, labels, tmp_path / "experiments"


@pytest.fixture
def client_of():
    """``client_of(config, root)`` -> a started TestClient (Host 'testserver', token 'T')."""
    import warnings

    with warnings.catch_warnings():  # starlette >= 1.10 prefers httpx2; httpx works the same
        warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
        from starlette.testclient import TestClient

    from patchcfg.label.app import create_app
    from patchcfg.label.server import build

    started = []

    def make(config, root, **kwargs):
        messages = []
        label_app = build(config, root, embed=False, log=messages.append, idle_seconds=kwargs.pop("idle", 0.2))
        client = TestClient(create_app(label_app, "T", {"testserver"}), **kwargs)
        client.__enter__()
        client.cookies.set("patchcfg_token", "T")
        client.headers.update({"X-Patchcfg-Token": "T", "X-Patchcfg-Client": "one"})
        client.label_app, client.messages = label_app, messages
        started.append(client)
        return client

    yield make
    for client in started:
        client.__exit__(None, None, None)
