"""Small helpers the backbone modules share: nested layers, call checks, short error texts."""

from __future__ import annotations

import inspect
from collections.abc import Callable

from patchcfg.errors import UserError


def all_layers(model) -> list:
    """Every layer of ``model``, nested models' layers included."""
    found, stack = [], list(getattr(model, "layers", []))
    while stack:
        layer = stack.pop()
        found.append(layer)
        stack.extend(getattr(layer, "layers", []) or [])
    return found


def check_call(function: Callable, label: str, *args, **kwargs) -> None:
    """Raise UserError when ``function`` cannot be called with these arguments."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(*args, **kwargs)
    except TypeError as error:
        raise UserError(f"backbone {label}: bad arguments {sorted(kwargs)}: {error}") from error


def named_parameters(function: Callable) -> set[str]:
    """The parameters ``function`` names (not ``*args`` / ``**kwargs``)."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return set()
    return {p.name for p in parameters if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


def short(error: BaseException, limit: int = 600) -> str:
    """An exception's text, cut at ``limit`` characters."""
    text = str(error).strip()
    return text if len(text) <= limit else text[:limit] + " ..."
