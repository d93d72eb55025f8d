"""The pretraining losses against hand-computed values and the papers' definitions; their examples."""

from __future__ import annotations

import math

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from patchcfg.pretrain.losses.byol import byol_loss  # noqa: E402
from patchcfg.pretrain.losses.hcl import hcl_loss  # noqa: E402
from patchcfg.pretrain.losses.inpainting import inpainting_loss  # noqa: E402
from patchcfg.pretrain.losses.moco_infonce import (  # noqa: E402
    eqco_shift,
    mochi_negatives,
    moco_logits,
    moco_loss,
)
from patchcfg.pretrain.losses.nt_xent import nt_xent_loss, nt_xent_terms  # noqa: E402
from patchcfg.pretrain.losses.region_infonce import region_infonce  # noqa: E402
from patchcfg.pretrain.losses.simsiam import simsiam_loss  # noqa: E402


def unit(rows):
    rows = np.asarray(rows, dtype=np.float64)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def random_views(n=6, d=5, seed=0):
    rng = np.random.default_rng(seed)
    z1 = rng.normal(size=(n, d)).astype("float32")
    z2 = (z1 + 0.5 * rng.normal(size=(n, d))).astype("float32")
    return z1, z2


def nt_xent_reference(z1, z2, t, decoupled=False):
    """Chen et al. 2020, eq. (1), written out with loops over the 2N anchors."""
    v = unit(np.concatenate([z1, z2]))
    n = len(z1)
    losses = np.zeros(2 * n)
    for i in range(2 * n):
        pos = (i + n) % (2 * n)
        sims = v @ v[i] / t
        denominator = sum(math.exp(sims[k]) for k in range(2 * n) if k != i and (k != pos or not decoupled))
        losses[i] = -sims[pos] + math.log(denominator)
    return 0.5 * (losses[:n] + losses[n:])


def hcl_reference(z1, z2, t, beta, tau_plus):
    """Robinson et al. 2021, following the authors' code: exp, mask, reweight, debias, clamp."""
    out = unit(np.concatenate([z1, z2]))
    n = len(z1)
    neg = np.exp(out @ out.T / t)
    mask = np.ones((2 * n, 2 * n), bool)
    for i in range(n):
        mask[i, i] = mask[i + n, i + n] = mask[i, i + n] = mask[i + n, i] = False
    neg = neg[mask].reshape(2 * n, -1)
    pos = np.exp(np.sum(out[:n] * out[n:], axis=1) / t)
    pos = np.concatenate([pos, pos])
    count = 2 * n - 2
    imp = np.exp(beta * np.log(neg))
    reweight = (imp * neg).sum(axis=1) / imp.mean(axis=1)
    ng = (-tau_plus * count * pos + reweight) / (1 - tau_plus)
    ng = np.maximum(ng, count * np.exp(-1 / t))
    losses = -np.log(pos / (pos + ng))
    return 0.5 * (losses[:n] + losses[n:])


# ---------------------------------------------------------------------------- SimCLR / DCL


def test_nt_xent_two_orthogonal_images_by_hand():
    z = np.eye(2, dtype="float32")
    # each anchor: positive similarity 1, two negatives of similarity 0, t = 1
    nt_xent = nt_xent_loss(z, z, temperature=1.0, decoupled=False)
    assert float(nt_xent) == pytest.approx(math.log(1 + 2 / math.e), abs=1e-6)
    # DCL drops the positive from the denominator: -1 + log(2)
    assert float(nt_xent_loss(z, z, temperature=1.0, decoupled=True)) == pytest.approx(math.log(2) - 1, abs=1e-6)


@pytest.mark.parametrize("decoupled", [False, True])
def test_nt_xent_matches_the_written_out_definition(decoupled):
    z1, z2 = random_views()
    loss, hit = nt_xent_terms(z1, z2, 0.3, decoupled=decoupled)
    np.testing.assert_allclose(loss.numpy(), nt_xent_reference(z1, z2, 0.3, decoupled), rtol=1e-5, atol=1e-5)
    assert set(np.unique(hit.numpy())) <= {0.0, 0.5, 1.0}


