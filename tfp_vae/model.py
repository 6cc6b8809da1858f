"""The VAE as pure functions of a parameter pytree: encoder q(z|x), standard normal prior
p(z), and a registry decoder p(x|z).

`params` = {"encoder": ..., "decoder": ..., "likelihood": {decoder's own parameters}};
`dstate` is the decoder's carried state (empty for most decoders). All functions take
and return per-example arrays; reductions and the choice of seeds belong to the
training step and the evaluator.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from tfp_vae.decoders import Decoder, TrainingTerms
from tfp_vae.networks import Architecture

HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


class Posterior(NamedTuple):
    mu: Any  # (B, latent)
    sigma: Any  # (B, latent)


class ElboTerms(NamedTuple):
    """Per-example training objective, single-sample ELBO and KL per latent dimension."""

    objective: Any
    elbo: Any
    kl: Any  # (B, latent)


def scale_images(xp, x, scaling: str, levels: int, seed) -> Any:
    """Integer levels -> [0, 1]: x / (L-1) for raw; (x + u) / L, u ~ U[0,1) from `seed`, for dequantized."""
    if scaling == "raw":
        return x / (levels - 1.0)
    return (x + xp.uniform(seed, tuple(x.shape))) / float(levels)


class VAE:
    """Structure only (architecture, likelihood, array namespace): it holds no parameters."""

    def __init__(self, arch: Architecture, likelihood: Decoder):
        self.arch, self.likelihood, self.xp = arch, likelihood, likelihood.xp

    def init(self, seed: int) -> dict[str, Any]:
        """Initial parameters (NumPy) and decoder state (floats) of a run with this seed."""
        return {**self.arch.init(seed), "likelihood": dict(self.likelihood.init_params())}

    def dp(self, params, dstate) -> dict[str, Any]:
        """The decoder's parameters and state in one flat dict, as decoders take them."""
        return {**params["likelihood"], **dstate}

    def posterior(self, params, y) -> Posterior:
        return Posterior(*self.arch.encode(self.xp, params["encoder"], y))

    def decode(self, params, z):
        """Raw decoder outputs for z of shape (..., latent): (..., H, W, C, k)."""
        lead = tuple(z.shape[:-1])
        raw = self.arch.decode(self.xp, params["decoder"], self.xp.reshape(z, (-1, z.shape[-1])))
        return self.xp.reshape(raw, (*lead, *raw.shape[1:]))

    def sample_z(self, q: Posterior, n: int | None, seed):
        """Reparameterised samples: (B, latent) if n is None, else (n, B, latent)."""
        shape = tuple(q.mu.shape) if n is None else (n, *q.mu.shape)
        return q.mu + q.sigma * self.xp.normal(seed, shape)

    def kl_to_standard_normal(self, q: Posterior):
        """KL(N(mu, sigma^2) || N(0, 1)) per latent dimension, in closed form. Equal to tfd.kl_divergence
        of two tfd.Normal to float32 rounding (tests/test_closed_forms_match_tfp.py); kept written out
        because its arithmetic is in every committed record: TFP's order of operations would change
        the last bits of every training run, and reproductions of committed records would no longer
        be bit-identical."""
        xp = self.xp
        return 0.5 * (xp.square(q.mu) + xp.square(q.sigma) - 1.0) - xp.log(q.sigma)

    def normal_log_density(self, z, mu, sigma):
        """Sum over the last axis of log N(z; mu, sigma^2)."""
        xp = self.xp
        return xp.sum(-0.5 * xp.square((z - mu) / sigma) - xp.log(sigma) - HALF_LOG_2PI, -1)

    def elbo_terms(
        self, params, dstate, y, seed, training: bool = True, samples: int = 1, warmup: bool = False
    ) -> tuple[ElboTerms, dict[str, Any]]:
        """Estimate of E_q log p(y|z) from `samples` draws of z ~ q(z|y) (their mean), with the KL
        term in closed form, and the decoder's new state. With `training` the decoder's training
        terms are used, or with `warmup` its warm-up terms (Decoder.warmup_terms)."""
        q = self.posterior(params, y)
        # one draw keeps the (B, latent) shape of the draw every committed record was trained with
        raw = self.decode(params, self.sample_z(q, None if samples == 1 else samples, seed))
        dp = self.dp(params, dstate)
        if training and warmup:  # the variance held fixed: the mean learns under a unit variance
            terms, new_state = self.likelihood.warmup_terms(y, raw, dp), {}
        elif training:
            terms, new_state = self.likelihood.training_terms(y, raw, dp)
        else:
            ll = self.likelihood.log_lik(y, raw, dp)
            terms, new_state = TrainingTerms(ll, ll), {}
        if samples > 1:  # (samples, B) -> (B,): the Monte Carlo mean over the posterior draws
            terms = TrainingTerms(self.xp.mean(terms.objective, 0), self.xp.mean(terms.log_lik, 0))
        kl = self.kl_to_standard_normal(q)
        kl_sum = self.xp.sum(kl, -1)
        return ElboTerms(terms.objective - kl_sum, terms.log_lik - kl_sum, kl), {**dstate, **new_state}

    def log_weights(self, params, dstate, y, q: Posterior, n: int, seed):
        """(log p(y, z_k) - log q(z_k | y), log p(y | z_k)), each (n, B), for z_k ~ q."""
        z = self.sample_z(q, n, seed)
        log_lik = self.likelihood.log_lik(y, self.decode(params, z), self.dp(params, dstate))
        log_prior = self.normal_log_density(z, 0.0, 1.0)
        log_q = self.normal_log_density(z, q.mu, q.sigma)
        return log_lik + log_prior - log_q, log_lik
