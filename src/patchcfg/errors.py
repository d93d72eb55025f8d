"""Errors the user can fix: printed as one clear message, exit code 2, never a traceback."""

from __future__ import annotations


class UserError(Exception):
    """Something the user gave us is wrong; the message says what, where and how to fix it."""

    exit_code = 2


class ConfigError(UserError):
    """One or more problems in a config; each problem is one line ``file:line: key.path: message``."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class LabelTableError(UserError):
    """A label table that cannot be read as the documented format."""


class ExperimentError(UserError):
    """An experiment folder that cannot be used as asked (locked, different config, ...)."""


class DataError(UserError):
    """An image or data file that cannot be read; the message names the path."""
