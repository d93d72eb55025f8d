"""``patchcfg label``: the labelling app, served on this machine."""

from __future__ import annotations

import sys

import click

from patchcfg.commands._common import (
    config_args,
    experiments_option,
    labels_option,
    labels_override,
    one_config,
)


def _echo(text: str, flush: bool = True) -> None:
    click.echo(text)
    if flush:
        sys.stdout.flush()


@click.command()
@config_args
@labels_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback exposes the table to the network.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="Port to listen on (0 = any free port).")
@click.option("--no-browser", is_flag=True, help="Do not open a browser; only print the address.")
@click.option("--no-embed", is_flag=True,
              help="Do not compute missing features in the background (the queue stays random until "
                   "`patchcfg embed` has run).")
@experiments_option
def label(args, labels, host, port, no_browser, no_embed, experiments_root):
    """Label images in the browser: keys for everything, a ranked queue, a grid, undo.

    Prints http://127.0.0.1:PORT/?token=TOKEN and serves the page there until Ctrl-C. Every
    acknowledged label is appended to <table>.journal.jsonl before the page hears back; the table
    itself is rewritten (atomically, one .bak) when you pause, on demand and on stop. Settings:
    the config's label section; the query section gives the default strategy and subset.

    \b
    Example:
      patchcfg label configs/demo.yaml
      patchcfg label configs/demo.yaml --labels data/demo/labels.csv label.grid=6 --port 0
    """
    from patchcfg.config import load_config, with_defaults
    from patchcfg.label.server import build, serve

    path, overrides = one_config(args)
    config = load_config(path, [*overrides, *labels_override(labels)])  # a config with errors: exit 2
    for section in ("query", "label"):  # sections the file leaves out: their schema defaults
        if section not in config:
            config[section] = with_defaults(section, {})
    label_app = build(config, experiments_root, embed=not no_embed, log=_echo)
    serve(label_app, host, port, open_browser=not no_browser, echo=_echo)
