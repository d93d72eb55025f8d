"""The ``patchcfg`` command line: a thin click group.

Each verb lives in ``patchcfg/commands/<verb>.py`` and is imported only when it runs, so
``patchcfg --help``, ``validate`` and ``analyze`` never import TensorFlow. A stage's verb
(``pretrain``, ``finetune``...) is declared by the stage (:data:`patchcfg.stages.STAGES`): its
command, or the one every stage can have.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import os
import re
import sys

import click

from patchcfg.errors import UserError, describe_library_os_error, describe_os_error

# verb -> (module, attribute, one-line help shown by ``patchcfg --help``); the stages' verbs come
# from the stages and stand before STAGE_VERBS_BEFORE
COMMANDS: dict[str, tuple[str, str, str]] = {
    "validate": ("patchcfg.commands.config_cmds", "validate", "Check configs against the schema."),
    "show": ("patchcfg.commands.config_cmds", "show", "Print the resolved config."),
    "schema": ("patchcfg.commands.config_cmds", "schema", "Print the JSON schema of configs."),
    "init": ("patchcfg.commands.labels_cmds", "init", "Build a label table from images."),
    "labels": ("patchcfg.commands.labels_cmds", "labels", "Inspect and edit label tables."),
    "demo": ("patchcfg.commands.demo", "demo", "Write the demo data (scikit-learn digits)."),
    "augment": ("patchcfg.commands.augment", "augment", "Preview augmented views as a PNG grid."),
    "predict": ("patchcfg.commands.predict", "predict", "Predict images with a trained model or experiment."),
    "lr-find": ("patchcfg.commands.lr_find", "lr_find", "Learning-rate range test."),
    "run": ("patchcfg.commands.pipeline", "run_all", "Run every stage a config declares."),
    "label": ("patchcfg.commands.label", "label", "Label images in the browser (keys, queue, grid, undo)."),
    "convert": ("patchcfg.commands.convert", "convert", "Convert other tools' configs (Musket) to ours."),
    "analyze": ("patchcfg.commands.analyze", "analyze", "Compare experiments: what differs, how they did."),
    "weights": ("patchcfg.commands.weights", "weights", "Fetch KerasHub presets into folders; check one."),
}
STAGE_VERBS_BEFORE = "predict"


def stage_verbs() -> dict[str, tuple[str, str, str]]:
    """Each stage's verb as in :data:`COMMANDS` (attribute "" for the verb every stage can have)."""
    from patchcfg.stages import STAGES

    verbs = {}
    for name, stage in STAGES.items():
        module, _, attribute = (stage.command or "patchcfg.commands._common:").partition(":")
        verbs[name] = (module, attribute, stage.command_help)
    return verbs


def all_verbs() -> dict[str, tuple[str, str, str]]:
    """Every verb of ``patchcfg``, in the order ``--help`` lists them."""
    verbs = {}
    for name, entry in COMMANDS.items():
        if name == STAGE_VERBS_BEFORE:
            verbs.update(stage_verbs())
        verbs[name] = entry
    return verbs


class LazyGroup(click.Group):
    """A group whose verbs are imported on first use; user errors become one message and exit 2."""

    def list_commands(self, ctx):
        return [name for name, (module, _, _) in all_verbs().items() if importlib.util.find_spec(module)]

    def get_command(self, ctx, name):
        verbs = all_verbs()
        if name not in verbs or not importlib.util.find_spec(verbs[name][0]):
            return None
        module, attr, _ = verbs[name]
        if not attr:
            from patchcfg.commands._common import stage_command
            from patchcfg.stages import STAGES

            return stage_command(STAGES[name])
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx, formatter):
        verbs = all_verbs()
        rows = [(name, verbs[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as error:
            click.echo(f"error: {error}", err=True)
            ctx.exit(error.exit_code)
        except OSError as error:  # the operating system said no (permissions, full disk, ...)
            click.echo(f"error: {describe_os_error(error)}", err=True)
            ctx.exit(2)
        except Exception as error:  # the same, reported by TensorFlow as its own error
            message = describe_library_os_error(error)
            if message is None:
                raise
            click.echo(f"error: {message}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


# TensorFlow's start-up chatter on a CPU machine (oneDNN notes, CUDA probing, "failed call to
# cuInit") looks like failures and hides what matters. Unless --verbose (or TF_CPP_MIN_LOG_LEVEL=0),
# it is kept off the terminal: the C++ log level is set before TensorFlow is imported, and the log
# lines its libraries print while they load are dropped (other output is kept).
_CHATTER = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\)"
                      r"|[IWE]\d{4} [\d:.]+ +\d+ \S+:\d+\] )")


def _load_quietly(exec_module, module) -> None:
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            exec_module(module)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().decode("utf-8", "replace").splitlines(keepends=True)
                    if not _CHATTER.match(line)]
            if kept:
                sys.stderr.write("".join(kept))
    import logging

    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:  # pragma: no cover - absl comes with TensorFlow
        pass


class _QuietTensorFlow(importlib.abc.MetaPathFinder):
    """Loads ``tensorflow`` with its load-time log lines filtered (see :data:`_CHATTER`)."""

    def find_spec(self, name, path, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module
        spec.loader.exec_module = lambda module: _load_quietly(exec_module, module)
        return spec


def quiet_tensorflow(verbose: bool = False) -> None:
    """Before TensorFlow is imported: its chatter off (``verbose``: everything TensorFlow says)."""
    if verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
        return
    if os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3") == "0" or "tensorflow" in sys.modules:
        return  # the user asked for everything, or it is too late to filter
    if not any(isinstance(f, _QuietTensorFlow) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlow())


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="patchcfg")
@click.option("--verbose", is_flag=True, help="Show TensorFlow's own log lines (hidden by default).")
def main(verbose):
    """patchcfg: label-efficient image classification, every experiment in one YAML file.

    \b
    Example:
      patchcfg demo --out data/demo
      patchcfg validate configs/*.yaml
      patchcfg pretrain configs/simclr.yaml pretrain.epochs=5 name=quick
      patchcfg analyze experiments/
    """
    quiet_tensorflow(verbose)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
