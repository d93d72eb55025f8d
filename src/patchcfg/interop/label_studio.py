"""Label Studio tasks from the label table, and Label Studio's JSON export back into it.

Export (Label Studio "Label Studio Task Format" and "Import pre-annotated data"): a JSON list with
one task per row that is not excluded::

    {"data": {"image": "<path or URL>", "filepath": "<the table's filepath>"},
     "annotations": [{"result": [{"from_name": "label", "to_name": "image", "type": "choices",
                                  "value": {"choices": ["cat", "dog"]}}]}],
     "predictions": [{"model_version": "preds.csv", "score": 0.93, "result": [...]}]}

A row whose classes are all known becomes an annotation (its 1s chosen; all 0: an empty result).
A row with blank cells gets no annotation, since an annotation states every class; its known 1s
come as a pre-annotation (``model_version`` "label table (partly known)"). A predictions CSV (as
``patchcfg predict`` writes it) adds the model's choices (p >= ``threshold``) with ``score``: the
least sure of its decisions, min over classes of max(p, 1 - p), so sorting by score ascending shows
the most doubtful tasks first. The labelling config (``<View><Image .../><Choices ...
choice="multiple">``) is written beside the tasks as ``<stem>.label_config.xml``.

``data.image`` is the image's absolute path, or with ``url_prefix`` the prefix and the path relative
to the table's folder, URL-quoted: ``/data/local-files/?d=project/`` when Label Studio serves local
files (``LOCAL_FILES_SERVING_ENABLED=true``, ``LOCAL_FILES_DOCUMENT_ROOT`` the folder above
``project/``, and a local storage of that folder), or ``https://host/images/``.

Import: Label Studio's "JSON" export (the list of tasks with ``annotations[].result[].value.choices``).
Each task's annotation (not cancelled; a ground-truth one first, then the latest updated) states
every class: the chosen ones 1, the others 0. A task without one leaves its row as it is. See
docs/label-table.md, "Exports and imports", for how tasks find their rows.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import quote, unquote, urlsplit
from xml.sax.saxutils import quoteattr

import numpy as np

from patchcfg.atomic import atomic_write_text, check_output, file_lock, starts_with
from patchcfg.errors import UserError
from patchcfg.interop.image_files import ExportReport
from patchcfg.label_table import LabelTable, read_label_table

FROM_NAME, TO_NAME, DATA_KEY = "label", "image", "image"
LOCAL_FILES = "/data/local-files/?d="
PARTLY_KNOWN = "label table (partly known)"
#: Label Studio names an uploaded file ``<8 hex digits>-<name>`` (under /data/upload/<project>/)
_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")
_OURS = starts_with(['[\n  {\n    "data": {\n      "image":', "[]"])


def labelling_config(classes: list[str], from_name: str = FROM_NAME, to_name: str = TO_NAME) -> str:
    """The labelling config XML: the image and one multiple-choice list of the classes."""
    choices = "".join(f"    <Choice value={quoteattr(name)}/>\n" for name in classes)
    return (f"<View>\n  <Image name={quoteattr(to_name)} value=\"${DATA_KEY}\"/>\n"
            f"  <Choices name={quoteattr(from_name)} toName={quoteattr(to_name)} choice=\"multiple\" "
            f"showInline=\"true\">\n{choices}  </Choices>\n</View>\n")


def config_path(out_path) -> Path:
    out = Path(out_path)
    return out.with_name(f"{out.stem}.label_config.xml")


def _choices(chosen: list[str], from_name: str, to_name: str) -> list[dict]:
    return [{"from_name": from_name, "to_name": to_name, "type": "choices", "value": {"choices": chosen}}]


def read_predictions(predictions, table: LabelTable) -> dict[int, dict[str, float]]:
    """Per table row, its class probabilities from a predictions CSV (``filepath``, one column per
    class, as ``patchcfg predict`` writes it) or frame; rows of it that match no image are skipped."""
    import pandas as pd

    where = "predictions" if isinstance(predictions, pd.DataFrame) else str(predictions)
    if isinstance(predictions, pd.DataFrame):
        frame = predictions.astype(str)
    else:
        try:
            frame = pd.read_csv(predictions, dtype=str, keep_default_na=False)
        except (OSError, ValueError) as error:
            raise UserError(f"{where}: cannot be read as a predictions CSV ({error})") from None
    if "filepath" not in frame.columns:
        raise UserError(f"{where}: no 'filepath' column; give the CSV `patchcfg predict --out` wrote")
    classes = [c for c in frame.columns if c != "filepath"]
    foreign = [c for c in classes if c not in table.classes]
    if foreign:
        raise UserError(f"{where}: column '{foreign[0]}' is not a class of {table.path or 'the label table'} "
                        f"({', '.join(table.classes)}); predict with a model of this table's classes")
    values = np.full((len(frame), len(classes)), np.nan)
    for j, name in enumerate(classes):
        column = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float)
        bad = np.flatnonzero(~((column >= 0) & (column <= 1)))
        if len(bad):
            raise UserError(f"{where}: row {bad[0] + 2}, column '{name}': {frame[name].iloc[bad[0]]!r} is not "
                            "a probability (a number from 0 to 1)")
        values[:, j] = column
    matcher = RowMatcher(table)
    found = {}
    for i, path in enumerate(frame["filepath"]):
        row = matcher.match(path)
        if row is not None:
            found[row] = dict(zip(classes, values[i].tolist(), strict=True))
    return found


def _prediction(probabilities: dict[str, float], model_version: str, threshold: float,
                from_name: str, to_name: str) -> dict:
    chosen = [name for name, p in probabilities.items() if p >= threshold]
    score = min((max(p, 1 - p) for p in probabilities.values()), default=0.0)
    return {"model_version": model_version, "score": round(score, 4),
            "result": _choices(chosen, from_name, to_name)}


def export_label_studio(table: LabelTable, out_path, predictions=None, *, from_name: str = FROM_NAME,
                        to_name: str = TO_NAME, url_prefix: str | None = None, threshold: float = 0.5,
                        force: bool = False) -> ExportReport:
    """Write the tasks JSON at ``out_path`` and the labelling config beside it (see module docstring).

    An existing file there is replaced only when this function wrote it, or with ``force``."""
    out, config = Path(out_path), config_path(out_path)
    protected = [("label table", table.path)]
    check_output(out, protected=protected, ours=_OURS, force=force)
    check_output(config, protected=protected, ours=starts_with(["<View>"]), force=force, option="config")
    model_version = Path(predictions).name if isinstance(predictions, str | os.PathLike) else "predictions"
    predicted = read_predictions(predictions, table) if predictions is not None else {}
    classes, labels = table.classes, table.label_matrix()
    root = os.path.normpath(str(table.root))
    report = ExportReport(out, unit="tasks")
    tasks = []
    for row, (source, filepath) in enumerate(zip(table.resolved_paths(), table.df["filepath"], strict=True)):
        if table.exclude[row]:
            report.left_out["excluded"] += 1
            continue
        image = source if url_prefix is None else url_prefix + quote(
            PurePosixPath(Path(os.path.relpath(source, root))).as_posix(), safe="/")
        task: dict = {"data": {DATA_KEY: image, "filepath": filepath}}
        positives = [name for name, value in zip(classes, labels[row], strict=True) if value == 1]
        if (labels[row] >= 0).all():
            task["annotations"] = [{"result": _choices(positives, from_name, to_name) if positives else []}]
            report.written["with every class known (an annotation)"] += 1
        elif (labels[row] >= 0).any():
            report.written["partly known (a pre-annotation of its 1s)"] += 1
            if positives:
                task["predictions"] = [{"model_version": PARTLY_KNOWN,
                                        "result": _choices(positives, from_name, to_name)}]
        else:
            report.written["unlabelled"] += 1
        if row in predicted:
            task.setdefault("predictions", []).append(
                _prediction(predicted[row], model_version, threshold, from_name, to_name))
            report.notes[f"tasks with the model's predictions from {model_version}"] += 1
        tasks.append(task)
    atomic_write_text(out, json.dumps(tasks, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(config, labelling_config(classes, from_name, to_name))
    report.notes[f"classes in the labelling config {config}"] = len(classes)
    return report


# --------------------------------------------------------------------------- import


class RowMatcher:
    """Finds the table row an image reference names; None when none does.

    The reference is stripped of Label Studio's ``/data/local-files/?d=`` (and of a URL's scheme and
    host) and URL-unquoted. Then, in order: the absolute path of a row's image (a relative reference
    also resolved against the current folder, as ``patchcfg predict`` writes them); the longest
    tail of the reference that is a row's path relative to the table's folder
    (``project/images/a.png`` finds ``images/a.png``); the file name when exactly one row has it
    (an upload's ``<8 hex>-`` prefix dropped).
    """

    def __init__(self, table: LabelTable):
        resolved = table.resolved_paths()
        root = os.path.normpath(str(table.root))
        self.by_absolute = {path: row for row, path in enumerate(resolved)}
        self.by_relative = {PurePosixPath(Path(os.path.relpath(path, root))).as_posix(): row
                            for row, path in enumerate(resolved)}
        names = Counter(os.path.basename(path) for path in resolved)
        self.by_name = {os.path.basename(path): row for row, path in enumerate(resolved)
                        if names[os.path.basename(path)] == 1}

    @staticmethod
    def path_of(reference: str) -> str:
        """The file path a task's image reference holds."""
        if LOCAL_FILES in reference:
            return unquote(reference.split(LOCAL_FILES, 1)[1])
        parts = urlsplit(reference)
        if parts.scheme and len(parts.scheme) > 1:  # a URL (a one-letter scheme is a Windows drive)
            return unquote(parts.path)
        return reference

    def match(self, reference) -> int | None:
        path = self.path_of(str(reference).strip())
        if not path:
            return None
        absolute = os.path.normpath(path if os.path.isabs(path) else os.path.abspath(path))
        if absolute in self.by_absolute:
            return self.by_absolute[absolute]
        parts = PurePosixPath(posixpath.normpath(path.replace(os.sep, "/"))).parts
        parts = [p for p in parts if p not in ("/", "..", ".")]
        for start in range(len(parts)):
            hit = self.by_relative.get("/".join(parts[start:]))
            if hit is not None:
                return hit
        name = parts[-1] if parts else ""
        hit = self.by_name.get(name)
        return hit if hit is not None else self.by_name.get(_UPLOAD_PREFIX.sub("", name))


@dataclass
class ImportReport:
    """What an import read and changed."""

    table: Path
    tasks: int = 0
    annotated: int = 0
    changed_cells: int = 0
    changed_rows: int = 0
    unmatched: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        lines = [f"{self.table}: {self.tasks} tasks, {self.annotated} with an annotation; "
                 f"{self.changed_cells} cells changed in {self.changed_rows} rows"
                 + ("" if self.changed_cells else " (the table is left as it was)")]
        if self.unmatched:
            lines.append(f"skipped {len(self.unmatched)} tasks that match no row (first: {self.unmatched[0]})")
        return lines


def read_export(path) -> list[dict]:
    """The tasks of a Label Studio JSON export (a list; one task alone is taken as a list of one)."""
    try:
        tasks = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: not found; export the Label Studio project as 'JSON' and give that file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{path}: not a JSON file ({error}); export the project as 'JSON'") from None
    tasks = [tasks] if isinstance(tasks, dict) else tasks
    if not isinstance(tasks, list):
        raise UserError(f"{path}: holds no list of tasks; export the project as 'JSON'")
    for number, task in enumerate(tasks, start=1):
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise UserError(f"{path}: task {number} has no 'data' object; export the project as 'JSON' "
                            "(JSON-MIN and CSV exports do not say which annotation chose what)")
    return tasks


def _task_name(task: dict, number: int) -> str:
    return f"task {task['id']}" if task.get("id") is not None else f"task #{number} (no id)"


def chosen_annotation(task: dict) -> dict | None:
    """The annotation that speaks for the task: not cancelled, ground truth first, then the latest."""
    candidates = [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
    if not candidates:
        return None
    return max(enumerate(candidates), key=lambda item: (
        item[1].get("ground_truth") is True, str(item[1].get("updated_at") or item[1].get("created_at") or ""),
        item[0]))[1]


def annotation_choices(annotation: dict, from_name: str, where: str) -> list[str]:
    """The classes an annotation chose with the ``from_name`` control (an empty result: none)."""
    result = annotation.get("result")
    if not isinstance(result, list):
        raise UserError(f"{where}: its annotation has no 'result' list; export the project as 'JSON'")
    ours = [r for r in result if isinstance(r, dict) and r.get("from_name") == from_name and r.get("type") == "choices"]
    if result and not ours:
        others = sorted({str(r.get("from_name")) for r in result if isinstance(r, dict)})
        raise UserError(f"{where}: its annotation has no choices from '{from_name}' (it has {', '.join(others)}); "
                        "pass the name of the labelling config's <Choices> (--from-name)")
    chosen = []
    for item in ours:
        value = item.get("value")
        choices = value.get("choices") if isinstance(value, dict) else None
        if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
            raise UserError(f"{where}: a result of '{from_name}' has no list of choices in its value")
        chosen += choices
    return chosen


def import_label_studio(export_json, table_path, *, from_name: str = FROM_NAME,
                        skip_unmatched: bool = False) -> ImportReport:
    """Set the table's labels from a Label Studio JSON export, under the table's lock, written
    through its writer (atomic, mode kept, through symlinks, a .bak kept); see module docstring.

    Every task is checked before anything is written: an unknown class, two annotated tasks of one
    image, or (without ``skip_unmatched``) a task that matches no row is one message naming the task."""
    tasks = read_export(export_json)
    report = ImportReport(Path(table_path), tasks=len(tasks))
    if not Path(table_path).is_file():
        read_label_table(table_path)  # says what is wrong, before a lock file is made beside nothing
    with file_lock(table_path):
        table = read_label_table(table_path)
        matcher, classes = RowMatcher(table), table.classes
        updates: dict[int, tuple[str, list[str]]] = {}
        for number, task in enumerate(tasks, start=1):
            where = f"{export_json}: {_task_name(task, number)}"
            annotation = chosen_annotation(task)
            data = task["data"]
            references = [data[key] for key in ("filepath", DATA_KEY) if isinstance(data.get(key), str)]
            row = next((r for r in map(matcher.match, references) if r is not None), None)
            if row is None:
                image = data.get(DATA_KEY, data.get("filepath", "(no image)"))
                if not skip_unmatched:
                    raise UserError(f"{where}: its image {image!r} matches no row of {table_path}; add the image "
                                    "to the table, or pass --skip-unmatched to leave such tasks out")
                report.unmatched.append(f"{_task_name(task, number)}: {image}")
                continue
            if annotation is None:
                continue
            chosen = annotation_choices(annotation, from_name, where)
            unknown = [name for name in chosen if name not in classes]
            if unknown:
                raise UserError(f"{where}: class '{unknown[0]}' is not a class of {table_path} "
                                f"({', '.join(classes) or 'none yet'}); add it first "
                                f"(`patchcfg labels add-class {table_path} {unknown[0]}`)")
            if row in updates:
                raise UserError(f"{where} and {updates[row][0]} both annotate '{table.df['filepath'][row]}'; "
                                "keep one of them in the export")
            updates[row] = (_task_name(task, number), chosen)
        report.annotated = len(updates)
        if not updates:
            return report
        rows = sorted(updates)
        new = np.array([[1.0 if name in updates[row][1] else 0.0 for name in classes] for row in rows])
        old = table.df.loc[rows, classes].to_numpy(dtype=float)
        differs = ~((old == new) | (np.isnan(old) & np.isnan(new)))
        report.changed_cells, report.changed_rows = int(differs.sum()), int(differs.any(axis=1).sum())
        if report.changed_cells:
            table.df.loc[rows, classes] = new
            table.write()
    return report