def test_nt_xent_is_scale_invariant_and_symmetric():
    z1, z2 = random_views()
    a = nt_xent_terms(z1, z2, 0.2, decoupled=False)[0].numpy()
    np.testing.assert_allclose(a, nt_xent_terms(3 * z1, 0.5 * z2, 0.2, decoupled=False)[0].numpy(), rtol=1e-5)
    np.testing.assert_allclose(a, nt_xent_terms(z2, z1, 0.2, decoupled=False)[0].numpy(), rtol=1e-5)


def test_gathered_negatives_with_replica_offset_equal_the_global_batch():
    """What each replica computes with all_gather'ed embeddings is its rows of the global loss."""
    z1, z2 = random_views(n=8)
    full = nt_xent_terms(z1, z2, 0.5, decoupled=False)[0].numpy()
    full_hcl = hcl_loss(z1, z2, 0.5, 0.5, 0.1).numpy()
    for replica in range(4):
        rows = slice(2 * replica, 2 * replica + 2)
        local = nt_xent_terms(z1[rows], z2[rows], 0.5, decoupled=False,
                              z1_all=z1, z2_all=z2, offset=2 * replica)[0]
        np.testing.assert_allclose(local.numpy(), full[rows], rtol=1e-5)
        local_hcl = hcl_loss(z1[rows], z2[rows], 0.5, 0.5, 0.1, z1_all=z1, z2_all=z2, offset=2 * replica)
        np.testing.assert_allclose(local_hcl.numpy(), full_hcl[rows], rtol=1e-5)
    # without the gathered negatives a replica's loss is different (fewer negatives)
    alone = nt_xent_terms(z1[:2], z2[:2], 0.5, decoupled=False)[0].numpy()
    assert not np.allclose(alone, full[:2])


# ---------------------------------------------------------------------------- HCL


