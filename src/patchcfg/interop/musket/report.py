"""What a conversion could not carry over, and notes, each at its Musket key (and file:line)."""

from __future__ import annotations

from patchcfg.interop.musket.values import dotted

NOT_CONVERTED = "not converted"


class Report:
    """Messages about Musket keys: ``lost`` (not converted, and why) and ``note`` (how it was mapped).

    ``locations`` maps key paths (tuples) to ``(file, line)``; :meth:`messages` sorts by line.
    """

    def __init__(self, locations: dict | None = None):
        self.locations = locations or {}
        self.entries: list[tuple[tuple, str]] = []  # (key path, message text)

    def lost(self, path: tuple, reason: str) -> None:
        self.entries.append((path, f"{NOT_CONVERTED} ({reason})"))

    def note(self, path: tuple, text: str) -> None:
        self.entries.append((path, f"note: {text}"))

    def _where(self, path: tuple) -> tuple[str, int] | None:
        for end in range(len(path), -1, -1):
            if path[:end] in self.locations:
                return self.locations[path[:end]]
        return None

    def messages(self) -> list[str]:
        located = []
        for order, (path, text) in enumerate(self.entries):
            where = self._where(path)
            prefix = f"{where[0]}:{where[1]}: " if where else ""
            sort_key = (0, where[1], order) if where else (1, 0, order)
            located.append((sort_key, f"{prefix}{dotted(path)}: {text}"))
        return [message for _, message in sorted(located)]
