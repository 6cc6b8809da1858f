"""The published protocol's options, each against its definition: ELU activations, separate decoder
networks per output, several posterior samples in the training objective, and early stopping on
the validation LPPL with a minimum improvement (Keras' EarlyStopping, which the published code uses)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from conftest import BATCH, C, H, W, tiny_spec
from tfp_vae.config import NetworkSpec, TrainSpec
from tfp_vae.decoders import DataContext, make_decoder
from tfp_vae.model import VAE
from tfp_vae.networks import Architecture

CTX = DataContext(levels=17, scaling="raw")
LATENT = 5


def _model(backend, decoder="learned", **network):
    net = NetworkSpec(**{"hidden": (4,), "latent": LATENT, **network})
    likelihood = make_decoder(decoder, {}, CTX, backend)
    return VAE(Architecture(net, (H, W, C), likelihood.outputs_per_pixel), likelihood)


def _params(backend, model, seed=0):
    return backend.tree_map(backend.asarray, model.init(seed))


def elu(x):
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0)))


def test_elu_encoder_is_the_dense_layers_with_elu_between(backend, rng):
    model = _model(backend, activation="elu", hidden=(6, 4))
    init = model.init(0)
    x = rng.uniform(size=(BATCH, H, W, C)).astype(np.float32)
    mu, sigma = model.posterior(_params(backend, model), backend.asarray(x))
    h = x.reshape(BATCH, -1).astype(np.float64)
    layers = init["encoder"]["dense"]
    for layer in layers[:-1]:
        h = elu(h @ layer["w"] + layer["b"])
    out = h @ layers[-1]["w"] + layers[-1]["b"]
    np.testing.assert_allclose(np.asarray(mu), out[:, :LATENT], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(sigma), np.logaddexp(0, out[:, LATENT:]) + 1e-6, rtol=1e-4, atol=1e-5)


def test_a_split_decoder_has_one_network_per_output(backend, rng):
    """Output j of every pixel depends on network j alone."""
    model = _model(backend, decoder="student_t_pixel", split_decoder=True)
    init = model.init(0)
    assert len(init["decoder"]["towers"]) == 3 and "dense" not in init["decoder"]
    z = backend.asarray(rng.normal(size=(BATCH, LATENT)).astype(np.float32))
    before = np.asarray(model.decode(backend.tree_map(backend.asarray, init), z))
    assert before.shape == (BATCH, H, W, C, 3)
    init["decoder"]["towers"][1][-1]["b"] = init["decoder"]["towers"][1][-1]["b"] + 1.0
    after = np.asarray(model.decode(backend.tree_map(backend.asarray, init), z))
    np.testing.assert_array_equal(after[..., [0, 2]], before[..., [0, 2]])
    np.testing.assert_allclose(after[..., 1], before[..., 1] + 1.0, rtol=1e-5, atol=1e-5)


def test_mc_samples_average_the_likelihood_over_posterior_draws(backend, rng):
    """objective = (1/S) sum_s log N(y; mu(z_s), sigma(z_s)) - KL(q || N(0, I)), z_s = mu_q + sigma_q eps_s."""
    model, samples = _model(backend), 4
    params = _params(backend, model)
    y = backend.asarray(rng.uniform(size=(BATCH, H, W, C)).astype(np.float32))
    seed = backend.asarray(np.array([3, 4], np.int32))
    terms, _ = model.elbo_terms(params, {}, y, seed, samples=samples)
    q = model.posterior(params, y)
    mu_q, sigma_q = np.asarray(q.mu, np.float64), np.asarray(q.sigma, np.float64)
    eps = np.asarray(backend.xp.normal(seed, (samples, BATCH, LATENT)), np.float64)
    raw = np.asarray(model.decode(params, backend.asarray((mu_q + sigma_q * eps).astype(np.float32))), np.float64)
    sigma = np.logaddexp(0.0, raw[..., 1]) + np.finfo(np.float32).eps
    ll = stats.norm.logpdf(np.asarray(y)[None], raw[..., 0], sigma).reshape(samples, BATCH, -1).sum(-1)
    kl = np.sum(0.5 * (mu_q**2 + sigma_q**2 - 1.0) - np.log(sigma_q), -1)
    np.testing.assert_allclose(np.asarray(terms.objective), ll.mean(0) - kl, rtol=1e-4, atol=1e-2)
    assert np.std(ll, 0).min() > 0, "the draws differ"


def _keras_early_stopping(values, patience, min_delta):
    """(epochs run, best epoch) of Keras' EarlyStopping(mode='max', restore_best_weights=True) over
    per-epoch monitored values, the epoch written into the model's weights to see what it restores."""
    keras = pytest.importorskip("keras")
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False)])
    es = keras.callbacks.EarlyStopping(
        monitor="val_lppl", min_delta=min_delta, patience=patience, mode="max", restore_best_weights=True
    )
    es.set_model(model)
    model.stop_training = False  # what fit() sets before the first epoch
    es.on_train_begin()
    for epoch, value in enumerate(values):
        model.set_weights([np.array([[float(epoch)]], np.float32)])
        es.on_epoch_end(epoch, {"val_lppl": float(value)})
        if model.stop_training:
            break
    es.on_train_end()
    return epoch + 1, int(model.get_weights()[0][0, 0]), bool(model.stop_training)


