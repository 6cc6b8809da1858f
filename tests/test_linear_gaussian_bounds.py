"""A linear Gaussian decoder with fixed sigma has a closed-form marginal likelihood:
x ~ N(b, W^T W + sigma0^2 I). The ELBO has a closed form too. The estimators must
agree with both, and elbo <= iwae_ll(K) <= log p(x) must hold within Monte Carlo error."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from conftest import BATCH, C, H, W
from tfp_vae.backends import COMPILERS
from tfp_vae.config import NetworkSpec
from tfp_vae.decoders import DataContext, make_decoder
from tfp_vae.eval_data import Trained
from tfp_vae.model import VAE
from tfp_vae.networks import Architecture
from tfp_vae.steps import EvalFunctions

LATENT, SIGMA0 = 5, 0.5
D = H * W * C


@pytest.fixture
def linear_model(backend, rng):
    """A linear decoder z W + b with the exact posterior mean and the KL-optimal mean-field scale,
    set directly in the parameter pytree."""
    lik = make_decoder("fixed", {"sigma0": SIGMA0}, DataContext(17, "raw"), backend)
    model = VAE(Architecture(NetworkSpec(kind="mlp", hidden=(), latent=LATENT), (H, W, C), 1), lik)
    params = model.init(0)
    w = rng.normal(size=(LATENT, D)) * 0.6
    b = rng.normal(size=D) * 0.1
    params["decoder"]["dense"][0] = {"w": w.astype(np.float32), "b": b.astype(np.float32)}
    # q(z|x): the exact posterior mean and the KL-optimal mean-field scale 1/sqrt(diag(S^-1))
    s_inv = np.eye(LATENT) + w @ w.T / SIGMA0**2
    s = np.linalg.inv(s_inv)
    q_sigma = 1.0 / np.sqrt(np.diag(s_inv))
    pre = np.log(np.expm1(q_sigma - 1e-6))
    params["encoder"]["dense"][0] = {
        "w": np.concatenate([w.T @ s / SIGMA0**2, np.zeros((D, LATENT))], axis=1).astype(np.float32),
        "b": np.concatenate([-(b @ w.T @ s) / SIGMA0**2, pre]).astype(np.float32),
    }
    x = rng.normal(size=(BATCH, LATENT)) @ w + b + SIGMA0 * rng.normal(size=(BATCH, D))
    marginal = stats.multivariate_normal(b, w.T @ w + SIGMA0**2 * np.eye(D)).logpdf(x)
    q_mu = (x - b) @ w.T @ s / SIGMA0**2
    expected_sq = np.sum((x - b - q_mu @ w) ** 2, axis=1) + np.sum((q_sigma**2) * np.sum(w**2, axis=1))
    recon = -0.5 * D * np.log(2 * np.pi * SIGMA0**2) - expected_sq / (2 * SIGMA0**2)
    kl = 0.5 * np.sum(q_mu**2 + q_sigma**2 - 1 - 2 * np.log(q_sigma), axis=1)
    y = x.reshape(BATCH, H, W, C).astype(np.float32)
    trained = Trained(backend.tree_map(backend.asarray, params), {})
    return backend, model, trained, y, marginal, recon - kl


def _evals(linear_model, xla, k, chunk, lppl=1):
    """xla False: the backend's other compiler where it has one (TensorFlow's graph), else XLA."""
    backend, model = linear_model[:2]
    compiler = "xla" if xla else COMPILERS[backend.name][-1]
    return EvalFunctions(backend, model, compiler=compiler, iwae_k=k, k_chunk=chunk, lppl_samples=lppl)


def _repeat(linear_model, fn, reps):
    backend, _, trained, y = linear_model[:4]
    return np.stack(
        [
            np.asarray(
                fn(trained.params, trained.dstate, backend.asarray(y), backend.asarray(np.array([7, r], np.int32)))
            )
            for r in range(reps)
        ]
    )


def test_elbo_estimate_matches_closed_form(linear_model):
    elbo_exact = linear_model[-1]
    est = _repeat(linear_model, _evals(linear_model, False, 1, 1).elbo, 400)
    se = est.std(axis=0) / np.sqrt(len(est))
    assert np.all(np.abs(est.mean(axis=0) - elbo_exact) < 4 * se + 1e-3)


@pytest.mark.slow
def test_iwae_rises_with_k_and_stays_below_the_marginal(linear_model):
    marginal, elbo_exact = linear_model[-2:]
    assert np.all(elbo_exact < marginal)  # the posterior is not mean-field: a real gap to close
    means, ses = [], []
    for k in (1, 10, 100, 1000):
        est = _repeat(linear_model, _evals(linear_model, True, k, 64).iwae, 30).astype(np.float64)
        means.append(est.mean(axis=0))
        ses.append(est.std(axis=0) / np.sqrt(len(est)) + 1e-4)
    means, ses = np.array(means), np.array(ses)
    assert np.all(np.abs(means[0] - elbo_exact) < 4 * ses[0] + 1e-3)  # K = 1 is the ELBO
    assert np.all(np.diff(means, axis=0) > -3 * (ses[1:] + ses[:-1]))  # rises with K
    assert np.all(means < marginal + 3 * ses)  # never above the truth
    gap_1, gap_1000 = marginal - means[0], marginal - means[-1]
    assert np.all(gap_1000 < 0.2 * gap_1)  # and approaches it


def test_iwae_at_k_5000_is_chunked_and_close_to_the_marginal(linear_model):
    backend, _, trained, y, marginal, _ = linear_model
    iwae = _evals(linear_model, True, 5000, 500).iwae
    est = np.asarray(
        iwae(trained.params, trained.dstate, backend.asarray(y), backend.asarray(np.array([3, 4], np.int32)))
    )
    np.testing.assert_allclose(est, marginal, atol=0.05)


def test_lppl_is_log_mean_of_likelihoods(linear_model):
    """With S = 1 the posterior predictive is log p(x|z) at one z ~ q: its mean is the
    closed-form expected reconstruction term, elbo + KL."""
    backend, model, trained, y, _, elbo_exact = linear_model
    est = _repeat(linear_model, _evals(linear_model, False, 1, 1).lppl, 300)
    q = model.posterior(trained.params, backend.asarray(y))
    kl = np.asarray(model.kl_to_standard_normal(q)).sum(axis=1)
    se = est.std(axis=0) / np.sqrt(len(est))
    assert np.all(np.abs(est.mean(axis=0) - (elbo_exact + kl)) < 4 * se + 1e-3)
