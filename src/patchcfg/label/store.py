"""The label table while the app serves it: the table in memory, a journal on disk, the CSV behind.

Every acknowledged change is first appended to ``<table>.journal.jsonl`` and fsync'd; only then is
it applied in memory and acknowledged. The CSV is rewritten (through :meth:`LabelTable.write_text`:
atomic, one ``.bak``) after a short idle, on stop and on demand, from a copy of the table taken
under the store's lock and written outside it (labels are acknowledged during the write and wait
for the next one); a ``flush`` line in the journal records how far the CSV holds them. On start,
the journal lines the last ``flush`` does not cover are replayed onto the CSV (a crash, even
SIGKILL, loses nothing that was acknowledged). When another program changes the CSV while the app
runs (its size, time or hash differ from what the app last read or wrote), the CSV is read again
and the pending journal applied on top: the app never overwrites it unseen.

The journal's lines are described in :mod:`patchcfg.label.journal`.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from patchcfg.atomic import file_lock
from patchcfg.errors import UserError
from patchcfg.label.errors import RequestError
from patchcfg.label.journal import (
    FLAGS,
    Action,
    Journal,
    apply_entries,
    rename_in_actions,
    set_cell,
    undo_history,
    unwritten,
)
from patchcfg.label_table import RESERVED, LabelTable, forget_last_read, read_label_table


def _fingerprint(path: Path) -> tuple | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return (stat.st_mtime_ns, stat.st_size, hashlib.sha256(path.read_bytes()).hexdigest())


def _cell(value):
    """A table cell as JSON: None (unknown), 0 or 1 for classes; bools stay bools."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return int(value)


