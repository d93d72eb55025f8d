"""Compare experiments: which config keys differ between runs, and how each configuration did.

One module per phase, each importing only the earlier ones:

1. :mod:`~patchcfg.analyze.discover` walks the given folders for ``config.yaml`` files next to a
   result folder (:func:`patchcfg.stages.result_folders`) holding ``status.json``, ``metrics.csv``
   or ``summary.json``.
2. :mod:`~patchcfg.analyze.runs` makes each stage of each experiment a :class:`Run` (flattened
   config, state and error); unreadable folders become a :class:`Problem`, never skipped silently.
3. :mod:`~patchcfg.analyze.figures` parses every ``metrics.csv`` together and takes each fold's
   figure (its best epoch in the metric's direction, :func:`metric_direction`, or the kept model's
   from ``summary.json``).
4. :mod:`~patchcfg.analyze.grouping` makes runs that differ only in ``name`` and ``seed`` one
   :class:`Row` with mean, sample standard deviation and n over folds x seeds.
5. :mod:`~patchcfg.analyze.report` writes the rows as a text table, CSV, Markdown or JSON
   (:func:`render`) and draws a metric per epoch (:func:`plot`, matplotlib imported only there).

:func:`analyze` (:mod:`~patchcfg.analyze.analysis`) runs phases 1 to 4. Nothing here imports
TensorFlow, so ``patchcfg analyze`` starts quickly.
"""

from patchcfg.analyze.analysis import FIGURES, Analysis, analyze
from patchcfg.analyze.figures import metric_direction
from patchcfg.analyze.grouping import Row, changed_keys, ordered_keys
from patchcfg.analyze.report import CAPTIONS, FORMATS, format_number, plot, render
from patchcfg.analyze.runs import MISSING, Problem, Run, format_value
from patchcfg.config import flatten as flatten  # the flattening configs are compared by
from patchcfg.stages import result_folders

__all__ = ["CAPTIONS", "FIGURES", "FORMATS", "MISSING", "Analysis", "Problem", "Row", "Run", "analyze",
           "changed_keys", "format_number", "format_value", "metric_direction", "ordered_keys", "plot", "render"]


def __getattr__(name: str):
    """``STAGES``: the stages ``--stage`` accepts, :func:`~patchcfg.stages.result_folders` when asked
    (so a stage registered at run time is one, and importing analyze loads no stage)."""
    if name == "STAGES":
        return result_folders()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
