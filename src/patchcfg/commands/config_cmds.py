"""``patchcfg validate``, ``show`` and ``schema``: configs checked without running anything."""

from __future__ import annotations

import json

import click

from patchcfg.commands._common import (
    config_args,
    labels_option,
    labels_override,
    one_config,
    split_args,
    sweep_option,
)
from patchcfg.errors import ConfigError, UserError


@click.command()
@config_args
@sweep_option
@labels_option
def validate(args, sweeps, labels):
    """Check one or more configs (with overrides and sweeps) against the schema.

    Also checks what a run would find before it trains: every loss expression, and the label
    table the config names (read as the stages read it). Every problem is listed as
    file:line: key.path: message. Exit code 2 if any config is invalid.

    \b
    Example:
      patchcfg validate configs/*.yaml
      patchcfg validate configs/simclr.yaml pretrain.epochs=5 --sweep seed=1,2
      patchcfg validate configs/finetune.yaml --labels data/labels.csv
    """
    from patchcfg.config import expand_sweeps
    from patchcfg.config.checks import label_table_problems

    paths, overrides = split_args(args)
    if not paths:
        raise UserError("give at least one config file")
    overrides += labels_override(labels)
    failed = 0
    for path in paths:
        try:
            configs = expand_sweeps(path, overrides, sweeps)
        except ConfigError as error:
            failed += 1
            click.echo(str(error), err=True)
            continue
        problems = list(dict.fromkeys(p for c in configs for p in label_table_problems(c)))
        if problems:
            failed += 1
            click.echo("\n".join(f"{path}: {p}" for p in problems), err=True)
            continue
        names = ", ".join(c["name"] for c in configs)
        click.echo(f"ok: {path} ({names})")
    if failed:
        raise click.exceptions.Exit(2)


@click.command()
@config_args
@sweep_option
def show(args, sweeps):
    """Print the resolved config: defaults < file (and what it extends) < overrides.

    \b
    Example:
      patchcfg show configs/simclr.yaml pretrain.temperature=0.2
    """
    from patchcfg.config import expand_sweeps
    from patchcfg.experiment import dump_config

    path, overrides = one_config(args)
    configs = expand_sweeps(path, overrides, sweeps)
    click.echo("---\n".join(dump_config(c) for c in configs), nl=False)


@click.command()
@click.option("--out", type=click.Path(dir_okay=False), help="Write to this file instead of stdout.")
@click.option("--markdown", is_flag=True, help="The config reference as a Markdown table instead.")
@click.option("--update-docs", "update_docs", is_flag=False, flag_value="docs", default=None,
              type=click.Path(file_okay=False), metavar="[DOCS_DIR]",
              help="Rewrite (atomically) the generated references inside the pages of DOCS_DIR "
                   "(default: docs): config keys, augmentation recipes, query strategies, commands.")
@click.option("--update-schemas", is_flag=True,
              help="Rewrite the schema files generated from registries (augmentation ops, query strategies, "
                   "pretraining methods, stages).")
def schema(out, markdown, update_docs, update_schemas):
    """Print the JSON schema of configs (one self-contained file), for editors.

    \b
    Example:
      patchcfg schema --out patchcfg.schema.json
      patchcfg schema --markdown          # the config reference table
      patchcfg schema --update-schemas --update-docs   # after adding an op, a strategy, a method, a stage or an option
      # then, first line of a config:  # yaml-language-server: $schema=patchcfg.schema.json
    """
    from pathlib import Path

    from patchcfg.atomic import atomic_write_text
    from patchcfg.config import docs
    from patchcfg.config.schema import bundled_schema

    if update_schemas:
        changed = docs.update_schemas()
        click.echo(f"rewrote {', '.join(changed)}" if changed
                   else "the generated schema files are up to date")
    if update_docs:
        folder = Path(update_docs)
        if not folder.is_dir():
            raise UserError(f"{folder}: no such folder; give the folder of the docs pages (default: docs)")
        changed, missing = docs.update_docs(folder)
        click.echo(f"updated the generated references in {', '.join(str(p) for p in changed)}" if changed
                   else f"the generated references in {folder} are up to date")
        if missing:
            raise UserError(f"no page under {folder} holds the {', the '.join(missing)} (its markers: "
                            + "; ".join(f"{docs.GENERATED[m][0]} ... {docs.GENERATED[m][1]}" for m in missing)
                            + "); add the markers to the page that should hold it, then run this again")
    if update_schemas or update_docs:
        return
    text = docs.schema_markdown() + "\n" if markdown else json.dumps(bundled_schema(), indent=2) + "\n"
    if out:
        atomic_write_text(out, text)
        click.echo(f"wrote {out}")
    else:
        click.echo(text, nl=False)
