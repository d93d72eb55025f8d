"""The query stage: which images to label next, ranked, as a CSV.

Images are scored by this experiment's fine-tuned fold ensemble, or by a quick head (logistic
regression) on the cached features of the embed stage; the strategies live in
:mod:`patchcfg.active`. A query always runs afresh (the label table changes between queries).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from patchcfg.errors import UserError
from patchcfg.stages import register
from patchcfg.stages.runner import Stage

#: the first columns of every queue this stage writes
QUEUE_HEADER = "filepath,rank,score,picked_by,strategy"


def is_queue_file(path: Path) -> bool:
    """True when ``path`` is a queue CSV this stage wrote (its header says so)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.readline().startswith(QUEUE_HEADER)
    except (OSError, UnicodeDecodeError):
        return False


@register
class QueryStage(Stage):
    """Options besides the runner's: ``overwrite`` (``query.out`` may replace a file that is not a
    queue) and ``protect`` (more ``(what, path)`` that ``query.out`` must never replace, e.g. the
    config). ``query.out`` never replaces the label table, whatever the options."""

    name = "query"
    depends_on = ("pretrain", "finetune")
    run_order = 3
    schema = "query.schema.json"
    section_help = "Active learning defaults (`patchcfg query`)."
    command_help = "Which images to label next (active learning)."
    command = "patchcfg.commands.pipeline:query"
    distributed = False
    always_runs = True
    needs_labels = "its rows are the candidates"

    def __init__(self, config: dict, root=None, force: bool = False, *, overwrite: bool = False, protect=(),
                 **options):
        super().__init__(config, root, force, **options)
        self.overwrite, self.protect = overwrite, list(protect)

    def check(self) -> None:
        from patchcfg.atomic import check_output

        super().check()
        if self.params["out"]:
            check_output(self.params["out"], protected=[("label table", self.data_cfg["labels"]), *self.protect],
                         ours=is_queue_file, force=self.overwrite, option="--out (query.out)")

    def prepare(self) -> None:
        from patchcfg import active
        from patchcfg.active.strategies import feature_users
        from patchcfg.label_table import read_label_table

        query = self.params
        self.table = read_label_table(self.data_cfg["labels"])
        self.strategy_name, _ = active.parse_strategy(query["strategy"], self.table.classes)
        self.candidates = active.candidate_mask(self.table, query["subset"], strategy=self.strategy_name)
        has_model = (self.experiment.dir / "finetune" / "summary.json").is_file()
        scorer = query["scorer"]
        if scorer == "auto":
            scorer = "model" if has_model else "quick_head"
        if scorer == "model" and not has_model:
            raise UserError(f"query.scorer: model, but {self.experiment.dir}/finetune has no trained models; "
                            "run `patchcfg finetune` first, or use query.scorer=quick_head")
        self.scorer = scorer
        self.features = None
        if scorer == "quick_head" or self.strategy_name in feature_users():
            self.features = self.cached_features()

    def cached_features(self):
        """Every row's cached features (embedding the images first when there are none, or the
        images added since when candidates have none): the memory-mapped matrix of the embed stage
        seen through an index from the table's rows to its rows (-1: no features; such a row may
        not be a candidate), never a copy."""
        from patchcfg.active.rows import RowFeatures
        from patchcfg.stages import run_embed

        paths = self.table.resolved_paths()
        if not (self.experiment.dir / "embed" / "features.npy").is_file():
            run_embed(self.config, root=self.root, verbose=self.verbose, log=self.log)
        cached, index, missing = self._feature_rows(paths)
        if len(missing):
            self.say(f"query: {len(missing)} candidate image(s) have no cached features yet; embedding them")
            run_embed(self.config, root=self.root, verbose=self.verbose, log=self.log)
            cached, index, missing = self._feature_rows(paths)
        if len(missing):
            raise UserError(f"{len(missing)} candidate image(s) have no cached features after the embed stage "
                            f"(e.g. {paths[missing[0]]}): it skipped them as unreadable "
                            f"({self.experiment.dir / 'embed' / 'summary.json'} lists them); fix or exclude "
                            "those rows")
        return RowFeatures(cached, index)

    def _feature_rows(self, paths):
        """(cached features, the row of each of ``paths`` among them or None when they are the same
        rows in order, the candidates without features)."""
        from patchcfg.tasks.embed import load_features, positions_in

        cached, cached_paths = load_features(self.experiment.dir)
        if cached_paths == paths:
            return cached, None, np.zeros(0, np.int64)
        index = positions_in(cached_paths, paths)
        return cached, index, np.flatnonzero(self.candidates & (index < 0))

    def model_probabilities(self, labels: np.ndarray) -> np.ndarray:
        """The fine-tuned ensemble's probabilities on the candidates and labelled rows; rows whose
        image cannot be read stop being candidates."""
        from patchcfg.data.loading import check_images
        from patchcfg.tasks.predict import output_groups, predict_paths, resolve_models

        classes, paths = self.table.classes, self.table.resolved_paths()
        models, model_data, model_classes = resolve_models(self.experiment.dir)
        if model_classes and sorted(model_classes) != sorted(classes):
            raise UserError(f"the fine-tuned models know the classes {model_classes}, the label table has "
                            f"{classes}; fine-tune again, or use query.scorer=quick_head")
        self.model_groups = output_groups(self.experiment.dir, model_classes or classes, models)
        order = [(model_classes or classes).index(c) for c in classes]  # the model's order -> the table's
        rows = np.flatnonzero(self.candidates | (labels >= 0).any(axis=1))
        good, _ = check_images([paths[i] for i in rows], "skip", data_cfg=self.data_cfg)
        good_set = set(good)
        rows = np.array([r for r in rows if paths[r] in good_set], int)
        self.candidates &= np.isin(np.arange(len(paths)), rows)
        probabilities = np.full((len(paths), len(classes)), 0.5, np.float32)  # rows not scored: no candidates
        tta = self.config["finetune"]["tta"] if self.config.get("finetune") else "none"
        probabilities[rows] = predict_paths(models, [paths[i] for i in rows], {**self.data_cfg, **model_data},
                                            tta)[:, order]
        return probabilities

    def output_groups(self):
        """What the scores see of the output: the groups (in the table's class order) when the
        model has more than one multi-hot group, else whether the output is softmax."""
        from patchcfg.label_groups import has_groups
        from patchcfg.models.outputs import located_groups, scoring_groups

        finetune, classes = self.config.get("finetune"), list(self.table.classes)
        if self.scorer != "model":  # the quick head scores every class of the table
            return scoring_groups(finetune, classes)
        if has_groups(self.model_groups):
            return located_groups(self.model_groups, classes)
        return bool(finetune) and finetune["output"]["type"] == "softmax"

    def execute(self) -> dict:
        import pandas as pd

        from patchcfg import active
        from patchcfg.active.ranking import SCHEDULE_KEYS
        from patchcfg.active.strategies import probability_users
        from patchcfg.atomic import atomic_write_text

        query, table, seed = self.params, self.table, int(self.config["seed"])
        labels = table.label_matrix()
        if self.features is not None and self.features.index is not None:
            has = self.features.index >= 0
            labels[~has] = -1  # a row without features can neither train nor be searched near
        else:
            has = None
        probabilities = self.model_probabilities(labels) if self.scorer == "model" else None
        exclusive = self.output_groups()  # True: one softmax output over every class; or the groups
        head = None
        if self.scorer != "model" and self.strategy_name != "random":
            head = active.QuickHead.fit(self.features, labels, ~table.exclude & ~table.validation, seed=seed,
                                        exclusive=exclusive is True, rows=has)
            if self.strategy_name in probability_users():  # else only the picks are scored, for the queue
                probabilities = head.probabilities()
                if has is not None:
                    probabilities[~has] = 0.5  # never candidates (see cached_features)
        ranking = active.rank(query["strategy"], probabilities=probabilities, features=self.features,
                              classes=table.classes, candidates=self.candidates, n=int(query["n"]), labels=labels,
                              explore=float(query["explore"]), sampling=query["sampling"], mix=float(query["mix"]),
                              exclusive=exclusive, seed=seed,
                              schedule={**{key: query[key] for key in SCHEDULE_KEYS},
                                        "train": ~table.exclude & ~table.validation})
        picked = ranking["row"].to_numpy()
        frame = pd.DataFrame({"filepath": [table.df["filepath"][r] for r in picked],
                              "rank": ranking["rank"].to_numpy(), "score": ranking["score"].to_numpy(),
                              "picked_by": ranking["picked_by"].to_numpy(), "strategy": query["strategy"]})
        if probabilities is None and head is not None:
            probabilities = head.probabilities(picked)
        if probabilities is not None:
            for c, cls in enumerate(table.classes):
                frame[f"p_{cls}"] = probabilities[picked, c]
        out = Path(query["out"]) if query["out"] else self.stage_run.path("queue.csv")
        atomic_write_text(out, frame.to_csv(index=False, lineterminator="\n"))
        return {"strategy": query["strategy"], "subset": query["subset"], "scorer": self.scorer,
                "candidates": int(self.candidates.sum()), "picked": len(frame), "out": str(out)}

    def done_message(self, summary: dict) -> str:
        return (f"query {summary['strategy']} ({summary['scorer']}) over {summary['candidates']} "
                f"{summary['subset']} rows: {summary['picked']} to label next -> {summary['out']}")
