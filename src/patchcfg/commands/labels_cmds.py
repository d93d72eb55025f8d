"""``patchcfg init`` and ``patchcfg labels ...``: build and inspect label tables."""

from __future__ import annotations

from pathlib import Path

import click

from patchcfg.commands.labels_exchange import labels_export, labels_import
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

    from patchcfg.label_table import init_table, list_images

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
    from patchcfg.label_table import read_label_table, stats

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
    from patchcfg.label_table import add_classes

    added = add_classes(table, [n.strip() for name in names for n in name.split(",") if n.strip()])
    click.echo(f"added {', '.join(added)} to {table}")


@labels.command("review")
@click.argument("args", nargs=-1, required=True, metavar="CONFIG [KEY=VALUE ...]")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The review CSV to write.")
@click.option("--folds", type=click.IntRange(2), default=5, show_default=True,
              help="Folds of the out-of-fold fit (no row is scored by a model that saw it).")
@click.option("--n", "n", type=click.IntRange(1), default=None, help="Write only the N most likely mistakes.")
@click.option("--method", type=click.Choice(["confident_joint", "prune_by_noise_rate", "threshold"]),
              default="confident_joint", show_default=True,
              help="Which cells are suspects: off the confident joint's diagonal (fewest, surest); as many "
                   "as it counts, largest margins first (more found, less sure); below the threshold (most).")
@click.option("--labels", "labels_path", type=click.Path(dir_okay=False), default=None, metavar="CSV",
              help="The label table (sets data.labels).")
@click.option("--experiments", "experiments_root", default=None, metavar="DIR",
              help="Where experiment folders go (default: $PATCHCFG_EXPERIMENTS or ./experiments).")
@click.option("--force", is_flag=True, help="Replace an existing --out file that is not a review this command wrote.")
def labels_review(args, out, folds, n, method, labels_path, experiments_root, force):
    """Rank the labelled cells of the config's table by how likely they are wrong.

    Out-of-fold probabilities of the quick head on the cached features (`patchcfg embed CONFIG`),
    then confident learning per class (a softmax output's classes judged together); one row per
    suspect cell, most likely wrong first: filepath, row, class, given, p (out of fold), score
    (|given - p|), rank. Excluded rows are not reviewed. Fix the labels in the table, or in
    `patchcfg label` with the strategy mistakes.

    \b
    Example:
      patchcfg labels review configs/demo.yaml --out review.csv
      patchcfg labels review configs/demo.yaml --out review.csv --folds 10 --n 50
    """
    import numpy as np

    from patchcfg.active.review import COLUMNS, review_frame, review_labels
    from patchcfg.active.rows import RowFeatures
    from patchcfg.atomic import atomic_write_text, check_output, starts_with
    from patchcfg.commands._common import labels_override, one_config
    from patchcfg.config import load_config
    from patchcfg.experiment import experiment_dir
    from patchcfg.experiment import experiments_root as resolve_root
    from patchcfg.label_table import read_label_table
    from patchcfg.models.outputs import scoring_groups
    from patchcfg.tasks.embed import load_features, positions_in

    path, overrides = one_config(args)
    config = load_config(path, [*overrides, *labels_override(labels_path)])
    table_path = config["data"]["labels"]
    check_output(out, protected=[("label table", table_path), ("config", path)],
                 ours=starts_with([",".join(COLUMNS)]), force=force)
    table = read_label_table(table_path)
    folder = experiment_dir(resolve_root(experiments_root), config["name"])
    if not (folder / "embed" / "features.npy").is_file():
        raise UserError(f"{folder}/embed has no cached features: run `patchcfg embed {path}` first")
    cached, cached_paths = load_features(folder)
    paths = table.resolved_paths()
    index = None if list(cached_paths) == paths else positions_in(cached_paths, paths)
    has = np.ones(len(table), bool) if index is None else index >= 0
    labels = table.label_matrix()
    labelled = (labels >= 0).any(axis=1) & ~table.exclude
    missing = int((labelled & ~has).sum())
    rows = np.flatnonzero(labelled & has)
    if not len(rows):
        raise UserError(f"{table_path} has no labelled row with cached features to review"
                        + (f" ({missing} labelled rows have none: run `patchcfg embed {path}` again)"
                           if missing else ""))
    try:
        exclusive = scoring_groups(config.get("finetune"), list(table.classes))
    except UserError:  # the groups name classes the table lacks: score every class alone
        exclusive = False
    features = RowFeatures(cached, index)  # the table's rows seen in the cached matrix (-1: none), no copy
    review = review_labels(features, labels, rows, folds=folds, seed=int(config["seed"]), exclusive=exclusive,
                           method=method)
    frame = review_frame(table, review, n)
    atomic_write_text(out, frame.to_csv(index=False, lineterminator="\n"))
    suspects = int(review.cells["suspect"].sum())
    skipped = f"; {missing} labelled rows without cached features were skipped" if missing else ""
    click.echo(f"reviewed {len(review.cells)} labelled cells of {len(rows)} rows ({folds} folds, C={review.C:g}): "
               f"{suspects} suspects, {len(frame)} written to {out}{skipped}")


labels.add_command(labels_export)
labels.add_command(labels_import)
