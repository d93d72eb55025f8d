"""``patchcfg predict``: probabilities for images from a trained experiment or model."""

from __future__ import annotations

import click

from patchcfg.commands._common import engine_options


def _is_predictions(path) -> bool:
    """An earlier predictions CSV: starts with filepath and is no label table (whose cells are 0/1/blank)."""
    from patchcfg.errors import LabelTableError
    from patchcfg.label_table import read_label_table

    try:
        with open(path, encoding="utf-8") as handle:
            if not handle.readline().startswith("filepath,"):
                return False
        read_label_table(path)
    except (OSError, UnicodeDecodeError):
        return False
    except LabelTableError:
        return True
    return False


@click.command()
@click.argument("source")
@click.argument("images", nargs=-1, required=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="CSV to write.")
@click.option("--tta", type=click.Choice(["none", "flips", "flips_rot90"]), default="none", show_default=True,
              help="Test-time augmentation: mean over flipped (and rotated) views.")
@click.option("--folds", default="all", show_default=True, help="'all' (fold ensemble) or fold numbers, e.g. 0,2.")
@click.option("--on-bad-image", type=click.Choice(["error", "skip"]), default="error", show_default=True)
@click.option("--force", is_flag=True, help="Replace an existing --out that does not look like predictions.")
@engine_options
def predict(source, images, out, tta, folds, on_bad_image, force, engine, address, actors):
    """Predict IMAGES (files, folders, globs or .txt lists) with SOURCE.

    SOURCE is an experiment folder (its finetune stage's fold models are ensembled) or a
    model.keras file. The CSV has filepath and one probability column per class. With
    --engine ray the actors of a Ray cluster compute them (the same CSV).

    \b
    Example:
      patchcfg predict experiments/digits-finetune data/demo/images --out preds.csv --tta flips
      patchcfg predict experiments/digits-finetune images.txt --out preds.csv --engine ray --address auto
    """
    from patchcfg.atomic import atomic_write_text, check_output
    from patchcfg.tasks.predict import predict_images

    check_output(out, ours=_is_predictions, force=force)

    frame, skipped = predict_images(source, list(images), tta=tta, folds=folds, on_bad_image=on_bad_image,
                                    engine=engine, address=address, actors=actors)
    atomic_write_text(out, frame.to_csv(index=False, lineterminator="\n"))
    click.echo(f"wrote {out}: {len(frame)} images" + (f", skipped {len(skipped)}" if skipped else ""))
