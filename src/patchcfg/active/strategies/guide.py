"""``guide:<c>``: GUIDE (Attenberg & Provost, KDD 2010, "Why label when you can search?"): under
extreme class imbalance, look for likely members of the rare class instead of labelling uncertain
rows. Signals: the predicted probability p_c, and the cosine similarity (on features) to the nearest
known positive of c; fused by reciprocal rank. A fraction ``mix`` of the picks is taken by entropy
instead (the paper's mix of search and uncertainty sampling)."""

import numpy as np

from patchcfg.active import scores
from patchcfg.active.strategies import HINTS, Strategy, register


@register
class Guide(Strategy):
    name = "guide"
    takes_class = True
    needs = ()
    uses_features = True
    uses_probabilities = True
    ranks_first = "likely positives of a rare class c"
    sigmoid_score = "reciprocal-rank fusion of p_c and the similarity to known positives"
    needs_text = "probabilities and/or features + known positives"

    def check(self, label, probabilities, features, mix):
        from patchcfg.errors import UserError

        if mix > 0 and probabilities is None:
            raise UserError(f"{label} with mix > 0 needs probabilities for its entropy picks; "
                            f"{HINTS['probabilities']}, or set mix to 0")
        if probabilities is None and features is None:
            raise UserError(f"{label} needs probabilities or features (with known positives); "
                            f"{HINTS['features']}, or {HINTS['probabilities']}")

    def select(self, query, k, rng):
        from patchcfg.active.batch import (
            interleave,
            nearest_positive_similarity,
            reciprocal_rank_fusion,
            round_half_up,
        )
        from patchcfg.errors import UserError

        p, features, labels, label = query.probabilities, query.features, query.labels, query.label
        signals = []
        if p is not None:
            signals.append(p[:, query.cls])
        if features is not None and labels is not None:
            positives = labels[:, query.cls] == 1
            if positives.any():
                signals.append(nearest_positive_similarity(features, features.select(positives), rows=query.rows))
        if not signals:
            raise UserError(f"{label} has nothing to search with: no probabilities, and no known positives "
                            f"of '{label.split(':', 1)[1]}' to search near in feature space; label a few "
                            "positives or score the images first")
        fused = reciprocal_rank_fusion(signals)
        n_mix = round_half_up(query.mix * k)
        search = np.argsort(-fused, kind="stable")[:k - n_mix]
        if not n_mix:
            return search, fused[search], [label] * len(search), fused
        ent = scores.entropy(p, query.exclusive)
        ent_order = np.argsort(-ent, kind="stable")
        extra = ent_order[~np.isin(ent_order, search)][:n_mix]
        order = interleave(len(search), len(extra))
        picks = np.concatenate([search, extra])[order]
        picked_scores = np.concatenate([fused[search], ent[extra]])[order]
        by = np.asarray([label] * len(search) + ["entropy"] * len(extra), dtype=object)[order]
        return picks, picked_scores, list(by), fused
