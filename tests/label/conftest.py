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
def config_file():
    """``config_file(folder, labels, **sections)`` -> path of a small config for the app."""
    return write_config


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
        idle = kwargs.pop("idle", 0.2)
        label_app = build(config, root, embed=False, log=messages.append, idle_seconds=idle)
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


class Served:
    """A real `patchcfg label` process on a free port of 127.0.0.1."""

    def __init__(self, config_path, root, *extra):
        import os
        import re
        import subprocess
        import sys
        import time
        from pathlib import Path

        src = str(Path(__file__).resolve().parents[2] / "src")
        env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "patchcfg.cli", "label", str(config_path), "--port", "0", "--no-browser",
             "--no-embed", "--experiments", str(root), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
            start_new_session=True)  # a process group of its own, as a terminal gives it
        self.lines = []
        deadline = time.time() + 60
        self.url = None
        while time.time() < deadline and self.url is None:
            line = self.proc.stdout.readline()
            if not line and self.proc.poll() is not None:
                break
            self.lines.append(line)
            found = re.search(r"(http://127\.0\.0\.1:(\d+))/\?token=(\S+)", line)
            if found:
                self.url, self.base, self.port, self.token = found.group(0, 1, 2, 3)
        if self.url is None:
            self.proc.kill()
            rest = self.proc.stdout.read() or ""
            raise RuntimeError("the app did not start:\n" + "".join(self.lines) + rest)

    def client(self, name="one"):
        import httpx

        headers = {"X-Patchcfg-Token": self.token, "X-Patchcfg-Client": name}
        return httpx.Client(base_url=self.base, headers=headers,
                            cookies={f"patchcfg_token_{self.port}": self.token}, timeout=30)

    def stop(self, sig=None, group=False):
        """Send ``sig`` (SIGINT) to the app, or with ``group`` to its whole process group as a
        terminal's Ctrl-C does (its worker processes too); its exit status."""
        import os
        import signal

        if self.proc.poll() is None:
            if group:
                os.killpg(self.proc.pid, sig or signal.SIGINT)
            else:
                self.proc.send_signal(sig or signal.SIGINT)
        try:
            out, _ = self.proc.communicate(timeout=30)
        except Exception:
            self.proc.kill()
            out, _ = self.proc.communicate()
        self.lines.append(out or "")
        return self.proc.returncode

    @property
    def output(self):
        return "".join(self.lines)


@pytest.fixture
def served():
    """``served(config_path, root, *options)`` -> a running :class:`Served`; stopped at the end."""
    running = []

    def start(config_path, root, *extra):
        process = Served(config_path, root, *extra)
        running.append(process)
        return process

    yield start
    for process in running:
        process.stop()


@pytest.fixture
def browser():
    """A headless Chromium (see ``browsing.py``), closed at the end."""
    from browsing import open_browser

    driver = open_browser()
    yield driver
    driver.quit()
