"""The label table as class folders, the ImageFolder layout (``<out>/<class>/<image>``).

One folder per class holds the images of the single-label rows, as symlinks or copies; with
``split_validation`` the validation rows go under ``val/`` and the others under ``train/``
(``<out>/train/<class>/...``), the layout torchvision's ``ImageFolder`` and Keras'
``image_dataset_from_directory`` read one split at a time. A row is single-label when exactly one
class is 1 and no cell is blank: a blank could be a second positive. With ``exclusive`` (the classes
exclude each other, as a softmax output's do) one positive settles the row and blanks count as 0.
See docs/label-table.md, "Exports and imports".
"""

from __future__ import annotations

import os

import numpy as np

from patchcfg.interop.image_files import (
    ExportReport,
    check_folder_name,
    check_mode,
    export_names,
    new_folder,
    place_image,
)
from patchcfg.label_table import LabelTable

#: why a row is left out, in the order the reasons are judged
EXCLUDED, MULTI_LABEL, NO_POSITIVE, UNKNOWN_CELLS, NOT_FOUND = (
    "excluded", "multi-label", "no positive", "unknown cells", "image not found")


def single_labels(table: LabelTable, exclusive: bool = False) -> tuple[np.ndarray, list[str | None]]:
    """Per row, the index of its one class (-1 when none) and, for the others, why not."""
    labels = table.label_matrix()
    positives = (labels == 1).sum(axis=1)
    unknown = (labels < 0).sum(axis=1)
    reasons: list[str | None] = []
    for row in range(len(table)):
        if table.exclude[row]:
            reasons.append(EXCLUDED)
        elif positives[row] > 1:
            reasons.append(MULTI_LABEL)
        elif positives[row] == 0:
            reasons.append(NO_POSITIVE)
        elif unknown[row] and not exclusive:
            reasons.append(UNKNOWN_CELLS)
        else:
            reasons.append(None)
    index = np.where([r is None for r in reasons], labels.argmax(axis=1) if labels.size else -1, -1)
    return index.astype(int), reasons


def export_class_folders(table: LabelTable, out_dir, mode: str = "symlink", *,
                         split_validation: bool = False, exclusive: bool = False) -> ExportReport:
    """Write ``out_dir`` (new or empty) as class folders; the report counts what went where and why
    the other rows were left out (excluded, multi-label, no positive, unknown cells, image not found)."""
    check_mode(mode)
    for name in table.classes:
        check_folder_name(name, "class")
    index, reasons = single_labels(table, exclusive)
    out = new_folder(out_dir)
    report = ExportReport(out)
    sources = table.resolved_paths()
    for row, (source, name) in enumerate(zip(sources, export_names(table), strict=True)):
        if reasons[row] is None and not os.path.isfile(source):
            reasons[row] = NOT_FOUND
        if reasons[row] is not None:
            report.left_out[reasons[row]] += 1
            continue
        folder = table.classes[index[row]]
        if split_validation:
            folder = f"{'val' if table.validation[row] else 'train'}/{folder}"
        place_image(source, out / folder / name, mode)
        report.written[folder] += 1
    return report
