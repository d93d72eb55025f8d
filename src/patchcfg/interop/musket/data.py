"""Musket ``shape`` and ``crops`` as our ``data`` section; the label table is a placeholder to fill in."""

from __future__ import annotations

from patchcfg.interop.musket.report import Report
from patchcfg.interop.musket.values import as_int, show

LABELS_PLACEHOLDER = "labels.csv"


def convert_data(musket: dict, report: Report) -> dict:
    out: dict = {"labels": LABELS_PLACEHOLDER}
    if "crops" in musket:  # N x N cells of `shape` each, as ours
        crops = as_int(musket["crops"])
        if crops is None or crops < 1:
            report.lost(("crops",), f"expected a whole number from 1, got {show(musket['crops'])}")
        else:
            out["crops"] = crops
    key = "shape" if "shape" in musket else "input_shape" if "input_shape" in musket else None
    if key is None:
        report.note(("shape",), "not given; data.imshape and data.channels are patchcfg's defaults")
        return out
    shape = musket[key]
    dims = [as_int(v) for v in shape] if isinstance(shape, list) else []
    if len(dims) not in (2, 3) or any(d is None for d in dims) or min(dims[:2]) < 8 \
            or (len(dims) == 3 and dims[2] < 1):
        report.lost((key,), f"expected [height, width, channels] with sides >= 8, got {show(shape)}")
        return out
    out["imshape"] = dims[:2]
    if len(dims) == 3:
        out["channels"] = dims[2]
    return out
