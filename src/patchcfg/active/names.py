"""Did-you-mean errors for names the user types (strategies, subsets, classes)."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from patchcfg.errors import UserError


def listing(names: Sequence[str], limit: int = 20) -> str:
    names = [str(n) for n in names]
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit]) + f", ... ({len(names)} in all)"


def unknown(what: str, name: str, valid: Sequence[str], context: str = "", shown: Sequence[str] | None = None
            ) -> UserError:
    """``unknown <what> 'name'[ in 'context'] (did you mean 'x'?); <what>s: a, b, c``."""
    close = difflib.get_close_matches(str(name), [str(v) for v in valid], n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    where = f" in '{context}'" if context and context != name else ""
    if what.endswith(("s", "x", "sh", "ch")):
        plural = f"{what}es"
    elif what.endswith("y") and what[-2:-1] not in "aeiou":
        plural = f"{what[:-1]}ies"
    else:
        plural = f"{what}s"
    return UserError(f"unknown {what} '{name}'{where}{hint}; "
                     f"valid {plural}: {listing(shown or valid) or 'none'}")


def class_index(name: str, classes: Sequence[str], context: str) -> int:
    classes = list(classes)
    if name not in classes:
        raise unknown("class", name, classes, context)
    return classes.index(name)
