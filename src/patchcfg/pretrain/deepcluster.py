"""DeepCluster: k-means pseudo-labels of the encoder's own features, learnt by classification.

Caron, Bojanowski, Joulin & Douze, "Deep Clustering for Unsupervised Learning of Visual Features",
ECCV 2018. When every epoch starts:

1. features of every image (no augmentation) from the encoder as trained so far;
2. PCA to ``pca_dim`` dimensions, whitened, then L2-normalised;
3. k-means with ``clusters`` centroids, fitted on a sample of ``kmeans_sample_per_cluster`` images
   per cluster, then every image assigned to its nearest: an image's cluster is its pseudo-label;
4. the classifier's last layer is re-initialised, and its optimizer moments zeroed: the clusters'
   numbering is arbitrary, so last epoch's class weights mean nothing;
5. the epoch's images are drawn uniformly over clusters, then uniformly within one, so that large
   clusters do not dominate (the paper's guard against trivial solutions).

Encoder and classifier (``projection``'s hidden layers, then one unit per cluster) then learn the
pseudo-labels of augmented images with cross-entropy. The pseudo-labels are checkpointed with the
epoch they belong to, so a run resumed mid-epoch trains on the same labels. The normalised mutual
information between successive clusterings (the paper's measure of stability) is logged as
``cluster_nmi``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from patchcfg.errors import UserError
from patchcfg.pretrain import register
from patchcfg.pretrain.base import PretrainMethod
from patchcfg.pretrain.params import PretrainParams
from patchcfg.train.distribute import global_mean
from patchcfg.train.loop import epoch_seed

#: rows per block of the PCA's passes over the features (bounded working memory)
CHUNK_ROWS = 65536


def pca_normalised(features, pca_dim: int | None, whiten: bool) -> np.ndarray:
    """k-means' input (N, d) float32: ``features`` (N, D) projected on their ``pca_dim`` principal
    components (unit variance each when ``whiten``; directions of zero variance give 0), then L2-normalised.

    Mean and covariance are accumulated block by block (float32 products of rows shifted by the first
    block's mean, summed in float64), and the projection is written block by block into one float32
    array: above the features, memory is the output and one block, never a float64 or centred copy
    of every row."""
    x = np.asarray(features)
    count, width = x.shape
    if pca_dim:
        dim = min(int(pca_dim), width, count)
        pivot = x[:CHUNK_ROWS].mean(axis=0, dtype=np.float64).astype(np.float32)
        total, scatter = np.zeros(width), np.zeros((width, width))
        for start in range(0, count, CHUNK_ROWS):
            block = np.subtract(x[start:start + CHUNK_ROWS], pivot, dtype=np.float32)
            total += block.sum(axis=0, dtype=np.float64)
            scatter += block.T @ block
        shifted_mean = total / count
        mean = shifted_mean + pivot
        covariance = (scatter - count * np.outer(shifted_mean, shifted_mean)) / max(count - 1, 1)
        variances, vectors = np.linalg.eigh(covariance)
        top = np.argsort(-variances, kind="stable")[:dim]
        components = vectors[:, top]
        if whiten:
            variance = variances[top]
            components = components * np.where(variance > 1e-12 * max(variance.max(), 1e-300),
                                               1.0 / np.sqrt(np.maximum(variance, 1e-300)), 0.0)
        out = np.empty((count, dim), np.float32)
        shift = (mean @ components).astype(np.float32)
        components = components.astype(np.float32)
        for start in range(0, count, CHUNK_ROWS):
            np.matmul(x[start:start + CHUNK_ROWS].astype(np.float32, copy=False), components,
                      out=out[start:start + CHUNK_ROWS])
            out[start:start + CHUNK_ROWS] -= shift
    else:
        out = np.array(x, np.float32)
    for start in range(0, count, CHUNK_ROWS):
        block = out[start:start + CHUNK_ROWS]
        block /= np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-12)
    return out


def kmeans_labels(x, clusters: int, *, iterations: int, sample_per_cluster: int, seed: int,
                  way: str) -> np.ndarray:
    """Each row's nearest of ``clusters`` k-means centroids, (N,) int32.

    ``sampled``: the centroids are fitted (k-means++, then at most ``iterations`` Lloyd
    iterations) on a seeded uniform sample of ``sample_per_cluster`` rows per cluster (all rows
    when there are fewer); every row is then assigned to its nearest centroid in one pass. Time
    and memory grow with the sample, not with N, besides that pass (faiss's
    ``max_points_per_centroid`` does the same); the fit grows with the square of ``clusters``.
    ``minibatch``: mini-batch k-means over every row (Sculley 2010, "Web-scale k-means
    clustering"; batches of 4096, at most ``iterations`` passes): linear in ``clusters``, the
    faster for a thousand clusters and more."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    x = np.asarray(x, np.float32)
    if clusters > len(x):
        raise ValueError(f"{clusters} clusters for {len(x)} images")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fewer distinct points than clusters: k-means still labels every image
        if way == "minibatch":
            return MiniBatchKMeans(clusters, batch_size=4096, max_iter=int(iterations), n_init=1,
                                   random_state=seed).fit(x).labels_.astype(np.int32)
        size = clusters * int(sample_per_cluster)
        train = x if size >= len(x) else x[np.sort(np.random.default_rng(seed).choice(len(x), size, replace=False))]
        kmeans = KMeans(n_clusters=clusters, n_init=1, max_iter=int(iterations), random_state=seed).fit(train)
        labels = kmeans.labels_ if train is x else kmeans.predict(x)
    return labels.astype(np.int32)


def cluster_features(features, clusters: int, *, pca_dim: int | None, whiten: bool, iterations: int,
                     sample_per_cluster: int, seed: int, way: str) -> np.ndarray:
    """Pseudo-labels ``(N,)`` int32: k-means on PCA-(whitened), L2-normalised ``features`` (N, D)."""
    return kmeans_labels(pca_normalised(features, pca_dim, whiten), clusters, iterations=iterations,
                         sample_per_cluster=sample_per_cluster, seed=seed, way=way)


def sample_over_clusters(assignments, count: int, seed: int) -> np.ndarray:
    """``count`` image indices: a cluster uniformly among the non-empty ones, then an image of it."""
    rng = np.random.default_rng(seed)
    assignments = np.asarray(assignments)
    order = np.argsort(assignments, kind="stable")
    used, starts, sizes = np.unique(assignments[order], return_index=True, return_counts=True)
    picked = rng.integers(0, len(used), size=count)
    within = np.floor(rng.random(count) * sizes[picked]).astype(np.int64)
    return order[starts[picked] + within]


def reset_optimizer_slots(optimizer, variables) -> None:
    """Zero the optimizer's per-variable state (momenta, second moments) of ``variables``.

    Keras names a slot ``<variable path with '/' as '_'>_<slot>`` (``add_variable_from_reference``).
    """
    prefixes = {v.path.replace("/", "_") + "_": tuple(v.shape) for v in variables}
    for slot in optimizer.variables:
        for prefix, shape in prefixes.items():
            if slot.name.startswith(prefix) and tuple(slot.shape) == shape:
                slot.assign(tf.zeros(slot.shape, slot.dtype))


@register("deepcluster")
class DeepCluster(PretrainMethod):
    """DeepCluster: re-cluster every epoch, re-initialise the classifier, classify the clusters."""

    summary = ("k-means pseudo-labels of the encoder's features, re-clustered every epoch and learnt by "
               "classification (Caron et al. 2018).")
    config_keys = {
        "clusters": {
            "description": ("k: k-means clusters, the pseudo-classes (at most the number of images). The "
                            "classifier is projection's hidden layers, then one unit per cluster."),
            "type": "integer",
            "minimum": 2,
            "default": 100,
        },
        "pca_dim": {
            "description": "PCA dimensions of the encoder's features before k-means; null = no PCA.",
            "type": ["integer", "null"],
            "minimum": 1,
            "default": 64,
        },
        "whiten": {
            "description": "Whiten the PCA components (unit variance each) before L2 normalisation.",
            "type": "boolean",
            "default": True,
        },
        "kmeans": {
            "description": ("How each epoch's k-means runs: sampled = centroids fitted on a sample of "
                            "kmeans_sample_per_cluster images per cluster, then every image assigned (the "
                            "faster up to a few hundred clusters); minibatch = mini-batch k-means over "
                            "every image (Sculley 2010; time linear in clusters, the faster for a thousand "
                            "and more)."),
            "enum": ["sampled", "minibatch"],
            "default": "sampled",
        },
        "kmeans_iterations": {
            "description": ("Most Lloyd iterations of each epoch's k-means (minibatch: most passes over "
                            "the images)."),
            "type": "integer",
            "minimum": 1,
            "default": 20,
        },
        "kmeans_sample_per_cluster": {
            "description": ("kmeans: sampled: images per cluster in the sample each epoch's k-means fits "
                            "its centroids on (uniform, seeded); every image is then assigned to its "
                            "nearest centroid. Bounds the clustering's time at a million images; with "
                            "fewer images than clusters x this, all of them."),
            "type": "integer",
            "minimum": 1,
            "default": 128,
        },
    }

    data_follows_model = True

    @dataclass(frozen=True)
    class Params(PretrainParams):
        clusters: int
        pca_dim: int | None
        whiten: bool
        kmeans: str
        kmeans_iterations: int
        kmeans_sample_per_cluster: int

    def __init__(self, config, paths, **kwargs):
        super().__init__(config, paths, **kwargs)
        self.clusters = self.params.clusters
        if self.clusters > len(self.paths):
            raise UserError(f"pretrain.clusters: {self.clusters} clusters for {len(self.paths)} images; "
                            "use at most as many clusters as images")

    def build_head(self, features: int, dim: int | None = None) -> keras.Model:
        return super().build_head(features, dim=self.clusters, min_depth=1)

    def build_state(self) -> None:
        count = len(self.paths)
        self.assignments = tf.Variable(tf.fill([count], -1), trainable=False, name="cluster_assignments")
        self.previous_assignments = tf.Variable(tf.fill([count], -1), trainable=False, name="previous_assignments")
        self.clustered_epoch = tf.Variable(-1, dtype=tf.int64, trainable=False, name="clustered_epoch")

    def extra_state(self) -> dict:
        return {"cluster_assignments": self.assignments, "previous_assignments": self.previous_assignments,
                "clustered_epoch": self.clustered_epoch}

    # ------------------------------------------------------------------ clustering
    def recluster(self, epoch: int) -> np.ndarray:
        """New pseudo-labels from the current encoder, and a fresh classifier layer."""
        seed = epoch_seed(self.seed, epoch)
        labels = cluster_features(self._features(self.paths), self.clusters,
                                  pca_dim=self.params.pca_dim, whiten=self.params.whiten,
                                  iterations=self.params.kmeans_iterations,
                                  sample_per_cluster=self.params.kmeans_sample_per_cluster, seed=seed,
                                  way=self.params.kmeans)
        self.previous_assignments.assign(self.assignments.read_value())
        self.assignments.assign(labels)
        self.clustered_epoch.assign(epoch)
        classifier = self.head.get_layer("projection")
        classifier.kernel.assign(keras.initializers.GlorotUniform(seed=seed)(classifier.kernel.shape))
        classifier.bias.assign(tf.zeros_like(classifier.bias))
        if self.optimizer is not None:
            reset_optimizer_slots(self.optimizer, [classifier.kernel, classifier.bias])
        return labels

    def dataset(self, epoch: int) -> tf.data.Dataset:
        """Augmented images and their pseudo-labels, drawn uniformly over clusters (see the module)."""
        if int(self.clustered_epoch.numpy()) != epoch:  # else resumed mid-epoch: the same labels
            self.recluster(epoch)
        labels = self.assignments.numpy()
        seed = epoch_seed(self.seed, epoch)
        return self.drawn_dataset(self.paths, labels[:, None], sample_over_clusters(labels, self.epoch_draws(), seed),
                                  seed)

    def compute_loss(self, batch, global_batch_size: int):
        images, labels = batch
        labels = tf.cast(labels[:, 0], tf.int32)
        logits = self.embed(images)
        per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        correct = tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels), tf.float32)
        return global_mean(per_example, global_batch_size), {"cluster_acc": global_mean(correct, global_batch_size)}, {}

    def on_epoch_end(self, epoch: int, logs: dict) -> dict:
        from sklearn.metrics import normalized_mutual_info_score

        out = super().on_epoch_end(epoch, logs)
        current, previous = self.assignments.numpy(), self.previous_assignments.numpy()
        out["clusters_used"] = float(len(np.unique(current)))
        if (previous >= 0).all():
            out["cluster_nmi"] = float(normalized_mutual_info_score(previous, current))
        return out
