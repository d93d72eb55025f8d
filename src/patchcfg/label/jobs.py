"""Background finetune jobs of the labelling app, on a snapshot of the table.

A job is this experiment's finetune stage, run by a subprocess (``python -m patchcfg.label.jobs
FOLDER``) on a copy of the table taken when it starts, into its own folder:

    experiments/<name>/label/jobs/<id>/
      job.json          the job: state (running | complete | failed | cancelled), label count, times
      labels.csv        the snapshot (file paths made absolute), the job's data.labels
      log.txt           what the stage printed
      <name>/finetune/  the stage's folder (metrics.csv, fold models), never the user's own finetune
      scores.npz        every snapshot row's probabilities from the fold ensemble (written last, atomically)

The app polls the subprocess; the page shows its fold and epoch (from the stage's
``metrics.csv``). When it completes, its ensemble is scored on the current validation rows and
ranks the queue if it beats the quick head there. Cancelling kills the subprocess and removes the
stage's folder: no half-written model remains to be picked up.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from patchcfg.label.errors import RequestError

STATES = ("running", "complete", "failed", "cancelled")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


class Jobs:
    """The app's finetune jobs; one runs at a time."""

    def __init__(self, store, learner, config: dict, log=print):
        self.store, self.learner, self.config, self.log = store, learner, config, log
        self.folder = learner.folder / "jobs"
        self.jobs: dict[str, dict] = {}
        self.lock = threading.Lock()
        self._starting = threading.Lock()  # one start at a time: two requests never start two jobs
        self._procs: dict[str, subprocess.Popen] = {}
        self._watcher: threading.Thread | None = None
        self._stop = threading.Event()
        self._labels_since_job = 0
        self._read_existing()

    def _read_existing(self) -> None:
        """Jobs of earlier sessions, for the page; one left running by a crashed app is marked failed."""
        if not self.folder.is_dir():
            return
        for path in sorted(self.folder.glob("*/job.json")):
            try:
                job = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if job.get("state") == "running":  # its models may be half-written: removed
                shutil.rmtree(path.parent / self.config["name"], ignore_errors=True)
                (path.parent / "scores.npz").unlink(missing_ok=True)
                job.update(state="failed", error="the app stopped while the job ran")
                self._write(job)
            self.jobs[job["id"]] = job

    # ----------------------------------------------------------------- starting

    def start(self, client: str = "api") -> dict:
        with self._starting:
            return self._start(client)

    def _start(self, client: str) -> dict:
        from patchcfg.errors import UserError

        if not self.config.get("finetune"):
            raise RequestError("the config has no finetune section: a finetune job needs one", 409)
        with self.lock:
            running = [j for j in self.jobs.values() if j["state"] == "running"]
            if running:
                raise RequestError(f"job {running[0]['id']} is still running; cancel it first or wait", 409)
        try:
            config = self._job_config()
        except UserError as error:
            raise RequestError(str(error), 409) from None
        job_id = time.strftime("%Y%m%d-%H%M%S") + f"-{len(self.jobs) + 1}"
        folder = self.folder / job_id
        folder.mkdir(parents=True, exist_ok=True)
        with self.store.lock:  # the table as it is now, journalled labels included
            table = self.store.table
            snapshot = table.df.copy()
            snapshot["filepath"] = table.resolved_paths()
            labelled = int((table.labelled() & ~table.exclude & ~table.validation).sum())
            validation = int((table.labelled() & ~table.exclude & table.validation).sum())
            classes = list(table.classes)
        from patchcfg.atomic import atomic_write_text
        from patchcfg.label_table import LabelTable

        atomic_write_text(folder / "labels.csv", LabelTable(df=snapshot, root=folder).to_csv_text())
        config["data"] = {**config["data"], "labels": str(folder / "labels.csv")}
        job = {"id": job_id, "state": "running", "started": _now(), "finished": None, "client": client,
               "labels": labelled, "validation_labels": validation, "classes": classes,
               "folder": str(folder), "error": None, "progress": "starting", "applied": None}
        (folder / "config.json").write_text(json.dumps(config, indent=1, default=str), encoding="utf-8")
        self._write(job)
        log = open(folder / "log.txt", "ab")
        src = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
        proc = subprocess.Popen([sys.executable, "-m", "patchcfg.label.jobs", str(folder)], stdout=log,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
        log.close()
        with self.lock:
            self.jobs[job_id] = job
            self._procs[job_id] = proc
            self._labels_since_job = 0
        self._ensure_watcher()
        self.store.note(f"finetune job {job_id} started on {labelled} labelled rows (log: {folder}/log.txt)")
        return job

    def _job_config(self) -> dict:
        """This experiment's config for a job: its encoder resolved against this experiment's folder."""
        from patchcfg.errors import UserError

        config = json.loads(json.dumps(self.config, default=str))
        finetune = config["finetune"]
        source = finetune["encoder"]
        if source == "pretrain" or (source == "auto" and config.get("pretrain")):
            path = self.learner.experiment_dir / "pretrain" / "encoder.keras"
            if not path.is_file():
                raise UserError(f"finetune.encoder: pretrain, but {path} does not exist; "
                                "run `patchcfg pretrain` "
                                "first, or set finetune.encoder to a path or null")
            finetune["encoder"] = str(path.resolve())
        elif source and source != "auto":
            finetune["encoder"] = str(Path(source).resolve())
        return config

    def notify(self, new_labels: int) -> None:
        """Start a job every ``label.finetune_every`` new labels (when none runs)."""
        every = self.config["label"]["finetune_every"]
        self._labels_since_job += new_labels
        if every and self._labels_since_job >= every and not self.running():
            try:
                self.start("auto")
            except RequestError as error:
                self._labels_since_job = 0
                self.store.note(f"label.finetune_every: no job started: {error}", level="warning")

    def running(self) -> list[str]:
        with self.lock:
            return [i for i, j in self.jobs.items() if j["state"] == "running"]

    # ----------------------------------------------------------------- watching

    def _ensure_watcher(self) -> None:
        if self._watcher is None or not self._watcher.is_alive():
            self._watcher = threading.Thread(target=self._watch, daemon=True)
            self._watcher.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            with self.lock:
                procs = list(self._procs.items())
            if not procs:
                return
            for job_id, proc in procs:
                job = self.jobs[job_id]
                job["progress"] = self.progress(job)
                code = proc.poll()
                if code is None:
                    continue
                with self.lock:
                    self._procs.pop(job_id, None)
                if job["state"] == "cancelled":
                    continue
                if code == 0 and (Path(job["folder"]) / "scores.npz").is_file():
                    self._finish(job)
                else:
                    tail = self.log_tail(job, 3)
                    job.update(state="failed", finished=_now(), error=f"exit code {code}: {tail}")
                    self._write(job)
                    self.store.note(f"finetune job {job_id} failed (exit code {code}); "
                                    f"see {job['folder']}/log.txt", level="error")

    def progress(self, job: dict) -> str:
        """``fold f/F, epoch e/E`` from the stage's metrics.csv (or the state)."""
        import csv

        if job["state"] != "running":
            return job["state"]
        finetune = self.config["finetune"]
        epochs = sum(int(s["epochs"]) for s in finetune["stages"])
        folds = int(finetune["folds_count"])
        path = self.folder / job["id"] / self.config["name"] / "finetune" / "metrics.csv"
        try:
            with open(path, newline="", encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
        except OSError:
            return "starting (building the model)"
        if not rows:
            return "training: first epoch"
        last = rows[-1]
        fold = int(float(last.get("fold") or 0)) + 1
        done = sum(1 for r in rows if (r.get("fold") or "0") == (last.get("fold") or "0"))
        return f"fold {fold}/{folds}, epoch {done}/{epochs}"

    def log_tail(self, job: dict, lines: int = 20) -> str:
        try:
            text = (Path(job["folder"]) / "log.txt").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return " | ".join(line for line in text.strip().splitlines()[-lines:])[-600:]

    def _finish(self, job: dict) -> None:
        """Score the job's ensemble on the current validation rows; rank the queue with it if it
        beats the quick head there."""
        try:
            with np.load(Path(job["folder"]) / "scores.npz", allow_pickle=False) as data:
                probabilities = data["probabilities"]
                paths, classes = list(data["paths"]), list(data["classes"])
            applied, metrics = self.learner.apply_job(job, probabilities, paths, classes)
            job.update(state="complete", finished=_now(), applied=applied, metrics=metrics)
            self.store.note(f"finetune job {job['id']} complete: val macro AUC "
                            f"{_fmt(metrics.get('val_macro_auc'))}; the queue is ranked by "
                            + ("its ensemble" if applied else "the quick head (it scores better)"))
        except Exception as error:  # noqa: BLE001 - shown on the page and in job.json
            job.update(state="failed", finished=_now(), error=f"scoring the job's ensemble failed: {error}")
            self.store.note(f"finetune job {job['id']}: {job['error']}", level="error")
        self._write(job)

    # ----------------------------------------------------------------- cancelling

    def cancel(self, job_id: str) -> dict:
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None:
                known = ", ".join(self.jobs) or "none"
                raise RequestError(f"no job '{job_id[:80]}' (jobs: {known})", 404)
            if job["state"] != "running":
                raise RequestError(f"job {job_id} is {job['state']}, not running", 409)
            job["state"] = "cancelled"
            proc = self._procs.pop(job_id, None)
        if proc is not None:
            _kill(proc)
        stage = Path(job["folder"]) / self.config["name"]
        shutil.rmtree(stage, ignore_errors=True)  # no half-written model can be picked up
        (Path(job["folder"]) / "scores.npz").unlink(missing_ok=True)
        job.update(finished=_now(), progress="cancelled")
        self._write(job)
        self.store.note(f"finetune job {job_id} cancelled; its models are removed, its log kept")
        return job

    def stop(self) -> None:
        """The app stops: running jobs are cancelled (their folders hold no model)."""
        for job_id in self.running():
            try:
                self.cancel(job_id)
            except RequestError:
                pass
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(5)

    def state(self) -> list[dict]:
        with self.lock:
            jobs = sorted(self.jobs.values(), key=lambda j: j["started"])[-10:]
            keys = ("id", "state", "started", "finished", "labels", "progress", "applied", "metrics", "error")
            out = [{k: j.get(k) for k in keys} for j in jobs]
        for job in out:  # read now, not at the watcher's last look
            job["progress"] = self.progress(job) if job["state"] == "running" else job["progress"]
        return out

    def _write(self, job: dict) -> None:
        from patchcfg.atomic import atomic_write_json

        try:
            atomic_write_json(Path(job["folder"]) / "job.json", job)
        except OSError as error:
            self.store.note(f"cannot write {job['folder']}/job.json ({error.strerror})", level="warning")


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _kill(proc: subprocess.Popen) -> None:
    """SIGTERM to the job's process group, SIGKILL after five seconds."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(5)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


# --------------------------------------------------------------------- the job's own process


def run_job(folder: Path) -> None:
    """Fine-tune on the snapshot, then score every snapshot row with the fold ensemble."""
    from patchcfg.atomic import atomic_write_bytes
    from patchcfg.label_table import read_label_table
    from patchcfg.stages import run_finetune
    from patchcfg.tasks.predict import ensemble_probabilities, resolve_models

    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    run_finetune(config, root=folder, verbose=2, log=lambda text: print(text, flush=True))
    models, model_data, _ = resolve_models(folder / config["name"])
    table = read_label_table(config["data"]["labels"])
    paths = table.resolved_paths()
    probabilities, rows = ensemble_probabilities(models, model_data, paths, len(table.classes),
                                                 config["data"], config["finetune"]["tta"], np.nan)
    import io

    buffer = io.BytesIO()
    np.savez(buffer, probabilities=probabilities, paths=np.array(paths), classes=np.array(table.classes))
    atomic_write_bytes(folder / "scores.npz", buffer.getvalue())
    print(f"scored {len(rows)} images with the fold ensemble", flush=True)


if __name__ == "__main__":
    run_job(Path(sys.argv[1]))
