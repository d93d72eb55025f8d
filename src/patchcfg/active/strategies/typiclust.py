"""``typiclust``: TypiClust (Hacohen, Dekel & Weinshall, ICML 2022, "Active Learning on a Budget:
Opposite Strategies Suit High and Low Budgets"): with few labels, label the typical rows of regions
that hold no label yet.

Labelled rows are those with a known cell, not candidates, and among the rows the model trains on
when the query names them (``auto`` does: validation labels teach the model nothing, so their
regions still count as unlabelled; the paper's labelled set is the training set; see
:func:`patchcfg.active.neighbours.labelled_rows`). The rows that are candidates or labelled are
clustered by k-means
on their L2-normalised features (the paper's code normalises them as it loads them) into (labelled
rows + this query's picks) clusters, at most 500: the cap of the paper's code (MAX_NUM_CLUSTERS), so
that clusters stay large enough to have typical rows once many rows are labelled. k-means is
scikit-learn's, as in the paper's code: ``KMeans`` up to 50 clusters, ``MiniBatchKMeans`` (batches
of 5,000) above. Clusters of at most 5 rows are left out while larger ones have candidates (its
MIN_CLUSTER_SIZE). The clusters take turns: those with the fewest labelled rows first, and among
them the largest first, so every cluster without a labelled row comes first, largest first, and a
cluster comes round again only after every other one. Each turn picks the cluster's most typical
candidate not yet picked:

    typicality(x) = 1 / (mean Euclidean distance from x to its K nearest candidates in the cluster + 1e-5)

with K = 20, or half the cluster's candidates when it has fewer than 40 left (the paper's code; the
paper defines the mean distance, its code averages squared ones; the 1e-5 keeps duplicates finite).
Only candidates are picked or count as neighbours; labelled rows count toward their cluster's size
and labelled rows only.

At scale, work and memory stay bounded: k-means is fitted on a uniform sample of ``fit_rows`` rows
(all when fewer; ``MiniBatchKMeans`` seeds k-means++ on ``init_rows`` of them, a third of
scikit-learn's default, which is most of the fit's time), then every row is assigned to its nearest
centre block by block, so clusters' sizes and members are exact; a cluster with more than
``max_cluster_rows`` candidates left is represented by a uniform sample of that many (its
typicality measured among them; the K nearest rows come from
:func:`patchcfg.active.index.mean_knn_distance`: exact, as ``max_cluster_rows`` stays below its
threshold; an HNSW graph only for a pool above it). Score: the pick's typicality (NaN for the last
candidate of a cluster, which has no neighbour). Every draw follows the seed.
"""

from __future__ import annotations

import numpy as np

from patchcfg.active.strategies import Strategy, register


