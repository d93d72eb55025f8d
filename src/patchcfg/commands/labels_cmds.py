"""``patchcfg init`` and ``patchcfg labels ...``: build and inspect label tables."""

from __future__ import annotations

from pathlib import Path

import click

from patchcfg.errors import UserError


@click.command()
@click.argument("images")
@click.option("--classes", default="", help="Comma-separated class names (all start unknown).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The label table to write.")
@click.option("--validation-fraction", default=0.0, type=click.FloatRange(0, 1), show_default=True,
              help="Fraction of rows marked validation (seeded).")
@click.option("--seed", default=0, show_default=True, help="Seed for the validation rows.")
@click.option("--force", is_flag=True, help="Replace an existing table (a .bak is kept).")
def init(images, classes, out, validation_fraction, seed, force):
    """Build a label table from IMAGES: a folder (searched recursively), a glob or a .txt list.

    Paths are stored relative to the table's folder. Every class starts unknown (blank).

    \b
    Example:
      patchcfg init data/tiles --classes water,forest,urban --out data/labels.csv
      patchcfg init 'data/**/*.tif' --out labels.csv --validation-fraction 0.1
    """
    import numpy as np

    from patchcfg.labels import init_table, list_images

    target = Path(out)
    if target.exists() and not force:
        raise UserError(f"{target} already exists; it is kept as it is (use --force to replace it, a .bak is kept)")
    names = [c.strip() for c in classes.split(",") if c.strip()]
    table = init_table(list_images(images), names, target)
    if validation_fraction:
        rng = np.random.default_rng(seed)
        count = int(round(validation_fraction * len(table)))
        table.df.loc[rng.choice(len(table), size=count, replace=False), "validation"] = True
    table.write(target)
    click.echo(f"wrote {target}: {len(table)} images, {len(names)} classes")


@click.group()
def labels():
    """Inspect and edit label tables.

    \b
    Example:
      patchcfg labels stats data/demo/labels.csv
      patchcfg labels add-class data/demo/labels.csv striped
    """


@labels.command("stats")
@click.argument("table", type=click.Path(dir_okay=False))
def labels_stats(table):
    """Per class: how many rows are present (1), absent (0), unknown (blank); training vs validation."""
    from patchcfg.labels import read_label_table, stats

    loaded = read_label_table(table)
    frame = stats(loaded)
    click.echo(f"{table}: {len(loaded)} rows, {int(loaded.exclude.sum())} excluded, "
               f"{int(loaded.validation.sum())} validation, {int(loaded.labelled().sum())} with any label")
    if frame.empty:
        click.echo("no classes yet (add one with `patchcfg labels add-class`)")
        return
    wide = frame.pivot(index="class", columns="rows", values=["present", "absent", "unknown"])
    wide.columns = [f"{what}_{part}" for what, part in wide.columns]
    order = [f"{w}_{p}" for p in ("train", "validation") for w in ("present", "absent", "unknown")]
    click.echo(wide.loc[loaded.classes, order].to_string())


@labels.command("add-class")
@click.argument("table", type=click.Path(dir_okay=False))
@click.argument("names", nargs=-1, required=True)
def labels_add_class(table, names):
    """Add classes (new columns, all unknown); existing labels are untouched. A .bak is kept.

    NAMES may be separate arguments or comma-separated (as `init --classes`):
    `patchcfg labels add-class labels.csv cat,dog` adds two classes.
    """
    from patchcfg.labels import add_classes

    added = add_classes(table, [n.strip() for name in names for n in name.split(",") if n.strip()])
    click.echo(f"added {', '.join(added)} to {table}")
