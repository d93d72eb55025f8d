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

Journal lines (one JSON object each):

- a cell change: ``{"seq", "time", "client", "action", "row", "path", "column", "old", "new"}``
  (``path`` is the row's ``filepath``; replay finds the row by it, so rows may move)
- ``{"seq", "time", "client", "action", "op": "add_class", "name"}``,
  ``{..., "op": "rename_class", "old", "new"}``
- ``{"seq", "time", "client", "action", "op": "undo", "undoes": action}`` follows the cell
  changes that revert that action
- ``{"seq", "time", "op": "flush", "covers", "sha256"}``: the CSV holds every change up to seq
  ``covers``; later ones (even those journalled before this line, during the write) are pending.
  Older journals have no ``covers``: their flush line holds everything before it.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from patchcfg.atomic import file_lock
from patchcfg.errors import UserError
from patchcfg.label_table import BOOL_COLUMNS, RESERVED, LabelTable, forget_last_read, read_label_table

FLAGS = BOOL_COLUMNS  # exclude, validation


class RequestError(UserError):
    """A request the store refuses; ``status`` is the HTTP status the app answers with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


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


@dataclass
class Action:
    """One acknowledged action of one client: the cells it changed (row, column, old, new)."""

    id: str
    client: str
    cells: list[tuple[int, str, object, object]]
    undone: bool = False


class LabelStore:
    """The label table, its journal and its CSV; every method is safe to call from several threads."""

    def __init__(self, path: str | os.PathLike, validation_fraction: float, log=print, check_classes=None):
        #: called with the classes an added or renamed class would leave; raises RequestError to refuse
        self.check_classes = check_classes
        self.path = Path(path)
        self.journal_path = self.path.with_name(self.path.name + ".journal.jsonl")
        self.validation_fraction = float(validation_fraction)
        self.log = log
        self.lock = threading.RLock()
        self._flush_lock = threading.RLock()  # one CSV write at a time; taken before self.lock, never after
        self.table: LabelTable = read_label_table(self.path)
        forget_last_read()  # the store holds the table; a second copy would live as long as the server
        self._lock_fd = self._lock()
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

    def _lock(self) -> int:
        """Hold the journal locked while serving: one app per table (two would interleave journals)."""
        import fcntl

        try:
            fd = os.open(self.journal_path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as error:
            raise UserError(f"cannot open the journal {self.journal_path} ({error.strerror}); the folder "
                            "of the label table must be writable") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise UserError(f"{self.path} is already being served by another `patchcfg label` (its "
                            f"journal {self.journal_path.name} is locked); stop that one first, or label "
                            "there") from None
        return fd

    def close(self) -> None:
        """Let go of the journal's lock (the app has stopped)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _read_journal(self) -> list[dict]:
        if not self.journal_path.is_file():
            return []
        lines = self.journal_path.read_bytes().split(b"\n")
        entries = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                if not isinstance(entry, dict) or "seq" not in entry:
                    raise ValueError("not a journal entry")
            except ValueError as error:
                if number >= len(lines) - 1:  # a last line cut short by a crash: never acknowledged
                    self.note(f"{self.journal_path}: the last line is incomplete (a crash while writing it); "
                              "it was never acknowledged and is dropped")
                    keep = sum(len(x) + 1 for x in lines[:number - 1])
                    os.truncate(self.journal_path, keep)
                    continue
                raise UserError(f"{self.journal_path}:{number}: not a journal line ({error}); the file was "
                                "edited by hand? Move it aside to start without it (the CSV stays as "
                                "it is)") from None
            entries.append(entry)
        return entries

    def _replay(self) -> int:
        """Apply the journal entries the last flush does not cover to the table just read; rebuild undo."""
        entries = self._read_journal()
        last_flush = next((e for e in reversed(entries) if e.get("op") == "flush"), None)
        if last_flush is not None:
            self._flush_line_seq = int(last_flush["seq"])
            self.flushed_seq = int(last_flush.get("covers", self._flush_line_seq))
        pending = self._unwritten(entries)
        self.seq = max((int(e["seq"]) for e in entries), default=0)
        self._action_counter = self.seq
        applied = self._apply_entries(self.table, pending)
        # Undo history of earlier sessions: actions not undone, in order.
        by_action: dict[str, Action] = {}
        for entry in entries:
            action_id = entry.get("action")
            if entry.get("op") == "undo":
                if entry.get("undoes") in by_action:
                    by_action[entry["undoes"]].undone = True
                continue
            if entry.get("op") == "rename_class":  # earlier actions now name the new column
                old, new = entry["old"], entry["new"]
                for action in self.actions:
                    action.cells = [(r, new if c == old else c, o, n) for r, c, o, n in action.cells]
                continue
            if action_id is None or "column" not in entry or entry.get("undo_of"):
                continue
            if action_id not in by_action:
                by_action[action_id] = Action(action_id, entry.get("client", ""), [])
                self.actions.append(by_action[action_id])
            cell = (int(entry["row"]), entry["column"], entry["old"], entry["new"])
            by_action[action_id].cells.append(cell)
        if pending:
            self._changed()  # the CSV does not hold them yet
        return applied

    def _unwritten(self, entries: list[dict]) -> list[dict]:
        """The changes among journal ``entries`` that the CSV does not hold (after ``flushed_seq``)."""
        return [e for e in entries if int(e["seq"]) > self.flushed_seq and e.get("op") != "flush"]

    def _apply_entries(self, table: LabelTable, entries: list[dict]) -> int:
        """Apply journal entries to ``table`` (by file path); returns how many changed something."""
        index = {p: i for i, p in enumerate(table.df["filepath"])}
        applied = 0
        for entry in entries:
            op = entry.get("op")
            if op == "add_class":
                if entry["name"] not in table.df.columns:
                    table.add_class(entry["name"])
                    applied += 1
            elif op == "rename_class":
                if entry["old"] in table.df.columns and entry["new"] not in table.df.columns:
                    table.df = table.df.rename(columns={entry["old"]: entry["new"]})
                    applied += 1
            elif "column" in entry:
                row = index.get(entry.get("path"))
                column = entry["column"]
                if row is None or column not in table.df.columns:
                    self.note(f"journal line {entry['seq']}: row '{entry.get('path')}' or column '{column}' "
                              "is no longer in the table; that change is skipped")
                    continue
                self._set(table, row, column, entry["new"])
                applied += 1
        return applied

    @staticmethod
    def _set(table: LabelTable, row: int, column: str, value) -> None:
        if column in FLAGS:
            table.df.at[row, column] = bool(value)
        else:
            table.df.at[row, column] = np.nan if value is None else float(value)

    def _append(self, entries: list[dict]) -> None:
        """Append journal lines and fsync them; raises RequestError (503) when the disk refuses."""
        data = "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in entries).encode("utf-8")
        try:
            fd = os.open(self.journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as error:
            message = (f"cannot write the journal {self.journal_path} ({error.strerror}); "
                       "nothing was changed. "
                       "Make its folder writable; labels acknowledged so far are safe")
            self.note(message, level="error")
            raise RequestError(message, 503) from None

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
                self._append(entries)
                self.seq += len(entries)
                for entry, (r, c, _, n) in zip(entries, cells, strict=True):
                    self._set(self.table, r, c, n)
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
            self._append(entries)
            self.seq += len(entries)
            for entry, (r, c, _, n) in zip(entries, cells, strict=False):
                self._set(self.table, r, c, n)
                self._recent.append((entry["seq"], r))
            action.undone = True
            rows = sorted({r for r, *_ in action.cells if r < len(df)})
            self._changed()
            return {"undone": action.id, "changed": len(cells), "seq": self.seq,
                    "kept": kept, "rows": [self.row(r) for r in rows]}

    def add_class(self, name, client: str) -> dict:
        with self.lock:
            if not isinstance(name, str):
                raise RequestError(f"a class name must be a string, got {json.dumps(name)}")
            probe = LabelTable(df=self.table.df.iloc[:0, :1].copy(), path=self.path)
            try:
                probe.add_class(name)
            except UserError as error:
                raise RequestError(str(error)) from None
            if name in self.table.df.columns:
                raise RequestError(f"class '{name}' already exists", 409)
            if self.check_classes is not None:
                self.check_classes([*self.classes, name])
            self._append([{"seq": self.seq + 1, "time": round(time.time(), 3), "client": client,
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
            if not isinstance(new, str):
                raise RequestError(f"a class name must be a string, got {json.dumps(new)}")
            if new in self.table.df.columns:
                raise RequestError(f"'{new}' is already a column of the table", 409)
            probe = LabelTable(df=self.table.df.iloc[:0, :1].copy(), path=self.path)
            try:
                probe.add_class(new)
            except UserError as error:
                raise RequestError(str(error)) from None
            if self.check_classes is not None:
                self.check_classes([new if c == old else c for c in self.classes])
            self._append([{"seq": self.seq + 1, "time": round(time.time(), 3), "client": client,
                           "action": f"c{self.seq + 1}", "op": "rename_class", "old": old, "new": new}])
            self.seq += 1
            self.table.df = self.table.df.rename(columns={old: new})
            self.generation += 1
            for action in self.actions:
                action.cells = [(r, new if c == old else c, o, n) for r, c, o, n in action.cells]
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
            pending = self._unwritten(self._read_journal())
            self._apply_entries(fresh, pending)
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
        self._append([{"seq": self.seq + 1, "time": round(time.time(), 3), "op": "flush", "covers": covers,
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
