"""The one runner every stage goes through.

A stage is a small subclass of :class:`Stage`, registered, that says only what is its own::

    @register
    class EmbedStage(Stage):
        name = "embed"                  # its folder, experiments/<name>/embed/, and config section
        schema = "embed.schema.json"    # ... whose schema; see "its declaration" below
        distributed = False             # no tf.distribute strategy to build

        def execute(self) -> dict:      # inside the run: status.json says running
            paths = self.readable(resolve_image_paths(self.data_cfg))
            ...
            return {"images": len(paths)}   # the summary; seconds and skipped images are added

:meth:`Stage.run` owns the rest, in this order: :meth:`~Stage.check` (before any file is
written), the experiment folder (a config that differs from the one on disk is refused, unless
``--force``), the skip of a complete stage (same config, same :meth:`~Stage.inputs`, not
:meth:`~Stage.outdated`), then
:meth:`~Stage.prepare`, the strategy and ``env.json``, :meth:`~Stage.execute`, ``summary.json``
and the closing line. ``status.json`` records running / complete / failed / interrupted; an
interrupted stage resumes from its checkpoints. :meth:`Stage.loop` builds the training loop with
the settings every stage shares (strategy, HParams, trial id, progress output, the dtype policy of
``mixed_precision``, recorded in ``env.json`` and ``summary.json``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, ClassVar

from patchcfg.errors import UserError

#: sha256 of a preset's weights file by (real path, size, mtime): hashed once per process
_DIGESTS: dict[tuple[str, int, int], str] = {}


def backbone_facts(config: dict, stage: str) -> dict[str, str]:
    """``backbone_preset`` and ``backbone_sha256`` (of its ``model.weights.h5``) for ``env.json``
    when the stage's backbone (the distill stage's: ``distill.student``) is a ``name: keras_hub``
    preset folder; a network handle records only ``backbone_preset``; other backbones: nothing."""
    from patchcfg.models.presets import WEIGHTS_FILE, is_handle, weights_digest

    spec = (config.get("distill") or {}).get("student") if stage == "distill" else config.get("backbone")
    if not isinstance(spec, dict) or str(spec.get("name")).lower() != "keras_hub" or not spec.get("preset"):
        return {}
    preset = os.fspath(spec["preset"])
    if is_handle(preset):
        return {"backbone_preset": preset}
    folder = os.path.abspath(os.path.expanduser(preset))
    facts = {"backbone_preset": folder}
    path = os.path.realpath(os.path.join(folder, WEIGHTS_FILE))
    try:
        stat = os.stat(path)
        key = (path, stat.st_size, stat.st_mtime_ns)
        if key not in _DIGESTS:
            _DIGESTS[key] = weights_digest(folder)
        facts["backbone_sha256"] = _DIGESTS[key]
    except OSError:  # unreadable: the stage that loads it says so
        pass
    return facts


class Stage:
    """One stage of an experiment. Subclasses set :attr:`name` and implement :meth:`execute`.

    Args:
        config: the config, resolved (``patchcfg.config.load_config``) or built in Python (it is
            resolved here: defaults filled in, validated).
        root: experiments root (default ``$PATCHCFG_EXPERIMENTS`` or ``experiments``).
        force: replace an experiment of the same name that ran with another config.
        strategy: a ``tf.distribute.Strategy`` (default: from ``distribute.strategy``).
        verbose: ``"auto"``, 0 (quiet) or 1; log: where progress lines go (default: print).
    """

    #: the stage's name: its folder and its config section
    name: ClassVar[str]
    #: builds a ``tf.distribute`` strategy (and only the chief worker writes files)
    distributed: ClassVar[bool] = True
    #: a label table is required; its checksum is an input (an edited table trains afresh)
    needs_labels: ClassVar[str | None] = None
    #: run even when complete (a query reads a label table that changes between queries)
    always_runs: ClassVar[bool] = False

    # ------------------------------------------------------------------ its declaration
    # (read by patchcfg.stages.STAGES: the config schema, ``patchcfg run``, the command line, analyze)
    #: the other stages' sections whose settings can change this stage's result
    depends_on: ClassVar[tuple[str, ...]] = ()
    #: where ``patchcfg run`` runs it among the stages a config declares (lower first); None: not run
    run_order: ClassVar[int | None] = None
    #: the schema of its config section: a file of ``schemas/`` (``"embed.schema.json"``) or the schema
    schema: ClassVar[str | dict] = {"type": "object"}
    #: what its config section is, in the config reference
    section_help: ClassVar[str] = ""
    #: its verb's line in ``patchcfg --help``
    command_help: ClassVar[str] = ""
    #: ``"module:attribute"`` of its click command; None: the verb every stage can have,
    #: ``patchcfg <name> CONFIG [KEY=VALUE ...]`` with ``--labels``, ``--sweep``, ``--experiments``
    #: and ``--force`` (:func:`patchcfg.commands._common.stage_command`), whose help is :attr:`command_doc`
    command: ClassVar[str | None] = None
    command_doc: ClassVar[str] = ""

    def __init__(self, config: dict, root=None, force: bool = False, *, strategy=None,
                 verbose: str | int = "auto", log=None):
        from patchcfg.config import resolve_config
        from patchcfg.experiment import stage_logs

        self.config, self.root, self.force = resolve_config(config), root, force
        self.data_cfg = self.config["data"]
        self.params = self.config.get(self.name)
        self.strategy, self.verbose = strategy, verbose
        if self.distributed:
            from patchcfg.train import distribute

            self.chief = distribute.is_chief()
        else:
            self.chief = True
        self.log, self.say = stage_logs(log, verbose, self.chief)
        self.skipped: list[dict] = []
        self.experiment = self.stage_run = None
        #: the dtype policy of the stage's training (``mixed_precision``), once a loop is built
        self.precision: str | None = None

    # ------------------------------------------------------------------ what a stage supplies
    def check(self) -> None:
        """Checks that need no experiment folder (raise :class:`UserError`); the default checks
        the label table a stage needs."""
        if self.needs_labels is None:
            return
        labels = self.data_cfg["labels"]
        if not labels:
            raise UserError(f"{self.name} needs a label table ({self.needs_labels}): set data.labels in the "
                            "config or pass --labels labels.csv")
        if not Path(labels).is_file():
            raise UserError(f"data.labels: {labels} not found")

    def inputs(self) -> dict | None:
        """What the result depends on besides the config: the label table's checksum by default."""
        if self.needs_labels is None:
            return None
        from patchcfg.experiment import file_digest

        return {"labels_sha256": file_digest(self.data_cfg["labels"])}

    def open_run(self):
        """The :class:`~patchcfg.experiment.StageRun` it runs in: its folder, ``experiments/<name>/<stage>``
        (one shard of the embed stage: the shard's own)."""
        return self.experiment.stage(self.name, inputs=self.inputs())

    def outdated(self) -> str | None:
        """Why a complete stage must run again though its config and :meth:`inputs` are the same
        (None: it is skipped). The embed stage: images added, removed or replaced since."""
        return None

    def prepare(self) -> None:
        """After the skip check, before the run starts: read inputs, refuse what cannot run."""

    def execute(self) -> dict:
        """The stage's own work, inside the run; returns its summary."""
        raise NotImplementedError

    def done_message(self, summary: dict) -> str:
        return f"{self.name} complete: {self.stage_run.dir}"

    # ------------------------------------------------------------------ helpers for stages
    def workdir(self) -> Path:
        """Where files computed once are kept (crop cells, DetCon's segments, folds): the stage's
        folder, or on a worker of a multi-worker run its own scratch folder."""
        return self.stage_run.dir if self.chief else self.stage_run.checkpoint_dir

    def readable(self, paths) -> list[str]:
        """The paths whose image can be read (``data.on_bad_image``: error raises, skip leaves the
        others out, says so, and lists them in summary.json)."""
        from patchcfg.data.loading import check_images

        good, skipped = check_images(paths, self.data_cfg["on_bad_image"], data_cfg=self.data_cfg)
        if skipped:
            self.say(f"skipped {len(skipped)} unreadable image(s); listed in summary.json")
            self.skipped += skipped
        return good

    def hparams(self) -> dict[str, Any]:
        """The config as TensorBoard HParams (flat keys; the name is the trial id)."""
        from patchcfg.train.loop import flatten_config

        return flatten_config({k: v for k, v in self.config.items() if k not in ("name", "description")})

    def loop(self, task, *, run=None, hparams: bool = True, **schedule):
        """A :class:`~patchcfg.train.loop.TrainLoop` for ``task`` with this stage's strategy,
        progress output and HParams; ``schedule``: epochs, steps_per_epoch, global_batch_size,
        optimizer_config, callbacks..."""
        from patchcfg.train.loop import TrainLoop

        loop = TrainLoop(task, run=run or self.stage_run, strategy=self.strategy,
                         hparams=self.hparams() if hparams else None, trial_id=self.config["name"],
                         verbose=self.verbose, log=self.log, mixed_precision=self.params["mixed_precision"],
                         **schedule)
        if self.precision is None:
            self.precision = loop.precision
            self.say(f"{self.name}: computing under the {loop.precision} dtype policy "
                     f"(mixed_precision: {str(self.params['mixed_precision']).lower()})")
            self.stage_run.update_env(precision=loop.precision)
        return loop

    # ------------------------------------------------------------------ the run
    def run(self) -> dict:
        """Run the stage: skipped if complete, resumed if interrupted; returns its summary."""
        from patchcfg.experiment import Experiment

        self.check()
        self.experiment = Experiment(self.config, root=self.root, force=self.force, is_chief=self.chief)
        self.stage_run = self.open_run()
        status = self.stage_run.status() or {}
        if "process gone" in str(status.get("error")):
            self.say(f"{self.name} of '{self.config['name']}': interrupted (process gone: pid {status.get('pid')} "
                     "stopped without a word); resuming")
        if not self.always_runs:
            if self.stage_run.is_complete():
                reason = self.outdated()
                if reason is None:
                    self.say(self.stage_run.skip_message())
                    return self.stage_run.read_summary()
                self.say(reason)
            if self.needs_labels is not None and self.stage_run.inputs_changed():
                self.say(f"{self.data_cfg['labels']} changed since the last {self.name} of "
                         f"'{self.config['name']}': training afresh")
        self.prepare()
        if self.distributed:
            from patchcfg.train import distribute

            self.strategy = self.strategy or distribute.make_strategy(self.config["distribute"]["strategy"])
        started = time.time()
        with self.stage_run:
            if self.distributed:
                self.stage_run.update_env(**distribute.describe(self.strategy))
            if self.chief:
                facts = backbone_facts(self.config, self.name)
                if facts:
                    self.stage_run.update_env(**facts)
            summary = self.execute()
            summary.update({"skipped_images": len(self.skipped), "skipped": self.skipped,
                            "seconds": round(time.time() - started, 3)})
            if self.precision is not None:
                summary["precision"] = self.precision
            self.stage_run.write_summary(summary)
        self.say(self.done_message(summary))
        return summary
