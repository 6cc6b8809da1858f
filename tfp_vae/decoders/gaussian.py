"""Gaussian decoders: fixed, learned, shared, sigma-VAE, floored and beta-NLL."""

from __future__ import annotations

import math

from tfp_vae.decoders.base import EPS32, Decoder, Param, TrainingTerms, positive

LINK = Param("link", "softplus", "map from raw output to sigma", kind=str, choices=("softplus", "exp"))


class GaussianDecoder(Decoder):
    """Normal(mu, sigma) per pixel; subclasses say where sigma comes from."""

    def _sigma(self, raw, dp):
        raise NotImplementedError

    def stddev(self, raw, dp=None):
        return self.xp.broadcast_to(self._sigma(raw, self._dp(dp)), tuple(raw.shape[:-1]))

    def _distribution(self, raw, dp):
        return self.tfd.Normal(loc=raw[..., 0], scale=self._sigma(raw, dp))


class Fixed(GaussianDecoder):
    name = "fixed"
    source = "standard practice (sigma0 = 1 is plain squared error)"
    summary = "Normal(mu, sigma0) with a constant sigma0"
    params = (Param("sigma0", 1.0, "the constant decoder scale", low=0.0),)

    def _sigma(self, raw, dp):
        return self.xp.full((), self.hyper["sigma0"])


class Learned(GaussianDecoder):
    warmup = True
    name = "learned"
    source = "Kingma & Welling 2014, Appendix C.2"
    summary = "Normal(mu, sigma(z)) per pixel, no floor but dtype eps"
    params = (LINK,)
    outputs_per_pixel = 2

    def _sigma(self, raw, dp):
        return positive(self.xp, raw[..., 1], self.hyper["link"])


class Shared(GaussianDecoder):
    name = "shared"
    source = "Dai & Wipf 2019 (gamma); sigma-VAE (learned)"
    summary = "Normal(mu, sigma) with one learned scalar sigma for all pixels"
    params = (
        Param("init_sigma", 1.0, "initial value of the shared sigma", low=0.0),
        # Adam moves a parameter by at most about lr per step. log sigma starts about 2 nats
        # from its optimum (sigma* = rmse, 0.1-0.2 on images), so at lr 1e-3 it needs ~2,000
        # steps; a multiplier of 30 lets it arrive in under 100 and still tracks within ~3 %.
        Param("lr_multiplier", 30.0, "learning-rate multiplier of log sigma (a single scalar)", low=0.0),
    )

    def init_params(self):
        return {"log_sigma": math.log(self.hyper["init_sigma"])}

    def lr_multipliers(self):
        return {"log_sigma": self.hyper["lr_multiplier"]}

    def _sigma(self, raw, dp):
        return self.xp.exp(dp["log_sigma"]) + EPS32

    def global_scale(self, dp=None):
        return self._sigma(None, self._dp(dp))


def softclip(xp, t, low: float):
    """Smooth lower bound: low + softplus(t - low) (Rybkin et al. 2021)."""
    return low + xp.softplus(t - low)


class SigmaVAE(GaussianDecoder):
    """Optimal shared sigma: sigma*^2 = MSE of the batch, log sigma soft-clipped.

    In training sigma* is computed from the batch, as in the paper. A density used
    for evaluation must not depend on the test image itself, so evaluation uses
    `log_sigma_ema`, an exponential moving average of the training batches' log sigma*,
    carried as state by the training step.
    """

    name = "sigma_vae"
    source = "Rybkin, Daniilidis & Levine, ICML 2021"
    summary = "Normal(mu, sigma*) with sigma*^2 = batch MSE, log sigma soft-clipped at min_log_sigma"
    params = (
        Param("min_log_sigma", -6.0, "soft clip of log sigma*", low=None, high=None),
        Param(
            "ema",
            0.99,
            "decay of the moving average of log sigma* used at evaluation",
            low=0.0,
            low_inclusive=True,
            high=1.0,
            high_inclusive=False,
        ),
    )

    def init_state(self):
        return {"log_sigma_ema": 0.0, "seen": 0.0}

    def batch_log_sigma(self, y, mu):
        """Soft-clipped log of the batch RMSE of mu against y (all pixels, all examples)."""
        mse = self.xp.mean(self.xp.square(y - mu))
        return softclip(self.xp, 0.5 * self.xp.log(mse), self.hyper["min_log_sigma"])

    def training_terms(self, y, raw, dp=None):
        dp = self._dp(dp)
        xp, mu, x = self.xp, raw[..., 0], self.target(y)
        log_sigma = self.batch_log_sigma(x, mu)
        decay = xp.where(dp["seen"] > 0, self.hyper["ema"], 0.0)
        ema = decay * dp["log_sigma_ema"] + (1.0 - decay) * xp.stop_gradient(log_sigma)
        ll = xp.sum_image(self.tfd.Normal(mu, xp.exp(log_sigma)).log_prob(x))
        return TrainingTerms(ll, ll), {"log_sigma_ema": ema, "seen": xp.full((), 1.0)}

    def _sigma(self, raw, dp):
        return self.xp.exp(dp["log_sigma_ema"])


