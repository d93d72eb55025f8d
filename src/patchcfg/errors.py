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


_OS_HINTS = {
    "EACCES": "permission denied; make it writable (or readable) for you, or choose another place",
    "EPERM": "operation not permitted; check the file's owner and mode, or choose another place",
    "EROFS": "the file system is read-only; choose a place on a writable disk",
    "ENOSPC": "no space left on the device; free some space or write elsewhere (e.g. --experiments DIR)",
    "EDQUOT": "disk quota exceeded; free some space or write elsewhere",
    "ENOTDIR": "a part of this path is a file, not a folder; give a folder path",
    "EISDIR": "is a folder; give a file path",
    "ENOENT": "no such file or folder; check the path",
    "EEXIST": "already exists; remove it or choose another name",
    "ENAMETOOLONG": "the name is too long; choose a shorter one",
    "EMFILE": "too many open files; raise the limit (ulimit -n) and run again",
}


def describe_os_error(error: OSError) -> str:
    """One line for an error of the operating system: which path, what happened, what to do."""
    import errno

    name = errno.errorcode.get(error.errno or -1, "")
    what = _OS_HINTS.get(name) or (error.strerror or str(error)).lower()
    paths = [p for p in (error.filename, getattr(error, "filename2", None)) if p is not None]
    where = " -> ".join(str(p) for p in paths) or "a file patchcfg was writing"
    detail = f" ({error.strerror})" if error.strerror and name in _OS_HINTS else ""
    return f"{where}: {what}{detail}"


_OS_PHRASES = {"No space left on device": "ENOSPC", "Disk quota exceeded": "EDQUOT",
               "Permission denied": "EACCES", "Read-only file system": "EROFS"}


def describe_library_os_error(error: BaseException) -> str | None:
    """One line for an operating-system failure reported by TensorFlow as its own error (a full
    disk under TensorBoard's writer or a checkpoint); None for any other error."""
    import re

    if not type(error).__module__.startswith("tensorflow"):
        return None
    text = str(error)
    for phrase, name in _OS_PHRASES.items():
        if phrase in text:
            paths = [p for p in re.findall(r"(?<![\w:])(/[^\s;,'\"}]+)", text) if not p.startswith("/job:")]
            where = paths[0] if paths else "a file TensorFlow was writing"
            return f"{where}: {_OS_HINTS[name]} ({phrase})"
    return None
