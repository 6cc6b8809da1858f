"""Gaussian decoders: fixed, learned, shared, sigma-VAE, floored and beta-NLL."""

from __future__ import annotations

import math

import tensorflow as tf

from tfp_vae.decoders.base import EPS32, Decoder, Param, TrainingTerms, positive, tfd

LINK = Param("link", "softplus", "map from raw output to sigma", kind=str, choices=("softplus", "exp"))


class GaussianDecoder(Decoder):
    """Normal(mu, sigma) per pixel; subclasses say where sigma comes from."""

    def _sigma(self, raw: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError

    def stddev(self, raw: tf.Tensor) -> tf.Tensor:
        return tf.broadcast_to(self._sigma(raw), tf.shape(raw)[:-1])

    def _distribution(self, raw: tf.Tensor) -> tfd.Distribution:
        return tfd.Normal(loc=raw[..., 0], scale=self._sigma(raw))


class Fixed(GaussianDecoder):
    name = "fixed"
    source = "standard practice (sigma0 = 1 is plain squared error)"
    summary = "Normal(mu, sigma0) with a constant sigma0"
    params = (Param("sigma0", 1.0, "the constant decoder scale", low=0.0),)

    def _sigma(self, raw):
        return tf.constant(self.hyper["sigma0"], raw.dtype)


class Learned(GaussianDecoder):
    name = "learned"
    source = "Kingma & Welling 2014, Appendix C.2"
    summary = "Normal(mu, sigma(z)) per pixel, no floor but dtype eps"
    params = (LINK,)
    outputs_per_pixel = 2

    def _sigma(self, raw):
        return positive(raw[..., 1], self.hyper["link"])


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

    def __init__(self, hyper, data):
        super().__init__(hyper, data)
        self.log_sigma = tf.Variable(math.log(self.hyper["init_sigma"]), dtype=tf.float32, name="log_sigma")

    def _sigma(self, raw):
        return tf.exp(tf.cast(self.log_sigma, raw.dtype)) + EPS32

    def global_scale(self):
        return tf.exp(self.log_sigma) + EPS32

    def lr_multipliers(self):
        return {id(self.log_sigma): self.hyper["lr_multiplier"]}


def softclip(t: tf.Tensor, low: float) -> tf.Tensor:
    """Smooth lower bound: low + softplus(t - low) (Rybkin et al. 2021)."""
    return low + tf.math.softplus(t - low)


class SigmaVAE(GaussianDecoder):
    """Optimal shared sigma: sigma*^2 = MSE of the batch, log sigma soft-clipped.

    In training sigma* is computed from the batch, as in the paper. A density used
    for evaluation must not depend on the test image itself, so evaluation uses
    `log_sigma_ema`, an exponential moving average of the training batches' log sigma*.
    """

    name = "sigma_vae"
    source = "Rybkin, Daniilidis & Levine, ICML 2021"
    summary = "Normal(mu, sigma*) with sigma*^2 = batch MSE, log sigma soft-clipped at min_log_sigma"
    params = (
        Param("min_log_sigma", -6.0, "soft clip of log sigma*", low=None, high=None),
        Param("ema", 0.99, "decay of the moving average of log sigma* used at evaluation", low=0.0, low_inclusive=True, high=1.0, high_inclusive=False),
    )

    def __init__(self, hyper, data):
        super().__init__(hyper, data)
        self.log_sigma_ema = tf.Variable(0.0, dtype=tf.float32, trainable=False, name="log_sigma_ema")
        self.seen = tf.Variable(False, trainable=False, name="seen")

    def batch_log_sigma(self, y: tf.Tensor, mu: tf.Tensor) -> tf.Tensor:
        """Soft-clipped log of the batch RMSE of mu against y (all pixels, all examples)."""
        mse = tf.reduce_mean(tf.math.squared_difference(y, mu))
        return softclip(0.5 * tf.math.log(mse), self.hyper["min_log_sigma"])

    def training_terms(self, y, raw):
        mu = raw[..., 0]
        log_sigma = self.batch_log_sigma(self.target(y), mu)
        decay = tf.where(self.seen, self.hyper["ema"], 0.0)
        self.log_sigma_ema.assign(decay * self.log_sigma_ema + (1.0 - decay) * tf.stop_gradient(log_sigma))
        self.seen.assign(True)
        dist = tfd.Independent(tfd.Normal(mu, tf.exp(log_sigma)), reinterpreted_batch_ndims=3)
        ll = dist.log_prob(self.target(y))
        return TrainingTerms(ll, ll)

    def _sigma(self, raw):
        return tf.exp(tf.cast(self.log_sigma_ema, raw.dtype))


class Floor(GaussianDecoder):
    name = "floor"
    source = "Mattei & Frellsen 2018 (bounded eigenvalues)"
    summary = "Normal(mu, xi + softplus(.)) per pixel"
    params = (Param("xi", 0.01, "the variance floor added to sigma", low=0.0),)
    outputs_per_pixel = 2

    def _sigma(self, raw):
        return self.hyper["xi"] + tf.math.softplus(raw[..., 1])


class BetaNLL(GaussianDecoder):
    """Per-pixel NLL weighted by stop_gradient(sigma^(2 beta)); evaluated with the true likelihood."""

    name = "beta_nll"
    source = "Seitzer et al., ICLR 2022"
    summary = "Normal(mu, sigma(z)) trained with NLL weighted by sg(sigma^(2 beta))"
    params = (Param("beta", 0.5, "exponent of the weight", low=0.0, low_inclusive=True, high=1.0), LINK)
    outputs_per_pixel = 2

    def _sigma(self, raw):
        return positive(raw[..., 1], self.hyper["link"])

    def training_terms(self, y, raw):
        sigma = self._sigma(raw)
        pixel_ll = tfd.Normal(raw[..., 0], sigma).log_prob(self.target(y))
        weight = tf.stop_gradient(sigma ** (2.0 * self.hyper["beta"]))
        return TrainingTerms(
            tf.reduce_sum(weight * pixel_ll, axis=[-3, -2, -1]),
            tf.reduce_sum(pixel_ll, axis=[-3, -2, -1]),
        )
