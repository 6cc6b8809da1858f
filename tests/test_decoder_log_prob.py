"""Every decoder's log-likelihood against scipy.stats or a closed form, per example, under every backend."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special, stats

from conftest import BATCH, C, H, W
from tfp_vae.decoders import DECODERS, DataContext, make_decoder

CTX = DataContext(levels=17, scaling="raw")


def softplus(x):
    return np.logaddexp(0.0, x) + np.finfo(np.float32).eps


def _inputs(rng, k):
    raw = rng.normal(size=(BATCH, H, W, C, k)).astype(np.float32)
    y = rng.uniform(size=(BATCH, H, W, C)).astype(np.float32)
    return raw, y


def _per_example(pixel_logpdf):
    assert pixel_logpdf.shape == (BATCH, H, W, C)
    return pixel_logpdf.reshape(BATCH, -1).sum(axis=1)


def _check(decoder, raw, y, expected_pixels, dp=None):
    b = decoder.backend
    got = np.asarray(decoder.log_lik(b.asarray(y), b.asarray(raw), dp))
    assert got.shape == (BATCH,)
    np.testing.assert_allclose(got, _per_example(expected_pixels), rtol=2e-5, atol=2e-3)


def test_fixed_is_normal_with_sigma0(backend, rng):
    raw, y = _inputs(rng, 1)
    _check(make_decoder("fixed", {"sigma0": 0.3}, CTX, backend), raw, y, stats.norm.logpdf(y, raw[..., 0], 0.3))


@pytest.mark.parametrize("link", ["softplus", "exp"])
def test_learned_is_normal_with_per_pixel_sigma(backend, rng, link):
    raw, y = _inputs(rng, 2)
    sigma = softplus(raw[..., 1]) if link == "softplus" else np.exp(raw[..., 1]) + np.finfo(np.float32).eps
    _check(make_decoder("learned", {"link": link}, CTX, backend), raw, y, stats.norm.logpdf(y, raw[..., 0], sigma))


def test_shared_uses_one_scalar_sigma(backend, rng):
    raw, y = _inputs(rng, 1)
    dec = make_decoder("shared", {"init_sigma": 0.4}, CTX, backend)
    _check(dec, raw, y, stats.norm.logpdf(y, raw[..., 0], 0.4))
    _check(dec, raw, y, stats.norm.logpdf(y, raw[..., 0], 0.25), {"log_sigma": backend.asarray(np.log(0.25))})


def test_floor_adds_xi(backend, rng):
    raw, y = _inputs(rng, 2)
    sigma = 0.05 + np.logaddexp(0.0, raw[..., 1])
    _check(make_decoder("floor", {"xi": 0.05}, CTX, backend), raw, y, stats.norm.logpdf(y, raw[..., 0], sigma))


def test_sigma_vae_evaluates_with_its_moving_average_sigma(backend, rng):
    raw, y = _inputs(rng, 1)
    dec = make_decoder("sigma_vae", {}, CTX, backend)
    _check(dec, raw, y, stats.norm.logpdf(y, raw[..., 0], 0.2), {"log_sigma_ema": backend.asarray(np.log(0.2))})


def test_beta_nll_evaluates_with_the_true_likelihood(backend, rng):
    raw, y = _inputs(rng, 2)
    _check(
        make_decoder("beta_nll", {"beta": 0.7}, CTX, backend),
        raw,
        y,
        stats.norm.logpdf(y, raw[..., 0], softplus(raw[..., 1])),
    )


def test_student_t_fixed_nu(backend, rng):
    raw, y = _inputs(rng, 2)
    _check(
        make_decoder("student_t", {"nu": 4.5}, CTX, backend),
        raw,
        y,
        stats.t.logpdf(y, df=4.5, loc=raw[..., 0], scale=softplus(raw[..., 1])),
    )


def test_student_t_learned_nu_starts_at_its_initial_value(backend, rng):
    raw, y = _inputs(rng, 2)
    dec = make_decoder("student_t", {"nu": 5.0, "learn_nu": True}, CTX, backend)
    assert abs(float(dec.nu(dec._dp(None))) - 5.0) < 1e-5
    assert list(dec.init_params()) == ["nu_raw"]
    _check(dec, raw, y, stats.t.logpdf(y, df=5.0, loc=raw[..., 0], scale=softplus(raw[..., 1])))


def test_variational_variance_predictive_is_student_t(backend, rng):
    raw, y = _inputs(rng, 3)
    alpha, beta = softplus(raw[..., 1]).astype(float), softplus(raw[..., 2]).astype(float)
    _check(
        make_decoder("variational_variance", {}, CTX, backend),
        raw,
        y,
        stats.t.logpdf(y, df=2 * alpha, loc=raw[..., 0], scale=np.sqrt(beta / alpha)),
    )


def test_variational_variance_training_term_matches_monte_carlo(backend, rng):
    """E_q[log N(x; mu, 1/lambda)] - KL(Gamma(a, b) || Gamma(a0, b0)), checked by sampling lambda."""
    raw, y = _inputs(rng, 3)
    raw[..., 1:] += 2.0  # moderate alpha, beta so the Monte Carlo error is small
    dec = make_decoder("variational_variance", {"prior_alpha": 2.0, "prior_beta": 0.5}, CTX, backend)
    got = np.asarray(dec.training_terms(backend.asarray(y), backend.asarray(raw))[0].objective)
    alpha, beta = softplus(raw[..., 1]).astype(np.float64), softplus(raw[..., 2]).astype(np.float64)
    lam = rng.gamma(alpha, 1.0 / beta, size=(20000, *alpha.shape))
    expected_ll = stats.norm.logpdf(y, raw[..., 0], 1.0 / np.sqrt(lam)).mean(axis=0)
    # KL between Gammas (shape, rate), closed form
    a0, b0 = 2.0, 0.5
    kl = (
        (alpha - a0) * special.digamma(alpha)
        - special.gammaln(alpha)
        + special.gammaln(a0)
        + a0 * (np.log(beta) - np.log(b0))
        + alpha * (b0 - beta) / beta
    )
    np.testing.assert_allclose(got, _per_example(expected_ll - kl), rtol=0, atol=0.05 * H * W * C**0.5)


def test_bernoulli_is_cross_entropy_on_intensities(backend, rng):
    raw, y = _inputs(rng, 1)
    p = special.expit(raw[..., 0].astype(np.float64))
    _check(make_decoder("bernoulli", {}, CTX, backend), raw, y, y * np.log(p) + (1 - y) * np.log1p(-p))


def test_continuous_bernoulli_has_its_normaliser(backend, rng):
    raw, y = _inputs(rng, 1)
    lam = special.expit(raw[..., 0].astype(np.float64))
    log_c = np.log(2 * np.arctanh(1 - 2 * lam) / (1 - 2 * lam))
    _check(
        make_decoder("continuous_bernoulli", {}, CTX, backend),
        raw,
        y,
        log_c + y * np.log(lam) + (1 - y) * np.log1p(-lam),
    )


@pytest.mark.parametrize("scaling", ["raw", "dequantized"])
def test_discretized_logistic_is_logistic_mass_of_each_level(backend, rng, scaling):
    levels = 17
    ctx = DataContext(levels, scaling)
    raw, _ = _inputs(rng, 2)
    raw[..., 0] = rng.uniform(-0.2, 1.2, size=raw.shape[:-1])
    k = rng.integers(0, levels, size=(BATCH, H, W, C))
    k[0, 0, 0, :] = [0, levels - 1]  # both edge bins
    y = (k / (levels - 1) if scaling == "raw" else (k + rng.uniform(size=k.shape)) / levels).astype(np.float32)
    top = levels - 1
    loc, scale = raw[..., 0].astype(np.float64) * top, softplus(raw[..., 1]).astype(np.float64) * top
    upper = np.where(k == top, 1.0, stats.logistic.cdf(k + 0.5, loc, scale))
    lower = np.where(k == 0, 0.0, stats.logistic.cdf(k - 0.5, loc, scale))
    _check(make_decoder("discretized_logistic", {}, ctx, backend), raw, y, np.log(upper - lower))


def test_discretized_logistic_sums_to_one_over_levels(backend):
    levels = 5
    dec = make_decoder("discretized_logistic", {}, DataContext(levels, "raw"), backend)
    raw = backend.asarray([[[[[0.3, -1.0]]]]])  # one pixel
    total = sum(float(np.exp(dec.log_lik(backend.asarray([[[[k / (levels - 1)]]]]), raw))[0]) for k in range(levels))
    assert abs(total - 1.0) < 1e-5


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_every_decoder_has_image_event_shape_and_broadcasts_samples(backend, rng, name):
    cls = DECODERS[name]
    dec = make_decoder(name, {}, CTX, backend)
    raw = backend.asarray(rng.normal(size=(4, BATCH, H, W, C, cls.outputs_per_pixel)).astype(np.float32))
    y = backend.asarray(rng.uniform(size=(BATCH, H, W, C)).astype(np.float32))
    dist = dec.distribution(raw)
    assert tuple(dist.event_shape) == (H, W, C)
    assert tuple(dist.batch_shape) == (4, BATCH)
    assert dec.log_lik(y, raw).shape == (4, BATCH)
    assert dec.mean(raw).shape == (4, BATCH, H, W, C)
    std = dec.stddev(raw)
    assert (std is None) == (not cls.has_scale)
    if std is not None:
        assert std.shape == (4, BATCH, H, W, C)
    if cls.has_density:
        assert dec.pixel_log_density(y, raw).shape == (4, BATCH, H, W, C)


def test_standard_deviations_match_scipy(backend, rng):
    """The spread compared with tau is the standard deviation: for Student-t scale sqrt(nu / (nu - 2)),
    sqrt(3) times the scale at nu = 3, and infinite where it does not exist."""
    raw, _ = _inputs(rng, 3)
    sd = np.asarray(make_decoder("student_t", {"nu": 3.0}, CTX, backend).stddev(backend.asarray(raw[..., :2])))
    np.testing.assert_allclose(sd, stats.t.std(3.0, scale=softplus(raw[..., 1]).astype(float)), rtol=1e-5)
    raw[0, 0, 0, 0, 1] = -5.0  # alpha = softplus(-5) < 1: df = 2 alpha <= 2 has no variance
    alpha, beta = softplus(raw[..., 1]).astype(float), softplus(raw[..., 2]).astype(float)
    sd = np.asarray(make_decoder("variational_variance", {}, CTX, backend).stddev(backend.asarray(raw)))
    expected = stats.t.std(2 * alpha, scale=np.sqrt(beta / alpha))
    assert np.isinf(sd[0, 0, 0, 0]) and not np.isfinite(expected[0, 0, 0, 0])
    finite = alpha > 1
    np.testing.assert_allclose(sd[finite], expected[finite], rtol=1e-4)


@pytest.mark.parametrize("scaling", ["raw", "dequantized"])
def test_pixel_log_density_is_the_density_on_the_unit_scale(backend, rng, scaling):
    """Continuous decoders: the per-pixel log density (scipy). Discretized logistic: log(pmf / bin),
    which can never exceed log(1 / bin)."""
    ctx = DataContext(levels=17, scaling=scaling)
    raw, y = _inputs(rng, 2)
    got = np.asarray(
        make_decoder("learned", {}, ctx, backend).pixel_log_density(backend.asarray(y), backend.asarray(raw))
    )
    np.testing.assert_allclose(got, stats.norm.logpdf(y, raw[..., 0], softplus(raw[..., 1])), rtol=1e-5, atol=1e-5)
    dec = make_decoder("discretized_logistic", {}, ctx, backend)
    got = np.asarray(dec.pixel_log_density(backend.asarray(y), backend.asarray(raw)))
    one_pixel = np.asarray(dec._distribution(backend.asarray(raw), {}).log_prob(dec.target(backend.asarray(y))))
    np.testing.assert_allclose(got, one_pixel - np.log(ctx.bin_width), rtol=1e-6, atol=1e-5)
    assert np.all(got <= -np.log(ctx.bin_width) + 1e-6)


def test_sum_image_sums_each_example_over_its_pixels_in_float32(backend, rng):
    """The per-example sum every likelihood takes (a matrix-vector product on XLA backends):
    the float64 sum of each example's pixels to float32 rounding, with one and two leading axes,
    and with values of mixed sign and size, where a reduced-precision product would be off."""
    for lead in [(BATCH,), (2, BATCH)]:
        x = (rng.normal(size=(*lead, H, W, C)) * 10.0 ** rng.integers(-3, 4, size=(*lead, H, W, C))).astype(np.float32)
        got = np.asarray(backend.xp.sum_image(backend.asarray(x)))
        expected = x.astype(np.float64).reshape(*lead, -1).sum(-1)
        assert got.shape == lead
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6 * np.abs(x).reshape(*lead, -1).sum(-1).max())


def test_continuous_bernoulli_can_pass_the_excess_density_limit_only_at_exactly_0_and_1(backend):
    """On 8-bit raw pixels its density at an interior level k / 255 is at most about
    1 / (e min(x, 1 - x)) <= 255 / e over all logits, below 2 / bin = 510: so every pixel
    such a run flags is exactly 0 or 1, where the density grows like |logit| without bound."""
    ctx = DataContext(levels=256, scaling="raw")
    limit = np.log(2.0 / ctx.bin_width)
    dec = make_decoder("continuous_bernoulli", {}, ctx, backend)
    logits = np.linspace(-3000.0, 3000.0, 60001, dtype=np.float32)
    x = np.array([0, 1, 2, 128, 253, 254, 255], np.float32) / 255.0
    y, raw = np.broadcast_arrays(x[:, None], logits[None, :])
    b = backend
    got = np.asarray(
        dec.pixel_log_density(b.asarray(np.ascontiguousarray(y)), b.asarray(np.ascontiguousarray(raw)[..., None])),
        np.float64,
    )
    eta, xx = raw.astype(np.float64), y.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):  # eta = 0 is the uniform density, 1
        closed = np.where(
            eta == 0, 0.0, np.log(np.abs(eta)) + eta * xx - np.maximum(eta, 0.0) - np.log(-np.expm1(-np.abs(eta)))
        )
    peak, interior = got.max(axis=1), (x > 0) & (x < 1)
    np.testing.assert_allclose(peak, closed.max(axis=1), atol=0.02)
    edge = np.minimum(x[interior], 1 - x[interior]).astype(np.float64)
    assert np.all(peak[interior] <= np.maximum(-np.log(np.e * edge), 0.0) + 0.02)
    assert np.all(peak[interior] < limit - 1.5)
    assert np.all(peak[~interior] > limit + 1.0)


def test_student_t_pixel_decodes_each_pixels_degrees_of_freedom(backend, rng):
    raw, y = _inputs(rng, 3)
    nu = 3.0 + np.logaddexp(0.0, raw[..., 1].astype(np.float64))
    _check(
        make_decoder("student_t_pixel", {}, CTX, backend),
        raw,
        y,
        stats.t.logpdf(y, df=nu, loc=raw[..., 0], scale=softplus(raw[..., 2])),
    )


def test_map_precision_trains_with_a_gamma_log_prior_on_each_precision(backend, rng):
    """Training term: log N(y; mu, sigma) + log Gamma(sigma^-2; a, rate b), per pixel; evaluated
    likelihood: the Normal alone."""
    raw, y = _inputs(rng, 2)
    dec = make_decoder("map_precision", {"prior_alpha": 3.0, "prior_beta": 0.002}, CTX, backend)
    sigma = softplus(raw[..., 1]).astype(np.float64)
    normal = stats.norm.logpdf(y, raw[..., 0], sigma)
    _check(dec, raw, y, normal)
    got = np.asarray(dec.training_terms(backend.asarray(y), backend.asarray(raw))[0].objective)
    prior = stats.gamma.logpdf(sigma**-2.0, a=3.0, scale=1.0 / 0.002)
    np.testing.assert_allclose(got, _per_example(normal + prior), rtol=2e-5, atol=2e-3)