def hash_fraction(text: str) -> float:
    """A stable number in [0, 1) from ``text`` (the same in every session and on every machine)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") / 2.0 ** 64


class LabelStore:
    """The label table, its journal and its CSV; every method is safe to call from several threads."""

    def __init__(self, path: str | os.PathLike, validation_fraction: float, log=print, check_classes=None):
        #: called with the classes an added or renamed class would leave; raises RequestError to refuse
        self.check_classes = check_classes
        self.path = Path(path)
        self.journal = Journal(self.path, self.note)
        self.journal_path = self.journal.path
        self.validation_fraction = float(validation_fraction)
        self.log = log
        self.lock = threading.RLock()
        self._flush_lock = threading.RLock()  # one CSV write at a time; taken before self.lock, never after
        self.table: LabelTable = read_label_table(self.path)
        forget_last_read()  # the store holds the table; a second copy would live as long as the server
        self.journal.lock()
        self._seen = _fingerprint(self.path)
        self.seq = 0
        self.flushed_seq = 0  # the CSV holds every change up to this seq
        self._flush_line_seq = 0  # the seq of the last flush line
        self.actions: list[Action] = []
        self.messages: list[dict] = []  # what the page and the terminal should know, newest last
        self.error: str | None = None  # the last CSV write that failed, until one succeeds
        self.session_rows: set[int] = set()
        self.session_cells = 0
        self.session_started = time.time()
        self.first_label_time: float | None = None
        self._dirty_since: float | None = None  # the first change the CSV does not hold yet
        self._last_change = 0.0
        self._change_count = 0  # grows with every change: one made while the CSV is written stays pending
        self._action_counter = 0
        self._recent: list[tuple[int, int]] = []  # (seq, row) of cell changes this session
        self.generation = 0  # grows when rows or columns may have moved: pages then reload everything
        self.rows_generation = 0  # grows when rows may have moved (the table read again): features realign
        try:
            replayed = self._replay()
        except BaseException:
            self.close()
            raise
        self._index = {p: i for i, p in enumerate(self.table.df["filepath"])}
        if replayed:
            self.note(f"{self.journal_path.name}: {replayed} change(s) not yet in {self.path.name} replayed")
            self.flush()

    # ----------------------------------------------------------------- journal

    def close(self) -> None:
        """Let go of the journal's lock (the app has stopped)."""
        self.journal.close()

    def _replay(self) -> int:
        """Apply the journal entries the last flush does not cover to the table just read; rebuild undo."""
        entries = self.journal.read()
        last_flush = next((e for e in reversed(entries) if e.get("op") == "flush"), None)
        if last_flush is not None:
            self._flush_line_seq = int(last_flush["seq"])
            self.flushed_seq = int(last_flush.get("covers", self._flush_line_seq))
        pending = unwritten(entries, self.flushed_seq)
        self.seq = max((int(e["seq"]) for e in entries), default=0)
        self._action_counter = self.seq
        applied = apply_entries(self.table, pending, self.note)
        self.actions = undo_history(entries)
        if pending:
            self._changed()  # the CSV does not hold them yet
        return applied

    def note(self, text: str, level: str = "info") -> None:
        self.messages.append({"time": time.time(), "level": level, "text": text})
        del self.messages[:-50]
        self.log(f"{'warning: ' if level != 'info' else ''}{text}")

    # ----------------------------------------------------------------- reading

    @property
    def classes(self) -> list[str]:
        return self.table.classes

    def __len__(self) -> int:
        return len(self.table)

    def check_row(self, row) -> int:
        if isinstance(row, bool) or not isinstance(row, int):
            raise RequestError(f"row must be a row number (0 to {len(self) - 1}), got {json.dumps(row)}; "
                               "rows are addressed by number only, never by a file path")
        if not 0 <= row < len(self):
            raise RequestError(f"row {row} does not exist: the table has rows 0 to {len(self) - 1}", 404)
        return row

    def row(self, row: int) -> dict:
        """One row as JSON: its file path (for display), labels, flags, subset."""
        df = self.table.df
        labels = {c: _cell(df.at[row, c]) for c in self.classes}
        item = {"row": int(row), "filepath": str(df.at[row, "filepath"]), "labels": labels,
                "exclude": bool(df.at[row, "exclude"]), "validation": bool(df.at[row, "validation"])}
        if "subset" in df.columns:
            item["subset"] = str(df.at[row, "subset"])
        return item

    def counts(self) -> dict:
        """Per class: present / absent / unknown among training and validation rows (excluded rows apart)."""
        with self.lock:
            df = self.table.df
            keep = ~df["exclude"].to_numpy(bool)
            val = df["validation"].to_numpy(bool)
            out = {}
            for cls in self.classes:
                values = df[cls].to_numpy(float)
                entry = {}
                for part, mask in (("train", keep & ~val), ("validation", keep & val)):
                    v = values[mask]
                    entry[part] = {"present": int((v == 1).sum()), "absent": int((v == 0).sum()),
                                   "unknown": int(np.isnan(v).sum())}
                out[cls] = entry
            return {"classes": out, "rows": len(df), "excluded": int((~keep).sum()),
                    "validation": int((keep & val).sum())}

    # ----------------------------------------------------------------- changing

    def _check_changes(self, changes) -> dict:
        if not isinstance(changes, dict) or not changes:
            raise RequestError('"changes" must be a non-empty object such as {"cat": 1, "exclude": true}')
        clean = {}
        for column, value in changes.items():
            if column in FLAGS:
                if not isinstance(value, bool):
                    raise RequestError(f"'{column}' must be true or false, got {json.dumps(value)}")
            elif column in self.classes:
                if value is not None and (isinstance(value, bool) or value not in (0, 1)):
                    raise RequestError(f"class '{column}' must be 1 (present), 0 (absent) or null (unknown), "
                                       f"got {json.dumps(value)}")
            else:
                hint = f"; classes: {', '.join(self.classes) or '(none yet)'}; flags: exclude, validation"
                raise RequestError(f"unknown column '{column}'{hint}", 404 if column not in RESERVED else 400)
            clean[column] = value
        return clean

    def label(self, rows: list[int], changes: dict, client: str) -> dict:
        """Apply ``changes`` to every row in ``rows`` as one action (one undo step)."""
        with self.lock:
            rows = [self.check_row(r) for r in rows]
            if len(set(rows)) != len(rows):
                raise RequestError("a row appears twice in one request")
            changes = self._check_changes(changes)
            df = self.table.df
            cells = []
            for row in rows:
                known_before = any(_cell(df.at[row, c]) is not None for c in self.classes)
                row_changes = dict(changes)
                if (not known_before and self.validation_fraction > 0 and "validation" not in row_changes
                        and not df.at[row, "validation"]
                        and any(v is not None for c, v in changes.items() if c not in FLAGS)
                        and hash_fraction(str(df.at[row, "filepath"])) < self.validation_fraction):
                    row_changes["validation"] = True
                for column, new in row_changes.items():
                    old = _cell(df.at[row, column])
                    if old != new:
                        cells.append((row, column, old, new))
            self._action_counter += 1
            action = Action(f"a{self._action_counter}-{int(time.time() * 1000)}", client, cells)
            if cells:
                now = time.time()
                entries = [{"seq": self.seq + i + 1, "time": round(now, 3), "client": client,
                            "action": action.id, "row": r, "path": str(df.at[r, "filepath"]), "column": c,
                            "old": o, "new": n} for i, (r, c, o, n) in enumerate(cells)]
                self.journal.append(entries)
                self.seq += len(entries)
                for entry, (r, c, _, n) in zip(entries, cells, strict=True):
                    set_cell(self.table, r, c, n)
                    self._recent.append((entry["seq"], r))
                self.actions.append(action)
                self._touched(rows, len(cells))
            return {"action": action.id if cells else None, "changed": len(cells), "seq": self.seq,
                    "rows": [self.row(r) for r in rows]}

    def _touched(self, rows, cells: int) -> None:
        self.session_rows.update(rows)
        self.session_cells += cells
        self.first_label_time = self.first_label_time or time.time()
        self._changed()

    def undo(self, client: str) -> dict:
        """Revert this client's last action that is not yet undone. Cells changed since by someone
        else keep their newer value (and are reported)."""
        with self.lock:
            action = next((a for a in reversed(self.actions) if a.client == client and not a.undone), None)
            if action is None:
                raise RequestError("nothing to undo: this page has no labelling action left to undo", 409)
            df = self.table.df
            cells, kept = [], []
            for row, column, old, new in action.cells:
                if column not in df.columns or row >= len(df):
                    kept.append(f"row {row} {column}")
                    continue
                if _cell(df.at[row, column]) == new:
                    cells.append((row, column, new, old))
                else:
                    kept.append(f"row {row} {column}")
            now = round(time.time(), 3)
            entries = [{"seq": self.seq + i + 1, "time": now, "client": client, "action": action.id,
                        "undo_of": action.id, "row": r, "path": str(df.at[r, "filepath"]), "column": c,
                        "old": o, "new": n} for i, (r, c, o, n) in enumerate(cells)]
            entries.append({"seq": self.seq + len(entries) + 1, "time": now, "client": client,
                            "op": "undo", "undoes": action.id})
            self.journal.append(entries)
            self.seq += len(entries)
            for entry, (r, c, _, n) in zip(entries, cells, strict=False):
                set_cell(self.table, r, c, n)
                self._recent.append((entry["seq"], r))
            action.undone = True
            rows = sorted({r for r, *_ in action.cells if r < len(df)})
            self._changed()
            return {"undone": action.id, "changed": len(cells), "seq": self.seq,
                    "kept": kept, "rows": [self.row(r) for r in rows]}

    def _check_class_name(self, name) -> None:
        """Refuse a name the table would not take as a class column (as ``labels add-class`` would)."""
        if not isinstance(name, str):
            raise RequestError(f"a class name must be a string, got {json.dumps(name)}")
        probe = LabelTable(df=self.table.df.iloc[:0, :1].copy(), path=self.path)
        try:
            probe.add_class(name)
        except UserError as error:
            raise RequestError(str(error)) from None

    def add_class(self, name, client: str) -> dict:
        with self.lock:
            self._check_class_name(name)
            if name in self.table.df.columns:
                raise RequestError(f"class '{name}' already exists", 409)
            if self.check_classes is not None:
                self.check_classes([*self.classes, name])
            self.journal.append([{"seq": self.seq + 1, "time": round(time.time(), 3), "client": client,
                                  "action": f"c{self.seq + 1}", "op": "add_class", "name": name}])
            self.seq += 1
            self.table.add_class(name)
            self.generation += 1
            self._changed()
        return self._flush_for_class()

    def rename_class(self, old, new, client: str) -> dict:
        with self.lock:
            if old not in self.classes:
                known = ", ".join(self.classes) or "(none)"
                raise RequestError(f"unknown class '{old}'; classes: {known}", 404)
            if isinstance(new, str) and new in self.table.df.columns:
                raise RequestError(f"'{new}' is already a column of the table", 409)
            self._check_class_name(new)
            if self.check_classes is not None:
                self.check_classes([new if c == old else c for c in self.classes])
            self.journal.append([{"seq": self.seq + 1, "time": round(time.time(), 3), "client": client,
                                  "action": f"c{self.seq + 1}", "op": "rename_class", "old": old, "new": new}])
            self.seq += 1
            self.table.df = self.table.df.rename(columns={old: new})
            self.generation += 1
            rename_in_actions(self.actions, old, new)
            self._changed()
        return self._flush_for_class()

    def _flush_for_class(self) -> dict:
        """Write a class added or renamed at once (outside the store lock: labels go on meanwhile)."""
        self.flush()
        with self.lock:
            return {"classes": self.classes, "seq": self.seq}

    # ----------------------------------------------------------------- the CSV

    def external_change(self) -> bool:
        """Whether the CSV on disk is no longer what the app last read or wrote: its time or size
        differ and so does its hash (a file touched but not changed is not a change)."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return self._seen is not None
        if self._seen is not None and (stat.st_mtime_ns, stat.st_size) == self._seen[:2]:
            return False
        now = _fingerprint(self.path)
        if self._seen is not None and now is not None and now[2] == self._seen[2]:
            self._seen = now
            return False
        return True

    def merge_external(self) -> bool:
        """Re-read a CSV another program changed and apply the pending journal on top."""
        with self._flush_lock, self.lock:  # never while the CSV is being written
            now = _fingerprint(self.path)
            if now == self._seen:
                return False
            if now is None:
                self.note(f"{self.path} was deleted while the app ran; it is written again from the "
                          "labels in "
                          "memory and the journal", level="error")
                self._seen = None
                self._changed()
                return True
            try:
                fresh = read_label_table(self.path)
                forget_last_read()
            except UserError as error:
                message = (f"{self.path} was changed by another program and no longer reads as a label table "
                           f"({error}); it is left as it is, and not written, until it reads again. "
                           "Every label "
                           f"of this session is safe in {self.journal_path.name}")
                if self.error != message:
                    self.note(message, level="error")
                self.error = message
                self._seen_bad = now
                return False
            pending = unwritten(self.journal.read(), self.flushed_seq)
            apply_entries(fresh, pending, self.note)
            self.table.df = fresh.df
            self._index = {p: i for i, p in enumerate(fresh.df["filepath"])}
            self._seen = now
            self.generation += 1
            self.rows_generation += 1
            self.note(f"{self.path.name} was changed by another program: read again, "
                      f"{len(pending)} change(s) "
                      "of this session not yet in it applied on top")
            self._changed()
            return True

    def flush(self, attempts: int = 3) -> bool:
        """Write the CSV if anything is pending; merge outside edits first.

        The table is copied under the store lock and written outside it, so labels are accepted
        during the write; they stay pending for the next flush. An outside edit that lands while the
        copy is turned into CSV is merged and the copy made again (up to ``attempts`` times)."""
        with self._flush_lock:
            for _ in range(attempts):
                with self.lock:
                    if self.external_change():
                        self.merge_external()
                        if self._fingerprint_is_bad():
                            return False
                    if self._dirty_since is None and self._seen is not None:
                        return True
                    copy = replace(self.table, df=self.table.df.copy())
                    covers, changes, copied_at = self.seq, self._change_count, time.time()
                try:
                    text = copy.to_csv_text()
                    with file_lock(self.path):
                        if self.external_change():
                            continue  # edited by another program meanwhile: merge, then copy again
                        copy.write_text(text, self.path)
                        written = _fingerprint(self.path)
                    with self.lock:
                        self._record_flush(covers, changes, copied_at, written)
                except (OSError, UserError) as error:
                    with self.lock:
                        self._write_failed(error)
                    return False
                return True
            return False

    def _record_flush(self, covers: int, changes: int, copied_at: float, written: tuple | None) -> None:
        """Journal that the CSV now holds every change up to seq ``covers`` (the copy written)."""
        self._seen = written
        self.journal.append([{"seq": self.seq + 1, "time": round(time.time(), 3), "op": "flush", "covers": covers,
                              "sha256": written[2] if written else None}])
        self.seq += 1
        self._flush_line_seq = self.seq
        self.flushed_seq = covers
        self._dirty_since = None if self._change_count == changes else copied_at
        if self.error:
            self.note(f"{self.path.name} written again")
        self.error = None

    def _write_failed(self, error: OSError | UserError) -> None:
        reason = getattr(error, "strerror", None) or str(error)
        message = (f"cannot write {self.path} ({reason}); every label is kept in "
                   f"{self.journal_path.name} "
                   "and written when it can be (make the file and its folder writable)")
        if self.error != message:
            self.note(message, level="error")
        self.error = message

    def _fingerprint_is_bad(self) -> bool:
        return getattr(self, "_seen_bad", None) is not None and _fingerprint(self.path) == self._seen_bad

    def _changed(self) -> None:
        self._change_count += 1
        self._last_change = time.time()
        self._dirty_since = self._dirty_since or self._last_change

    def pending(self) -> int:
        """How many journal lines the CSV does not hold yet (the last flush line is not one)."""
        return self.seq - self.flushed_seq - (self._flush_line_seq > self.flushed_seq)

    def idle_flush(self, idle_seconds: float, at_most: float = 60.0) -> None:
        """Called periodically: merge external edits; write the CSV once nothing changed for
        ``idle_seconds``, or ``at_most`` seconds after the first change it lacks. Skipped while a
        flush is writing (its own write is no outside edit)."""
        if not self._flush_lock.acquire(blocking=False):
            return
        try:
            if self.external_change() and not self._fingerprint_is_bad():
                self.merge_external()
            since, now = self._dirty_since, time.time()
            if since is not None and (now - self._last_change >= idle_seconds or now - since >= at_most):
                self.flush()
        finally:
            self._flush_lock.release()

    def changes_since(self, seq: int) -> dict:
        """Rows changed after ``seq`` (for other clients' pages); a page whose ``generation`` differs
        reloads everything (a class was added or renamed, or the CSV merged)."""
        with self.lock:
            at = bisect.bisect_right(self._recent, (seq, 1 << 62))
            rows = sorted({row for _, row in self._recent[at:]})
            return {"seq": self.seq, "generation": self.generation, "rows": rows}
