"""Musket loss expressions (``binary_crossentropy+0.1*dice_loss``) as ours, through the loss aliases
of :mod:`patchcfg.losses`."""

from __future__ import annotations

import re
from typing import Any

from patchcfg.errors import ConfigError
from patchcfg.interop.musket.report import Report
from patchcfg.interop.musket.values import show
from patchcfg.losses import ALIASES, LOSSES

#: Musket / Keras loss names -> our registered losses: the aliases of patchcfg.losses, and ours.
LOSS_NAMES = {**{name: name for name in LOSSES}, **ALIASES}
_MUSKET_LOSSES = ("binary_crossentropy", "categorical_crossentropy", "dice_loss", "focal_loss")


def convert_loss(value: Any, path: tuple, report: Report) -> str | None:
    from patchcfg.losses import parse_loss

    if isinstance(value, list):
        report.lost(path, "one loss per output (multi-output models) is not supported; give one expression")
        return None
    if not isinstance(value, str) or not value.strip():
        report.lost(path, f"expected a loss expression, got {show(value)}")
        return None
    unknown = []

    def rename(match: re.Match) -> str:
        name = match.group(0)
        if name in LOSS_NAMES:
            return LOSS_NAMES[name]
        unknown.append(name)
        return name

    text = re.sub(r"(?<![0-9.A-Za-z_])[A-Za-z_][A-Za-z0-9_]*", rename, value.strip())
    fallback = "this stage uses finetune.loss" if path[0] == "stages" else "patchcfg's default is used"
    if unknown:
        report.lost(path, f"no patchcfg loss for {', '.join(repr(u) for u in unknown)}; Musket losses "
                          f"we map: {', '.join(_MUSKET_LOSSES)}; {fallback}")
        return None
    try:
        terms = parse_loss(text)
    except ConfigError as error:
        report.lost(path, f"{error}; {fallback}")
        return None
    missing = [t.name for t in terms if t.name not in LOSSES]
    if missing:  # pragma: no cover - LOSS_NAMES only names registered losses
        report.lost(path, f"unknown loss {', '.join(missing)}")
        return None
    return text
