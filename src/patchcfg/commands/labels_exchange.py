"""``patchcfg labels export`` and ``patchcfg labels import``: the label table in the formats of the
tools used next (class folders, Label Studio, FiftyOne) and Label Studio's labels back into it.

The formats: docs/label-table.md, "Exports and imports", and the modules of :mod:`patchcfg.interop`.
"""

from __future__ import annotations

from pathlib import Path

import click

from patchcfg.errors import UserError

FORMATS = ("folders", "label-studio", "fiftyone")
CONFIG_SUFFIXES = (".yaml", ".yml")
#: the options that apply to only some formats: option -> the formats that take it
_FORMAT_OPTIONS = {"--predictions": ("label-studio",), "--url-prefix": ("label-studio",),
                   "--threshold": ("label-studio",), "--from-name": ("label-studio",),
                   "--to-name": ("label-studio",), "--force": ("label-studio",),
                   "--copy": ("folders", "fiftyone"), "--split": ("folders", "fiftyone"),
                   "--exclusive": ("folders",)}


def table_path_of(source: str) -> Path:
    """The label table a command argument names: the table itself, or a config's ``data.labels``."""
    if Path(source).suffix.lower() in CONFIG_SUFFIXES:
        from patchcfg.config import load_config

        return Path(load_config(source)["data"]["labels"])
    return Path(source)


def _check_options(format_: str, given: dict[str, bool]) -> None:
    for option, used in given.items():
        if used and format_ not in _FORMAT_OPTIONS[option]:
            raise UserError(f"{option} applies to --format {' or '.join(_FORMAT_OPTIONS[option])}, "
                            f"not {format_}; leave it out")


@click.command("export")
@click.argument("source", metavar="CONFIG_OR_TABLE")
@click.option("--format", "format_", type=click.Choice(FORMATS), required=True,
              help="folders: one folder per class (ImageFolder); label-studio: tasks JSON and labelling "
                   "config; fiftyone: a FiftyOneImageClassificationDataset folder.")
@click.option("--out", required=True, type=click.Path(), help="The folder (folders, fiftyone) or JSON file to write.")
@click.option("--copy", is_flag=True, help="Copy the images instead of linking them (folders, fiftyone).")
@click.option("--split", is_flag=True, help="Validation rows under val/, the others under train/ (folders, fiftyone).")
@click.option("--exclusive", is_flag=True,
              help="The classes exclude each other: one 1 settles a row, blanks count as 0 (folders).")
@click.option("--predictions", type=click.Path(dir_okay=False), default=None, metavar="CSV",
              help="A `patchcfg predict` CSV: the model's choices as pre-annotations (label-studio).")
@click.option("--threshold", type=click.FloatRange(0, 1), default=None,
              help="Probability from which a prediction chooses a class [default: 0.5] (label-studio).")
@click.option("--url-prefix", default=None, metavar="PREFIX",
              help="data.image = PREFIX + the path relative to the table's folder, e.g. "
                   "'/data/local-files/?d=project/' (label-studio; default: the absolute path).")
@click.option("--from-name", default=None, help="The <Choices> name [default: label] (label-studio).")
@click.option("--to-name", default=None, help="The <Image> name [default: image] (label-studio).")
@click.option("--force", is_flag=True, help="Replace an --out file this command did not write (label-studio).")
def labels_export(source, format_, out, copy, split, exclusive, predictions, threshold, url_prefix,
                  from_name, to_name, force):
    """Export the labels for another tool: class folders, Label Studio or FiftyOne.

    CONFIG_OR_TABLE is a label table, or a config whose data.labels names one; it is only read.
    What was written, and what was left out and why, is printed.

    \b
    Example:
      patchcfg labels export labels.csv --format folders --out export/ --split
      patchcfg labels export labels.csv --format label-studio --out tasks.json --predictions preds.csv
      patchcfg labels export configs/demo.yaml --format fiftyone --out fo-dataset --copy
    """
    from patchcfg.interop import label_studio
    from patchcfg.label_table import read_label_table

    _check_options(format_, {"--copy": copy, "--split": split, "--exclusive": exclusive,
                             "--predictions": predictions is not None, "--threshold": threshold is not None,
                             "--url-prefix": url_prefix is not None, "--from-name": from_name is not None,
                             "--to-name": to_name is not None, "--force": force})
    table = read_label_table(table_path_of(source))
    mode = "copy" if copy else "symlink"
    if format_ == "folders":
        from patchcfg.interop.class_folders import export_class_folders

        report = export_class_folders(table, out, mode, split_validation=split, exclusive=exclusive)
    elif format_ == "fiftyone":
        from patchcfg.interop.fiftyone import export_fiftyone

        report = export_fiftyone(table, out, mode, split_validation=split)
    else:
        report = label_studio.export_label_studio(
            table, out, predictions, from_name=from_name or label_studio.FROM_NAME,
            to_name=to_name or label_studio.TO_NAME, url_prefix=url_prefix,
            threshold=0.5 if threshold is None else threshold, force=force)
    for line in report.lines():
        click.echo(line)


@click.command("import")
@click.argument("source", metavar="CONFIG_OR_TABLE")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--from", "from_format", type=click.Choice(["label-studio"]), required=True,
              help="The format of FILE: label-studio (the project's 'JSON' export).")
@click.option("--from-name", default="label", show_default=True, help="The <Choices> name of the labelling config.")
@click.option("--skip-unmatched", is_flag=True, help="Leave out tasks whose image is no row of the table.")
def labels_import(source, file, from_format, from_name, skip_unmatched):
    """Import another tool's labels (Label Studio's JSON export) into the table.

    FILE is the export; CONFIG_OR_TABLE a label table, or a config whose data.labels names one.

    Each annotated task states every class: the chosen ones become 1, the others 0; a task without
    an annotation leaves its row as it is. The table is written under its lock (a .bak is kept).

    \b
    Example:
      patchcfg labels import labels.csv --from label-studio project-1-export.json
    """
    from patchcfg.interop.label_studio import import_label_studio

    report = import_label_studio(file, table_path_of(source), from_name=from_name, skip_unmatched=skip_unmatched)
    for line in report.lines():
        click.echo(line)
