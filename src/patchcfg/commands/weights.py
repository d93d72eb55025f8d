"""``patchcfg weights fetch`` and ``patchcfg weights check``: KerasHub presets as local folders.

A machine without network access cannot resolve a ``kaggle://`` or ``hf://`` handle. ``fetch`` runs
where the network answers and writes the preset as a folder (``config.json``, ``model.weights.h5``,
``metadata.json`` and, when the preset has one, ``image_converter.json``); copy the folder over and
set ``backbone.preset: DIR``. ``check`` says what a folder holds and prints the sha256 of its
weights, the digest each stage records in its ``env.json`` as ``backbone_sha256``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import click

from patchcfg.errors import UserError


@click.group()
def weights():
    """Fetch KerasHub presets into folders and check what a folder holds.

    \b
    Example:
      patchcfg weights fetch kaggle://keras/dinov2/keras/dinov2_small --out models/dinov2_small
      patchcfg weights check models/dinov2_small
    """


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _number(count: int | None) -> str:
    return "unknown" if count is None else f"{count:,}"


def summary_lines(facts: dict) -> list[str]:
    """The lines ``check`` prints for :func:`patchcfg.models.foundation.describe`'s dict."""
    shape = facts["input"]
    size = shape.get("image_size")
    patch = shape.get("patch_size")
    sizes = {"any multiple": f"any multiple of the patch size {patch}",
             "fixed": f"only {size} px (fixed position embeddings)" if size else "only the preset's own size",
             "any": "any size (convolutional)"}.get(shape.get("sizes"), str(shape.get("sizes")))
    parameters = _number(facts.get("parameters"))
    if facts.get("image_tower_parameters") not in (None, facts.get("parameters")):
        parameters += f" (image tower {_number(facts['image_tower_parameters'])})"
    return [
        f"preset: {facts['preset']}",
        f"architecture: {facts['architecture']}",
        f"parameters: {parameters}",
        f"feature width: {facts['feature_width']}",
        f"poolings: {facts['poolings']}",
        f"expected input: {f'{size}x{size} px' if size else 'the size of data.imshape'}, "
        f"{f'patch {patch}, ' if patch else ''}{shape.get('channels', 3)} channels",
        f"image sizes: {sizes}",
        f"normalisation: {shape.get('normalisation')}",
        f"keras_hub version: {facts.get('keras_hub_version') or 'not recorded'}",
        f"weights sha256: {facts['weights_sha256']}",
    ]


def _check(folder: str, as_json: bool) -> None:
    from patchcfg.models.foundation import describe

    facts = describe(folder)  # not a preset: one message (from its files) before Keras loads it
    if as_json:
        click.echo(json.dumps(facts, indent=2))
    else:
        click.echo("\n".join(summary_lines(facts)))


@weights.command("check")
@click.argument("folder", metavar="DIR")
@click.option("--json", "as_json", is_flag=True, help="Print the facts as one JSON object.")
def weights_check(folder, as_json):
    """Load the KerasHub preset folder DIR and print what it is: architecture, parameter count,
    feature width, expected input (image size, patch size, channels, which sizes it takes,
    normalisation), the keras_hub version it was saved with and the sha256 of model.weights.h5.

    \b
    Example:
      patchcfg weights check models/dinov2_small
      patchcfg weights check models/dinov2_small --json
    """
    _check(folder, as_json)


def _out_problem(out: str, force: bool) -> str | None:
    """Why the preset cannot be written to ``out`` (None: it can)."""
    if os.path.lexists(out) and not os.path.isdir(out):
        return f"--out {out} is a file, not a folder; give a new or empty folder"
    if os.path.isdir(out) and os.listdir(out):
        if not force:
            return (f"--out {out} already exists and is not empty; it is kept as it is "
                    "(give a new or empty folder, or --force to replace a preset folder)")
        if not os.path.isfile(os.path.join(out, "config.json")):
            return (f"--out {out} is not empty and holds no KerasHub preset (no config.json); "
                    "--force replaces only a preset folder: give a new or empty folder")
    return None


