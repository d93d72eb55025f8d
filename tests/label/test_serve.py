"""The app as a real process: the printed address, Ctrl-C writes every label, SIGKILL loses none."""

import os
import signal
from pathlib import Path

import httpx

from patchcfg.label_table import read_label_table

SRC = str(Path(__file__).resolve().parents[2] / "src")


def test_ctrl_c_writes_every_label_and_sigkill_loses_none(lab, served):
    config, labels, root = lab
    config_path = labels.parent.parent / "lab.yaml"
    app = served(config_path, root)
    assert app.url.startswith("http://127.0.0.1:") and len(app.token) >= 20
    import subprocess
    import sys

    second = subprocess.run([sys.executable, "-m", "patchcfg.cli", "label", str(config_path), "--port", "0",
                             "--no-browser", "--no-embed", "--experiments", str(root)],
                            capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": SRC})
    assert second.returncode == 2 and "already being served" in second.stderr
    with app.client() as c:
        assert c.get("/api/state").status_code == 200
        assert c.post("/api/label", json={"rows": [0, 1], "changes": {"zero": 1}}).status_code == 200
        # the browser's view of security, over a real socket
        assert httpx.get(app.base + "/api/state").status_code == 401
        assert httpx.get(app.base + "/api/state", headers={"Host": "attacker.example"},
                         cookies=dict(c.cookies)).status_code == 421
    assert app.stop(signal.SIGINT) == 0, app.output
    assert "stopped" in app.output and "Traceback" not in app.output
    assert read_label_table(labels).df.loc[[0, 1], "zero"].tolist() == [1, 1]

    again = served(config_path, root)
    with again.client() as c:
        for row in range(2, 12):
            assert c.post("/api/label", json={"row": row, "changes": {"one": 0}}).status_code == 200
    again.stop(signal.SIGKILL)
    third = served(config_path, root)
    assert "replayed" in third.output
    df = read_label_table(labels).df
    assert (df.loc[2:11, "one"] == 0).all() and df.loc[[0, 1], "zero"].tolist() == [1, 1]
    assert third.stop() == 0


def test_ctrl_c_in_the_terminal_stops_the_app_and_its_worker_without_a_traceback(lab, served):
    """A terminal's Ctrl-C reaches every process of its group: the quick head's worker too."""
    import time

    import numpy as np
    import pandas as pd

    config, labels, root = lab
    paths = read_label_table(labels).resolved_paths()
    folder = root / "lab" / "embed"
    folder.mkdir(parents=True)
    np.save(folder / "features.npy", np.random.default_rng(0).normal(size=(len(paths), 4)).astype(np.float32))
    pd.DataFrame({"filepath": paths}).to_csv(folder / "index.csv", index=False)
    app = served(labels.parent.parent / "lab.yaml", root)
    with app.client() as c:
        assert c.post("/api/label", json={"rows": [0, 1], "changes": {"zero": 1, "one": 0}}).status_code == 200
        assert c.post("/api/label", json={"rows": [2, 3], "changes": {"zero": 0, "one": 1}}).status_code == 200
        assert c.post("/api/retrain").status_code == 200  # the worker process has fitted
    time.sleep(0.5)
    assert app.stop(signal.SIGINT, group=True) == 0, app.output
    assert "stopped" in app.output and "Traceback" not in app.output, app.output
    assert read_label_table(labels).df.loc[[0, 1, 2, 3], "zero"].tolist() == [1, 1, 0, 0]


def test_bad_config_or_table_exit_2_before_serving(lab, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    config, labels, root = lab
    config_path = labels.parent.parent / "lab.yaml"
    src = str(Path(__file__).resolve().parents[2] / "src")

    def run(*args):
        return subprocess.run([sys.executable, "-m", "patchcfg.cli", "label", *map(str, args), "--no-browser",
                               "--port", "0", "--no-embed"], capture_output=True, text=True, timeout=60,
                              env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin"})

    bad = run(config_path, "label.grid=0")
    assert bad.returncode == 2 and "label.grid" in bad.stderr and "Traceback" not in bad.stderr
    typo = run(config_path, "label.gird=3")
    assert typo.returncode == 2 and "did you mean 'grid'" in typo.stderr
    stop = run(config_path, "label.stop_when={val_auc: 0.9}")
    assert stop.returncode == 2 and "val_macro_auc" in stop.stderr
    broken = tmp_path / "broken.csv"
    broken.write_text("filepath,zero\na.png,7\n")
    table = run(config_path, "--labels", broken)
    assert table.returncode == 2 and "row 2, column 'zero'" in table.stderr
    assert "Traceback" not in table.stderr
    journal = Path(str(labels) + ".journal.jsonl")
    journal.write_text('{"seq": 1}\nnot json\n{"seq": 3}\n')
    corrupt = run(config_path)
    assert corrupt.returncode == 2 and "journal.jsonl:2" in corrupt.stderr
    assert "Traceback" not in corrupt.stderr
    journal.unlink()
    busy = run(config_path, "--host", "256.1.1.1")
    assert busy.returncode == 2 and "cannot listen" in busy.stderr
