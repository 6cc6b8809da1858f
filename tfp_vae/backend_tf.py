"""Everything TensorFlow-specific about running a model: device placement, process
settings (determinism, TF32), random numbers inside compiled code, the optimiser,
and the compiled training and evaluation functions.

A second backend (TFP's JAX substrate) would provide the same functions; the
decoders, the metrics and the records do not change.
"""

from __future__ import annotations

import contextlib
import math
import resource
from typing import Callable, Iterator

import numpy as np
import tensorflow as tf

from tfp_vae.errors import ConfigError
from tfp_vae.model import VAE, kl_to_standard_normal

NAME = "tensorflow"


def configure(device: str, tf32: bool) -> str:
    """Apply process-wide settings and resolve `device` to a TF device string."""
    tf.config.experimental.enable_op_determinism()
    tf.config.experimental.enable_tensor_float_32_execution(tf32)
    gpus = tf.config.list_physical_devices("GPU")
    if device == "gpu" and not gpus:
        raise ConfigError("device = 'gpu' was asked for but TensorFlow sees no GPU on this machine; use device = 'cpu' or 'auto'")
    if device == "gpu" or (device == "auto" and gpus):
        return "/GPU:0"
    return "/CPU:0"


def device_scope(device: str) -> contextlib.AbstractContextManager:
    return tf.device(device)


def peak_memory_mib(device: str) -> float:
    """Peak memory of this process (host RSS), or of the GPU allocator on a GPU."""
    if "GPU" in device:
        return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def scale_images(x: tf.Tensor, scaling: str, levels: int, seed: tf.Tensor) -> tf.Tensor:
    """uint8 levels -> [0, 1]: x / (L-1) for raw; (x + u) / L, u ~ U[0,1) from `seed`, for dequantized.

    philox is asked for explicitly: under XLA on CPU, alg="auto_select" was about
    three times slower for the whole training step when this was measured.
    """
    x = tf.cast(x, tf.float32)
    if scaling == "raw":
        return x / (levels - 1.0)
    u = tf.random.stateless_uniform(tf.shape(x), seed, alg="philox")
    return (x + u) / float(levels)


class Adam(tf.Module):
    """Adam (Kingma & Ba 2015) on explicit variables, with the bias correction folded into the step size.
    `multipliers` scales the learning rate per variable (1 where not given)."""

    def __init__(self, variables: list[tf.Variable], learning_rate: float, b1: float = 0.9, b2: float = 0.999,
                 eps: float = 1e-8, multipliers: list[float] | None = None):
        super().__init__(name="adam")
        self.lr, self.b1, self.b2, self.eps = learning_rate, b1, b2, eps
        self.multipliers = multipliers or [1.0] * len(variables)
        self.m = [tf.Variable(tf.zeros_like(v), trainable=False) for v in variables]
        self.v = [tf.Variable(tf.zeros_like(v), trainable=False) for v in variables]
        self.t = tf.Variable(0.0, trainable=False)

    def apply(self, grads: list[tf.Tensor], variables: list[tf.Variable]) -> None:
        t = self.t.assign_add(1.0)
        step = self.lr * tf.sqrt(1.0 - self.b2**t) / (1.0 - self.b1**t)
        for g, m, v, var, mult in zip(grads, self.m, self.v, variables, self.multipliers):
            m.assign(self.b1 * m + (1.0 - self.b1) * g)
            v.assign(self.b2 * v + (1.0 - self.b2) * tf.square(g))
            var.assign_sub(mult * step * m / (tf.sqrt(v) + self.eps))


class TrainState(tf.Module):
    """Optimiser plus the non-finite guard: after the first non-finite loss or
    gradient no further update is applied, and the step where it happened is kept."""

    def __init__(self, model: VAE, learning_rate: float):
        super().__init__(name="train_state")
        self.params = list(model.trainable_variables)
        boost = model.likelihood.lr_multipliers()
        self.optimizer = Adam(self.params, learning_rate, multipliers=[boost.get(id(v), 1.0) for v in self.params])
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.first_nonfinite_step = tf.Variable(-1, dtype=tf.int64, trainable=False)


