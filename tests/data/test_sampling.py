"""Stratified sampling: stratum frequencies per weighting, unknowns, excluded rows, negatives."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from patchcfg.config import with_defaults
from patchcfg.data.sampling import StratifiedSampler, make_labelled_dataset, sampler_from_config
from patchcfg.errors import ConfigError, DataError

U = -1.0


def table():
    """Two classes; strata sizes: (0,1)=6, (0,0)=3, (1,1)=2, (1,0)=9; rows 9-11 never drawn."""
    labels = np.array([
        [1, 0], [1, 0], [1, 0], [1, 1], [1, U], [1, U],
        [0, 1], [0, 0], [0, 0],
        [1, 1], [U, U], [0, 0],
    ] + [[U, 0]] * 4, dtype=np.float32)
    trainable = np.ones(len(labels), bool)
    trainable[[9, 11]] = False  # excluded / validation rows
    return labels, trainable


@pytest.mark.parametrize("weighting", ["class", "instance", "squareroot"])
def test_stratum_frequencies_match_the_weighting(weighting):
    labels, trainable = table()
    sampler = StratifiedSampler(weighting=weighting).fit(labels, trainable)
    sizes = np.array([len(r) for r in sampler.strata_rows_], float)
    expected = {"class": np.ones_like(sizes), "instance": sizes, "squareroot": np.sqrt(sizes)}[weighting]
    expected /= expected.sum()
    np.testing.assert_allclose(sampler.strata_p_, expected)
    rows, strata = sampler.sample(10_000, np.random.default_rng(0), return_strata=True)
    freq = np.bincount(strata, minlength=len(sizes)) / 10_000
    np.testing.assert_allclose(freq, expected, atol=0.015)
    # every draw really belongs to its stratum
    for s, (c, v) in enumerate(sampler.strata_):
        assert (labels[rows[strata == s], c] == v).all()


def test_strata_membership_and_never_drawn_rows():
    labels, trainable = table()
    sampler = StratifiedSampler().fit(labels, trainable)
    assert {tuple(s) for s in sampler.strata_} == {(0, 0), (0, 1), (1, 0), (1, 1)}
    sizes = {tuple(s): len(r) for s, r in zip(sampler.strata_, sampler.strata_rows_, strict=True)}
    assert sizes == {(0, 1): 6, (0, 0): 3, (1, 1): 2, (1, 0): 9}
    for weighting in ("class", "instance", "squareroot"):
        for kind in ("stratified", "uniform"):
            for negatives in ("real", "none", 2):
                s = StratifiedSampler(kind, weighting, negatives).fit(labels, trainable)
                drawn = set(s.sample(5000, 1).tolist())
                assert not drawn & {9, 10, 11}, (weighting, kind, negatives)
    # partially labelled rows are drawn
    assert {4, 5, 12} <= set(sampler.sample(5000, 0).tolist())


def test_negatives_none_and_n():
    labels, trainable = table()
    positive = (labels == 1).any(1)
    none = StratifiedSampler(negatives="none").fit(labels, trainable).sample(2000, 0)
    assert positive[none].all()
    for n in (1, 3):
        rows = StratifiedSampler(negatives=n).fit(labels, trainable).sample(10_000, 0)
        ratio = (~positive[rows]).sum() / positive[rows].sum()
        assert ratio == pytest.approx(n, rel=0.01)
    rows = StratifiedSampler("uniform", negatives=2).fit(labels, trainable).sample(900, 0)
    assert (~positive[rows]).sum() == 600


def test_uniform_type():
    labels, trainable = table()
    rows = StratifiedSampler("uniform").fit(labels, trainable).sample(20_000, 0)
    counts = np.bincount(rows, minlength=len(labels))
    drawable = [0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 13, 14, 15]
    np.testing.assert_allclose(counts[drawable] / 20_000, 1 / len(drawable), atol=0.01)


def test_bad_parameters_and_data():
    labels, trainable = table()
    with pytest.raises(ConfigError, match="weighting"):
        StratifiedSampler(weighting="rows").fit(labels)
    with pytest.raises(ConfigError, match="negatives"):
        StratifiedSampler(negatives="some").fit(labels)
    with pytest.raises(DataError, match="no training rows"):
        StratifiedSampler().fit(np.full((3, 2), U))
    with pytest.raises(DataError, match="without any positive"):
        StratifiedSampler(negatives=2).fit(np.ones((3, 2)))
    sampler_cfg = with_defaults("finetune", {"sampler": {"weighting": "instance"}})["sampler"]
    assert sampler_from_config(sampler_cfg).weighting == "instance"
    assert sampler_from_config(sampler_cfg, negatives=2).negatives == 2
    with pytest.raises(RuntimeError):
        StratifiedSampler().sample(3)


@pytest.mark.parametrize("cache", [None, "memory"])
def test_labelled_dataset_keeps_unknowns_and_pairs(tmp_path, cache):
    labels, trainable = table()
    paths = []
    for i in range(len(labels)):
        Image.fromarray(np.full((8, 8, 3), i * 10, np.uint8)).save(tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    sampler = StratifiedSampler(negatives="real")
    ds = make_labelled_dataset(paths, labels, {"imshape": [8, 8]}, sampler=sampler, batch_size=16,
                               trainable_mask=trainable, seed=0, cache=cache)
    first = []
    for images, batch_labels in ds.take(20):
        rows = np.rint(images.numpy()[:, 0, 0, 0] * 255 / 10).astype(int)
        np.testing.assert_array_equal(batch_labels.numpy(), labels[rows])
        assert not set(rows) & {9, 10, 11}
        first.append(rows)
    unknown_rows = np.flatnonzero((labels == U).any(1) & trainable)
    seen = np.concatenate(first)
    assert set(unknown_rows) & set(seen)  # partially labelled rows come out with their -1s
    again = [np.rint(x.numpy()[:, 0, 0, 0] * 25.5).astype(int) for x, _ in ds.take(2)]
    assert not np.array_equal(again[0], first[0])  # a new iteration draws a new sequence
    ds2 = make_labelled_dataset(paths, labels, {"imshape": [8, 8]}, sampler=StratifiedSampler(),
                                batch_size=16, trainable_mask=trainable, seed=0, cache=cache, views=2)
    (v1, v2), lab = next(iter(ds2))
    assert v1.shape == (16, 8, 8, 3) and lab.shape == (16, 2)
    rows2 = np.rint(v1.numpy()[:, 0, 0, 0] * 25.5).astype(int)
    np.testing.assert_array_equal(rows2, first[0])  # same seed, same first batch


def test_cached_images_are_decoded_once_across_epochs(tmp_path):
    """With a memo kept across epochs (as fine-tuning keeps one), the next epoch's dataset reuses the
    decoded images: it works even after the files are gone."""
    from PIL import Image

    labels = np.array([[1.0], [0.0]] * 8, np.float32)
    paths = []
    for i in range(len(labels)):
        Image.fromarray(np.full((8, 8, 3), i * 10, np.uint8)).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    memo: dict = {}

    def epoch(seed):
        ds = make_labelled_dataset(paths, labels, {"imshape": [8, 8]}, sampler=StratifiedSampler(), batch_size=4,
                                   seed=seed, cache="memory", memo=memo)
        return [x.numpy() for x, _ in ds.take(3)]

    first = epoch(0)
    for path in paths:
        Path(path).unlink()
    second = epoch(1)
    assert len(second) == 3 and not all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert memo["store"].shape == (16, 8, 8, 3)