def test_hcl_with_beta_and_tau_plus_zero_is_exactly_nt_xent():
    """Same inputs; HCL's form is -log p/(p + sum of the 2N-2 negatives), NT-Xent's denominator is
    the positive plus the same negatives: identical."""
    z1, z2 = random_views(n=7, seed=3)
    for t in (0.1, 0.5, 1.0):
        np.testing.assert_allclose(hcl_loss(z1, z2, t, beta=0.0, tau_plus=0.0).numpy(),
                                   nt_xent_terms(z1, z2, t, decoupled=False)[0].numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("beta,tau_plus,t", [(0.5, 0.1, 0.5), (1.0, 0.0, 0.5), (0.0, 0.2, 0.3), (2.0, 0.1, 0.2)])
def test_hcl_matches_the_papers_code(beta, tau_plus, t):
    z1, z2 = random_views(n=6, seed=1)
    np.testing.assert_allclose(hcl_loss(z1, z2, t, beta, tau_plus).numpy(),
                               hcl_reference(z1, z2, t, beta, tau_plus), rtol=1e-4, atol=1e-5)


def test_hcl_clamp_to_n_exp_minus_one_over_t():
    """With a large class prior the debiased estimate goes negative and is clamped to N e^{-1/t}."""
    z1, z2 = random_views(n=4, seed=2)
    t, tau_plus = 0.5, 0.9
    v1, v2 = unit(z1), unit(z2)
    pos = np.exp(np.sum(v1 * v2, axis=1) / t)
    count = 2 * 4 - 2
    expected_side1 = -np.log(pos / (pos + count * math.exp(-1 / t)))
    out = hcl_loss(z1, z2, t, beta=0.0, tau_plus=tau_plus).numpy()
    reference = hcl_reference(z1, z2, t, 0.0, tau_plus)
    np.testing.assert_allclose(out, reference, rtol=1e-4)
    np.testing.assert_allclose(out, expected_side1, rtol=1e-4)  # both views clamp; pos is symmetric


# ---------------------------------------------------------------------------- MoCo, EqCo, MoCHi


def moco_inputs(b=3, k=10, d=4, seed=0):
    rng = np.random.default_rng(seed)
    q = unit(rng.normal(size=(b, d))).astype("float32")
    key = unit(q + 0.3 * rng.normal(size=(b, d))).astype("float32")
    queue = unit(rng.normal(size=(k, d))).astype("float32")
    return q, key, queue


def test_moco_infonce_by_hand():
    q, key, queue = moco_inputs()
    t = 0.1
    logits = moco_logits(q, key, queue, t).numpy()
    assert logits.shape == (3, 11)
    np.testing.assert_allclose(logits[:, 0], np.sum(q * key, axis=1) / t, rtol=1e-5)
    np.testing.assert_allclose(logits[:, 1:], q @ queue.T / t, rtol=1e-5)
    exact = logits.astype(np.float64)
    expected = -exact[:, 0] + np.log(np.exp(exact).sum(axis=1))
    np.testing.assert_allclose(moco_loss(logits).numpy(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("alpha", [1, 4, 256])
def test_eqco_loss_equals_the_papers_formula(alpha):
    """Zhu et al. 2020: L = -log e^{q.k+/t} / (e^{q.k+/t} + (alpha/K) sum_i e^{q.k_i/t})."""
    q, key, queue = moco_inputs(k=10)
    t = 0.2
    k_count = len(queue)
    positive = np.exp(np.sum(q * key, axis=1) / t)
    negatives = np.exp(q @ queue.T / t).sum(axis=1)
    expected = -np.log(positive / (positive + alpha / k_count * negatives))
    got = moco_loss(moco_logits(q, key, queue, t, eqco_alpha=alpha)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # the same as a margin on the positive: s+ - t*log(alpha/K)
    margin = t * math.log(alpha / k_count)
    logits = np.concatenate([(np.sum(q * key, 1, keepdims=True) - margin), q @ queue.T], axis=1) / t
    np.testing.assert_allclose(got, moco_loss(logits).numpy(), rtol=1e-5, atol=1e-6)


def test_eqco_with_alpha_equal_k_changes_nothing():
    logits = np.array([[2.0, 1.0, -1.0, 0.5]], "float32")
    np.testing.assert_allclose(eqco_shift(logits, alpha=3).numpy(), logits, atol=1e-6)
    shifted = eqco_shift(logits, alpha=1).numpy()
    np.testing.assert_allclose(shifted[:, 0], logits[:, 0])
    np.testing.assert_allclose(shifted[:, 1:], logits[:, 1:] + math.log(1 / 3), rtol=1e-6)


def test_mochi_synthetic_negatives_are_convex_mixes_of_the_hardest():
    q, _, queue = moco_inputs(b=4, k=12, d=6, seed=5)
    n, s, s_prime = 4, 16, 8
    out = {k: v.numpy() for k, v in mochi_negatives(q, queue, n, s, s_prime, seed=[3, 9]).items()}
    negatives = out["negatives"]
    assert negatives.shape == (4, s + s_prime, 6)
    np.testing.assert_allclose(np.linalg.norm(negatives, axis=-1), 1.0, rtol=1e-5)
    hardest = np.argsort(-(q @ queue.T), axis=1)[:, :n]
    assert all(set(out["hardest"][i]) == set(hardest[i]) for i in range(4))
    alpha, beta = out["alpha"], out["beta"]
    assert ((alpha >= 0) & (alpha <= 1)).all() and ((beta >= 0) & (beta <= 0.5)).all()
    assert alpha.std() > 0.1  # drawn per synthetic negative, not fixed (patchwork mixed with alpha=1)
    for i in range(4):
        for j in range(s):
            a, b = out["index_a"][i, j], out["index_b"][i, j]
            assert a in hardest[i] and b in hardest[i] and a != b
            mix = alpha[i, j] * queue[a] + (1 - alpha[i, j]) * queue[b]
            np.testing.assert_allclose(negatives[i, j], mix / np.linalg.norm(mix), rtol=1e-4, atol=1e-5)
        for j in range(s_prime):
            c = out["index_q"][i, j]
            assert c in hardest[i]
            mix = beta[i, j] * q[i] + (1 - beta[i, j]) * queue[c]
            np.testing.assert_allclose(negatives[i, s + j], mix / np.linalg.norm(mix), rtol=1e-4, atol=1e-5)
    again = mochi_negatives(q, queue, n, s, s_prime, seed=[3, 9])["negatives"].numpy()
    np.testing.assert_array_equal(again, negatives)  # stateless: same seed, same negatives


def test_mochi_negatives_enter_the_logits_without_gradient():
    q, key, queue = moco_inputs(b=2, k=8, d=4, seed=7)
    t = 0.1
    q_var = tf.Variable(q)
    with tf.GradientTape(persistent=True) as tape:
        synthetic = mochi_negatives(q_var, queue, 3, 5, 2, seed=[1, 2])["negatives"]
        logits = moco_logits(q_var, key, queue, t, synthetic=synthetic)
        total = tf.reduce_sum(synthetic)
        synthetic_logits = logits[:, 9:]
    assert tape.gradient(total, q_var) is None  # no gradient into the synthetic negatives
    assert logits.shape == (2, 1 + 8 + 7)
    np.testing.assert_allclose(logits.numpy()[:, 9:], np.einsum("bd,bsd->bs", q, synthetic.numpy()) / t, rtol=1e-5)
    # gradient still flows through the query side of the synthetic logits
    assert tape.gradient(synthetic_logits, q_var) is not None
    # EqCo counts every negative in the denominator, synthetic ones included: K = 8 + 7
    shifted = moco_logits(q_var, key, queue, t, synthetic=synthetic, eqco_alpha=5).numpy()
    np.testing.assert_allclose(shifted[:, 1:], logits.numpy()[:, 1:] + math.log(5 / 15), rtol=1e-5, atol=1e-6)


def test_mochi_draws_of_a_replica_are_its_rows_of_the_global_draws():
    q, _, queue = moco_inputs(b=6, k=12, d=4, seed=11)
    full = mochi_negatives(q, queue, 4, 5, 3, seed=[2, 7])
    for offset in (0, 3):
        part = mochi_negatives(q[offset:offset + 3], queue, 4, 5, 3, seed=[2, 7], row_offset=offset, total_rows=6)
        for key in ("negatives", "alpha", "beta", "index_a", "index_b", "index_q"):
            np.testing.assert_allclose(part[key].numpy(), full[key].numpy()[offset:offset + 3], rtol=1e-6)


# ---------------------------------------------------------------------------- DetCon's regions

def test_region_infonce_ignores_regions_missing_from_a_view():
    z = np.eye(4, dtype=np.float32)
    loss, accuracy = region_infonce(z, z, tf.constant([True, True, True, False]), 0.1)
    assert accuracy.numpy().tolist() == [1.0, 1.0, 1.0, 0.0] and loss.numpy()[3] == 0.0
    # a missing region that would be the hardest negative changes nothing
    with_twin = np.concatenate([z[:3], z[:1]])
    twin_loss, _ = region_infonce(with_twin, with_twin, tf.constant([True, True, True, False]), 0.1)
    alone, _ = region_infonce(z[:3], z[:3], tf.constant([True, True, True]), 0.1)
    np.testing.assert_allclose(twin_loss.numpy()[:3], alone.numpy(), rtol=1e-5)
    counted, _ = region_infonce(with_twin, with_twin, tf.constant([True, True, True, True]), 0.1)
    assert counted.numpy()[0] > alone.numpy()[0] + 0.5


# ---------------------------------------------------------------------------- BYOL


def test_byol_loss_is_the_symmetric_normalised_regression():
    """Grill et al. 2020, eq. (2): ||p/|p| - t/|t| ||^2, summed over both directions."""
    rng = np.random.default_rng(4)
    p1, p2, t1, t2 = (rng.normal(size=(5, 3)).astype("float32") for _ in range(4))
    expected = np.sum((unit(p1) - unit(t2)) ** 2, axis=1) + np.sum((unit(p2) - unit(t1)) ** 2, axis=1)
    np.testing.assert_allclose(byol_loss(p1, p2, t1, t2).numpy(), expected, rtol=1e-5)
    # by hand: aligned -> 0, orthogonal -> 2, opposite -> 4 (per direction)
    e1, e2 = np.array([[1.0, 0.0]], "float32"), np.array([[0.0, 2.0]], "float32")
    assert [float(byol_loss(e1, e1, a, a)[0]) for a in (3 * e1, e2, -e1)] == pytest.approx([0.0, 4.0, 8.0])


@pytest.mark.parametrize("name", ["byol", "simsiam"])
def test_the_target_branch_gets_no_gradient(name):
    """BYOL's targets and SimSiam's projections sit behind a stop-gradient: nothing flows into them."""
    rng = np.random.default_rng(5)
    p1, p2, z1, z2 = (tf.Variable(rng.normal(size=(4, 3)).astype("float32")) for _ in range(4))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum({"byol": byol_loss, "simsiam": simsiam_loss}[name](p1, p2, z1, z2))
    grads = tape.gradient(loss, [p1, p2, z1, z2])
    assert grads[2] is None and grads[3] is None  # the detached branch
    assert float(tf.reduce_max(tf.abs(grads[0]))) > 1e-3 and float(tf.reduce_max(tf.abs(grads[1]))) > 1e-3


# ---------------------------------------------------------------------------- SimSiam


def test_simsiam_loss_is_half_the_two_negative_cosines():
    """Chen & He 2021, eq. (4): D(p1, z2)/2 + D(p2, z1)/2 with D = -cos."""
    rng = np.random.default_rng(6)
    p1, p2, z1, z2 = (rng.normal(size=(5, 4)).astype("float32") for _ in range(4))
    expected = [-0.5 * unit(p1)[i] @ unit(z2)[i] - 0.5 * unit(p2)[i] @ unit(z1)[i] for i in range(5)]
    np.testing.assert_allclose(simsiam_loss(p1, p2, z1, z2).numpy(), expected, rtol=1e-5, atol=1e-6)
    e = np.eye(2, dtype="float32")
    assert simsiam_loss(e, e, e, e).numpy().tolist() == pytest.approx([-1.0, -1.0])


# ---------------------------------------------------------------------------- VICReg


def vicreg_reference(z1, z2, lam, mu, nu, gamma, eps):
    """Bardes et al. 2022, eq. (1)-(6) and Algorithm 1, with loops over dimensions."""
    n, d = z1.shape
    z1, z2 = np.asarray(z1, np.float64), np.asarray(z2, np.float64)
    invariance = np.mean((z1 - z2) ** 2)

    def v(z):
        return sum(max(0.0, gamma - math.sqrt(np.var(z[:, j], ddof=1) + eps)) for j in range(d)) / d

    def c(z):
        centred = z - z.mean(axis=0)
        cov = centred.T @ centred / (n - 1)
        return sum(cov[i, j] ** 2 for i in range(d) for j in range(d) if i != j) / d

    return lam * invariance + mu * (v(z1) + v(z2)) + nu * (c(z1) + c(z2)), invariance


def test_vicreg_loss_matches_the_written_out_formula():
    from patchcfg.pretrain.losses.vicreg import vicreg_loss

    rng = np.random.default_rng(8)
    z1 = (0.3 * rng.normal(size=(7, 5))).astype("float32")  # std below gamma: the hinge is active
    z2 = (z1 + 0.1 * rng.normal(size=(7, 5))).astype("float32")
    z1[:, 1] = 2.0 * z1[:, 0]  # a redundant dimension: covariance
    loss, terms = vicreg_loss(z1, z2, 25.0, 25.0, 1.0, 1.0, 1e-4)
    expected, invariance = vicreg_reference(z1, z2, 25.0, 25.0, 1.0, 1.0, 1e-4)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert float(terms["invariance"]) == pytest.approx(invariance, rel=1e-5)
    assert float(terms["variance"]) > 0.1 and float(terms["covariance"]) > 0.01
    # each weight scales its own term only
    only_variance, _ = vicreg_loss(z1, z2, 0.0, 1.0, 0.0, 1.0, 1e-4)
    assert float(only_variance) == pytest.approx(float(terms["variance"]), rel=1e-6)


# ---------------------------------------------------------------------------- NNCLR


def test_nnclr_picks_the_true_nearest_neighbour():
    from patchcfg.pretrain.losses.nnclr import nearest_neighbours

    rng = np.random.default_rng(10)
    support = rng.normal(size=(50, 6)).astype("float32")
    z = rng.normal(size=(9, 6)).astype("float32")
    neighbours, indices = nearest_neighbours(z, support)
    distances = np.linalg.norm(unit(z)[:, None, :] - unit(support)[None, :, :], axis=2)
    np.testing.assert_array_equal(indices.numpy(), distances.argmin(axis=1))
    np.testing.assert_allclose(neighbours.numpy(), unit(support)[distances.argmin(axis=1)], rtol=1e-5)


def test_nnclr_loss_matches_the_written_out_formula_and_the_support_set_gets_no_gradient():
    """Dwibedi et al. 2021, eq. (2): -log exp(NN(z1_i).p2_i/t) / sum_k exp(NN(z1_i).p2_k/t), both ways."""
    from patchcfg.pretrain.losses.nnclr import nnclr_loss

    rng = np.random.default_rng(11)
    z1, z2, p1, p2 = (rng.normal(size=(5, 4)).astype("float32") for _ in range(4))
    support = rng.normal(size=(12, 4)).astype("float32")
    t = 0.3

    def side(z, p):
        out = []
        for i in range(len(z)):
            nn = unit(support)[np.argmax(unit(support) @ unit(z)[i])]
            logits = unit(p) @ nn / t
            out.append(-logits[i] + math.log(np.sum(np.exp(logits))))
        return np.array(out)

    loss, hit = nnclr_loss(z1, z2, p1, p2, support, t)
    np.testing.assert_allclose(loss.numpy(), 0.5 * (side(z1, p2) + side(z2, p1)), rtol=1e-4)
    local, _ = nnclr_loss(z1[2:], z2[2:], p1[2:], p2[2:], support, t, p1_all=p1, p2_all=p2, offset=2)
    np.testing.assert_allclose(local.numpy(), loss.numpy()[2:], rtol=1e-5)
    variables = [tf.Variable(v) for v in (p1, p2, support)]
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(nnclr_loss(z1, z2, variables[0], variables[1], variables[2], t)[0])
    grads = tape.gradient(total, variables)
    assert grads[2] is None and float(tf.reduce_max(tf.abs(grads[0]))) > 1e-4


# ---------------------------------------------------------------------------- Barlow Twins


def barlow_reference(z1, z2, lam):
    """Zbontar et al. 2021, eq. (1)-(2): batch-normalised views, C_ij, on- and off-diagonal terms."""
    def bn(z):
        z = np.asarray(z, np.float64)
        return (z - z.mean(axis=0)) / np.sqrt(z.var(axis=0) + 1e-5)

    a, b = bn(z1), bn(z2)
    n, d = a.shape
    c = np.array([[sum(a[k, i] * b[k, j] for k in range(n)) / n for j in range(d)] for i in range(d)])
    return sum((1 - c[i, i]) ** 2 for i in range(d)) + lam * sum(c[i, j] ** 2 for i in range(d) for j in range(d)
                                                                 if i != j)


def test_barlow_twins_loss_matches_the_written_out_formula():
    from patchcfg.pretrain.losses.barlow_twins import barlow_twins_loss, cross_correlation

    rng = np.random.default_rng(9)
    z1 = rng.normal(size=(8, 4)).astype("float32") * [1.0, 3.0, 0.5, 2.0] + 1.0
    z2 = (z1 + 0.5 * rng.normal(size=(8, 4))).astype("float32")
    for lam in (5e-3, 1 / 4, 1.0):
        loss, _ = barlow_twins_loss(z1, z2, lam)
        assert float(loss) == pytest.approx(barlow_reference(z1, z2, lam), rel=1e-4)
    # identical, decorrelated views: C is the identity and the loss vanishes
    z = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]], "float32")
    np.testing.assert_allclose(cross_correlation(z, z).numpy(), np.eye(2), atol=1e-4)
    assert float(barlow_twins_loss(z, z, 1.0)[0]) == pytest.approx(0.0, abs=1e-6)


# ---------------------------------------------------------------------------- DetCon_B


def detcon_b_reference(p1, p2, t1, t2, valid, t, objective):
    """Per region: -log softmax of p . t_r / t at the same region (valid regions only), both ways."""
    def side(p, targets):
        out = np.zeros(len(p))
        for m in range(len(p)):
            logits = [unit(p)[m] @ unit(targets)[r] / t for r in range(len(p)) if valid[r]]
            positive = unit(p)[m] @ unit(targets)[m] / t
            out[m] = -positive + math.log(sum(math.exp(v) for v in logits))
        return out

    if objective == "byol":
        loss = np.sum((unit(p1) - unit(t2)) ** 2, axis=1) + np.sum((unit(p2) - unit(t1)) ** 2, axis=1)
    else:
        loss = side(p1, t2) + side(p2, t1)
    return loss * np.asarray(valid, float)


@pytest.mark.parametrize("objective", ["nce", "byol"])
def test_detcon_b_loss_matches_the_written_out_formula(objective):
    from patchcfg.pretrain.losses.detcon_b import detcon_b_loss

    rng = np.random.default_rng(7)
    p1, p2, t1, t2 = (rng.normal(size=(6, 4)).astype("float32") for _ in range(4))
    valid = [True, True, False, True, True, True]
    loss, hit = detcon_b_loss(p1, p2, t1, t2, tf.constant(valid), 0.2, objective)
    np.testing.assert_allclose(loss.numpy(), detcon_b_reference(p1, p2, t1, t2, valid, 0.2, objective),
                               rtol=1e-4, atol=1e-5)
    assert loss.numpy()[2] == 0.0 and hit.numpy()[2] == 0.0
    # a replica's rows against the gathered targets are its rows of the global loss
    local, _ = detcon_b_loss(p1[3:], p2[3:], t1[3:], t2[3:], tf.constant(valid[3:]), 0.2, objective,
                             t1_all=t1, t2_all=t2, valid_all=tf.constant(valid), offset=3)
    np.testing.assert_allclose(local.numpy(), loss.numpy()[3:], rtol=1e-5)
    with pytest.raises(ValueError, match="objective"):
        detcon_b_loss(p1, p2, t1, t2, tf.constant(valid), 0.2, "mse")


# ---------------------------------------------------------------------------- context encoder

def test_inpainting_loss_counts_the_hidden_pixels_and_weights_the_rest():
    from patchcfg.pretrain.context_encoder import hidden_rectangles

    x = tf.constant(np.random.default_rng(0).random((2, 16, 16, 3)), tf.float32)
    masks = hidden_rectangles(2, 16, 16, [0, 1], 0.5, "center")
    predicted = x + 0.3 * masks + 0.1 * (1 - masks)  # errors: 0.3 inside, 0.1 outside
    loss, hidden, visible = inpainting_loss(predicted, x, masks, context_weight=0.0)
    np.testing.assert_allclose(hidden.numpy(), [0.09, 0.09], rtol=1e-4)
    np.testing.assert_allclose(visible.numpy(), [0.01, 0.01], rtol=1e-4)
    np.testing.assert_allclose(loss.numpy(), hidden.numpy())
    weighted, _, _ = inpainting_loss(predicted, x, masks, context_weight=2.0)
    np.testing.assert_allclose(weighted.numpy(), [0.11, 0.11], rtol=1e-4)


# ---------------------------------------------------------------------------- the registry


def test_every_loss_module_is_documented_and_its_example_holds():
    """Each loss cites its paper (a year in its module's docstring) and its example runs as written."""
    import doctest
    import importlib
    import pkgutil
    import re

    from patchcfg.pretrain import losses

    modules = [info.name for info in pkgutil.iter_modules(losses.__path__) if info.name != "views"]
    assert {"nt_xent", "hcl", "moco_infonce", "byol", "detcon_b"} <= set(modules)
    for name in modules:
        module = importlib.import_module(f"patchcfg.pretrain.losses.{name}")
        assert re.search(r"(19|20)\d\d", module.__doc__), name
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted > 0 and result.failed == 0, (name, result)


# ---------------------------------------------------------------------------- multitask


def test_masked_task_bce_counts_only_known_labels_of_each_task():
    from patchcfg.pretrain.losses.multitask import masked_task_bce

    labels = np.array([[1, 0, -1], [-1, -1, 1], [0, -1, -1]], np.float32)
    logits = np.array([[2.0, -1.0, 5.0], [0.3, 9.0, -0.5], [1.0, 4.0, 4.0]], np.float32)

    def bce(y, x):
        return math.log(1 + math.exp(-x)) if y == 1 else math.log(1 + math.exp(x))

    task_a, task_b = (v.numpy() for v in masked_task_bce(labels, logits, [slice(0, 2), slice(2, 3)]))
    np.testing.assert_allclose(task_a, [(bce(1, 2.0) + bce(0, -1.0)) / 2, 0.0, bce(0, 1.0)], rtol=1e-5)
    np.testing.assert_allclose(task_b, [0.0, bce(1, -0.5), 0.0], rtol=1e-5)  # unknown: no loss


def test_uncertainty_weighting_is_kendalls_formula_and_zero_variance_is_the_plain_sum():
    from patchcfg.pretrain.losses.multitask import uncertainty_weighted

    losses = [tf.constant([1.0, 3.0]), tf.constant([0.5, 0.25])]
    s = tf.constant([0.7, -0.4])
    expected = [math.exp(-0.7) * a + 0.35 + math.exp(0.4) * b - 0.2 for a, b in [(1.0, 0.5), (3.0, 0.25)]]
    np.testing.assert_allclose(uncertainty_weighted(losses, s).numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(uncertainty_weighted(losses, tf.zeros(2)).numpy(), [1.5, 3.25], rtol=1e-6)