def make_train_step(model: VAE, state: TrainState, scaling: str, levels: int, jit: bool, eager: bool = False) -> Callable:
    """Compiled step(x_uint8 (B,H,W,C), seeds int32 (2, 2)) -> (objective, elbo), batch means.
    `eager` returns the uncompiled Python function (for benchmarks only)."""

    def step(x: tf.Tensor, seeds: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        y = scale_images(x, scaling, levels, seeds[0])
        with tf.GradientTape() as tape:
            terms = model.elbo_terms(y, seeds[1])
            loss = -tf.reduce_mean(terms.objective)
        grads = tape.gradient(loss, state.params)
        grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, state.params)]
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads]) & tf.math.is_finite(loss)
        healthy = finite & (state.first_nonfinite_step < 0)

        def update():
            state.optimizer.apply(grads, state.params)
            return tf.constant(0)

        tf.cond(healthy, update, lambda: tf.constant(0))
        state.first_nonfinite_step.assign(
            tf.where(~finite & (state.first_nonfinite_step < 0), state.step, state.first_nonfinite_step)
        )
        state.step.assign_add(1)
        return -loss, tf.reduce_mean(terms.elbo)

    return step if eager else tf.function(step, jit_compile=jit)


def _log_mean_exp_chunked(draw: Callable, y, q, n: int, chunk: int, seed) -> tf.Tensor:
    """log (1/n) sum_k exp(w_k) over n draws taken `chunk` at a time (bounded memory)."""
    chunk = min(chunk, n)
    n_full, rem = divmod(n, chunk)
    acc = tf.fill(tf.shape(q.mu)[:1], -np.inf)
    for i in tf.range(n_full):
        w = draw(y, q, chunk, tf.random.experimental.stateless_fold_in(seed, i, alg="philox"))
        acc = tf.reduce_logsumexp(tf.stack([acc, tf.reduce_logsumexp(w, axis=0)]), axis=0)
    if rem:
        w = draw(y, q, rem, tf.random.experimental.stateless_fold_in(seed, n_full, alg="philox"))
        acc = tf.reduce_logsumexp(tf.stack([acc, tf.reduce_logsumexp(w, axis=0)]), axis=0)
    return acc - math.log(n)


class EvalFunctions:
    """Compiled per-batch evaluation functions; every one returns per-example values."""

    def __init__(self, model: VAE, jit: bool, iwae_k: int, k_chunk: int, lppl_samples: int):
        self.model = model
        joint = lambda y, q, n, s: model.log_weights(y, q, n, s)[0]  # noqa: E731
        conditional = lambda y, q, n, s: model.log_weights(y, q, n, s)[1]  # noqa: E731

        def iwae(y, seed):
            return _log_mean_exp_chunked(joint, y, model.posterior(y), iwae_k, k_chunk, seed)

        def lppl(y, seed):
            return _log_mean_exp_chunked(conditional, y, model.posterior(y), lppl_samples, k_chunk, seed)

        def elbo(y, seed):
            return model.elbo_terms(y, seed, training=False).elbo

        def at_mean(y):
            """Decoder mean, standard deviation and per-pixel log density of y, all at z = mean of q(z|y)."""
            q = model.posterior(y)
            raw = model.decode(q.mu)
            lik = model.likelihood
            nan = tf.fill(tf.shape(raw)[:-1], np.nan)
            std = lik.stddev(raw) if lik.has_scale else nan
            log_density = lik.pixel_log_density(y, raw) if lik.has_density else nan
            return lik.mean(raw), std, log_density, q.mu, kl_to_standard_normal(q)

        def sampled_squared_error(y, seed):
            """Per-example mean squared error of the decoder mean at one z ~ q(z|y)."""
            q = model.posterior(y)
            mean = model.likelihood.mean(model.decode(model.sample_z(q, None, seed)))
            return tf.reduce_mean(tf.math.squared_difference(mean, y), axis=[-3, -2, -1])

        self.iwae = tf.function(iwae, jit_compile=jit)
        self.lppl = tf.function(lppl, jit_compile=jit)
        self.elbo = tf.function(elbo, jit_compile=jit)
        self.at_mean = tf.function(at_mean, jit_compile=jit)
        self.sampled_squared_error = tf.function(sampled_squared_error, jit_compile=jit)


def padded_batches(n: int, batch_size: int) -> Iterator[tuple[slice, int]]:
    """Slices of a padded batching: (slice, number of valid rows)."""
    for start in range(0, n, batch_size):
        yield slice(start, start + batch_size), min(batch_size, n - start)


def pad_to(x: np.ndarray, batch_size: int) -> np.ndarray:
    """Pad the first axis to `batch_size` with copies of row 0 so compiled shapes stay fixed."""
    if len(x) == batch_size:
        return x
    return np.concatenate([x, np.repeat(x[:1], batch_size - len(x), axis=0)])


def to_numpy(t: tf.Tensor) -> np.ndarray:
    return t.numpy()
