"""The compiled functions of a run, written once for every backend.

A training step is a pure function (params, opt_state, carry, x, seeds) ->
(params, opt_state, carry, metrics); `carry` holds the decoder's state, the step
counter and the non-finite guard. Evaluation functions are pure in (params, dstate).
The backend supplies value-and-gradient, compilation, the optimiser and the arrays.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from tfp_vae.backends import Backend
from tfp_vae.model import VAE, scale_images


def multiplier_tree(model: VAE, params: dict[str, Any]) -> dict[str, Any]:
    """Per-leaf learning-rate multipliers: the decoder's own by name, 1 for every network weight."""
    tree = _ones(params)
    boost = model.likelihood.lr_multipliers()
    tree["likelihood"] = {name: boost.get(name, 1.0) for name in params["likelihood"]}
    return tree


def _ones(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _ones(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_ones(v) for v in tree]
    return 1.0


def init_carry(backend: Backend, model: VAE) -> dict[str, Any]:
    """The step's carried state at step 0: decoder state, step counter, first non-finite step (-1)."""
    dstate = {k: backend.asarray(np.float32(v)) for k, v in model.likelihood.init_state().items()}
    return {"dstate": dstate, "step": backend.asarray(np.int32(0)), "bad_step": backend.asarray(np.int32(-1))}


def train_step(
    backend: Backend,
    model: VAE,
    scaling: str,
    levels: int,
    learning_rate: float,
    multipliers: dict[str, Any],
    mc_samples: int = 1,
    warmup: bool = False,
) -> tuple[Callable, Callable]:
    """(opt_init(params), step), the step not compiled (make_train_epoch compiles it inside its loop).
    `step(params, opt_state, carry, x float32 (B,H,W,C), seeds int32 (2, 2))` returns the new
    (params, opt_state, carry) and {"objective", "bound"}, batch means. After the first non-finite
    loss or gradient nothing is updated again, and the step is kept."""
    xp = backend.xp
    opt_init, opt_update = backend.adam(learning_rate)

    def loss_fn(params, dstate, x, seeds):
        y = scale_images(xp, x, scaling, levels, seeds[0])
        terms, new_dstate = model.elbo_terms(params, dstate, y, seeds[1], samples=mc_samples, warmup=warmup)
        loss = -xp.mean(terms.objective)
        return loss, (xp.mean(terms.elbo), new_dstate)

    grad_fn = backend.value_and_grad(loss_fn)

    def step(params, opt_state, carry, x, seeds):
        (loss, (bound, new_dstate)), grads = grad_fn(params, carry["dstate"], x, seeds)
        finite = xp.isfinite(loss)
        for g in backend.tree_leaves(grads):
            finite = finite & xp.all(xp.isfinite(g))
        healthy = finite & (carry["bad_step"] < 0)

        def update():
            updates, new_opt = opt_update(grads, opt_state, params)
            return backend.tree_map(lambda p, u, m: p + m * u, params, updates, multipliers), new_opt, new_dstate

        # A branch where it pays (JAX, TF's graph): XLA:CPU then updates Adam's moments in place,
        # where a select of new and old kept both alive and copied every moment first (the
        # 784-512-512-16 step at batch 128: 15.4 against 13.0 ms on a 2-core AMD EPYC), same numbers.
        new_params, new_opt, dstate = xp.choose(healthy, update, lambda: (params, opt_state, carry["dstate"]))
        carry = {
            "dstate": dstate,
            "step": carry["step"] + 1,
            "bad_step": xp.where(~finite & (carry["bad_step"] < 0), carry["step"], carry["bad_step"]),
        }
        return new_params, new_opt, carry, {"objective": -loss, "bound": bound}

    return opt_init, step


#: The per-step metrics a step returns (batch means).
STEP_METRICS = ("objective", "bound")


def make_train_epoch(
    backend: Backend,
    model: VAE,
    scaling: str,
    levels: int,
    learning_rate: float,
    multipliers: dict[str, Any],
    compiler: str,
    batched: bool = False,
    mc_samples: int = 1,
    warmup: bool = False,
) -> tuple[Callable, Callable]:
    """(opt_init(params), epoch): a whole epoch in one compiled call, the steps of train_step
    run in a compiled loop over data already on the device.

    `epoch(params, opt_state, carry, images float32 (N,H,W,C), rows int32 (T, B), seeds int32 (T, 2, 2))`
    takes step t on images[rows[t]] with seeds[t] and returns the new (params, opt_state, carry) and
    {"objective", "bound"} of every step, each (T,). `batched`: params, opt_state and carry gain a
    leading seed axis, rows become (T, S, B), seeds (T, S, 2, 2) and metrics (T, S); the images are
    shared by the seeds, each seed drawing its own rows. `warmup`: the steps of a variance warm-up
    (VAE.elbo_terms)."""
    xp = backend.xp
    opt_init, step = train_step(backend, model, scaling, levels, learning_rate, multipliers, mc_samples, warmup)
    mapped = backend.vmap(step) if batched else step

    def epoch(params, opt_state, carry, images, rows, seeds):
        n_steps, shape = rows.shape[0], tuple(rows.shape[1:-1])  # shape: () alone, (S,) batched

        def body(t, state):
            p, o, c, metrics = state
            p, o, c, m = mapped(p, o, c, xp.take(images, rows[t]), seeds[t])
            return p, o, c, {k: xp.set_row(metrics[k], t, m[k]) for k in STEP_METRICS}

        empty = {k: xp.full((n_steps, *shape), 0.0) for k in STEP_METRICS}
        return xp.fori_loop(0, n_steps, body, (params, opt_state, carry, empty))

    return opt_init, backend.compile(epoch, compiler)


def stack_trees(backend: Backend, trees: list[Any]) -> Any:
    """Pytrees of identical structure -> one pytree with a leading axis (seed batching)."""
    return backend.tree_map(lambda *leaves: backend.asarray(np.stack([backend.to_numpy(v) for v in leaves])), *trees)


def take_tree(backend: Backend, tree: Any, index: int) -> Any:
    """Entry `index` of the leading axis of every leaf."""
    return backend.tree_map(lambda leaf: leaf[index], tree)


#: Up to this many chunks the chunk loop is unrolled (cheap to compile); beyond it, a compiled
#: loop keeps one chunk's samples alive at a time (unrolled, XLA kept all 50 chunks of K = 5000
#: alive: 5.5 GB for a batch of 128 on Fashion-MNIST).
UNROLL_MAX_CHUNKS = 8


def _log_mean_exp_chunked(xp, draw: Callable, n: int, chunk: int, seed, batch: int) -> Any:
    """log (1/n) sum_k exp(w_k) over n draws taken `chunk` at a time (bounded memory)."""
    chunk = min(chunk, n)
    n_full, rem = divmod(n, chunk)
    if n_full <= UNROLL_MAX_CHUNKS:
        parts = [xp.logsumexp(draw(chunk, xp.fold_in(seed, i)), 0) for i in range(n_full)]
        if rem:
            parts.append(xp.logsumexp(draw(rem, xp.fold_in(seed, n_full)), 0))
        return xp.logsumexp(xp.stack(parts, 0), 0) - math.log(n)
    acc = xp.fori_loop(
        0,
        n_full,
        lambda i, acc: xp.logaddexp(acc, xp.logsumexp(draw(chunk, xp.fold_in(seed, i)), 0)),
        xp.full((batch,), -math.inf),
    )
    if rem:
        acc = xp.logaddexp(acc, xp.logsumexp(draw(rem, xp.fold_in(seed, n_full)), 0))
    return acc - math.log(n)


class EvalFunctions:
    """Compiled per-batch evaluation functions of (params, dstate, y[, seed]); each returns
    per-example values."""

    def __init__(
        self,
        backend: Backend,
        model: VAE,
        compiler: str,
        iwae_k: int,
        k_chunk: int,
        lppl_samples: int,
        batched: bool = False,
    ):
        """`batched`: every function mapped over a leading seed axis of all its arguments."""
        xp, lik = backend.xp, model.likelihood
        compiled = lambda f: backend.compile(backend.vmap(f) if batched else f, compiler)

        def iwae(params, dstate, y, seed):
            q = model.posterior(params, y)
            draw = lambda n, s: model.log_weights(params, dstate, y, q, n, s)[0]
            return _log_mean_exp_chunked(xp, draw, iwae_k, k_chunk, seed, y.shape[0])

        def lppl(params, dstate, y, seed):
            q = model.posterior(params, y)
            draw = lambda n, s: model.log_weights(params, dstate, y, q, n, s)[1]
            return _log_mean_exp_chunked(xp, draw, lppl_samples, k_chunk, seed, y.shape[0])

        def elbo(params, dstate, y, seed):
            return model.elbo_terms(params, dstate, y, seed, training=False)[0].elbo

        def at_mean(params, dstate, y):
            """Decoder mean, standard deviation and per-pixel log density of y, all at z = mean of q(z|y)."""
            q = model.posterior(params, y)
            raw = model.decode(params, q.mu)
            dp = model.dp(params, dstate)
            nan = xp.full(tuple(raw.shape[:-1]), math.nan)
            std = lik.stddev(raw, dp) if lik.has_scale else nan
            log_density = lik.pixel_log_density(y, raw, dp) if lik.has_density else nan
            return lik.mean(raw), std, log_density, q.mu, model.kl_to_standard_normal(q)

        def sampled_squared_error(params, dstate, y, seed):
            """Per-example mean squared error of the decoder mean at one z ~ q(z|y)."""
            q = model.posterior(params, y)
            mean = lik.mean(model.decode(params, model.sample_z(q, None, seed)))
            return xp.mean(xp.square(mean - y), (-3, -2, -1))

        self.iwae = compiled(iwae)
        self.lppl = compiled(lppl)
        self.elbo = compiled(elbo)
        self.at_mean = compiled(at_mean)
        self.sampled_squared_error = compiled(sampled_squared_error)
