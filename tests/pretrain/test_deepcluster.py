"""DeepCluster's pieces: clustering of features, sampling uniformly over clusters, optimizer slots."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from patchcfg.pretrain.deepcluster import cluster_features, reset_optimizer_slots, sample_over_clusters  # noqa: E402

#: whitened PCA, 20 Lloyd iterations and 128 images per cluster, as pretrain.whiten, kmeans_iterations and
#: kmeans_sample_per_cluster (kmeans: sampled) give by default
KMEANS = {"whiten": True, "iterations": 20, "sample_per_cluster": 128, "way": "sampled"}


def test_well_separated_clusters_are_found():
    from sklearn.metrics import adjusted_rand_score

    rng = np.random.default_rng(0)
    truth = np.repeat(np.arange(4), 50)
    features = (rng.normal(size=(4, 8)) * 5)[truth] + rng.normal(size=(200, 8)) * 0.3
    labels = cluster_features(features, 4, pca_dim=3, **KMEANS, seed=1)  # the 3 directions the 4 centres span
    assert labels.dtype == np.int32 and labels.shape == (200,)
    assert adjusted_rand_score(truth, labels) == pytest.approx(1.0)
    again = cluster_features(features, 4, pca_dim=3, **KMEANS, seed=1)
    np.testing.assert_array_equal(labels, again)  # seeded
    unreduced = cluster_features(features, 4, pca_dim=None, **KMEANS, seed=1)
    assert adjusted_rand_score(truth, unreduced) == pytest.approx(1.0)


def test_collapsed_features_still_get_labels():
    labels = cluster_features(np.ones((20, 5)), 3, pca_dim=4, **KMEANS, seed=0)
    assert labels.shape == (20,) and labels.min() >= 0 and labels.max() < 3
    with pytest.raises(ValueError, match="5 clusters for 3 images"):
        cluster_features(np.eye(3), 5, pca_dim=64, **KMEANS, seed=0)


def test_sampling_is_uniform_over_clusters_not_images():
    assignments = np.array([0] * 900 + [1] * 90 + [7] * 10)  # cluster 7 holds 1% of the images
    picks = sample_over_clusters(assignments, 30_000, seed=3)
    shares = np.bincount(assignments[picks], minlength=8)[[0, 1, 7]] / len(picks)
    np.testing.assert_allclose(shares, [1 / 3] * 3, atol=0.02)
    assert set(picks[assignments[picks] == 7]) == set(range(990, 1000))  # every member gets drawn
    np.testing.assert_array_equal(picks, sample_over_clusters(assignments, 30_000, seed=3))
    assert not np.array_equal(picks, sample_over_clusters(assignments, 30_000, seed=4))


def test_reset_optimizer_slots_zeroes_only_the_given_variables():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="a"), keras.layers.Dense(2, name="b")])
    optimizer = keras.optimizers.Adam(0.1)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(tf.ones((2, 3))) ** 2)
    variables = model.trainable_variables
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
    b = model.get_layer("b")
    reset_optimizer_slots(optimizer, [b.kernel, b.bias])
    for variable in model.trainable_variables:
        slots = [s for s in optimizer.variables if s.name.startswith(variable.path.replace("/", "_") + "_")]
        assert len(slots) == 2  # Adam: momentum and velocity
        zeroed = all(np.abs(s.numpy()).max() == 0 for s in slots)
        assert zeroed == (variable is b.kernel or variable is b.bias), variable.path


def test_pca_matches_a_whitened_pca_of_features_far_from_the_origin():
    """The PCA is accumulated block by block in float32; were it wrong (cancellation far from the
    origin), k-means would cluster directions the features do not vary along."""
    from sklearn.decomposition import PCA

    import patchcfg.pretrain.deepcluster as deepcluster

    rng = np.random.default_rng(0)
    features = (rng.normal(size=(3000, 12)) @ rng.normal(size=(12, 12)) + 300.0).astype(np.float32)
    ours = deepcluster.pca_normalised(features, 4, whiten=True)
    reference = PCA(4, whiten=True).fit_transform(features.astype(np.float64))
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    signs = np.sign((ours * reference).sum(axis=0))  # a component's sign is arbitrary
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours * signs, reference, atol=2e-3)


def test_pca_holds_no_copy_of_the_features(monkeypatch):
    """At a million images, a float64 (or centred) copy of the features would double or triple the
    clustering's memory each epoch."""
    import tracemalloc

    import patchcfg.pretrain.deepcluster as deepcluster

    monkeypatch.setattr(deepcluster, "CHUNK_ROWS", 1000)
    features = np.random.default_rng(0).normal(size=(40_000, 64)).astype(np.float32)  # 10 MB
    tracemalloc.start()
    try:
        out = deepcluster.pca_normalised(features, 8, whiten=True)  # 1.3 MB
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.shape == (40_000, 8)
    assert peak < 0.2 * features.nbytes, peak  # the output is 0.125 of it


def test_kmeans_fitted_on_a_sample_still_labels_every_image():
    """The centroids see a sample of the images; every image must still get its cluster."""
    from sklearn.metrics import adjusted_rand_score

    from patchcfg.pretrain.deepcluster import kmeans_labels

    rng = np.random.default_rng(1)
    truth = rng.integers(0, 5, 5000)
    x = (rng.normal(size=(5, 6)) * 4)[truth] + rng.normal(size=(5000, 6)) * 0.2
    labels = kmeans_labels(x, 5, iterations=20, sample_per_cluster=20, seed=0, way="sampled")  # fitted on 100 rows
    assert labels.shape == (5000,) and labels.dtype == np.int32
    assert adjusted_rand_score(truth, labels) == pytest.approx(1.0)
    minibatch = kmeans_labels(x, 5, iterations=20, sample_per_cluster=20, seed=0, way="minibatch")
    assert minibatch.dtype == np.int32 and adjusted_rand_score(truth, minibatch) == pytest.approx(1.0)
