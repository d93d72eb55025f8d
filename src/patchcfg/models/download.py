"""``weights: imagenet`` without network: a failed (or hopeless) download of a ``keras.applications``
weights file becomes one message that names the file, its URL and where to put it."""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import tempfile
import urllib.parse
import urllib.request

from patchcfg.errors import UserError
from patchcfg.models.util import short


def _keras_cache_dir() -> str:
    """The folder Keras's ``get_file`` uses as its cache root (``~/.keras`` or ``$KERAS_HOME``)."""
    try:
        from keras.src.backend import config as keras_config

        base = keras_config.keras_home()
    except (ImportError, AttributeError):
        base = os.environ.get("KERAS_HOME", os.path.join("~", ".keras"))
    base = os.path.expanduser(base)
    if not os.access(base, os.W_OK):  # the same fallback keras.utils.get_file takes
        base = os.path.join("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir(), ".keras")
    return base


def can_reach(url: str | None, timeout: float = 3.0) -> bool:
    """Cheap network check: can we open a TCP connection to the URL's host? (Proxies: assume yes.)"""
    if not url:
        return False
    if urllib.request.getproxies():
        return True
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname:
        return False
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _get_file_arguments(
    fname=None,
    origin=None,
    untar=False,
    md5_hash=None,
    file_hash=None,
    cache_subdir="datasets",
    hash_algorithm="auto",
    extract=False,
    archive_format="auto",
    cache_dir=None,
    force_download=False,
):
    return {"fname": fname, "origin": origin, "cache_subdir": cache_subdir, "cache_dir": cache_dir}


def _missing_weights_error(
    app_name: str, file_name: str, origin: str | None, target: str, reason: str
) -> UserError:
    return UserError(
        f"backbone {app_name}: weights: imagenet needs the Keras file {file_name!r}, "
        f"which could not be downloaded ({reason}).\n"
        f"Download it where there is network access:\n    {origin}\n"
        f"and put it at\n    {target}\n"
        "(Keras's weights cache: ~/.keras/models/, or $KERAS_HOME/models/), then run again. "
        "Or give a local file instead of imagenet:\n"
        f"    weights: /path/to/{file_name}      (that Keras file)\n"
        "    weights: /path/to/file.weights.h5   (weights saved from this same backbone)"
    )


@contextlib.contextmanager
def imagenet_download_guard(app_name: str):
    """While building a keras.applications model, turn a failed (or hopeless) weights download
    into a UserError that names the file and where to put it.

    keras.applications fetch weights through ``keras.src.utils.file_utils.get_file``; it is wrapped
    for the duration of the build: a file already in the cache is used as usual; a missing one is
    only downloaded when the host answers, and any failure becomes the message above.
    """
    from keras.src.utils import file_utils

    original = file_utils.get_file

    @functools.wraps(original)
    def guarded_get_file(*args, **kwargs):
        arguments = _get_file_arguments(*args, **kwargs)
        origin = arguments["origin"]
        file_name = arguments["fname"] or os.path.basename(urllib.parse.urlsplit(origin or "").path)
        cache = os.path.expanduser(arguments["cache_dir"]) if arguments["cache_dir"] else _keras_cache_dir()
        target = os.path.join(cache, arguments["cache_subdir"], file_name)
        if not os.path.exists(target) and not can_reach(origin):
            raise _missing_weights_error(app_name, file_name, origin, target, "no network connection")
        try:
            return original(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - any failure to fetch is reported the same way
            raise _missing_weights_error(
                app_name, file_name, origin, target, f"{type(error).__name__}: {short(error, 300)}"
            ) from error

    file_utils.get_file = guarded_get_file
    try:
        yield
    finally:
        file_utils.get_file = original
