"""The journal of a served label table (``<table>.journal.jsonl``): every acknowledged change, one
JSON line each, fsync'd before it is applied (:mod:`patchcfg.label.store`). :class:`Journal` is the
file (locked while served, read, appended); the functions below replay its lines onto a table and
rebuild the undo history from them.

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

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from patchcfg.errors import UserError
from patchcfg.label.errors import RequestError
from patchcfg.label_table import BOOL_COLUMNS, LabelTable

FLAGS = BOOL_COLUMNS  # exclude, validation


@dataclass
class Action:
    """One acknowledged action of one client: the cells it changed (row, column, old, new)."""

    id: str
    client: str
    cells: list[tuple[int, str, object, object]]
    undone: bool = False


class Journal:
    """The journal file beside ``table_path``; ``note(text, level=...)`` reports what the page should know."""

    def __init__(self, table_path: Path, note):
        self.table_path = table_path
        self.path = table_path.with_name(table_path.name + ".journal.jsonl")
        self.note = note
        self._lock_fd: int | None = None

    def lock(self) -> None:
        """Hold the journal locked while serving: one app per table (two would interleave journals)."""
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as error:
            raise UserError(f"cannot open the journal {self.path} ({error.strerror}); the folder "
                            "of the label table must be writable") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise UserError(f"{self.table_path} is already being served by another `patchcfg label` (its "
                            f"journal {self.path.name} is locked); stop that one first, or label "
                            "there") from None
        self._lock_fd = fd

    def close(self) -> None:
        """Let go of the journal's lock (the app has stopped)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def read(self) -> list[dict]:
        """Every journal line; a last line cut short by a crash (never acknowledged) is dropped."""
        if not self.path.is_file():
            return []
        lines = self.path.read_bytes().split(b"\n")
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
                    self.note(f"{self.path}: the last line is incomplete (a crash while writing it); "
                              "it was never acknowledged and is dropped")
                    keep = sum(len(x) + 1 for x in lines[:number - 1])
                    os.truncate(self.path, keep)
                    continue
                raise UserError(f"{self.path}:{number}: not a journal line ({error}); the file was "
                                "edited by hand? Move it aside to start without it (the CSV stays as "
                                "it is)") from None
            entries.append(entry)
        return entries

    def append(self, entries: list[dict]) -> None:
        """Append journal lines and fsync them; raises RequestError (503) when the disk refuses."""
        data = "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in entries).encode("utf-8")
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as error:
            message = (f"cannot write the journal {self.path} ({error.strerror}); "
                       "nothing was changed. "
                       "Make its folder writable; labels acknowledged so far are safe")
            self.note(message, level="error")
            raise RequestError(message, 503) from None


def unwritten(entries: list[dict], flushed_seq: int) -> list[dict]:
    """The changes among journal ``entries`` that the CSV does not hold (after ``flushed_seq``)."""
    return [e for e in entries if int(e["seq"]) > flushed_seq and e.get("op") != "flush"]


def set_cell(table: LabelTable, row: int, column: str, value) -> None:
    """One cell as the journal gives it: a flag as a bool, a class as 1.0, 0.0 or NaN (unknown)."""
    if column in FLAGS:
        table.df.at[row, column] = bool(value)
    else:
        table.df.at[row, column] = np.nan if value is None else float(value)


def apply_entries(table: LabelTable, entries: list[dict], note) -> int:
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
                note(f"journal line {entry['seq']}: row '{entry.get('path')}' or column '{column}' "
                     "is no longer in the table; that change is skipped")
                continue
            set_cell(table, row, column, entry["new"])
            applied += 1
    return applied


def undo_history(entries: list[dict]) -> list[Action]:
    """The actions of earlier sessions, in order, each marked undone or not (a renamed class is
    named by its new name in the actions before the rename)."""
    actions: list[Action] = []
    by_action: dict[str, Action] = {}
    for entry in entries:
        action_id = entry.get("action")
        if entry.get("op") == "undo":
            if entry.get("undoes") in by_action:
                by_action[entry["undoes"]].undone = True
            continue
        if entry.get("op") == "rename_class":  # earlier actions now name the new column
            rename_in_actions(actions, entry["old"], entry["new"])
            continue
        if action_id is None or "column" not in entry or entry.get("undo_of"):
            continue
        if action_id not in by_action:
            by_action[action_id] = Action(action_id, entry.get("client", ""), [])
            actions.append(by_action[action_id])
        cell = (int(entry["row"]), entry["column"], entry["old"], entry["new"])
        by_action[action_id].cells.append(cell)
    return actions


def rename_in_actions(actions: list[Action], old: str, new: str) -> None:
    """Class ``old`` is now ``new``: the actions that changed its cells name the new column."""
    for action in actions:
        action.cells = [(r, new if c == old else c, o, n) for r, c, o, n in action.cells]
