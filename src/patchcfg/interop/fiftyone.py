"""The label table as a FiftyOne image classification dataset (``FiftyOneImageClassificationDataset``).

The layout FiftyOne documents ("Loading Datasets From Disk", FiftyOneImageClassificationDataset)::

    <out>/data/<uuid>.<ext>       the images (symlinks or copies; a uuid may hold folders)
    <out>/labels.json             {"classes": [...], "labels": {"<uuid>": [<class index>, ...]}}

A list of targets is FiftyOne's multilabel form (loaded as ``Classifications``): each row's list
holds its classes that are 1; ``[]`` is a row whose classes are all known and all 0, ``null`` a row
with nothing known (FiftyOne's unlabelled sample). FiftyOne has no "unknown": a row with blank cells
lists its known positives, and the report counts such rows. Excluded rows are left out; with
``split_validation``, ``train/`` and ``val/`` are one such dataset each. The uuid is the image's
path inside ``data/`` without its extension, so two images that differ only by extension in one
folder are refused. See docs/label-table.md, "Exports and imports".

Load it with ``fo.Dataset.from_dir(dataset_dir=OUT, dataset_type=fo.types.FiftyOneImageClassificationDataset)``.
"""

from __future__ import annotations

import os
from pathlib import PurePosixPath

from patchcfg.atomic import atomic_write_json
from patchcfg.errors import UserError
from patchcfg.interop.image_files import ExportReport, check_mode, export_names, new_folder, place_image
from patchcfg.label_table import LabelTable

EXCLUDED, NOT_FOUND = "excluded", "image not found"
#: a note on rows written: FiftyOne cannot tell their blank cells from 0
PARTLY_KNOWN = "rows with blank cells: FiftyOne lists their known positives, so a blank reads as absent"


def row_targets(labels_row, classes: list[str]) -> list[int] | None:
    """A row's FiftyOne target: the indices of its 1s; None when no cell is known."""
    if (labels_row < 0).all():
        return None
    return [int(i) for i in range(len(classes)) if labels_row[i] == 1]


def export_fiftyone(table: LabelTable, out_dir, mode: str = "symlink", *,
                    split_validation: bool = False) -> ExportReport:
    """Write ``out_dir`` (new or empty) as a FiftyOneImageClassificationDataset (one per split with
    ``split_validation``); the report counts images per split and rows left out or partly known."""
    check_mode(mode)
    classes = table.classes
    labels = table.label_matrix()
    sources = table.resolved_paths()
    names = export_names(table)
    uuids: dict[tuple[str, str], int] = {}
    for row, name in enumerate(names):
        split = ("val" if table.validation[row] else "train") if split_validation else ""
        key = (split, str(PurePosixPath(name).with_suffix("")))
        if not table.exclude[row] and key in uuids:
            first = uuids[key]
            raise UserError(
                f"{table.path or 'label table'}: rows {first + 2} and {row + 2} ('{table.df['filepath'][first]}', "
                f"'{table.df['filepath'][row]}') differ only by extension, and FiftyOne names an image by "
                "its path without one; rename one of the two images")
        if not table.exclude[row]:
            uuids[key] = row
    out = new_folder(out_dir)
    report = ExportReport(out)
    datasets: dict[str, dict] = {}
    for (split, uuid), row in uuids.items():
        if not os.path.isfile(sources[row]):
            report.left_out[NOT_FOUND] += 1
            continue
        folder = out / split if split else out
        place_image(sources[row], folder / "data" / names[row], mode)
        datasets.setdefault(split, {})[uuid] = row_targets(labels[row], classes)
        report.written[split or "data"] += 1
        if (labels[row] < 0).any() and (labels[row] >= 0).any():
            report.notes[PARTLY_KNOWN] += 1
    if table.exclude.any():
        report.left_out[EXCLUDED] += int(table.exclude.sum())
    for split in (["train", "val"] if split_validation else [""]):
        folder = out / split if split else out
        atomic_write_json(folder / "labels.json", {"classes": classes, "labels": datasets.get(split, {})})
    return report