class Floor(GaussianDecoder):
    warmup = True
    name = "floor"
    source = "Mattei & Frellsen 2018 (bounded eigenvalues)"
    summary = "Normal(mu, xi + softplus(.)) per pixel"
    params = (Param("xi", 0.01, "the variance floor added to sigma", low=0.0),)
    outputs_per_pixel = 2

    def _sigma(self, raw, dp):
        return self.hyper["xi"] + self.xp.softplus(raw[..., 1])


class BetaNLL(GaussianDecoder):
    """Per-pixel NLL weighted by stop_gradient(sigma^(2 beta)); evaluated with the true likelihood."""

    warmup = True
    name = "beta_nll"
    source = "Seitzer et al., ICLR 2022"
    summary = "Normal(mu, sigma(z)) trained with NLL weighted by sg(sigma^(2 beta))"
    params = (Param("beta", 0.5, "exponent of the weight", low=0.0, low_inclusive=True, high=1.0), LINK)
    outputs_per_pixel = 2

    def _sigma(self, raw, dp):
        return positive(self.xp, raw[..., 1], self.hyper["link"])

    def training_terms(self, y, raw, dp=None):
        xp = self.xp
        sigma = self._sigma(raw, dp)
        pixel_ll = self.tfd.Normal(raw[..., 0], sigma).log_prob(self.target(y))
        weight = xp.stop_gradient(sigma ** (2.0 * self.hyper["beta"]))
        return TrainingTerms(xp.sum_image(weight * pixel_ll), xp.sum_image(pixel_ll)), {}


class MapPrecision(GaussianDecoder):
    """A per-pixel learned Normal whose training objective adds the log density of each pixel's
    precision sigma^-2 under a Gamma(a, b) prior (a MAP estimate of the precision); evaluated with
    the Normal alone."""

    warmup = True
    name = "map_precision"
    source = "Takahashi et al., IJCAI 2018 (MAP-VAE), as run by Stirn & Knowles 2020"
    summary = "Normal(mu, sigma(z)) trained with + sum log Gamma(sigma^-2; a, b), the MAP-VAE"
    params = (
        Param("prior_alpha", 3.0, "shape a of the Gamma prior on each pixel's precision", low=0.0),
        Param("prior_beta", 0.002, "rate b of the Gamma prior on each pixel's precision", low=0.0),
        LINK,
    )
    outputs_per_pixel = 2

    def _sigma(self, raw, dp):
        return positive(self.xp, raw[..., 1], self.hyper["link"])

    def training_terms(self, y, raw, dp=None):
        xp = self.xp
        sigma = self._sigma(raw, dp)
        ll = xp.sum_image(self.tfd.Normal(raw[..., 0], sigma).log_prob(self.target(y)))
        prior = self.tfd.Gamma(xp.full((), self.hyper["prior_alpha"]), xp.full((), self.hyper["prior_beta"]))
        log_prior = xp.sum_image(prior.log_prob(1.0 / xp.square(sigma)))
        return TrainingTerms(ll + log_prior, ll), {}