@register
class TypiClust(Strategy):
    name = "typiclust"
    needs = ("features",)
    ranks_first = "the most typical row of each large cluster without a labelled row"
    sigmoid_score = "typicality: 1 / mean feature distance to its 20 nearest candidates in its k-means cluster"
    softmax_score = "same"

    #: the most clusters (the paper's code: MAX_NUM_CLUSTERS)
    max_clusters = 500
    #: clusters of at most this many rows are left out while larger ones have candidates (MIN_CLUSTER_SIZE)
    min_cluster_size = 5
    #: K, the neighbours of typicality (K_NN)
    neighbours = 20
    #: up to this many clusters k-means is ``KMeans``, above it ``MiniBatchKMeans`` (the paper's code)
    full_kmeans_clusters = 50
    #: k-means is fitted on at most this many rows (a uniform sample); every row is then assigned
    fit_rows = 50_000
    #: MiniBatchKMeans seeds k-means++ on this many rows (scikit-learn's default: 15,000, 3 batches;
    #: seeding is most of the fit's time, about 3 s more on 2 cores at 500 clusters)
    init_rows = 5000
    #: a cluster's typicality is measured among at most this many of its candidates (a uniform sample)
    max_cluster_rows = 1000

    def select(self, query, k, rng):
        from patchcfg.active.index import mean_knn_distance
        from patchcfg.active.neighbours import labelled_rows, nearest_centres, unit_rows
        from patchcfg.active.rows import as_row_features

        features, rows = as_row_features(query.features), query.rows
        seed = int(rng.integers(2**31))
        draw = np.random.default_rng(seed)
        candidate = np.zeros(len(features), bool)
        candidate[rows] = True
        labelled = labelled_rows(query, candidate)
        relevant = np.flatnonzero(candidate | labelled)
        k = min(int(k), len(rows))
        if k <= 0:
            return np.zeros(0, np.int64), np.zeros(0), [], None
        clusters = max(1, min(int(labelled.sum()) + k, self.max_clusters, len(relevant)))

        fitted = relevant if len(relevant) <= self.fit_rows else np.sort(
            draw.choice(relevant, self.fit_rows, replace=False))
        centres = self._kmeans(unit_rows(features.take(fitted)), clusters, seed)
        cluster = features.select(relevant).rowwise(lambda b: nearest_centres(b, centres, unit=True))

        sizes = np.bincount(cluster, minlength=clusters)
        existing = np.bincount(cluster[labelled[relevant]], minlength=clusters)
        is_candidate = candidate[relevant]
        by_cluster = np.argsort(cluster[is_candidate], kind="stable")
        members = np.split(relevant[is_candidate][by_cluster],
                           np.cumsum(np.bincount(cluster[is_candidate], minlength=clusters))[:-1])
        ids = np.arange(clusters)
        order = ids[np.lexsort((ids, -sizes, existing))]  # fewest labelled rows first, then largest
        turns = [c for c in order if sizes[c] > self.min_cluster_size]
        rest = [c for c in order if sizes[c] <= self.min_cluster_size]

        picks, scores = [], []
        turn = 0
        while len(picks) < k:
            live = [c for c in turns if len(members[c])]
            if not live:  # the large clusters have no candidates left: the small ones take turns
                if not rest:
                    break
                turns, rest, turn = rest, [], 0
                continue
            c = turns[turn % len(turns)]
            turn += 1
            if not len(members[c]):
                continue
            pool = members[c]
            if len(pool) > self.max_cluster_rows:
                pool = np.sort(draw.choice(pool, self.max_cluster_rows, replace=False))
            neighbours = min(self.neighbours, len(pool) // 2)
            if neighbours:
                typicality = 1.0 / (mean_knn_distance(unit_rows(features.take(pool)), neighbours) + 1e-5)
                best = int(np.argmax(typicality))
                score = float(typicality[best])
            else:
                best, score = 0, float("nan")
            picks.append(int(pool[best]))
            scores.append(score)
            members[c] = members[c][members[c] != pool[best]]
        positions = np.searchsorted(rows, np.asarray(picks, dtype=np.int64))
        return positions, np.asarray(scores, dtype=np.float64), [query.label] * len(positions), None

    def _kmeans(self, x: np.ndarray, clusters: int, seed: int) -> np.ndarray:
        """The k-means centres of ``x`` (the paper's code: ``KMeans`` up to 50 clusters, else
        ``MiniBatchKMeans`` with batches of 5,000), on one thread (see :func:`one_thread`)."""
        from sklearn.cluster import KMeans, MiniBatchKMeans

        from patchcfg.active.neighbours import one_thread

        with one_thread():
            if clusters <= self.full_kmeans_clusters:
                model = KMeans(n_clusters=clusters, random_state=seed, n_init="auto")
            else:
                model = MiniBatchKMeans(n_clusters=clusters, batch_size=5000, random_state=seed, n_init="auto",
                                        init_size=max(self.init_rows, 3 * clusters), compute_labels=False)
            return model.fit(x).cluster_centers_.astype(x.dtype)
