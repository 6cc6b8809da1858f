"""The two backends compute the same numbers from the same inputs: every decoder's
log-likelihood and training terms, the loss and gradients of one training step from the
same parameters and the same noise, and the Adam update (TF's functional Adam against
optax). Their random streams differ (philox against threefry), so whole runs agree only
statistically: that is the committed backends study, not a unit test."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import BATCH, C, H, W
from tfp_vae.backends import get_backend
from tfp_vae.config import NetworkSpec
from tfp_vae.decoders import DECODERS, DataContext, make_decoder
from tfp_vae.errors import ConfigError
from tfp_vae.model import VAE
from tfp_vae.networks import Architecture

try:
    BOTH = (get_backend("tensorflow"), get_backend("jax"))
except ConfigError as exc:  # one backend missing: nothing to compare
    pytest.skip(str(exc), allow_module_level=True)

CTX = DataContext(17, "dequantized")
LATENT = 4


def _both(fn):
    return [fn(b) for b in BOTH]


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_decoders_give_the_same_log_prob_and_training_terms(rng, name):
    cls = DECODERS[name]
    raw = rng.normal(size=(BATCH, H, W, C, cls.outputs_per_pixel)).astype(np.float32)
    y = rng.uniform(size=(BATCH, H, W, C)).astype(np.float32)

    def compute(b):
        dec = make_decoder(name, {}, CTX, b)
        terms, state = dec.training_terms(b.asarray(y), b.asarray(raw))
        out = {
            "log_lik": dec.log_lik(b.asarray(y), b.asarray(raw)),
            "objective": terms.objective,
            "terms_log_lik": terms.log_lik,
            "mean": dec.mean(b.asarray(raw)),
            **state,
        }
        if dec.has_density:
            out["pixel_log_density"] = dec.pixel_log_density(b.asarray(y), b.asarray(raw))
        if dec.has_scale:
            out["stddev"] = dec.stddev(b.asarray(raw))
        return {k: np.asarray(v) for k, v in out.items()}

    tf_out, jax_out = _both(compute)
    assert tf_out.keys() == jax_out.keys()
    for key in tf_out:
        np.testing.assert_allclose(tf_out[key], jax_out[key], rtol=2e-5, atol=2e-4, err_msg=key)


@pytest.mark.parametrize("kind", ["mlp", "conv"])
@pytest.mark.parametrize("name", ["learned", "shared", "sigma_vae", "variational_variance", "discretized_logistic"])
def test_one_step_gives_the_same_loss_and_gradients(rng, name, kind):
    """The negative ELBO of a batch at z = mu + sigma * eps with the same eps on both backends."""
    spec = NetworkSpec(kind=kind, hidden=(6,), latent=LATENT, conv_channels=(3,))
    shape = (8, 6, 1) if kind == "conv" else (H, W, C)
    x = rng.uniform(size=(BATCH, *shape)).astype(np.float32)
    eps = rng.normal(size=(BATCH, LATENT)).astype(np.float32)

    def compute(b):
        model = VAE(Architecture(spec, shape, DECODERS[name].outputs_per_pixel), make_decoder(name, {}, CTX, b))
        params = b.tree_map(b.asarray, model.init(3))
        dstate = {k: b.asarray(np.float32(v)) for k, v in model.likelihood.init_state().items()}

        def loss(p, y, e):
            q = model.posterior(p, y)
            terms, _ = model.likelihood.training_terms(y, model.decode(p, q.mu + q.sigma * e), model.dp(p, dstate))
            return -b.xp.mean(terms.objective - b.xp.sum(model.kl_to_standard_normal(q), -1)), ()

        (value, _), grads = b.value_and_grad(loss)(params, b.asarray(x), b.asarray(eps))
        return float(value), [np.asarray(g) for g in b.tree_leaves(grads)]

    (tf_loss, tf_grads), (jax_loss, jax_grads) = _both(compute)
    assert tf_loss == pytest.approx(jax_loss, rel=1e-5, abs=1e-3)
    assert len(tf_grads) == len(jax_grads)
    for g_tf, g_jax in zip(tf_grads, jax_grads):
        np.testing.assert_allclose(g_tf, g_jax, rtol=1e-3, atol=1e-4)


def test_adam_updates_agree(rng):
    """Three Adam steps from the same gradients: TensorFlow's functional Adam against optax.adam."""
    params = {"a": rng.normal(size=(3, 5)).astype(np.float32), "b": np.float32(0.7)}
    grads = [{"a": rng.normal(size=(3, 5)).astype(np.float32), "b": np.float32(g)} for g in (0.5, -2.0, 1e-3)]

    def compute(b):
        init, update = b.adam(0.01)
        p = b.tree_map(b.asarray, params)
        state = init(p)
        for g in grads:
            upd, state = update(b.tree_map(b.asarray, g), state, p)
            p = b.tree_map(lambda x, u: x + u, p, upd)
        return [np.asarray(v) for v in b.tree_leaves(p)]

    for tf_leaf, jax_leaf in zip(*_both(compute)):
        np.testing.assert_allclose(tf_leaf, jax_leaf, rtol=1e-6, atol=1e-7)
