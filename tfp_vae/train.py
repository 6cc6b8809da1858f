"""Training loop: seeded shuffling and noise, Adam, early stopping on the validation
bound, per-epoch curves, and the non-finite guard that ends a run without raising."""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from tfp_vae.backends import Backend
from tfp_vae.config import RunSpec
from tfp_vae.data import Splits
from tfp_vae.decoders import DataContext
from tfp_vae.model import VAE, scale_images
from tfp_vae.seeds import derive_seed, numpy_rng
from tfp_vae.steps import EvalFunctions, init_carry, make_train_step, multiplier_tree, pad_to, padded_batches


@dataclass
class TrainingResult:
    epochs_run: int = 0
    best_epoch: int = -1
    stopped_early: bool = False
    nonfinite: dict[str, int] | None = None
    curves: dict[str, list[float | None]] = field(default_factory=lambda: {
        "train_objective": [], "train_bound": [], "val_bound": [], "val_min_sigma": [], "val_frac_below_tau": [],
        "val_excess_density_frac": [],
    })
    compile_s: float = 0.0
    steady_examples: int = 0
    steady_s: float = 0.0
    train_s: float = 0.0

    @property
    def max_train_bound(self) -> float | None:
        """The highest training bound of any epoch (the D ln L check looks at every epoch)."""
        finite = [v for v in self.curves["train_bound"] if v is not None]
        return max(finite) if finite else None

    @property
    def final_val_change(self) -> float | None:
        """Change of the validation bound over the last epoch run (a convergence indicator)."""
        v = self.curves["val_bound"]
        return v[-1] - v[-2] if len(v) >= 2 and v[-1] is not None and v[-2] is not None else None


def excess_density_frac(log_density: np.ndarray, data: DataContext, c: float) -> float:
    """Fraction of pixels whose decoder density at the observed value exceeds c / bin.

    A model of the discrete levels puts at most density 1 / bin on a pixel on average, so a
    density above c / bin (c > 1) exploits the continuous treatment of discrete values
    (docs/definitions.md). +inf counts as exceeding; NaN does not."""
    return float(np.mean(np.asarray(log_density) > math.log(c / data.bin_width)))


@dataclass
class Trained:
    """What training leaves for evaluation: the restored parameters and decoder state."""

    params: Any
    dstate: Any


class EvalData:
    """A split scaled once with a fixed seed (dequantization noise is fixed for evaluation)."""

    def __init__(self, backend: Backend, images: np.ndarray, spec: RunSpec, levels: int, purpose: str):
        seed = backend.asarray(derive_seed(spec.seed, "eval_noise", purpose))
        x = backend.asarray(images.astype(np.float32))
        self.y = backend.to_numpy(scale_images(backend.xp, x, spec.scaling, levels, seed))
        self.purpose = purpose

    def __len__(self) -> int:
        return len(self.y)


