"""Background finetune jobs: a snapshot of the table, the experiment's finetune stage in its own folder,
progress on the page, the ensemble scoring the queue when it wins, and a cancel that leaves no model."""

import json
import time

import pandas as pd
import pytest

from patchcfg.label_table import read_label_table


@pytest.fixture
def ft(tmp_path, digits_table, finetune_config):
    from patchcfg.config import load_config

    labels = digits_table(tmp_path / "data", n=36)
    config = load_config(finetune_config(tmp_path, labels, folds_count=2), ["query={}", "label={}"])
    return config, labels, tmp_path / "experiments"


def wait(condition, seconds, what):
    deadline = time.time() + seconds
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"waited {seconds} s for {what}")


def test_jobs_refuse_what_they_cannot_do(ft, client_of):
    config, labels, root = ft
    c = client_of(config, root)
    missing = c.delete("/api/jobs/nope")
    assert missing.status_code == 404 and "no job 'nope'" in missing.json()["error"]
    bad = c.delete("/api/jobs/..%2F..")
    assert bad.status_code == 400 and "a job id is" in bad.json()["error"]
    assert c.get("/api/jobs").json() == {"jobs": []}


@pytest.mark.slow
def test_a_cancelled_job_leaves_no_model(ft, client_of):
    config, labels, root = ft
    c = client_of(config, root)
    started = c.post("/api/jobs/finetune")
    assert started.status_code == 202, started.text
    job_id = started.json()["job"]["id"]
    folder = root / "ft" / "label" / "jobs" / job_id
    again = c.post("/api/jobs/finetune")
    assert again.status_code == 409 and "still running" in again.json()["error"]
    wait(lambda: (folder / "ft" / "finetune" / "metrics.csv").is_file(), 180, "the job to train")
    assert "fold 1/2, epoch" in c.get("/api/jobs").json()["jobs"][0]["progress"]
    cancelled = c.delete(f"/api/jobs/{job_id}")
    assert cancelled.status_code == 200 and cancelled.json()["job"]["state"] == "cancelled"
    proc_gone = not c.label_app.jobs._procs
    assert proc_gone
    time.sleep(1.0)  # nothing may appear after the cancel either
    assert not list(folder.rglob("*.keras")) and not list(folder.rglob("*.h5"))
    assert not (folder / "ft").exists() and not (folder / "scores.npz").exists()
    assert (folder / "log.txt").is_file() and (folder / "labels.csv").is_file()
    assert json.loads((folder / "job.json").read_text())["state"] == "cancelled"
    assert c.delete(f"/api/jobs/{job_id}").status_code == 409
    assert not (root / "ft" / "finetune").exists()  # the experiment's own finetune is untouched


@pytest.mark.slow
def test_a_job_trains_on_a_snapshot_and_scores_the_queue(ft, client_of):
    config, labels, root = ft
    c = client_of(config, root)
    c.post("/api/label", json={"row": 0, "changes": {"one": 1}})  # journalled, not yet in the CSV
    job_id = c.post("/api/jobs/finetune").json()["job"]["id"]
    c.post("/api/label", json={"row": 1, "changes": {"one": 1}})  # after the snapshot
    folder = root / "ft" / "label" / "jobs" / job_id
    snapshot = read_label_table(folder / "labels.csv")
    table = read_label_table(labels)
    assert snapshot.df.at[0, "one"] == 1 and snapshot.df["one"].isna()[1] == table.df["one"].isna()[1]
    assert snapshot.resolved_paths() == table.resolved_paths()
    job = wait(lambda: next((j for j in c.get("/api/jobs").json()["jobs"] if j["state"] != "running"), None),
               300, "the job to finish")
    assert job["state"] == "complete", job
    assert job["metrics"]["val_macro_auc"] is not None and job["applied"] is True  # no quick head to beat
    state = c.get("/api/state").json()
    assert state["model"]["source"] == f"finetune job {job_id}"
    queue = c.get("/api/queue?strategy=margin&subset=all&n=5").json()
    assert f"scored by the finetune job {job_id}" in queue["ordered_by"]
    assert all(r["probabilities"] is not None for r in queue["rows"])
    curve = pd.read_csv(root / "ft" / "label" / "learning_curve.csv")
    assert curve["model"].tolist() == ["finetune"] and curve["labels"].tolist() == [job["labels"]]
    assert (folder / "log.txt").stat().st_size > 0
    assert not (root / "ft" / "finetune").exists()


def test_a_job_left_running_by_a_crash_is_failed_and_its_models_removed(ft, client_of):
    config, labels, root = ft
    folder = root / "ft" / "label" / "jobs" / "20260101-000000-1"
    (folder / "ft" / "finetune" / "fold_0").mkdir(parents=True)
    (folder / "ft" / "finetune" / "fold_0" / "model.keras").write_bytes(b"half")
    (folder / "job.json").write_text(json.dumps({"id": folder.name, "state": "running", "started": "x",
                                                 "folder": str(folder), "labels": 3, "progress": "fold 1/2"}))
    c = client_of(config, root)
    job = c.get("/api/jobs").json()["jobs"][0]
    assert job["state"] == "failed" and "stopped while the job ran" in job["error"]
    assert not (folder / "ft").exists()
    assert json.loads((folder / "job.json").read_text())["state"] == "failed"
