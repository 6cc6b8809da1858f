"""The two closed forms the suite writes out instead of asking TFP's distribution objects, each
against TFP's own under every backend, and where they differ on purpose."""

from __future__ import annotations

import math

import numpy as np

from conftest import tiny_spec
from tfp_vae.decoders import DataContext
from tfp_vae.decoders.heavy_tailed import t_stddev
from tfp_vae.model import Posterior
from tfp_vae.run import build_model


def test_latent_kl_equals_tfps_kl_divergence(backend, rng):
    """KL(N(mu, sigma^2) || N(0, 1)) per latent dimension: the model's closed form and
    tfd.kl_divergence of two tfd.Normal agree to float32 rounding."""
    mu = rng.normal(0.0, 2.0, (3, 5)).astype(np.float32)
    sigma = np.exp(rng.normal(0.0, 1.0, (3, 5))).astype(np.float32)
    q = Posterior(backend.asarray(mu), backend.asarray(sigma))
    model = build_model(tiny_spec(backend=backend.name), (8, 8, 1), DataContext(17, "raw"), backend)
    ours = np.asarray(model.kl_to_standard_normal(q))
    tfd = backend.tfd
    theirs = np.asarray(
        tfd.kl_divergence(tfd.Normal(backend.asarray(mu), backend.asarray(sigma)), tfd.Normal(0.0, 1.0))
    )
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_student_t_stddev_equals_tfps_where_it_exists_and_is_infinite_where_tfp_says_nan(backend):
    """tfd.StudentT.stddev is scale sqrt(df / (df - 2)) for df > 2, inf for 1 < df <= 2 and NaN for
    df <= 1 (allow_nan_stats). The collapse metrics count standard deviations below tau, for which an
    undefined spread must count as unbounded, not as NaN: that is the one place t_stddev differs."""
    df = np.array([0.6, 1.0, 1.5, 2.0, 2.5, 3.0, 30.0], np.float32)
    scale = np.full_like(df, 0.3)
    ours = np.asarray(t_stddev(backend.xp, backend.asarray(df), backend.asarray(scale)))
    theirs = np.asarray(backend.tfd.StudentT(df=df, loc=0.0, scale=scale).stddev())
    exists = df > 2
    np.testing.assert_allclose(ours[exists], theirs[exists], rtol=1e-6)
    np.testing.assert_allclose(ours[exists], 0.3 * np.sqrt(df[exists] / (df[exists] - 2)), rtol=1e-6)
    assert np.isinf(ours[~exists]).all()
    assert np.isinf(theirs[(df > 1) & ~exists]).all() and np.isnan(theirs[df <= 1]).all()
    assert math.isclose(float(ours[-2]), 0.3 * math.sqrt(3.0), rel_tol=1e-6)
