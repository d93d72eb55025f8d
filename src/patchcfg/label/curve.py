"""The labelling session's learning curve: one point per fit, in ``learning_curve.csv`` (rewritten
atomically) and as TensorBoard scalars (step = labelled training rows), in the experiment's
``label/`` folder. A curve of an earlier session is read back and continued."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np

from patchcfg.label.metrics import METRICS

#: What the page's chart shows of each point.
SHOWN = ("epoch", "version", "model", "labels", "validation_labels", *METRICS)


class LearningCurve:
    """The points of ``folder/learning_curve.csv``; ``note(text, level=...)`` reports write failures."""

    def __init__(self, folder: Path, note):
        self.folder = Path(folder)
        self.note = note
        self.lock = threading.Lock()
        self.points: list[dict] = self._read()
        self._events = None  # the TensorBoard event file, opened on the first record

    def _read(self) -> list[dict]:
        import pandas as pd

        path = self.folder / "learning_curve.csv"
        if not path.is_file():
            return []
        try:
            frame = pd.read_csv(path)
            if "epoch" not in frame.columns:
                raise ValueError("no 'epoch' column")
        except (ValueError, OSError, pd.errors.ParserError) as error:
            kept = path.with_name("learning_curve.unreadable.csv")
            path.replace(kept)
            self.note(f"{path} was unreadable ({error}); kept as {kept.name}, a new curve starts",
                      level="warning")
            return []
        return [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
                for row in frame.to_dict("records")]

    def record(self, version: int, model: str, counts: dict, metrics: dict) -> None:
        """One point: ``learning_curve.csv`` and TensorBoard scalars."""
        import pandas as pd

        from patchcfg.atomic import atomic_write_text

        point = {"epoch": len(self.points) + 1, "time": round(time.time(), 3), "version": version,
                 "model": model, **counts, **{k: metrics.get(k) for k in METRICS},
                 **{k: v for k, v in metrics.items() if k not in METRICS}}
        with self.lock:
            self.points.append(point)
            frame = pd.DataFrame(self.points)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            text = frame.to_csv(index=False, lineterminator="\n")
            atomic_write_text(self.folder / "learning_curve.csv", text)
            self._scalars(point, model)
        except OSError as error:
            self.note(f"cannot write {self.folder}/learning_curve.csv ({error.strerror})", level="error")

    def _scalars(self, point: dict, model: str) -> None:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.record_writer import RecordWriter

        if self._events is None:
            folder = self.folder / "tensorboard"
            folder.mkdir(parents=True, exist_ok=True)
            handle = open(folder / f"events.out.tfevents.{int(time.time())}.label.{os.getpid()}", "ab")
            self._events = (handle, RecordWriter(handle))
            self._events[1].write(event_pb2.Event(wall_time=time.time(),
                                                  file_version="brain.Event:2").SerializeToString())
        handle, writer = self._events
        values = [summary_pb2.Summary.Value(tag=f"{model}/{k}", simple_value=float(v))
                  for k, v in point.items() if k.startswith("val_") and v is not None]
        event = event_pb2.Event(wall_time=point["time"], step=int(point["labels"]),
                                summary=summary_pb2.Summary(value=values))
        writer.write(event.SerializeToString())
        writer.flush()

    def shown(self, last: int = 500) -> list[dict]:
        """The last points, as the page's chart shows them."""
        with self.lock:
            return [{k: p.get(k) for k in SHOWN} for p in self.points[-last:]]

    def close(self) -> None:
        if self._events is not None:
            self._events[0].close()
            self._events = None
