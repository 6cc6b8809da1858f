"""Bernoulli-type references and the discretized logistic likelihood of the grey levels."""

from __future__ import annotations

import math

from tfp_vae.decoders.base import Decoder, positive


class Bernoulli(Decoder):
    name = "bernoulli"
    source = "common practice (not a density for grey levels: reference only)"
    summary = "Bernoulli(logits) cross-entropy on intensities in [0, 1]"
    has_scale = False
    proper_density = False
    has_density = False  # a pmf of {0, 1}, not a density of grey levels: no excess-density rule

    def _distribution(self, raw, dp):
        return self.tfd.Bernoulli(logits=raw[..., 0], dtype=raw.dtype)

    def mean(self, raw):
        return self.xp.sigmoid(raw[..., 0])


class ContinuousBernoulli(Decoder):
    name = "continuous_bernoulli"
    source = "Loaiza-Ganem & Cunningham, NeurIPS 2019"
    summary = "ContinuousBernoulli(logits): a proper density on [0, 1]"
    has_scale = False

    def _distribution(self, raw, dp):
        return self.tfd.ContinuousBernoulli(logits=raw[..., 0])

    def mean(self, raw):
        return self._distribution(raw, {}).mean()


class DiscretizedLogistic(Decoder):
    """Logistic(mu, s) quantized to the data set's L grey levels, edges absorbing the tails.

    The likelihood lives on the integer levels k in {0..L-1}: P(k) = F(k + 1/2) - F(k - 1/2)
    in level units, with F(1/2) at k = 0 and 1 - F(L - 3/2) at k = L - 1. TFP's
    QuantizedDistribution gives P(k) = F'(k) - F'(k - 1), so the underlying logistic
    is shifted by -1/2.
    """

    name = "discretized_logistic"
    source = "Salimans et al. 2017 (PixelCNN++) style"
    summary = "Logistic quantized to the L grey levels: a probability of the discrete data"
    outputs_per_pixel = 2
    has_scale = False
    discrete = True

    def target(self, y):
        xp, levels = self.xp, self.data.levels
        k = xp.floor(y * levels) if self.data.scaling == "dequantized" else xp.round(y * (levels - 1))
        return xp.clip(k, 0.0, levels - 1.0)

    def _distribution(self, raw, dp):
        top = self.data.levels - 1.0
        loc = raw[..., 0] * top - 0.5
        scale = positive(self.xp, raw[..., 1]) * top
        return self.tfd.QuantizedDistribution(self.tfd.Logistic(loc=loc, scale=scale), low=0.0, high=top)

    def mean(self, raw):
        return self.xp.clip(raw[..., 0], 0.0, 1.0)

    def pixel_log_density(self, y, raw, dp=None):
        # pmf / bin: at most 1 / bin, so this decoder can never exceed c / bin for c > 1
        return super().pixel_log_density(y, raw, dp) - math.log(self.data.bin_width)
