"""The one writer: every file patchcfg writes goes through :func:`atomic_write_bytes`.

A crash, a full disk or a kill leaves either the old file or the new one, never half of either:
the bytes go to a temp file beside the real file, are fsync'd, then renamed over it. A symlink is
written through (its target is replaced, the link stays), the file's mode is kept (a new file gets
the mode the umask gives), and a read-only file is refused, never replaced. :func:`file_lock`
serialises writers of one file (a label table edited by two programs at once).
"""

from __future__ import annotations

import contextlib
import errno as _errno
import json
import os
import socket
import stat
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from patchcfg.errors import UserError

LOCK_TIMEOUT = 60.0


class ReadOnlyFileError(UserError):
    """A file we were asked to replace is read-only."""


def real_path(path: str | os.PathLike) -> Path:
    """The file a path names, symlinks followed (the path itself when nothing exists there yet)."""
    return Path(os.path.realpath(os.fspath(path)))


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _with_filename(error: OSError, path: Path) -> OSError:
    """``error`` naming ``path`` when it names no file (a write to a full disk names none)."""
    if error.filename is not None or error.errno is None:
        return error
    return OSError(error.errno, error.strerror or os.strerror(error.errno), str(path))


def check_writable(path: str | os.PathLike) -> os.stat_result | None:
    """The ``stat`` of the file ``path`` names (None when absent); refuse what must not be replaced:
    a read-only file (:class:`ReadOnlyFileError`) or something that is not a regular file."""
    target = real_path(path)
    try:
        info = os.stat(target)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(info.st_mode):
        raise UserError(f"{path}: not a regular file; give the path of a file to write")
    if not info.st_mode & 0o222 or not os.access(target, os.W_OK):
        raise ReadOnlyFileError(
            f"{path}: the file is read-only, so it is left as it is; make it writable "
            f"(chmod u+w {path}) or write elsewhere")
    return info


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temp file in the same folder, fsync, then rename.

    Symlinks are written through; the mode of an existing file is kept; a read-only file is
    refused with :class:`ReadOnlyFileError`. Returns ``path`` as given.
    """
    return atomic_write_stream(path, lambda handle: handle.write(data))


def atomic_write_stream(path: str | os.PathLike, write) -> Path:
    """As :func:`atomic_write_bytes`, the bytes given by ``write(handle)`` (a binary file open on
    the temp file): for a file too large to hold twice in memory (a serialised index)."""
    path = Path(path)
    target = real_path(path)
    info = check_writable(path)
    mode = stat.S_IMODE(info.st_mode) if info is not None else _umask_mode()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as error:
        raise _with_filename(error, target.parent) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
            os.fchmod(handle.fileno(), mode)
        os.replace(tmp, target)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(error, OSError):
            raise _with_filename(error, path) from None
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_figure(path: str | os.PathLike, figure, dpi: int = 100) -> Path:
    """A matplotlib figure as PNG, written atomically."""
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return atomic_write_bytes(path, buffer.getvalue())


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def backup(path: str | os.PathLike) -> Path | None:
    """Copy the file at ``path`` (through symlinks) to ``<real file>.bak``, atomically; None if absent."""
    target = real_path(path)
    try:
        data = target.read_bytes()
    except FileNotFoundError:
        return None
    bak = target.with_name(target.name + ".bak")
    if bak.exists() and not bak.is_symlink():
        with contextlib.suppress(OSError):
            os.chmod(bak, stat.S_IMODE(os.stat(bak).st_mode) | 0o200)  # ours: kept writable
    return atomic_write_bytes(bak, data)


# --------------------------------------------------------------------------- locks

_thread_locks: dict[str, threading.RLock] = {}
_depth: dict[str, int] = {}
_guard = threading.Lock()


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file of ``path``: ``<real file>.lock`` beside it."""
    target = real_path(path)
    return target.with_name(target.name + ".lock")


def _busy(path, lock: Path, holder: str) -> UserError:
    return UserError(
        f"{path} is being written by {holder} (lock {lock}); wait for it to finish and try again")


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, timeout: float = LOCK_TIMEOUT):
    """Hold an exclusive lock on ``path`` (a ``flock`` on ``<file>.lock`` beside it) for the block.

    Every program that writes a label table takes it, around its whole read-modify-write; another
    process or thread waits (up to ``timeout`` seconds, then a message naming the holder). The
    lock is re-entrant in the thread that holds it and released when the process dies.
    """
    lock = lock_path(path)
    key = str(lock)
    with _guard:
        local = _thread_locks.setdefault(key, threading.RLock())
    if not local.acquire(timeout=timeout):
        raise _busy(path, lock, "another thread of this process")
    try:
        if _depth.get(key):  # this thread holds it already
            _depth[key] += 1
            try:
                yield lock
            finally:
                _depth[key] -= 1
            return
        with _flock(path, lock, timeout):
            _depth[key] = 1
            try:
                yield lock
            finally:
                _depth.pop(key, None)
    finally:
        local.release()


@contextlib.contextmanager
def _flock(path, lock: Path, timeout: float):
    import fcntl

    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        handle = open(lock, "a+")
    except OSError as error:
        raise UserError(
            f"{path}: cannot write in its folder {lock.parent} ({error.strerror}); a label table is "
            "written through files beside it (a lock, a temp file, a .bak), so the folder must be "
            f"writable: make it writable (chmod u+w {lock.parent}) or choose a writable place") from None
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as error:
                if error.errno not in (_errno.EWOULDBLOCK, _errno.EACCES, _errno.EAGAIN):
                    raise
                if time.monotonic() >= deadline:
                    handle.seek(0)
                    raise _busy(path, lock, handle.read().strip() or "another process") from None
                time.sleep(0.05)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
    finally:
        handle.close()


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when ``a`` and ``b`` name one file (through symlinks, hard links and spellings)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return real_path(a) == real_path(b)


def starts_with(prefixes) -> callable:
    """A predicate for :func:`check_output`: the file's first bytes begin with one of ``prefixes``."""
    prefixes = tuple(p.encode() if isinstance(p, str) else p for p in prefixes)

    def ours(path: Path) -> bool:
        try:
            with open(path, "rb") as handle:
                return handle.read(256).startswith(prefixes)
        except OSError:
            return False

    return ours


def check_output(out: str | os.PathLike, *, protected=(), ours=None, force: bool = False,
                 option: str = "--out") -> None:
    """Refuse to write ``out`` over a file the user wrote.

    ``protected``: (what, path) pairs never to be replaced (the label table read, the config);
    an existing ``out`` for which ``ours(path)`` is not True is replaced only with ``force``.
    """
    for what, path in protected:
        if path is not None and same_file(out, path):
            raise UserError(
                f"{option} {out} is the {what} this command reads; it is never replaced: write to "
                "another file")
    if force or not os.path.lexists(out):
        return
    if os.path.isdir(out):
        raise UserError(f"{option} {out} is a folder; give a file name")
    if ours is None or not ours(Path(out)):
        raise UserError(
            f"{option} {out} already exists and was not written by this command; it is kept as it is. "
            "Choose another file, or pass --force to replace it")
