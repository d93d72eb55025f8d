"""``patchcfg augment``: see what an augmentation recipe does before training with it."""

from __future__ import annotations

import io
from pathlib import Path

import click

from patchcfg.commands._common import config_args, one_config

TILE = 96  # pixels per tile side in the preview (small images are scaled up, nearest neighbour)
GAP = 4


def _tiles(batch, tile):
    """Float (B, H, W, C) in [0, 1] -> list of PIL images, RGB or grayscale, upscaled to ``tile``."""
    import numpy as np
    from PIL import Image

    from patchcfg.data.augment import to_uint8

    out = []
    for image in to_uint8(batch):
        if image.shape[-1] >= 3:
            im = Image.fromarray(np.ascontiguousarray(image[..., :3]), "RGB")
        else:
            im = Image.fromarray(np.ascontiguousarray(image[..., 0]), "L").convert("RGB")
        h, w = image.shape[:2]
        scale = max(1, tile // max(h, w))
        out.append(im.resize((w * scale, h * scale), Image.NEAREST))
    return out


def preview_grid(originals, views) -> bytes:
    """PNG bytes: one row per image, the original then each augmented view."""
    from PIL import Image, ImageDraw

    columns = [_tiles(originals, TILE)] + [_tiles(v, TILE) for v in views]
    cell_w = max(t.width for col in columns for t in col)
    cell_h = max(t.height for col in columns for t in col)
    header = 14
    grid = Image.new("RGB", (len(columns) * (cell_w + GAP) + GAP, header + len(columns[0]) * (cell_h + GAP) + GAP),
                     (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for c, column in enumerate(columns):
        x = GAP + c * (cell_w + GAP)
        draw.text((x, 1), "original" if c == 0 else f"view {c}", fill=(0, 0, 0))
        for r, tile in enumerate(column):
            grid.paste(tile, (x, header + GAP + r * (cell_h + GAP)))
    buffer = io.BytesIO()
    grid.save(buffer, format="PNG")
    return buffer.getvalue()


def write_preview(config: dict, out, n: int = 8, views: int = 2) -> dict:
    """Augment ``n`` images of ``config`` ``views`` times and write the grid to ``out`` (PNG).

    Images are picked with the config's seed among the good files of ``data.images`` (or the
    label table). Returns ``{"path", "images", "skipped"}``.
    """
    import numpy as np

    from patchcfg.atomic import atomic_write_bytes
    from patchcfg.data.augment import build_augmenter
    from patchcfg.data.images import resolve_image_paths
    from patchcfg.data.loading import check_images, load_images, output_channels
    from patchcfg.data.readers import probe

    data = config.get("data") or {}
    seed = int(config.get("seed", 0) or 0)
    paths = resolve_image_paths(data)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(paths))
    chosen, skipped = [], []
    for start in range(0, len(order), max(n, 1) * 2):
        candidates = [paths[i] for i in order[start:start + max(n, 1) * 2]]
        good, bad = check_images(candidates, data.get("on_bad_image", "error"), data_cfg=data)
        chosen.extend(good[: n - len(chosen)])
        skipped.extend(bad)
        if len(chosen) >= n:
            break
    if not chosen:
        from patchcfg.errors import DataError

        raise DataError("no readable images to preview")
    originals = load_images(chosen, data)
    channels = output_channels(probe(chosen), data)
    augmenter = build_augmenter(config.get("augmentation"), data.get("imshape", [32, 32]), channels, seed=seed)
    batch_views = augmenter.views(originals, views) if views > 0 else ()
    png = preview_grid(originals, [v.numpy() for v in batch_views])
    path = atomic_write_bytes(Path(out), png)
    return {"path": str(path), "images": len(chosen), "skipped": skipped}


@click.command()
@config_args
@click.option("--out", default="augment_preview.png", show_default=True, type=click.Path(dir_okay=False),
              help="PNG file to write.")
@click.option("--force", is_flag=True, help="Replace an existing --out that is not a PNG image.")
@click.option("--n", "n", default=8, show_default=True, type=click.IntRange(1, 256), help="Images (rows).")
@click.option("--views", default=2, show_default=True, type=click.IntRange(1, 16),
              help="Augmented views per image (columns after the original).")
def augment(args, out, force, n, views):
    """Write a PNG grid: original images beside augmented views of them.

    The images come from data.images (or the label table data.labels); the recipe is the
    config's augmentation section. KEY=VALUE overrides apply as everywhere.

    \b
    Example:
      patchcfg augment configs/simclr.yaml --out preview.png
      patchcfg augment configs/simclr.yaml augmentation.jitter=0.5 --n 4 --views 3
    """
    from patchcfg.atomic import check_output, starts_with
    from patchcfg.config import load_config

    path, overrides = one_config(args)
    config = load_config(path, overrides)
    check_output(out, protected=[("config", path), ("label table", config["data"].get("labels"))],
                 ours=starts_with([b"\x89PNG"]), force=force)
    result = write_preview(config, out, n=n, views=views)
    click.echo(f"wrote {result['path']} ({result['images']} images x {views} views)")
    for item in result["skipped"]:
        click.echo(f"skipped {item['path']}: {item['reason']}", err=True)
