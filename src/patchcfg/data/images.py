"""Which images a config means (no TensorFlow)."""

from __future__ import annotations

import hashlib
import os

from patchcfg.errors import ConfigError
from patchcfg.labels import list_images, read_label_table


def resolve_image_paths(data_cfg: dict) -> list[str]:
    """The image paths of a ``data`` config section.

    ``data.images`` (a folder searched recursively, a glob, or a .txt list of paths) when set,
    else the label table's ``filepath`` column (relative entries resolved against the table's
    folder). Relative ``data.*`` paths themselves are taken relative to the current working
    directory. Raises LabelTableError for an empty/missing source, ConfigError if neither is set.
    """
    images = (data_cfg or {}).get("images")
    labels = (data_cfg or {}).get("labels")
    if images:
        return list_images(images)
    if labels:
        return read_label_table(labels).resolved_paths()
    raise ConfigError("data: neither data.images nor data.labels is set; say where the images are "
                      "(e.g. data.images=data/demo/images)")


def files_digest(paths: list[str]) -> str:
    """A SHA-256 of ``paths`` in order with each file's size and modification time (ns): what a
    file computed from the images (embed's features, DetCon's segments) must be recomputed for,
    also when an image is replaced in place under the same name. A missing file counts as such."""
    digest = hashlib.sha256()
    for path in paths:
        try:
            stat = os.stat(path)
            facts = f"{stat.st_size}\t{stat.st_mtime_ns}"
        except OSError:
            facts = "missing"
        digest.update(f"{path}\t{facts}\n".encode())
    return digest.hexdigest()
