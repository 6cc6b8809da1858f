"""Training surrogates: beta-NLL's weighting and sigma-VAE's analytic sigma, under every backend."""

from __future__ import annotations

import numpy as np
from scipy import stats

from conftest import BATCH, C, H, W
from tfp_vae.decoders import DataContext, make_decoder

CTX = DataContext(levels=256, scaling="dequantized")


def _grad(decoder, y, raw):
    """d/d raw of the summed training objective, with the backend's own value_and_grad."""
    b = decoder.backend

    def objective(r, y):
        return b.xp.sum(decoder.training_terms(y, r)[0].objective), ()

    (_, _), grad = b.value_and_grad(objective)(b.asarray(raw), b.asarray(y))
    return np.asarray(grad)


def test_beta_nll_with_beta_zero_has_the_gradients_of_the_gaussian_nll(backend, rng):
    raw = rng.normal(size=(BATCH, H, W, C, 2)).astype(np.float32)
    y = rng.uniform(size=(BATCH, H, W, C)).astype(np.float32)
    beta0 = _grad(make_decoder("beta_nll", {"beta": 0.0}, CTX, backend), y, raw)
    plain = _grad(make_decoder("learned", {}, CTX, backend), y, raw)
    np.testing.assert_allclose(beta0, plain, rtol=1e-5, atol=1e-6)


def test_beta_nll_with_beta_one_gives_the_mse_gradient_for_the_mean(backend, rng):
    """Weighting by sg(sigma^2) turns d/dmu of the NLL into (y - mu): squared error."""
    raw = rng.normal(size=(BATCH, H, W, C, 2)).astype(np.float32)
    y = rng.uniform(size=(BATCH, H, W, C)).astype(np.float32)
    grad = _grad(make_decoder("beta_nll", {"beta": 1.0}, CTX, backend), y, raw)
    np.testing.assert_allclose(grad[..., 0], y - raw[..., 0], rtol=1e-4, atol=1e-5)
    plain = _grad(make_decoder("learned", {}, CTX, backend), y, raw)
    assert not np.allclose(grad[..., 0], plain[..., 0], rtol=1e-3)  # beta = 1 really reweights


def test_beta_nll_reports_the_true_log_likelihood(backend, rng):
    raw = rng.normal(size=(BATCH, H, W, C, 2)).astype(np.float32)
    y = rng.uniform(size=(BATCH, H, W, C)).astype(np.float32)
    terms, _ = make_decoder("beta_nll", {"beta": 0.5}, CTX, backend).training_terms(
        backend.asarray(y), backend.asarray(raw)
    )
    sigma = np.logaddexp(0.0, raw[..., 1]) + np.finfo(np.float32).eps
    expected = stats.norm.logpdf(y, raw[..., 0], sigma).reshape(BATCH, -1).sum(axis=1)
    np.testing.assert_allclose(np.asarray(terms.log_lik), expected, rtol=1e-5, atol=1e-3)


def _softclipped_log_rmse(y, mu, low=-6.0):
    log_rmse = 0.5 * np.log(np.mean((y.astype(np.float64) - mu) ** 2))
    return low + np.logaddexp(0.0, log_rmse - low)


def test_sigma_vae_sigma_is_the_soft_clipped_batch_rmse(backend, rng):
    y = rng.uniform(size=(BATCH, H, W, C)).astype(np.float32)
    for spread in (0.3, 1e-4):  # well above and far below the clip at exp(-6) = 0.0025
        raw = (y + spread * rng.normal(size=y.shape)).astype(np.float32)[..., None]
        dec = make_decoder("sigma_vae", {}, CTX, backend)
        log_sigma = float(dec.batch_log_sigma(backend.asarray(y), backend.asarray(raw[..., 0])))
        expected = _softclipped_log_rmse(y, raw[..., 0])
        assert abs(log_sigma - expected) < 1e-4
        terms, _ = dec.training_terms(backend.asarray(y), backend.asarray(raw))
        ll = stats.norm.logpdf(y, raw[..., 0], np.exp(expected)).reshape(BATCH, -1).sum(axis=1)
        np.testing.assert_allclose(np.asarray(terms.objective), ll, rtol=1e-4)
    assert expected > -6.0 and expected < -5.9  # the clip is active for the tiny spread


def test_sigma_vae_evaluation_sigma_follows_training_batches(backend, rng):
    """The moving average is state the training step carries: the first batch sets it, later
    batches decay it, and evaluation uses it."""
    y = rng.uniform(size=(BATCH, H, W, C)).astype(np.float32)
    raw = (y + 0.1 * rng.normal(size=y.shape)).astype(np.float32)[..., None]
    dec = make_decoder("sigma_vae", {"ema": 0.5}, CTX, backend)
    _, state = dec.training_terms(backend.asarray(y), backend.asarray(raw))  # first batch sets the average
    first = _softclipped_log_rmse(y, raw[..., 0])
    assert abs(float(state["log_sigma_ema"]) - first) < 1e-4
    raw2 = (y + 0.02 * rng.normal(size=y.shape)).astype(np.float32)[..., None]
    _, state = dec.training_terms(backend.asarray(y), backend.asarray(raw2), state)
    expected = 0.5 * first + 0.5 * _softclipped_log_rmse(y, raw2[..., 0])
    assert abs(float(state["log_sigma_ema"]) - expected) < 1e-4
    np.testing.assert_allclose(np.asarray(dec.stddev(backend.asarray(raw), state)), np.exp(expected), rtol=1e-5)