def _load(handle: str):
    """``(backbone, converter)`` as the preset saved them (its own dtype and image size)."""
    from patchcfg.models.presets import check_handle_reachable, is_handle, read_preset

    # offline, or not a preset: one message at once, before Keras loads
    if is_handle(handle):
        check_handle_reachable(handle, "weights fetch")
        source, has_converter = handle, True
        hint = " (check the handle: e.g. kaggle://keras/dinov2/keras/dinov2_small, hf://owner/name or dinov2_small)"
    else:
        info = read_preset(handle, "weights fetch")
        source, has_converter = info.folder, info.converter is not None
        hint = " (check its config.json and model.weights.h5)"
    from patchcfg.models.foundation import import_keras_hub

    keras_hub = import_keras_hub()
    try:
        backbone = keras_hub.models.Backbone.from_preset(source)
    except Exception as error:  # noqa: BLE001 - KerasHub raises many kinds for an unusable preset
        raise UserError(f"weights fetch: cannot load the KerasHub preset {handle}: "
                        f"{_first_line(error)}{hint}") from error
    converter = None
    if has_converter:
        try:
            converter = keras_hub.layers.ImageConverter.from_preset(source)
        except FileNotFoundError:
            converter = None  # a preset without image_converter.json: images reach it in [0, 1]
        except Exception as error:  # noqa: BLE001
            raise UserError(f"weights fetch: cannot load the image converter of {handle}: "
                            f"{_first_line(error)}") from error
    return backbone, converter


def _save(backbone, converter, out: str, handle: str, folder: str | None = None) -> None:
    """Save into a temporary folder beside ``out``, then put it in its place. A local preset
    ``folder`` is copied file by file (saved again, its weights file would differ byte for byte:
    the copy keeps its sha256)."""
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    name = os.path.basename(os.path.abspath(out))
    partial = tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=parent)
    old = None
    try:
        try:
            if folder is not None:
                shutil.copytree(folder, partial, dirs_exist_ok=True)
            else:
                backbone.save_to_preset(partial)
                if converter is not None:
                    converter.save_to_preset(partial)
        except OSError:
            raise
        except Exception as error:  # noqa: BLE001
            raise UserError(f"weights fetch: cannot save {handle} as a preset in {parent}: "
                            f"{_first_line(error)}") from error
        os.chmod(partial, 0o777 & ~_umask())
        if os.path.isdir(out) and os.listdir(out):  # --force: the old preset goes once the new one is in
            old = tempfile.mkdtemp(prefix=f".{name}.", suffix=".old", dir=parent)
            os.replace(out, os.path.join(old, name))
        os.replace(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        if old is not None and not os.path.exists(out) and os.path.isdir(os.path.join(old, name)):
            os.replace(os.path.join(old, name), out)  # put the old preset back
        raise
    finally:
        if old is not None and os.path.isdir(out):  # else the old preset stays in `old`, recoverable
            shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@weights.command("fetch")
@click.argument("handle")
@click.option("--out", required=True, metavar="DIR", help="The preset folder to write (new or empty).")
@click.option("--force", is_flag=True, help="Replace an existing preset folder at DIR.")
def weights_fetch(handle, out, force):
    """Write the KerasHub preset HANDLE as a folder DIR that `backbone.preset: DIR` reads offline.

    HANDLE: kaggle://keras/dinov2/keras/dinov2_small, hf://owner/name, a KerasHub preset name
    (dinov2_small), or a local preset folder (loaded, then copied as it is). Run it where the
    network answers; then copy DIR to the machine that trains. Prints what `weights check` prints.

    \b
    Example:
      patchcfg weights fetch kaggle://keras/dinov2/keras/dinov2_small --out models/dinov2_small
      patchcfg weights fetch dinov2_small --out models/dinov2_small --force
    """
    from patchcfg.models.presets import is_handle

    out = os.path.expanduser(out)
    problem = _out_problem(out, force)
    if problem:
        raise UserError(f"weights fetch: {problem}")
    if not is_handle(handle) and os.path.isdir(handle) and os.path.isdir(out) \
            and os.path.samefile(os.path.expanduser(handle), out):
        raise UserError(f"weights fetch: --out {out} is the preset folder HANDLE itself; give another folder")
    backbone, converter = _load(handle)  # a local folder too: what is copied must load
    _save(backbone, converter, out, handle, None if is_handle(handle) else os.path.expanduser(handle))
    click.echo(f"wrote {out} from the KerasHub preset {handle}")
    _check(out, as_json=False)
