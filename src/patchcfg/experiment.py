"""The experiment folder (``experiments/<name>/``): resolved config, stages, status, metrics.

Every file is written atomically. A stage that completed with the same resolved config is
skipped; a different config under an existing name is refused (new name, or ``--force``); an
interrupted or failed stage resumes from its checkpoints; a lock keeps a second process out.
Only the chief worker writes under distribution: on other workers every write is a no-op.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from patchcfg.atomic import atomic_write_json, atomic_write_text
from patchcfg.errors import ExperimentError
from patchcfg.stages import stage_names

DEFAULT_ROOT = "experiments"


def experiments_root(root: str | os.PathLike | None = None) -> Path:
    """``root``, else ``$PATCHCFG_EXPERIMENTS``, else ``experiments/`` in the working folder."""
    return Path(root or os.environ.get("PATCHCFG_EXPERIMENTS") or DEFAULT_ROOT)


def experiment_dir(root: Path, name: str) -> Path:
    """``root/name``, refused unless it is a folder strictly inside ``root`` (never ``root`` itself,
    the working folder or anything outside), and ``root`` is a folder where it exists."""
    if root.exists() and not root.is_dir():
        raise ExperimentError(
            f"{root}: the experiments root is a file, not a folder; give a folder "
            "(--experiments DIR or $PATCHCFG_EXPERIMENTS)")
    folder = Path(os.path.normpath(root / str(name)))
    if not name or os.sep in str(name) or "/" in str(name) or folder.parent != Path(os.path.normpath(root)):
        raise ExperimentError(
            f"name {name!r}: the experiment folder {folder} would not be a folder inside the experiments "
            f"root {root}; use letters, digits, '.', '_' and '-', not only dots (e.g. name=my-run)")
    if folder.is_symlink() and folder.resolve().parent != root.resolve():
        raise ExperimentError(
            f"{folder} is a link to {folder.resolve()}, outside the experiments root {root}; an experiment "
            "is written only inside its root: remove the link, or give the real place with --experiments DIR")
    return folder


def dump_config(config: dict) -> str:
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=None, allow_unicode=True)


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _package_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for name in ("patchcfg", "tensorflow", "keras", "numpy", "pandas", "scikit-learn", "pyyaml", "keras-hub"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _devices() -> list[str] | None:
    if "tensorflow" not in sys.modules:  # never import TensorFlow just to describe it
        return None
    tf = sys.modules["tensorflow"]
    return [f"{d.device_type}:{d.name}" for d in tf.config.list_logical_devices()]


def _process_gone(pid: Any, host: Any) -> bool:
    """True when ``pid`` on this host (or an unnamed one) is certainly no longer running."""
    if not isinstance(pid, int) or pid <= 0 or (host and host != socket.gethostname()):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def live_status(status: dict | None) -> dict | None:
    """``status.json`` as it stands now: a stage recorded as ``running`` whose process is gone
    (killed with SIGKILL, the machine lost power) is ``interrupted (process gone)``."""
    if not isinstance(status, dict) or status.get("state") != "running":
        return status
    if not _process_gone(status.get("pid"), status.get("host")):
        return status
    return {**status, "state": "interrupted",
            "error": f"interrupted (process gone): pid {status.get('pid')} stopped without a word; "
                     "run the same command again to resume"}


class Experiment:
    """One experiment folder. Constructing it checks, but does not yet write, anything."""

    def __init__(self, config: dict, root: str | os.PathLike | None = None, force: bool = False,
                 is_chief: bool = True):
        self.config = config
        self.name = config["name"]
        self.root = experiments_root(root)
        self.dir = experiment_dir(self.root, self.name)
        self.force = force
        self.is_chief = is_chief
        self.config_text = dump_config(config)

    @property
    def config_path(self) -> Path:
        return self.dir / "config.yaml"

    def existing_config(self) -> dict | None:
        if not self.config_path.is_file():
            return None
        try:
            return yaml.safe_load(self.config_path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError):
            return {"__unreadable__": True}

    def started_stages(self) -> set[str]:
        return {stage for stage in stage_names() if (self.dir / stage / "status.json").is_file()}

    def comparable(self, config: dict) -> dict:
        """What must not change under one name: everything but the sections of stages not yet run
        (and ``query`` and ``label``, whose settings are chosen afresh for every query and every
        labelling session)."""
        stages, started = stage_names(), self.started_stages()
        return {k: v for k, v in config.items()
                if k not in ("description", "query", "label") and not (k in stages and k not in started)}

    def check_config(self) -> None:
        """Refuse to mix two different configs under one name (unless ``force``).

        Sections of stages that have not run yet may change (a finetune section added after
        pretraining, a query section edited before querying); everything else must be the same.
        """
        existing = self.existing_config()
        if existing is None or self.force or self.comparable(existing) == self.comparable(self.config):
            return
        changed = sorted(_differences(self.comparable(existing), self.comparable(self.config)))
        shown = ", ".join(changed[:8]) + (" ..." if len(changed) > 8 else "")
        raise ExperimentError(
            f"experiment '{self.name}' in {self.dir} already ran with a different config "
            f"(differs in: {shown}). Give the run a new name (name=...), or pass --force to "
            "replace the experiment's stages")

    def stage(self, stage: str, inputs: dict | None = None, own_lock: bool = False) -> StageRun:
        return StageRun(self, stage, inputs, own_lock)

    def write_config(self) -> None:
        if not self.is_chief:
            return
        existing = self.existing_config()
        if existing is not None and self.force and self.comparable(existing) != self.comparable(self.config):
            for stage in stage_names():
                shutil.rmtree(self.dir / stage, ignore_errors=True)
        atomic_write_text(self.config_path, self.config_text)


def _differences(a: Any, b: Any, prefix: str = "") -> set[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: set[str] = set()
        for key in set(a) | set(b):
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in a or key not in b:
                out.add(path)
            else:
                out |= _differences(a[key], b[key], path)
        return out
    return set() if a == b else {prefix or "(top level)"}


class _Lock:
    """An exclusive ``flock`` on ``.lock`` in the experiment folder, released when the process dies."""

    def __init__(self, path: Path):
        self.path = path
        self.handle = None

    def acquire(self) -> None:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise ExperimentError(
                f"{self.path.parent} is being written by {holder}; wait for it to finish, "
                "or run under another name (name=...)") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {_now()}")
        handle.flush()
        self.handle = handle

    def release(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None


class StageRun:
    """One stage of an experiment: ``with run:`` marks it running, then complete/failed/interrupted.
    ``stage`` is its folder (a shard of the embed stage: ``embed_shards/0-of-4``); ``own_lock``: the
    lock is the folder's own, not the experiment's (shards run at once, each in its folder)."""

    def __init__(self, experiment: Experiment, stage: str, inputs: dict | None = None, own_lock: bool = False):
        self.experiment = experiment
        self.stage = stage
        self.inputs = inputs
        self.is_chief = experiment.is_chief
        self.dir = experiment.dir / stage
        self._lock = _Lock((self.dir if own_lock else experiment.dir) / ".lock")
        self._previous_handlers: dict[int, Any] = {}
        self._scratch: Path | None = None
        self.resuming = False
        self.started = None

    # ------------------------------------------------------------------ paths and state
    def path(self, name: str) -> Path:
        return self.dir / name

    @property
    def checkpoint_dir(self) -> Path:
        if self.is_chief:
            return self.dir / "checkpoints"
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix=f"patchcfg-{self.stage}-worker-"))
        return self._scratch

    @property
    def tensorboard_dir(self) -> Path:
        return self.dir / "tensorboard"

    def status(self) -> dict | None:
        try:
            return live_status(json.loads((self.dir / "status.json").read_text(encoding="utf-8")))
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    @property
    def state(self) -> str | None:
        status = self.status()
        return status.get("state") if status else None

    def is_complete(self) -> bool:
        """Complete, with this same resolved config (else the config check refuses or --force resets)."""
        experiment = self.experiment
        experiment.check_config()
        existing = experiment.existing_config()
        if experiment.force and existing is not None and \
                experiment.comparable(existing) != experiment.comparable(experiment.config):
            return False
        return self.state == "complete" and not self.inputs_changed()

    def inputs_changed(self) -> bool:
        """True when an earlier attempt ran on other inputs (e.g. a label table edited since)."""
        status = self.status()
        return bool(status) and self.inputs is not None and status.get("inputs") != self.inputs

    def skip_message(self) -> str:
        return (f"{self.stage} of '{self.experiment.name}' is already complete with this config "
                f"({self.dir}); skipping. To run it again, remove that folder (--force replaces an "
                "experiment that ran with another config, not a complete one).")

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> StageRun:
        self.experiment.check_config()
        if self.is_chief:
            self._lock.acquire()
            try:
                self.experiment.write_config()
                if (self.experiment.force and self.state in ("complete", "failed", "interrupted")) \
                        or self.inputs_changed():
                    # start afresh: asked to, or its inputs changed
                    shutil.rmtree(self.dir, ignore_errors=True)
                previous = self.state
                self.resuming = previous in ("running", "interrupted", "failed") and \
                    self.checkpoint_dir.is_dir() and any(self.checkpoint_dir.iterdir())
                self.dir.mkdir(parents=True, exist_ok=True)
                self.started = _now()
                self._write_status("running")
                self._write_env()
            except BaseException:
                self._lock.release()
                raise
        self._install_signal_handlers()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._restore_signal_handlers()
        try:
            if exc_type is None:
                self._write_status("complete")
            elif issubclass(exc_type, KeyboardInterrupt):
                self._write_status("interrupted", error="interrupted (SIGINT/SIGTERM); run again to resume")
            else:
                self._write_status("failed", error=f"{exc_type.__name__}: {exc}")
        finally:
            self._lock.release()
            if self._scratch is not None:
                shutil.rmtree(self._scratch, ignore_errors=True)
        return False

    def _install_signal_handlers(self) -> None:
        if os.name != "posix":
            return
        import threading

        if threading.current_thread() is not threading.main_thread():
            return

        def interrupt(signum, frame):
            raise KeyboardInterrupt(f"signal {signum}")

        self._previous_handlers[signal.SIGTERM] = signal.signal(signal.SIGTERM, interrupt)

    def _restore_signal_handlers(self) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers.clear()

    # ------------------------------------------------------------------ writes (chief only)
    def _write_status(self, state: str, error: str | None = None) -> None:
        if not self.is_chief:
            return
        atomic_write_json(self.dir / "status.json", {
            "state": state, "stage": self.stage, "started": self.started, "inputs": self.inputs,
            "ended": None if state == "running" else _now(), "error": error, "pid": os.getpid(),
            "host": socket.gethostname()})

    def _write_env(self) -> None:
        self.write_json("env.json", {
            "versions": _package_versions(), "git_commit": _git_commit(), "devices": _devices(),
            "command_line": sys.argv, "cwd": os.getcwd(), "host": socket.gethostname(),
            "platform": platform.platform(), "resumed": self.resuming, "started": self.started})

    def update_env(self, **info: Any) -> None:
        """Add facts only known once training starts (devices, strategy, replicas) to env.json."""
        if not self.is_chief:
            return
        try:
            env = json.loads((self.dir / "env.json").read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            env = {}
        env.update(info)
        if env.get("devices") is None:
            env["devices"] = _devices()
        self.write_json("env.json", env)

    def write_json(self, name: str, obj: Any) -> None:
        if self.is_chief:
            atomic_write_json(self.dir / name, obj)

    def write_text(self, name: str, text: str) -> None:
        if self.is_chief:
            atomic_write_text(self.dir / name, text)

    def read_summary(self) -> dict:
        """summary.json of this stage ({} when it has none)."""
        try:
            return json.loads((self.dir / "summary.json").read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def write_summary(self, summary: dict) -> None:
        self.write_json("summary.json", summary)

    def read_metrics(self) -> list[dict]:
        path = self.dir / "metrics.csv"
        if not path.is_file():
            return []
        with open(path, newline="", encoding="utf-8") as handle:
            return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(handle)]

    def append_metrics(self, row: dict, replace_from: dict | None = None) -> None:
        """Append one row to metrics.csv (whole file rewritten atomically; header = union of keys).

        ``replace_from`` drops earlier rows matching all its items at or after it (e.g.
        ``{"epoch": 3}`` after a resume from epoch 3, so epochs are never listed twice).
        """
        if not self.is_chief:
            return
        rows = self.read_metrics()
        key = replace_from or {k: row[k] for k in ("epoch", "fold", "stage") if k in row}
        rows = [r for r in rows if not all(r.get(k) == v for k, v in key.items())]
        rows.append(row)
        header: list[str] = []
        for r in rows:
            header.extend(k for k in r if k not in header)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=header, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.dir / "metrics.csv", buffer.getvalue())


def stage_logs(log=None, verbose="auto", chief: bool = True):
    """(log, say): ``log`` prints progress lines; ``say`` is ``log`` on the chief unless verbose is 0."""
    log = log or (lambda text: print(text, flush=True))
    return log, (log if chief and verbose != 0 else (lambda text: None))


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (to notice a label table edited between runs)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _number(text: str) -> Any:
    if text == "":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text
