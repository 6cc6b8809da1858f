"""The 2023 remedies against their definitions: the faithful decoder (its mean learns exactly as
under a unit variance, its variance reaches neither the mean nor the encoder), the natural-parameter
Gaussian (its density and gradients are the mean-variance Gaussian's), and the variance warm-up
(the variance does not move before it ends, and does after)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from conftest import BATCH, C, H, W
from tfp_vae.config import NetworkSpec
from tfp_vae.decoders import DataContext, make_decoder
from tfp_vae.errors import ConfigError
from tfp_vae.model import VAE
from tfp_vae.networks import Architecture
from tfp_vae.steps import init_carry, make_train_epoch, multiplier_tree

CTX = DataContext(levels=17, scaling="raw")
LATENT = 5


def softplus(x):
    return np.logaddexp(0.0, np.asarray(x, np.float64)) + np.finfo(np.float32).eps


def _model(backend, decoder, **network):
    likelihood = make_decoder(decoder, {}, CTX, backend)
    net = NetworkSpec(**{"hidden": (6,), "latent": LATENT, **network})
    return VAE(
        Architecture(net, (H, W, C), likelihood.outputs_per_pixel, detach_heads=likelihood.detach_heads), likelihood
    )


def _inputs(rng, k=2):
    return (
        rng.normal(size=(BATCH, H, W, C, k)).astype(np.float32),
        rng.uniform(size=(BATCH, H, W, C)).astype(np.float32),
    )


def test_natural_density_is_the_gaussian_of_its_mean_and_variance(backend, rng):
    raw, y = _inputs(rng)
    dec = make_decoder("natural", {}, CTX, backend)
    precision = softplus(raw[..., 1])  # eta2 = -precision / 2
    mu, sigma = raw[..., 0] / precision, precision**-0.5
    got = np.asarray(dec.log_lik(backend.asarray(y), backend.asarray(raw)))
    expected = stats.norm.logpdf(y, mu, sigma).reshape(BATCH, -1).sum(1)
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-3)
    np.testing.assert_allclose(np.asarray(dec.mean(backend.asarray(raw))), mu, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(dec.stddev(backend.asarray(raw))), sigma, rtol=1e-5, atol=1e-6)


def test_natural_gradients_are_the_mean_variance_forms(backend, rng):
    """d/draw of the natural-form log-likelihood equals that of Normal(mu(raw), sigma(raw))."""
    raw, y = _inputs(rng)
    dec = make_decoder("natural", {}, CTX, backend)
    xp, tfd, yb = backend.xp, backend.tfd, backend.asarray(y)

    def natural(params):
        return xp.sum(dec.log_lik(yb, params["raw"]), 0), ()

    def mean_variance(params):
        precision = softplus_xp(xp, params["raw"][..., 1])
        normal = tfd.Normal(params["raw"][..., 0] / precision, 1.0 / xp.sqrt(precision))
        return xp.sum(xp.sum_image(normal.log_prob(yb)), 0), ()

    (_, _), g_nat = backend.value_and_grad(natural)({"raw": backend.asarray(raw)})
    (_, _), g_mv = backend.value_and_grad(mean_variance)({"raw": backend.asarray(raw)})
    np.testing.assert_allclose(np.asarray(g_nat["raw"]), np.asarray(g_mv["raw"]), rtol=1e-3, atol=1e-3)


def softplus_xp(xp, x):
    return xp.softplus(x) + float(np.finfo(np.float32).eps)


def test_faithful_density_and_objective(backend, rng):
    raw, y = _inputs(rng)
    dec = make_decoder("faithful", {}, CTX, backend)
    sigma = softplus(raw[..., 1])
    got = np.asarray(dec.log_lik(backend.asarray(y), backend.asarray(raw)))
    np.testing.assert_allclose(
        got, stats.norm.logpdf(y, raw[..., 0], sigma).reshape(BATCH, -1).sum(1), rtol=2e-5, atol=2e-3
    )
    objective = np.asarray(dec.training_terms(backend.asarray(y), backend.asarray(raw))[0].objective)
    expected = stats.norm.logpdf(y, raw[..., 0], 1.0) + stats.norm.logpdf(y, raw[..., 0], sigma)
    np.testing.assert_allclose(objective, expected.reshape(BATCH, -1).sum(1), rtol=2e-5, atol=2e-3)


def _mean_parameters(params):
    """The encoder, the decoder's hidden layers and the mean block of its last layer."""
    pixels = H * W * C
    dense = params["decoder"]["dense"]
    last = {"w": np.asarray(dense[-1]["w"])[:, :pixels], "b": np.asarray(dense[-1]["b"])[:pixels]}
    return params["encoder"], dense[:-1], last


