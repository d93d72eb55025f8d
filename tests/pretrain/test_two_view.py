"""The two-view base: a method and a loss registered from outside the package train with it.

This module is the Extending page's (docs/extending.md) "A pretraining loss" example, run: the loss is a pure
function, the method holds only its declaration (its keys, their defaults), its parameters and its contrastive hook.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from patchcfg.config.schema import fill_defaults  # noqa: E402
from patchcfg.pretrain import get_method, method_names, register, unregister  # noqa: E402
from patchcfg.pretrain.losses.views import normalized_views  # noqa: E402
from patchcfg.pretrain.params import PretrainParams  # noqa: E402
from patchcfg.pretrain.two_view import TwoViewMethod  # noqa: E402
from patchcfg.train.loop import TrainLoop  # noqa: E402


def align_uniform_loss(z1, z2, t, *, z1_all=None, z2_all=None, offset=0):
    """Alignment plus uniformity, per example (Wang & Isola, "Understanding Contrastive Representation
    Learning through Alignment and Uniformity on the Hypersphere", ICML 2020)::

        l_i = ||z1_i - z2_i||^2 + log mean_j exp(-t ||z1_i - z2_j||^2)      (z L2-normalised)

    >>> import numpy as np
    >>> z = np.eye(2, dtype="float32")
    >>> [round(float(v), 4) for v in align_uniform_loss(z, z, 2.0)]   # log((1 + e^-4) / 2)
    [-0.675, -0.675]
    """
    z1, z2, _, z2_all, _ = normalized_views(z1, z2, z1_all, z2_all, offset)
    align = tf.reduce_sum(tf.square(z1 - z2), axis=1)
    distances = tf.reduce_sum(tf.square(z1[:, None, :] - z2_all[None, :, :]), axis=-1)
    count = tf.cast(tf.shape(z2_all)[0], tf.float32)
    return align + tf.reduce_logsumexp(-t * distances, axis=1) - tf.math.log(count)


class AlignUniform(TwoViewMethod):
    """Alignment and uniformity (Wang & Isola 2020) over the global batch."""

    summary = "alignment and uniformity on the hypersphere (Wang & Isola 2020)."
    config_keys = {"uniformity_t": {"description": "t of the uniformity term.", "type": "number",
                                    "exclusiveMinimum": 0, "default": 2.0}}

    @dataclass(frozen=True)
    class Params(PretrainParams):
        uniformity_t: float

    def pair_loss(self, z1, z2, *, z1_all, z2_all, offset):
        loss = align_uniform_loss(z1, z2, self.params.uniformity_t, z1_all=z1_all, z2_all=z2_all, offset=offset)
        return loss, {}


@pytest.fixture
def registered():
    register("align_uniform")(AlignUniform)
    yield
    unregister("align_uniform")


def test_the_example_loss_is_what_its_docstring_says():
    import doctest

    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner()
    for test in finder.find(align_uniform_loss, globs={"align_uniform_loss": align_uniform_loss}):
        runner.run(test)
    assert runner.summarize(verbose=False).failed == 0 and runner.summarize(verbose=False).attempted == 3


def test_a_method_registered_outside_the_package_trains_one_step(registered, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(16):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    assert "align_uniform" in method_names()
    config = fill_defaults({"name": "example", "seed": 1, "data": {"imshape": [16, 16]},
                            "backbone": {"name": "tiny", "width": 0.5}, "augmentation": {"preset": "simclr"},
                            "pretrain": {"method": "align_uniform", "batch_size": 8,
                                         "projection": {"units": 8, "dim": 4}, "monitor": {"every": 0}}})
    method = get_method("align_uniform")(config, paths)
    assert method.name == "align_uniform" and method.params.uniformity_t == 2.0
    assert method.params.projection.dim == 4  # the test's choice; every other key from the schema, uniformity_t
    # from the method's own declaration, written into it
    loop = TrainLoop(method, epochs=1, steps_per_epoch=1, global_batch_size=8, verbose=0,
                     optimizer_config=config["pretrain"]["optimizer"])
    loop.build()
    before = [v.numpy().copy() for v in method.trainable_variables()]
    result = loop.fit()
    assert result["epochs_completed"] == 1 and np.isfinite(result["final"]["loss"])
    assert -np.log(8) <= result["final"]["loss"] <= 4.0  # alignment in [0, 4], uniformity in [-log M, 0]
    after = method.trainable_variables()
    assert any(not np.allclose(a, v.numpy()) for a, v in zip(before, after, strict=True))


def test_a_method_without_its_loss_is_refused():
    from patchcfg.pretrain.base import PretrainMethod

    class NoLoss(PretrainMethod):
        pass

    class Unfinished(TwoViewMethod):
        pass

    config = fill_defaults({"name": "x", "pretrain": {"method": "simclr"}})
    with pytest.raises(TypeError, match="abstract method.*compute_loss"):
        NoLoss(config, [])
    with pytest.raises(NotImplementedError, match="defines neither pair_loss nor contrastive_loss"):
        Unfinished(config, []).pair_loss(None, None, z1_all=None, z2_all=None, offset=0)


def test_output_batchnorm_standardises_each_embedding_dimension():
    """``projection.output_batchnorm`` (SimCLR v2; lightly's SimCLRProjectionHead): the output layer
    has no bias and is followed by batch norm, so in training each dimension of the embeddings has
    zero mean and unit variance over the batch; off, the head ends with a biased Dense."""
    from patchcfg.pretrain.base import build_projection_head

    x = np.random.default_rng(0).normal(3.0, 2.0, size=(64, 12)).astype(np.float32)
    head = build_projection_head(12, 2, 16, 8, True, synchronized=False, output_batchnorm=True)
    assert head.layers[-1].name == "bn_projection" and not head.get_layer("projection").use_bias
    z = np.asarray(head(x, training=True))
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(z.std(0), 1.0, atol=1e-2)
    plain = build_projection_head(12, 2, 16, 8, True, synchronized=False, output_batchnorm=False)
    assert plain.layers[-1].name == "projection" and plain.get_layer("projection").use_bias
