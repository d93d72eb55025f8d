"""``patchcfg analyze``: what differs between runs, and how they did (see :mod:`patchcfg.analyze`)."""

from __future__ import annotations

from pathlib import Path

import click

from patchcfg import analyze as lib
from patchcfg.atomic import atomic_write_text, check_output, starts_with
from patchcfg.errors import UserError
from patchcfg.stages import result_folders

_SUFFIX_FORMATS = {".csv": "csv", ".md": "md", ".markdown": "md", ".json": "json"}


def _split(values: tuple[str, ...]) -> list[str]:
    """Repeated options, each possibly comma-separated: ``--metric a,b --metric c``."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


@click.command("analyze")
@click.argument("dirs", nargs=-1, metavar="[DIR]...", type=click.Path(path_type=Path))
@click.option("--stage", type=click.Choice(result_folders()), help="Only this stage (default: every stage found).")
@click.option("--metric", "metrics", multiple=True, metavar="M",
              help="Metric to show; repeat or comma-separate (default: every metric found).")
@click.option("--minimize", multiple=True, metavar="M", help="Treat M as lower-is-better.")
@click.option("--maximize", multiple=True, metavar="M", help="Treat M as higher-is-better.")
@click.option("--sort-by", metavar="M", help="Sort by a metric (its mean), config key, name, state, runs or n.")
@click.option("--ascending/--descending", default=None,
              help="Sort order (default: best first for a metric, else ascending).")
@click.option("--only-changed/--all", "only_changed", default=True,
              help="Show only config keys that differ between runs (default) or every key.")
@click.option("--filter", "filters", multiple=True, metavar="KEY=VALUE",
              help="Keep runs whose config KEY equals VALUE (YAML scalar, or a glob); also state=, path=. "
                   "Repeat to combine (all must match).")
@click.option("--format", "fmt", type=click.Choice(lib.FORMATS),
              help="Output format (default: from --output's suffix, else table).")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the result to FILE instead of the terminal.")
@click.option("--force", is_flag=True,
              help="Replace an existing --output or --out that this command did not write.")
@click.option("--precision", type=click.IntRange(0, 12), default=4, show_default=True,
              help="Decimals in table and md output (csv and json keep full precision).")
@click.option("--best-epoch", is_flag=True,
              help="Report each metric's best epoch (metrics.csv) instead of what the kept model scores.")
@click.option("--per-class", is_flag=True, help="Also show the per-class metrics (val_<metric>_<class>).")
@click.option("--plot", "plot_metric", metavar="M", help="Also draw metric M per epoch into --out (PNG).")
@click.option("--out", "plot_out", type=click.Path(dir_okay=False, path_type=Path), metavar="PNG",
              help="Where --plot writes its figure.")
def analyze(dirs, stage, metrics, minimize, maximize, sort_by, ascending, only_changed, filters,
            fmt, output, force, precision, best_epoch, per_class, plot_metric, plot_out):
    """Compare experiments under DIR (default: experiments/): what differs, and how each did.

    Every experiment stage found under DIR (searched recursively) becomes a run; runs whose
    configs differ only in name and seed form one row with mean ± std and n over folds × seeds,
    named by the common prefix of their names and "*".
    Each run reports what its kept model scores (summary.json: every fold's model, the distilled
    student, the saved encoder), as the stage's own log does. With --best-epoch, each metric is
    taken at its best epoch per fold instead: lowest for losses, errors, alignment and uniformity,
    highest otherwise (override with --minimize/--maximize); with a stage column, over the last
    fine-tuning stage. Macro and stage-level metrics are shown; --per-class adds the per-class
    ones. Failed, interrupted and running runs are rows of their own, with their state (and their
    last epoch's figures). Unreadable folders are reported on stderr and skipped.

    \b
    Examples:
      patchcfg analyze experiments/ --metric val_macro_auc --sort-by val_macro_auc
      patchcfg analyze experiments/sweep1 --stage finetune --filter backbone.name=resnet18
      patchcfg analyze --format md --output results.md --precision 3
      patchcfg analyze --plot val_loss --out val_loss.png
    """
    if plot_metric and plot_out is None:
        raise UserError("--plot needs --out FILE.png (where to write the figure)")
    if plot_out is not None and not plot_metric:
        raise UserError("--out is the figure of --plot M; give --plot too (for the table use --output)")
    if output is not None:
        check_output(output, ours=starts_with(["name", "| name", '{\n  "']), force=force, option="--output")
    if plot_out is not None:
        check_output(plot_out, ours=starts_with([b"\x89PNG"]), force=force)
    result = lib.analyze(
        list(dirs) or ["experiments"], stage=stage, metrics=_split(metrics) or None,
        minimize=_split(minimize), maximize=_split(maximize), filters=filters, sort_by=sort_by,
        ascending=ascending, only_changed=only_changed, figures="best-epoch" if best_epoch else "kept",
        per_class=per_class, on_problem=lambda problem: click.echo(f"warning: skipped {problem}", err=True),
    )
    if plot_metric:
        lib.plot(result, plot_metric, plot_out)
        click.echo(f"wrote {plot_out}", err=True)
    fmt = fmt or (_SUFFIX_FORMATS.get(output.suffix.lower(), "table") if output else "table")
    text = lib.render(result, fmt, precision)
    if output is not None:
        atomic_write_text(output, text)
        click.echo(f"wrote {output} ({len(result.rows)} rows)", err=True)
    else:
        click.echo(text, nl=False)
