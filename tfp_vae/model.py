"""The VAE: encoder q(z|x), standard normal prior p(z), and a registry decoder p(x|z).

All functions take and return per-example tensors; reductions to means and the
choice of seeds belong to the trainer and the evaluator.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import tensorflow as tf

from tfp_vae.decoders import Decoder, TrainingTerms
from tfp_vae.networks import DecoderNet, Encoder

HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


class Posterior(NamedTuple):
    mu: tf.Tensor  # (B, latent)
    sigma: tf.Tensor  # (B, latent)


class ElboTerms(NamedTuple):
    """Per-example training objective, single-sample ELBO and KL per latent dimension."""

    objective: tf.Tensor
    elbo: tf.Tensor
    kl: tf.Tensor  # (B, latent)


def kl_to_standard_normal(q: Posterior) -> tf.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) per latent dimension, in closed form."""
    return 0.5 * (tf.square(q.mu) + tf.square(q.sigma) - 1.0) - tf.math.log(q.sigma)


def normal_log_density(z: tf.Tensor, mu: tf.Tensor, sigma: tf.Tensor) -> tf.Tensor:
    """Sum over the last axis of log N(z; mu, sigma^2)."""
    return tf.reduce_sum(-0.5 * tf.square((z - mu) / sigma) - tf.math.log(sigma) - HALF_LOG_2PI, axis=-1)


class VAE(tf.Module):
    def __init__(self, encoder: Encoder, decoder_net: DecoderNet, likelihood: Decoder):
        super().__init__(name="vae")
        self.encoder = encoder
        self.decoder_net = decoder_net
        self.likelihood = likelihood

    def posterior(self, y: tf.Tensor) -> Posterior:
        return Posterior(*self.encoder(y))

    def decode(self, z: tf.Tensor) -> tf.Tensor:
        """Raw decoder outputs for z of shape (..., latent): (..., H, W, C, k)."""
        lead = tf.shape(z)[:-1]
        raw = self.decoder_net(tf.reshape(z, [-1, tf.shape(z)[-1]]))
        return tf.reshape(raw, tf.concat([lead, tf.shape(raw)[1:]], axis=0))

    @staticmethod
    def sample_z(q: Posterior, n: int | None, seed: tf.Tensor) -> tf.Tensor:
        """Reparameterised samples: (B, latent) if n is None, else (n, B, latent)."""
        shape = tf.shape(q.mu) if n is None else tf.concat([[n], tf.shape(q.mu)], axis=0)
        eps = tf.random.stateless_normal(shape, seed, alg="philox")
        return q.mu + q.sigma * eps

    def elbo_terms(self, y: tf.Tensor, seed: tf.Tensor, training: bool = True) -> ElboTerms:
        """Single-sample estimate of E_q log p(y|z), with the KL term in closed form.

        With `training` the decoder's training terms are used (and decoders with state,
        such as sigma_vae's moving average, update it); otherwise the evaluated likelihood.
        """
        q = self.posterior(y)
        raw = self.decode(self.sample_z(q, None, seed))
        if training:
            terms = self.likelihood.training_terms(y, raw)
        else:
            ll = self.likelihood.log_lik(y, raw)
            terms = TrainingTerms(ll, ll)
        kl = kl_to_standard_normal(q)
        kl_sum = tf.reduce_sum(kl, axis=-1)
        return ElboTerms(terms.objective - kl_sum, terms.log_lik - kl_sum, kl)

    def log_weights(self, y: tf.Tensor, q: Posterior, n: int, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(log p(y, z_k) - log q(z_k | y), log p(y | z_k)), each (n, B), for z_k ~ q."""
        z = self.sample_z(q, n, seed)
        log_lik = self.likelihood.log_lik(y, self.decode(z))
        log_prior = normal_log_density(z, 0.0, 1.0)
        log_q = normal_log_density(z, q.mu, q.sigma)
        return log_lik + log_prior - log_q, log_lik
