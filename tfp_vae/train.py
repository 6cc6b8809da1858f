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
from tfp_vae.steps import (EvalFunctions, init_carry, make_train_step, multiplier_tree, pad_to, padded_batches,
                           stack_trees, take_tree)


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
    return train_group(backend, model, [spec], splits, data, evals, log)[0]


class _SeedTrack:
    """One seed's bookkeeping in a group: its result, best epoch and whether it still trains."""

    def __init__(self, spec: RunSpec, tag: str):
        self.spec = spec
        self.tag = tag  # prefix of this seed's log lines
        self.result = TrainingResult()
        self.best_val, self.best, self.since_best = -math.inf, None, 0
        self.active = True


def train_group(backend: Backend, model: VAE, specs: list[RunSpec], splits: Splits, data: DataContext,
                evals: EvalFunctions, log: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
                ) -> list[tuple[Trained, TrainingResult]]:
    """Train specs that differ only in their seed together, one compiled step for all of them (seed
    batching, when there is more than one). Each seed keeps its own initial weights, data order,
    noise, non-finite guard, early stopping and best epoch, exactly as if it were trained alone;
    a seed that diverges or stops early leaves the others training. Returns one
    (best-epoch parameters, result) per spec, in order."""
    cfg, first = specs[0].train, specs[0]
    batched = len(specs) > 1
    inits = [model.init(spec.seed) for spec in specs]
    multipliers = multiplier_tree(model, inits[0])
    opt_init, step = make_train_step(backend, model, first.scaling, data.levels, cfg.learning_rate, multipliers,
                                     cfg.jit, batched)
    solo = [backend.tree_map(backend.asarray, init) for init in inits]
    if batched:
        params = stack_trees(backend, solo)
        opt_state = stack_trees(backend, [opt_init(p) for p in solo])
        carry = stack_trees(backend, [init_carry(backend, model)] * len(specs))
    else:
        params, opt_state, carry = solo[0], opt_init(solo[0]), init_carry(backend, model)
    seed_view = (lambda tree, s: take_tree(backend, tree, s)) if batched else (lambda tree, s: tree)
    val = [EvalData(backend, splits.validation.images, spec, data.levels, "validation") for spec in specs]
    x_train = splits.train.images.astype(np.float32)
    steps_per_epoch = len(x_train) // cfg.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"batch_size {cfg.batch_size} exceeds the {len(x_train)} training images")
    tracks = [_SeedTrack(spec, f"seed {spec.seed}: " if batched else "") for spec in specs]
    lik = model.likelihood
    compile_s, t_start = 0.0, time.perf_counter()
    for epoch in range(cfg.epochs):
        orders = [numpy_rng(spec.seed, "shuffle", epoch).permutation(len(x_train)) for spec in specs]
        metrics = []
        t_epoch = time.perf_counter()
        for i in range(steps_per_epoch):
            rows = [x_train[order[i * cfg.batch_size:(i + 1) * cfg.batch_size]] for order in orders]
            seeds = [np.stack([derive_seed(spec.seed, "dequant", epoch, i), derive_seed(spec.seed, "z", epoch, i)])
                     for spec in specs]
            batch = backend.asarray(np.stack(rows) if batched else rows[0])
            seeds = backend.asarray(np.stack(seeds) if batched else seeds[0])
            params, opt_state, carry, m = step(params, opt_state, carry, batch, seeds)
            if epoch == 0 and i == 0:
                backend.to_numpy(m["objective"])  # the first call compiles; time it apart
                compile_s = time.perf_counter() - t_epoch
                t_epoch = time.perf_counter()
            metrics.append(m)
        # (steps,) or (steps, seeds): per-seed means over the epoch
        train_objective = np.mean(np.stack([backend.to_numpy(m["objective"]) for m in metrics]), 0).reshape(-1)
        train_bound = np.mean(np.stack([backend.to_numpy(m["bound"]) for m in metrics]), 0).reshape(-1)
        bad_steps = backend.to_numpy(carry["bad_step"]).reshape(-1)
        elapsed = time.perf_counter() - t_epoch
        for s, track in enumerate(tracks):
            if not track.active:
                continue
            result = track.result
            result.steady_s += elapsed
            result.steady_examples += (steps_per_epoch - (1 if epoch == 0 else 0)) * cfg.batch_size
            result.epochs_run = epoch + 1
            bad_step = int(bad_steps[s])
            if bad_step >= 0:
                result.nonfinite = {"epoch": bad_step // steps_per_epoch, "step": bad_step % steps_per_epoch,
                                    "global_step": bad_step}
                for key in result.curves:
                    result.curves[key].append(None)
                log(f"  {track.tag}epoch {epoch + 1}: non-finite loss or gradient at step {bad_step}; run ended")
                track.active = False
                continue
            now = Trained(seed_view(params, s), seed_view(carry["dstate"], s))
            spec = track.spec
            val_bound = float(np.mean(per_example(backend, evals.elbo, now, val[s], spec.eval.batch_size,
                                                  ("val_z", epoch), spec)[0]))
            _, val_std, val_log_density, _, _ = per_example(backend, evals.at_mean, now, val[s],
                                                            spec.eval.batch_size, None, spec)
            min_sigma = float(np.min(val_std)) if lik.has_scale else None
            below = float(np.mean(val_std < data.tau)) if lik.has_scale else None
            excess = excess_density_frac(val_log_density, data, spec.eval.density_c) if lik.has_density else None
            for key, value in (("train_objective", float(train_objective[s])), ("train_bound", float(train_bound[s])),
                               ("val_bound", val_bound), ("val_min_sigma", min_sigma), ("val_frac_below_tau", below),
                               ("val_excess_density_frac", excess)):
                result.curves[key].append(None if value is None else _finite_or_none(value))
            sigma_text = "" if min_sigma is None else f"  min sd {min_sigma:.3g}  sd below tau {below:.2%}"
            sigma_text += "" if excess is None else f"  excess density {excess:.2%}"
            log(f"  {track.tag}epoch {epoch + 1}/{cfg.epochs}: train bound {float(train_bound[s]):.2f}  "
                f"val bound {val_bound:.2f}{sigma_text}  ({elapsed:.1f} s)")
            if math.isfinite(val_bound) and val_bound > track.best_val:
                track.best_val, track.since_best, result.best_epoch = val_bound, 0, epoch
                track.best = now  # arrays are immutable: keeping the pytree is a snapshot
            else:
                track.since_best += 1
                if cfg.patience and track.since_best >= cfg.patience:
                    result.stopped_early = True
                    track.active = False
                    log(f"  {track.tag}early stop: no validation improvement for {cfg.patience} epochs")
        # a stopped seed keeps stepping with the others (its best epoch is already kept) until all stop
        if not any(track.active for track in tracks):
            break
    train_s = time.perf_counter() - t_start
    out = []
    for s, track in enumerate(tracks):
        track.result.train_s, track.result.compile_s = train_s, compile_s
        out.append((track.best or Trained(seed_view(params, s), seed_view(carry["dstate"], s)), track.result))
    return out
