"""``patchcfg demo``: the bundled demo data."""

from __future__ import annotations

import click


@click.command()
@click.option("--out", default="data/demo", show_default=True, type=click.Path(file_okay=False),
              help="Folder for images/ and labels.csv.")
@click.option("--force", is_flag=True, help="Replace a labels.csv that differs (a .bak is kept).")
def demo(out, force):
    """Write scikit-learn's digits as 32x32 PNGs plus a partially labelled table.

    Classes zero..nine, even and loop; ~10% validation rows; ~10% of the rest labelled, some
    partially. Deterministic; nothing is downloaded.

    \b
    Example:
      patchcfg demo --out data/demo && patchcfg labels stats data/demo/labels.csv
    """
    from patchcfg.demo import write_demo
    from patchcfg.label_table import read_label_table

    path = write_demo(out, force=force)
    table = read_label_table(path)
    click.echo(f"wrote {len(table)} images and {path} ({int(table.labelled().sum())} rows with labels, "
               f"{int(table.validation.sum())} validation)")
