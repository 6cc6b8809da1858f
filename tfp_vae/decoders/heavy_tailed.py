"""Heavy-tailed decoders: Student-t and the variational-variance (Gamma-precision) model."""

from __future__ import annotations

import math

from tfp_vae.decoders.base import Decoder, Param, TrainingTerms, positive
from tfp_vae.errors import ConfigError

NU_LEARNED_MIN = 3.0


def t_stddev(xp, df, scale):
    """Standard deviation of StudentT(df, loc, scale): scale sqrt(df / (df - 2)), inf for df <= 2.
    tfd.StudentT.stddev agrees for df > 1 but is NaN for df <= 1, which the metrics would drop from
    their counts; an undefined spread is unbounded, never below tau (tests/test_closed_forms_match_tfp.py)."""
    safe = xp.where(df > 2.0, df, 3.0)
    return xp.where(df > 2.0, scale * xp.sqrt(safe / (safe - 2.0)), math.inf)


class StudentT(Decoder):
    warmup = True
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
            raise ConfigError(
                f"decoder 'student_t': nu = {hyper['nu']!r} with learn_nu = true; "
                f"a learned nu starts at >= {NU_LEARNED_MIN:g}"
            )

    def init_params(self):
        if not self.hyper["learn_nu"]:
            return {}
        excess = self.hyper["nu"] - NU_LEARNED_MIN
        # inverse softplus of the initial excess over the minimum (tiny epsilon keeps log finite)
        return {"nu_raw": math.log(math.expm1(max(excess, 1e-6)))}

    def nu(self, dp):
        if self.hyper["learn_nu"]:
            return NU_LEARNED_MIN + self.xp.softplus(dp["nu_raw"])
        return self.xp.full((), self.hyper["nu"])

    def _scale(self, raw):
        return positive(self.xp, raw[..., 1])

    def stddev(self, raw, dp=None):
        # scale * sqrt(nu / (nu - 2)): the standard deviation, not the scale, is what tau is about
        return t_stddev(self.xp, self.nu(self._dp(dp)), self._scale(raw))

    def _distribution(self, raw, dp):
        return self.tfd.StudentT(df=self.nu(dp), loc=raw[..., 0], scale=self._scale(raw))


class StudentTPixel(StudentT):
    """Student-t with each pixel's degrees of freedom decoded from z, nu = 3 + softplus(.), as the
    published Student-VAE (with network.split_decoder: separate mean, nu and scale networks)."""

    warmup = True
    name = "student_t_pixel"
    source = "Takahashi et al., IJCAI 2018 (Student-VAE), as run by Stirn & Knowles 2020"
    summary = "StudentT(nu(z), mu(z), sigma(z)) per pixel, nu(z) = 3 + softplus(.)"
    params = ()
    outputs_per_pixel = 3

    @classmethod
    def check_together(cls, hyper):
        pass

    def init_params(self):
        return {}

    def _nu(self, raw):
        return NU_LEARNED_MIN + self.xp.softplus(raw[..., 1])

    def _scale(self, raw):
        return positive(self.xp, raw[..., 2])

    def stddev(self, raw, dp=None):
        return t_stddev(self.xp, self._nu(raw), self._scale(raw))

    def _distribution(self, raw, dp):
        return self.tfd.StudentT(df=self._nu(raw), loc=raw[..., 0], scale=self._scale(raw))


class VariationalVariance(Decoder):
    """Gamma(alpha, beta) posterior over each pixel's precision lambda, Gamma prior.

    Training term: E_q[log Normal(x; mu, 1/lambda)] - KL(q(lambda) || p(lambda)), in closed
    form: 0.5 (digamma(alpha) - log beta - log 2 pi - (alpha / beta)(x - mu)^2) - KL.
    Predictive (used for every evaluated likelihood): StudentT(2 alpha, mu, sqrt(beta / alpha)).
    """

    warmup = True
    name = "variational_variance"
    source = "Stirn & Knowles 2020"
    summary = "Gamma posterior over per-pixel precision; predictive StudentT(2a, mu, sqrt(b/a))"
    params = (
        Param("prior_alpha", 1.0, "shape of the Gamma prior on the precision", low=0.0),
        Param("prior_beta", 0.001, "rate of the Gamma prior on the precision", low=0.0),
    )
    outputs_per_pixel = 3

    def _alpha_beta(self, raw):
        return positive(self.xp, raw[..., 1]), positive(self.xp, raw[..., 2])

    def stddev(self, raw, dp=None):
        alpha, beta = self._alpha_beta(raw)
        return t_stddev(self.xp, 2.0 * alpha, self.xp.sqrt(beta / alpha))

    def _distribution(self, raw, dp):
        alpha, beta = self._alpha_beta(raw)
        return self.tfd.StudentT(df=2.0 * alpha, loc=raw[..., 0], scale=self.xp.sqrt(beta / alpha))

    def training_terms(self, y, raw, dp=None):
        xp, tfd = self.xp, self.tfd
        alpha, beta = self._alpha_beta(raw)
        x = self.target(y)
        expected_ll = 0.5 * (
            xp.digamma(alpha) - xp.log(beta) - math.log(2.0 * math.pi) - alpha / beta * xp.square(x - raw[..., 0])
        )
        prior = tfd.Gamma(xp.full((), self.hyper["prior_alpha"]), xp.full((), self.hyper["prior_beta"]))
        kl = tfd.kl_divergence(tfd.Gamma(alpha, beta), prior)
        return TrainingTerms(xp.sum_image(expected_ll - kl), self.log_lik(y, raw, dp)), {}
