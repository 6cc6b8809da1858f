"""The faithful heteroscedastic Gaussian (Stirn et al., AISTATS 2023): the mean learns exactly as
under a unit variance, and the variance learns from the mean and the features through stop-gradients,
so that learning the variance cannot change the mean."""

from __future__ import annotations

from tfp_vae.decoders.base import TrainingTerms
from tfp_vae.decoders.gaussian import LINK, GaussianDecoder, positive


class Faithful(GaussianDecoder):
    """Normal(mu(z), sigma(z)) per pixel, trained with log N(y; mu, 1) + log N(y; sg(mu), sigma),
    sigma's head fed stop_gradient of the decoder's last hidden features (detach_heads): the
    second term trains sigma's head alone, the first the mean, the decoder trunk and the encoder
    exactly as `fixed` with sigma0 = 1 would. Evaluated with Normal(mu, sigma)."""

    warmup = True
    name = "faithful"
    source = "Stirn et al., AISTATS 2023 (faithful heteroscedastic regression)"
    summary = "Normal(mu, sigma(sg(h))) trained with log N(y; mu, 1) + log N(y; sg(mu), sigma)"
    params = (LINK,)
    outputs_per_pixel = 2
    detach_heads = True

    def _sigma(self, raw, dp):
        return positive(self.xp, raw[..., 1], self.hyper["link"])

    def training_terms(self, y, raw, dp=None):
        xp, tfd, x = self.xp, self.tfd, self.target(y)
        mu, sigma = raw[..., 0], self._sigma(raw, dp)
        mean_term = xp.sum_image(tfd.Normal(mu, xp.full((), 1.0)).log_prob(x))
        scale_term = xp.sum_image(tfd.Normal(xp.stop_gradient(mu), sigma).log_prob(x))
        return TrainingTerms(mean_term + scale_term, self.log_lik(y, raw, dp)), {}