def _ours(values, patience, min_delta):
    from tfp_vae.eval_data import Trained
    from tfp_vae.train import _SeedTrack

    spec = tiny_spec(train={"epochs": len(values), "patience": patience, "min_delta": min_delta, "monitor": "val_lppl"})
    track = _SeedTrack(spec, "")
    for epoch, value in enumerate(values):
        check = {
            "val_bound": 0.0,
            "val_lppl": float(value),
            "val_min_sigma": None,
            "val_frac_below_tau": None,
            "val_excess_density_frac": None,
        }
        track.end_epoch(epoch, 1, -1, 0.0, 0.0, check, lambda e=epoch: Trained(e, None), 0.0, lambda s: None)
        if not track.active:
            break
    return track.result.epochs_run, track.best.params, track.result.stopped_early


@pytest.mark.parametrize("trial", range(6))
def test_early_stopping_on_the_lppl_is_keras_early_stopping(trial):
    """Noisy rising curves that level off: the epoch it stops at and the weights it restores."""
    rng = np.random.default_rng(trial)
    epochs = 60
    curve = 100 * (1 - np.exp(-np.arange(epochs) / rng.uniform(3, 15))) + rng.normal(0, rng.uniform(0.2, 3), epochs)
    patience, min_delta = int(rng.integers(2, 8)), float(rng.choice([0.0, 0.5, 1.0]))
    keras_run, keras_best, keras_stopped = _keras_early_stopping(curve, patience, min_delta)
    ours_run, ours_best, ours_stopped = _ours(curve, patience, min_delta)
    assert (ours_run, ours_stopped) == (keras_run, keras_stopped)
    if keras_stopped:  # Keras restores the best weights only when it stops; we always do
        assert ours_best == keras_best


@pytest.mark.slow
def test_a_run_monitoring_the_lppl_records_its_curve_and_stops_on_it():
    pytest.importorskip("jax")
    from tfp_vae.run import run

    record = run(
        tiny_spec(backend="jax", train={"epochs": 4, "monitor": "val_lppl", "patience": 3}, eval={"lppl_samples": 3}),
        log=lambda s: None,
    )
    curve = record["training"]["curves"]["val_lppl"]
    assert len(curve) == record["training"]["epochs_run"] and all(math.isfinite(v) for v in curve)
    assert record["training"]["best_epoch"] == int(np.argmax(curve)) + 1
    assert record["spec"]["train"]["monitor"] == "val_lppl"


def test_defaults_are_the_earlier_protocol():
    """Specs that leave the new options alone keep their dict, so committed records keep their ids."""
    spec = tiny_spec()
    assert "activation" not in spec.to_dict()["network"] and "mc_samples" not in spec.to_dict()["train"]
    assert TrainSpec().monitor == "val_bound" and TrainSpec().min_delta == 0.0 and NetworkSpec().activation == "relu"
