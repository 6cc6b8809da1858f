"""Heavy-tailed decoders: Student-t and the variational-variance (Gamma-precision) model."""

from __future__ import annotations

import math

import tensorflow as tf

from tfp_vae.decoders.base import IMAGE_NDIMS, Decoder, Param, TrainingTerms, positive, tfd

NU_LEARNED_MIN = 3.0


def t_stddev(df: tf.Tensor, scale: tf.Tensor) -> tf.Tensor:
    """Standard deviation of StudentT(df, loc, scale): scale sqrt(df / (df - 2)), inf for df <= 2."""
    safe = tf.where(df > 2.0, df, 3.0 * tf.ones_like(df))
    return tf.where(df > 2.0, scale * tf.sqrt(safe / (safe - 2.0)), tf.constant(float("inf"), scale.dtype))


class StudentT(Decoder):
    name = "student_t"
    source = "Takahashi et al., IJCAI 2018"
    summary = "StudentT(nu, mu, sigma) per pixel; nu fixed (> 2) or one learned nu >= 3"
    params = (
        Param("nu", 3.0, "degrees of freedom (fixed), or the initial value when learned", low=2.0),
        Param("learn_nu", False, "learn one nu >= 3 shared by all pixels", kind=bool),
    )
    outputs_per_pixel = 2

    @classmethod
    def check_together(cls, hyper):
        if hyper["learn_nu"] and hyper["nu"] < NU_LEARNED_MIN:
            from tfp_vae.errors import ConfigError

            raise ConfigError(f"decoder 'student_t': nu = {hyper['nu']!r} with learn_nu = true; a learned nu starts at >= {NU_LEARNED_MIN:g}")

    def __init__(self, hyper, data):
        super().__init__(hyper, data)
        if self.hyper["learn_nu"]:
            excess = self.hyper["nu"] - NU_LEARNED_MIN
            # inverse softplus of the initial excess over the minimum (tiny epsilon keeps log finite)
            init = math.log(math.expm1(max(excess, 1e-6)))
            self.nu_raw = tf.Variable(init, dtype=tf.float32, name="nu_raw")

    def nu(self) -> tf.Tensor:
        if self.hyper["learn_nu"]:
            return NU_LEARNED_MIN + tf.math.softplus(self.nu_raw)
        return tf.constant(self.hyper["nu"], tf.float32)

    def _scale(self, raw):
        return positive(raw[..., 1])

    def stddev(self, raw):
        # scale * sqrt(nu / (nu - 2)): the standard deviation, not the scale, is what tau is about
        return t_stddev(tf.cast(self.nu(), raw.dtype), self._scale(raw))

    def _distribution(self, raw):
        return tfd.StudentT(df=tf.cast(self.nu(), raw.dtype), loc=raw[..., 0], scale=self._scale(raw))


class VariationalVariance(Decoder):
    """Gamma(alpha, beta) posterior over each pixel's precision lambda, Gamma prior.

    Training term: E_q[log Normal(x; mu, 1/lambda)] - KL(q(lambda) || p(lambda)), in closed
    form: 0.5 (digamma(alpha) - log beta - log 2 pi - (alpha / beta)(x - mu)^2) - KL.
    Predictive (used for every evaluated likelihood): StudentT(2 alpha, mu, sqrt(beta / alpha)).
    """

    name = "variational_variance"
    source = "Stirn & Knowles 2020"
    summary = "Gamma posterior over per-pixel precision; predictive StudentT(2a, mu, sqrt(b/a))"
    params = (
        Param("prior_alpha", 1.0, "shape of the Gamma prior on the precision", low=0.0),
        Param("prior_beta", 0.001, "rate of the Gamma prior on the precision", low=0.0),
    )
    outputs_per_pixel = 3

    def _alpha_beta(self, raw):
        return positive(raw[..., 1]), positive(raw[..., 2])

    def stddev(self, raw):
        alpha, beta = self._alpha_beta(raw)
        return t_stddev(2.0 * alpha, tf.sqrt(beta / alpha))

    def _distribution(self, raw):
        alpha, beta = self._alpha_beta(raw)
        return tfd.StudentT(df=2.0 * alpha, loc=raw[..., 0], scale=tf.sqrt(beta / alpha))

    def training_terms(self, y, raw):
        alpha, beta = self._alpha_beta(raw)
        x = self.target(y)
        expected_ll = 0.5 * (
            tf.math.digamma(alpha) - tf.math.log(beta) - math.log(2.0 * math.pi) - alpha / beta * tf.square(x - raw[..., 0])
        )
        prior = tfd.Gamma(self.hyper["prior_alpha"], self.hyper["prior_beta"])
        kl = tfd.kl_divergence(tfd.Gamma(alpha, beta), prior)
        axes = list(range(-IMAGE_NDIMS, 0))
        objective = tf.reduce_sum(expected_ll - kl, axis=axes)
        return TrainingTerms(objective, self.log_lik(y, raw))
