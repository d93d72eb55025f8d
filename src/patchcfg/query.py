"""``patchcfg query``: which images to label next, ranked, as a CSV.

Images are scored by this experiment's fine-tuned fold ensemble, or by a quick head (logistic
regression) on the cached features of ``patchcfg embed``; the strategies live in
:mod:`patchcfg.active`. A query always runs afresh (the label table changes between queries).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from patchcfg.errors import UserError


def _needs_features(strategy: str, scorer: str) -> bool:
    from patchcfg.active import USES_FEATURES

    return scorer == "quick_head" or strategy.split(":")[0] in USES_FEATURES


QUEUE_HEADER = "filepath,rank,score,picked_by,strategy"


def is_queue_file(path: Path) -> bool:
    """True when ``path`` is a queue CSV this command wrote (its header says so)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.readline().startswith(QUEUE_HEADER)
    except (OSError, UnicodeDecodeError):
        return False


def run_query(config: dict, root=None, force: bool = False, *, strategy=None, verbose="auto", log=None,
              overwrite: bool = False, protect=()) -> dict:
    """Rank the candidate rows of the label table; write ``query/queue.csv`` (or ``query.out``)."""
    import pandas as pd

    from patchcfg import active
    from patchcfg.atomic import atomic_write_text, check_output
    from patchcfg.embed import load_features, run_embed
    from patchcfg.experiment import Experiment, stage_logs
    from patchcfg.labels import read_label_table

    log, say = stage_logs(log, verbose)
    query, data_cfg = config["query"], config["data"]
    if not data_cfg.get("labels"):
        raise UserError("query needs the label table (data.labels or --labels)")
    table = read_label_table(data_cfg["labels"])
    if query.get("out"):
        check_output(query["out"], protected=[("label table", data_cfg["labels"]), *protect],
                     ours=is_queue_file, force=overwrite, option="--out (query.out)")
    classes = table.classes
    name, _ = active.parse_strategy(query["strategy"], classes)
    candidates = active.candidate_mask(table, query["subset"])
    experiment = Experiment(config, root=root, force=force)
    has_model = (experiment.dir / "finetune" / "summary.json").is_file()
    scorer = query["scorer"]
    if scorer == "auto":
        scorer = "model" if has_model else "quick_head"
    if scorer == "model" and not has_model:
        raise UserError(f"query.scorer: model, but {experiment.dir}/finetune has no trained models; "
                        "run `patchcfg finetune` first, or use query.scorer=quick_head")
    run = experiment.stage("query")
    started = time.time()
    paths = table.resolved_paths()
    features = None
    if _needs_features(query["strategy"], scorer):
        if not (experiment.dir / "embed" / "features.npy").is_file():
            run_embed(config, root=root, verbose=verbose, log=log)
        cached, cached_paths = load_features(experiment.dir)
        where = {p: i for i, p in enumerate(cached_paths)}
        missing = [p for p, c in zip(paths, candidates, strict=True) if c and p not in where]
        if missing:
            raise UserError(f"{len(missing)} candidate image(s) have no cached features (e.g. {missing[0]}); "
                            "run `patchcfg embed --force` after adding images")
        features = np.zeros((len(paths), cached.shape[1]), np.float32)
        known_rows = [i for i, p in enumerate(paths) if p in where]
        features[known_rows] = cached[[where[paths[i]] for i in known_rows]]
    with run:
        labels = table.label_matrix()
        if scorer == "model":
            from patchcfg.data.loading import check_images, load_images
            from patchcfg.predict import predict_arrays, resolve_models

            models, model_data, model_classes = resolve_models(experiment.dir)
            if model_classes and model_classes != classes:
                raise UserError(f"the fine-tuned models know the classes {model_classes}, the label table has "
                                f"{classes}; fine-tune again, or use query.scorer=quick_head")
            rows = np.flatnonzero(candidates | (labels >= 0).any(axis=1))
            good, _ = check_images([paths[i] for i in rows], "skip", data_cfg=data_cfg)
            good_set = set(good)
            rows = np.array([r for r in rows if paths[r] in good_set], int)
            candidates &= np.isin(np.arange(len(paths)), rows)
            probabilities = np.full((len(paths), len(classes)), 0.5, np.float32)  # rows not scored: no candidates
            probabilities[rows] = predict_arrays(models, load_images([paths[i] for i in rows], data_cfg),
                                                 model_data, config.get("finetune", {}).get("tta", "none"))
        elif name == "random":
            probabilities = None
        else:
            probabilities = active.quick_head_probabilities(features, labels, ~table.exclude & ~table.validation,
                                                            seed=int(config["seed"]))
        exclusive = (config.get("finetune") or {}).get("output", {}).get("type") == "softmax"
        ranking = active.rank(query["strategy"], probabilities=probabilities, features=features, classes=classes,
                              candidates=candidates, n=int(query["n"]), labels=labels,
                              explore=float(query["explore"]), sampling=query["sampling"], mix=float(query["mix"]),
                              exclusive=exclusive, seed=int(config["seed"]))
        frame = pd.DataFrame({"filepath": [table.df["filepath"][r] for r in ranking["row"]],
                              "rank": ranking["rank"].to_numpy(), "score": ranking["score"].to_numpy(),
                              "picked_by": ranking["picked_by"].to_numpy(), "strategy": query["strategy"]})
        if probabilities is not None:
            for c, cls in enumerate(classes):
                frame[f"p_{cls}"] = probabilities[ranking["row"].to_numpy(), c]
        out = Path(query["out"]) if query.get("out") else run.path("queue.csv")
        atomic_write_text(out, frame.to_csv(index=False, lineterminator="\n"))
        summary = {"strategy": query["strategy"], "subset": query["subset"], "scorer": scorer,
                   "candidates": int(candidates.sum()), "picked": len(frame), "out": str(out),
                   "seconds": round(time.time() - started, 3)}
        run.write_summary(summary)
        say(f"query {query['strategy']} ({scorer}) over {int(candidates.sum())} {query['subset']} rows: "
            f"{len(frame)} to label next -> {out}")
    return summary
