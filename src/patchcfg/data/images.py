"""Which images a config means (no TensorFlow)."""

from __future__ import annotations

from patchcfg.errors import ConfigError
from patchcfg.label_table import list_images, read_label_table


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
