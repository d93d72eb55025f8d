"""The ``patchcfg`` command line: a thin click group.

Each verb lives in ``patchcfg/commands/<verb>.py`` and is imported only when it runs, so
``patchcfg --help``, ``validate`` and ``analyze`` never import TensorFlow.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

import click

from patchcfg.errors import UserError

# verb -> (module, attribute, one-line help shown by ``patchcfg --help``)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "validate": ("patchcfg.commands.config_cmds", "validate", "Check configs against the schema."),
    "show": ("patchcfg.commands.config_cmds", "show", "Print the resolved config."),
    "schema": ("patchcfg.commands.config_cmds", "schema", "Print the JSON schema of configs."),
    "init": ("patchcfg.commands.labels_cmds", "init", "Build a label table from images."),
    "labels": ("patchcfg.commands.labels_cmds", "labels", "Inspect and edit label tables."),
    "demo": ("patchcfg.commands.demo", "demo", "Write the demo data (scikit-learn digits)."),
    "augment": ("patchcfg.commands.augment", "augment", "Preview augmented views as a PNG grid."),
    "pretrain": ("patchcfg.commands.pretrain", "pretrain", "Self-supervised pretraining."),
    "finetune": ("patchcfg.commands.finetune", "finetune", "Train a classifier on the label table."),
    "predict": ("patchcfg.commands.predict", "predict", "Predict images with a trained model or experiment."),
    "lr-find": ("patchcfg.commands.lr_find", "lr_find", "Learning-rate range test."),
    "embed": ("patchcfg.commands.pipeline", "embed", "Cache encoder features of every image."),
    "query": ("patchcfg.commands.pipeline", "query", "Which images to label next (active learning)."),
    "distill": ("patchcfg.commands.pipeline", "distill", "Train a student on the teacher's soft labels."),
    "run": ("patchcfg.commands.pipeline", "run_all", "Run every stage a config declares."),
    "label": ("patchcfg.commands.label", "label", "Label images in the browser (keys, queue, grid, undo)."),
    "convert": ("patchcfg.commands.convert", "convert", "Convert other tools' configs (Musket) to ours."),
    "analyze": ("patchcfg.commands.analyze", "analyze", "Compare experiments: what differs, how they did."),
}


class LazyGroup(click.Group):
    """A group whose verbs are imported on first use; user errors become one message and exit 2."""

    def list_commands(self, ctx):
        return [name for name in COMMANDS if self._available(name)]

    @staticmethod
    def _available(name):
        module = COMMANDS[name][0]
        return importlib.util.find_spec(module) is not None

    def get_command(self, ctx, name):
        if name not in COMMANDS or not self._available(name):
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx, formatter):
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as error:
            click.echo(f"error: {error}", err=True)
            ctx.exit(error.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


# TensorFlow's C++ start-up chatter (CUDA probing on CPU machines, CPU feature notes) hides what
# matters; set TF_CPP_MIN_LOG_LEVEL yourself to see it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="patchcfg")
def main():
    """patchcfg: label-efficient image classification, every experiment in one YAML file.

    \b
    Example:
      patchcfg demo --out data/demo
      patchcfg validate configs/*.yaml
      patchcfg pretrain configs/simclr.yaml pretrain.epochs=5 name=quick
      patchcfg analyze experiments/
    """


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