def _leaves(tree):
    if isinstance(tree, dict):
        return [leaf for k in sorted(tree) for leaf in _leaves(tree[k])]
    if isinstance(tree, (list, tuple)):
        return [leaf for v in tree for leaf in _leaves(v)]
    return [np.asarray(tree)]


def _train(backend, model, init, x, steps=6):
    opt_init, epoch = make_train_epoch(backend, model, "raw", CTX.levels, 1e-2, multiplier_tree(model, init), "xla")
    params = backend.tree_map(backend.asarray, init)
    rows = np.arange(steps * BATCH, dtype=np.int32).reshape(steps, BATCH) % len(x)
    seeds = np.arange(steps * 4, dtype=np.int32).reshape(steps, 2, 2)
    out = epoch(
        params,
        opt_init(params),
        init_carry(backend, model),
        backend.asarray(x),
        backend.asarray(rows),
        backend.asarray(seeds),
    )
    return backend.tree_map(lambda a: np.asarray(backend.to_numpy(a)), out[0])


@pytest.mark.slow
def test_faithful_mean_learns_exactly_as_a_unit_variance_and_its_variance_reaches_nothing_else(backend, rng):
    """Faithful and fixed (sigma 1) from the same mean parameters and seeds: after Adam steps their
    encoders, decoder trunks and mean outputs are equal; faithful's variance block has moved."""
    faithful, fixed = _model(backend, "faithful"), _model(backend, "fixed")
    start = faithful.init(0)
    pixels = H * W * C
    fixed_start = fixed.init(0)
    fixed_start["encoder"], fixed_start["decoder"]["dense"][:-1] = start["encoder"], start["decoder"]["dense"][:-1]
    fixed_start["decoder"]["dense"][-1] = {
        "w": start["decoder"]["dense"][-1]["w"][:, :pixels].copy(),
        "b": start["decoder"]["dense"][-1]["b"][:pixels].copy(),
    }
    x = rng.integers(0, CTX.levels, size=(12, H, W, C)).astype(np.float32)
    after_faithful, after_fixed = _train(backend, faithful, start, x), _train(backend, fixed, fixed_start, x)
    for a, b in zip(_leaves(_mean_parameters(after_faithful)), _leaves(_mean_parameters(after_fixed))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    moved = np.abs(
        after_faithful["decoder"]["dense"][-1]["w"][:, pixels:] - start["decoder"]["dense"][-1]["w"][:, pixels:]
    )
    assert moved.max() > 1e-4, "the variance head learns"
    trunk_moved = np.abs(after_faithful["decoder"]["dense"][0]["w"] - start["decoder"]["dense"][0]["w"]).max()
    assert trunk_moved > 1e-4, "the comparison is not vacuous: the trunk trains"


@pytest.mark.slow
def test_variance_warmup_holds_the_variance_network_then_releases_it(backend, rng):
    model = _model(backend, "learned", split_decoder=True)
    init = model.init(0)
    mult = multiplier_tree(model, init)
    opt_init, warm = make_train_epoch(backend, model, "raw", CTX.levels, 1e-2, mult, "xla", warmup=True)
    _, run = make_train_epoch(backend, model, "raw", CTX.levels, 1e-2, mult, "xla")
    x = backend.asarray(rng.integers(0, CTX.levels, size=(12, H, W, C)).astype(np.float32))
    rows = backend.asarray(np.arange(12, dtype=np.int32).reshape(4, BATCH))
    seeds = backend.asarray(np.arange(16, dtype=np.int32).reshape(4, 2, 2))
    params = backend.tree_map(backend.asarray, init)
    state = (params, opt_init(params), init_carry(backend, model))
    after_warm = warm(*state, x, rows, seeds)[:3]
    tower = lambda p, j: _leaves(backend.tree_map(lambda a: np.asarray(backend.to_numpy(a)), p)["decoder"]["towers"][j])
    for a, b in zip(tower(after_warm[0], 1), tower(params, 1)):
        np.testing.assert_array_equal(a, b)  # the variance network did not move at all
    assert max(np.abs(a - b).max() for a, b in zip(tower(after_warm[0], 0), tower(params, 0))) > 1e-4
    after = run(*after_warm, x, rows, seeds)[0]
    assert max(np.abs(a - b).max() for a, b in zip(tower(after, 1), tower(params, 1))) > 1e-4


def test_warmup_is_refused_for_a_decoder_without_a_per_pixel_variance():
    from conftest import tiny_spec

    with pytest.raises(ConfigError, match=r"variance_warmup_epochs = 2 .* 0 for decoder 'shared'.*learned"):
        tiny_spec(decoder="shared", train={"variance_warmup_epochs": 2})
    assert tiny_spec(decoder="faithful", train={"variance_warmup_epochs": 2}).train.variance_warmup_epochs == 2