def per_example(backend: Backend, fn: Callable, state: Trained, data: EvalData, batch_size: int,
                seed_path: tuple[Any, ...] | None, spec: RunSpec) -> list[np.ndarray]:
    """Apply a compiled per-batch function over `data` in padded batches; returns its outputs concatenated."""
    parts: list[list[np.ndarray]] = []
    for i, (sl, valid) in enumerate(padded_batches(len(data), batch_size)):
        args = [state.params, state.dstate, backend.asarray(pad_to(data.y[sl], batch_size))]
        if seed_path is not None:
            args.append(backend.asarray(derive_seed(spec.seed, *seed_path, data.purpose, i)))
        out = fn(*args)
        out = out if isinstance(out, tuple) else (out,)
        parts.append([backend.to_numpy(o)[:valid] for o in out])
    return [np.concatenate(col) for col in zip(*parts)]


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def train(backend: Backend, model: VAE, spec: RunSpec, splits: Splits, data: DataContext, evals: EvalFunctions,
          log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> tuple[Trained, TrainingResult]:
    """Train from the spec's seed; returns the parameters of the best validation epoch."""
    cfg = spec.train
    init = model.init(spec.seed)
    params = backend.tree_map(backend.asarray, init)
    multipliers = multiplier_tree(model, init)
    opt_init, step = make_train_step(backend, model, spec.scaling, data.levels, cfg.learning_rate, multipliers, cfg.jit)
    opt_state, carry = opt_init(params), init_carry(backend, model)
    val = EvalData(backend, splits.validation.images, spec, data.levels, "validation")
    x_train = splits.train.images.astype(np.float32)
    steps_per_epoch = len(x_train) // cfg.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"batch_size {cfg.batch_size} exceeds the {len(x_train)} training images")
    result = TrainingResult()
    best_val, best, since_best = -math.inf, None, 0
    lik = model.likelihood
    t_start = time.perf_counter()
    for epoch in range(cfg.epochs):
        order = numpy_rng(spec.seed, "shuffle", epoch).permutation(len(x_train))
        metrics = []
        t_epoch = time.perf_counter()
        for i in range(steps_per_epoch):
            batch = backend.asarray(x_train[order[i * cfg.batch_size:(i + 1) * cfg.batch_size]])
            seeds = backend.asarray(np.stack([derive_seed(spec.seed, "dequant", epoch, i),
                                              derive_seed(spec.seed, "z", epoch, i)]))
            params, opt_state, carry, m = step(params, opt_state, carry, batch, seeds)
            if epoch == 0 and i == 0:
                backend.to_numpy(m["objective"])  # the first call compiles; time it apart
                result.compile_s = time.perf_counter() - t_epoch
                t_epoch = time.perf_counter()
            metrics.append(m)
        train_objective = float(np.mean([backend.to_numpy(m["objective"]) for m in metrics]))
        train_bound = float(np.mean([backend.to_numpy(m["bound"]) for m in metrics]))
        elapsed = time.perf_counter() - t_epoch
        result.steady_s += elapsed
        result.steady_examples += (steps_per_epoch - (1 if epoch == 0 else 0)) * cfg.batch_size
        result.epochs_run = epoch + 1

        bad_step = int(backend.to_numpy(carry["bad_step"]))
        if bad_step >= 0:
            result.nonfinite = {"epoch": bad_step // steps_per_epoch, "step": bad_step % steps_per_epoch, "global_step": bad_step}
            for key in result.curves:
                result.curves[key].append(None)
            log(f"  epoch {epoch + 1}: non-finite loss or gradient at step {bad_step}; run ended")
            break

        now = Trained(params, carry["dstate"])
        val_bound = float(np.mean(per_example(backend, evals.elbo, now, val, spec.eval.batch_size, ("val_z", epoch), spec)[0]))
        _, val_std, val_log_density, _, _ = per_example(backend, evals.at_mean, now, val, spec.eval.batch_size, None, spec)
        min_sigma = float(np.min(val_std)) if lik.has_scale else None
        below = float(np.mean(val_std < data.tau)) if lik.has_scale else None
        excess = excess_density_frac(val_log_density, data, spec.eval.density_c) if lik.has_density else None
        for key, value in (("train_objective", train_objective), ("train_bound", train_bound), ("val_bound", val_bound),
                           ("val_min_sigma", min_sigma), ("val_frac_below_tau", below),
                           ("val_excess_density_frac", excess)):
            result.curves[key].append(None if value is None else _finite_or_none(value))
        sigma_text = "" if min_sigma is None else f"  min sd {min_sigma:.3g}  sd below tau {below:.2%}"
        sigma_text += "" if excess is None else f"  excess density {excess:.2%}"
        log(f"  epoch {epoch + 1}/{cfg.epochs}: train bound {train_bound:.2f}  val bound {val_bound:.2f}{sigma_text}  ({elapsed:.1f} s)")

        if math.isfinite(val_bound) and val_bound > best_val:
            best_val, since_best, result.best_epoch = val_bound, 0, epoch
            best = now
        else:
            since_best += 1
            if cfg.patience and since_best >= cfg.patience:
                result.stopped_early = True
                log(f"  early stop: no validation improvement for {cfg.patience} epochs")
                break
    result.train_s = time.perf_counter() - t_start
    # arrays are immutable: keeping the best epoch's pytree is a snapshot, restoring it is a reference
    return (best or Trained(params, carry["dstate"])), result
