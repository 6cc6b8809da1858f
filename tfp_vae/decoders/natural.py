"""The Gaussian in its natural parameters (Immer et al., NeurIPS 2023): the network outputs
eta1 = mu / sigma^2 and eta2 = -1 / (2 sigma^2) < 0, in which the negative log-likelihood is
convex."""

from __future__ import annotations

import math

from tfp_vae.decoders.base import Decoder, positive
from tfp_vae.decoders.gaussian import LINK

HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


class Natural(Decoder):
    """raw[..., 0] = eta1, raw[..., 1] -> eta2 = -link(raw[..., 1]) / 2 (the published NaturalHead,
    link softplus or exp), log N(y) = eta1 y + eta2 y^2 + eta1^2 / (4 eta2) + log(-2 eta2) / 2 - log(2 pi) / 2:
    mu = -eta1 / (2 eta2), sigma^2 = -1 / (2 eta2)."""

    name = "natural"
    source = "Immer et al., NeurIPS 2023 (natural-parameter heteroscedastic regression)"
    summary = "Normal in natural parameters: eta1 = raw, eta2 = -link(raw') / 2 (precision link(raw'))"
    params = (LINK,)
    outputs_per_pixel = 2

    def _natural(self, raw):
        """(eta1, eta2) of each pixel."""
        return raw[..., 0], -0.5 * positive(self.xp, raw[..., 1], self.hyper["link"])

    def log_lik(self, y, raw, dp=None):
        # written in the natural parameters, where it is convex in the network's outputs
        xp, x = self.xp, self.target(y)
        eta1, eta2 = self._natural(raw)
        pixel = (
            eta1 * x + eta2 * xp.square(x) + xp.square(eta1) / (4.0 * eta2) + 0.5 * xp.log(-2.0 * eta2) - HALF_LOG_2PI
        )
        return xp.sum_image(pixel)

    def mean(self, raw):
        eta1, eta2 = self._natural(raw)
        return -eta1 / (2.0 * eta2)

    def stddev(self, raw, dp=None):
        _, eta2 = self._natural(raw)
        return self.xp.sqrt(-0.5 / eta2)

    def _distribution(self, raw, dp):
        return self.tfd.Normal(loc=self.mean(raw), scale=self.stddev(raw))
