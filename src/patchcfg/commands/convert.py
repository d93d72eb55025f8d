"""``patchcfg convert``: configs of other tools turned into patchcfg configs."""

from __future__ import annotations

import click


@click.group()
def convert():
    """Convert configs of other tools to patchcfg configs.

    \b
    Example:
      patchcfg convert musket experiments/exp01/config.yaml > configs/exp01.yaml
    """


@convert.command("musket")
@click.argument("musket_config", metavar="OLD.yaml", type=click.Path(dir_okay=True))
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Write the new config to this file (atomically) instead of stdout.")
@click.option("--name", default=None, metavar="NAME",
              help="Experiment name (default: the file's name; a file named config.yaml takes its folder's).")
@click.option("--force", is_flag=True, help="Replace an existing --out that this command did not write.")
def musket(musket_config, out, name, force):
    """Convert a Musket classification-pipeline config to a patchcfg config.

    Maps architecture, weights, shape, pooling, activation, augmentation, optimizer, lr, batch,
    loss (composite ones too), primary_metric, callbacks, stages and folds_count onto ours. Every
    key that cannot be mapped is listed on stderr as file:line: key: not converted (reason), and in
    a comment block at the top of the new config. Set data.labels (a label table) before running.

    \b
    Example:
      patchcfg convert musket OLD.yaml > new.yaml
      patchcfg convert musket experiments/exp01/config.yaml --out configs/exp01.yaml
      patchcfg validate configs/exp01.yaml
    """
    import os

    from patchcfg.atomic import atomic_write_text, check_output, starts_with
    from patchcfg.interop.musket import NOT_CONVERTED, convert_musket_file

    if out:  # never over the config it reads
        check_output(out, protected=[("Musket config", musket_config),
                                     ("Musket config", os.path.join(musket_config, "config.yaml"))],
                     ours=starts_with(["# patchcfg config converted from"]), force=force)
    text, _config, messages = convert_musket_file(musket_config, name=name)
    for message in messages:
        click.echo(message, err=True)
    lost = sum(f": {NOT_CONVERTED} (" in m for m in messages)
    click.echo(f"converted {musket_config}: {lost} key(s) not converted, {len(messages) - lost} note(s); "
               "set data.labels to your label table before running", err=True)
    if out:
        atomic_write_text(out, text)
        click.echo(f"wrote {out}", err=True)
    else:
        click.echo(text, nl=False)
