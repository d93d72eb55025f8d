"""The journal's replay helpers: the undo history of earlier sessions, and lines replayed by path."""

import pandas as pd

from patchcfg.label.journal import apply_entries, undo_history, unwritten
from patchcfg.label_table import from_dataframe


def cell(seq, action, row, column, old, new, **extra):
    return {"seq": seq, "client": "one", "action": action, "row": row, "path": f"{row}.png",
            "column": column, "old": old, "new": new, **extra}


def test_the_undo_history_follows_undos_and_renames():
    entries = [cell(1, "a1", 0, "cat", None, 1), cell(2, "a2", 1, "cat", None, 0),
               cell(3, "a2", 1, "cat", 0, None, undo_of="a2"), {"seq": 4, "op": "undo", "undoes": "a2"},
               {"seq": 5, "action": "c5", "op": "rename_class", "old": "cat", "new": "feline"}]
    actions = undo_history(entries)
    assert [(a.id, a.undone) for a in actions] == [("a1", False), ("a2", True)]
    assert actions[0].cells == [(0, "feline", None, 1)]


def test_entries_apply_by_path_and_skip_what_is_gone():
    table = from_dataframe(pd.DataFrame({"filepath": ["0.png", "1.png"], "cat": ["", ""]}, dtype=str), root=".",
                           path=None)
    notes = []
    entries = [cell(1, "a1", 1, "cat", None, 1), cell(2, "a1", 5, "cat", None, 1), {"seq": 3, "op": "flush"}]
    assert unwritten(entries, 0) == entries[:2] and unwritten(entries, 1) == entries[1:2]
    assert apply_entries(table, unwritten(entries, 0), notes.append) == 1
    assert table.df["cat"].tolist()[1] == 1.0 and "no longer in the table" in notes[0]
