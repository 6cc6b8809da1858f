"""Evaluation on the held-out test split, exactly as docs/definitions.md defines each number."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from tfp_vae.backends import Backend
from tfp_vae.config import RunSpec
from tfp_vae.decoders import DataContext
from tfp_vae.eval_data import EvalData, Trained, TrainingResult, excess_density_frac, per_example_group
from tfp_vae.model import VAE
from tfp_vae.records import (
    CONVERGENCE_WINDOW,
    SCALE_CONVERGENCE_RTOL,
    SENSITIVITY_C,
    SIGMA_LOG10_EDGES,
    collapse_onset_epoch,
    converged,
    diverged,
    window_change,
)
from tfp_vae.steps import EvalFunctions, stack_trees

ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. 2016


def _mean(values: np.ndarray) -> float | None:
    value = float(np.mean(values))
    return value if math.isfinite(value) else None


def bits_per_dim(iwae_ll: float | None, dims: int, data: DataContext, likelihood) -> float | None:
    """bpd where defined: discrete likelihoods -log2 p / D; proper densities of dequantized data
    (-ll + D ln L) / (D ln 2), an upper bound on the code length; otherwise None (n/a)."""
    if iwae_ll is None:
        return None
    if likelihood.discrete:
        return -iwae_ll / (dims * math.log(2.0))
    if data.scaling == "dequantized" and likelihood.proper_density:
        return (-iwae_ll + dims * math.log(data.levels)) / (dims * math.log(2.0))
    return None


def sigma_histogram(sigma: np.ndarray) -> list[int]:
    """Counts of log10(sigma) in SIGMA_LOG10_EDGES, out-of-range values in the end bins."""
    logs = np.clip(np.log10(np.maximum(sigma, 1e-300)), SIGMA_LOG10_EDGES[0], SIGMA_LOG10_EDGES[-1])
    return [int(c) for c in np.histogram(logs, bins=SIGMA_LOG10_EDGES)[0]]


def collapse_verdict(
    training: TrainingResult,
    excess_frac: float | None,
    threshold: float,
    c: float,
    dims: int,
    data: DataContext,
    likelihood,
) -> tuple[bool, str | None]:
    """variance_collapse and the rule(s) that fired, each reason starting with the rule's name
    (docs/definitions.md): `nonfinite`, `excess_density` (judged on the evaluated weights) and
    `bound_above_discrete_limit` (any epoch's training bound on dequantized data)."""
    reasons = []
    if training.nonfinite is not None:
        reasons.append(
            f"nonfinite: training loss or gradient at epoch {training.nonfinite['epoch'] + 1}, "
            f"step {training.nonfinite['step']}"
        )
    if excess_frac is not None and excess_frac > threshold:
        reasons.append(
            f"excess_density: {excess_frac:.2%} of test pixels have density above {c:g} / bin "
            f"(threshold {threshold:.2%})"
        )
    limit = dims * math.log(data.levels)
    bound = training.max_train_bound
    if data.scaling == "dequantized" and likelihood.proper_density and bound is not None and bound > limit:
        reasons.append(f"bound_above_discrete_limit: training bound {bound:.1f} > D ln L = {limit:.1f}")
    return bool(reasons), "; ".join(reasons) or None


def scale_convergence(likelihood, dp, squared_errors: np.ndarray) -> dict[str, Any]:
    """A global learned scale against its optimum given the mean, sqrt(mean squared error at
    sampled z) on the training split; empty values for decoders without one."""
    scale = likelihood.global_scale(dp)
    if scale is None:
        return {"global_scale": None, "global_scale_optimum": None, "global_scale_converged": None}
    value, optimum = float(likelihood.backend.to_numpy(scale)), float(np.sqrt(np.mean(squared_errors)))
    return {
        "global_scale": value,
        "global_scale_optimum": optimum,
        "global_scale_converged": bool(abs(value / optimum - 1.0) <= SCALE_CONVERGENCE_RTOL),
    }


#: Evaluating a seed group, at most this many float32 elements per tensor of one call
#: (seeds x batch x samples x pixels): seeds are taken this many at a time.
EVAL_ELEMENTS_PER_CALL = 2**26


def seeds_per_call(spec: RunSpec, dims: int) -> int:
    """How many seeds of a group one evaluation call takes, so that memory stays bounded."""
    cfg = spec.eval
    per_seed = cfg.batch_size * max(min(cfg.k_chunk, cfg.iwae_k), min(cfg.k_chunk, cfg.lppl_samples), 1) * dims
    return max(1, EVAL_ELEMENTS_PER_CALL // per_seed)


def evaluate_group(
    backend: Backend,
    model: VAE,
    trained: list[Trained],
    specs: list[RunSpec],
    test_images: np.ndarray,
    train_images: np.ndarray,
    data: DataContext,
    evals: EvalFunctions,
    trainings: list[TrainingResult],
    batched: bool,
) -> list[tuple[dict[str, Any], dict[str, float]]]:
    """(metrics, timing) per seed of a group. `batched`: `evals` are mapped over seeds and a call
    takes seeds_per_call seeds (the last call padded with copies of its first seed, so that one
    compiled shape serves every call); each seed's numbers are those it gets evaluated alone."""
    cfg = specs[0].eval
    if cfg.max_test_examples:
        test_images = test_images[: cfg.max_test_examples]
    dims = int(np.prod(test_images.shape[1:]))
    per_call = min(seeds_per_call(specs[0], dims), len(specs)) if batched else 1
    out = []
    for start in range(0, len(specs), per_call):
        chunk = list(range(start, min(start + per_call, len(specs))))
        padded = chunk + [chunk[0]] * (per_call - len(chunk)) if batched else chunk
        state = (
            Trained(
                stack_trees(backend, [trained[i].params for i in padded]),
                stack_trees(backend, [trained[i].dstate for i in padded]),
            )
            if batched
            else trained[chunk[0]]
        )
        outputs, timing = _evaluate_outputs(
            backend, state, [specs[i] for i in padded], test_images, train_images, data, evals, batched
        )
        for j, i in enumerate(chunk):
            metrics = _metrics(
                model, specs[i], outputs[j], dims, data, trainings[i], model.dp(trained[i].params, trained[i].dstate)
            )
            out.append((metrics, timing))
    return out


def _evaluate_outputs(
    backend: Backend,
    state: Trained,
    specs: list[RunSpec],
    test_images: np.ndarray,
    train_images: np.ndarray,
    data: DataContext,
    evals: EvalFunctions,
    batched: bool,
) -> tuple[list[dict[str, np.ndarray]], dict[str, float]]:
    """Every per-example output evaluation needs, per seed, and the timing of the call."""
    test = [EvalData(backend, test_images, spec, data.levels, "test") for spec in specs]
    train = [EvalData(backend, train_images, spec, data.levels, "train") for spec in specs]
    bs = specs[0].eval.batch_size

    def over(fn, split, seed_path):
        return per_example_group(backend, fn, state, split, bs, seed_path, specs, batched)

    t0 = time.perf_counter()
    elbo_test = over(evals.elbo, test, ("elbo_z",))
    at_mean = over(evals.at_mean, test, None)
    lppl = over(evals.lppl, test, ("lppl_z",))
    t_iwae = time.perf_counter()
    iwae = over(evals.iwae, test, ("iwae_z",))
    iwae_s = time.perf_counter() - t_iwae
    eval_s = time.perf_counter() - t0
    elbo_train = over(evals.elbo, train, ("elbo_z",))
    train_sq_err = over(evals.sampled_squared_error, train, ("scale_z",))
    outputs = []
    for s in range(len(specs)):
        mean, std, log_density, mu_q, kl = at_mean[s]
        outputs.append(
            {
                "elbo": elbo_test[s][0],
                "mean": mean,
                "std": std,
                "log_density": log_density,
                "mu_q": mu_q,
                "kl": kl,
                "lppl": lppl[s][0],
                "iwae": iwae[s][0],
                "train_elbo": elbo_train[s][0],
                "train_sq_err": train_sq_err[s][0],
                "y": test[s].y,
            }
        )
    n, k = len(test_images), specs[0].eval.iwae_k
    timing = {
        "eval_s": eval_s,
        # this seed's rates; a call evaluated len(specs) seeds at once
        "eval_examples_per_s": n / eval_s,
        "iwae_s": iwae_s,
        "importance_samples_per_s": n * k / iwae_s,
    }
    return outputs, timing


def _metrics(
    model: VAE, spec: RunSpec, o: dict[str, np.ndarray], dims: int, data: DataContext, training: TrainingResult, dp
) -> dict[str, Any]:
    """One seed's metrics from its per-example outputs (docs/definitions.md)."""
    likelihood = model.likelihood
    iwae_ll = _mean(o["iwae"])
    elbo = _mean(o["elbo"])
    train_elbo = _mean(o["train_elbo"])
    unit_activity = np.var(o["mu_q"], axis=0)
    scale = scale_convergence(likelihood, dp, o["train_sq_err"])
    return {
        "elbo": elbo,
        "iwae_ll": iwae_ll,
        "iwae_k": spec.eval.iwae_k,
        "lppl": _mean(o["lppl"]),
        "lppl_samples": spec.eval.lppl_samples,
        "bpd": bits_per_dim(iwae_ll, dims, data, likelihood),
        "rmse": float(np.sqrt(np.mean(np.square(o["mean"] - o["y"])))),
        "test_examples": len(o["y"]),
        "dims": dims,
        "tau": data.tau,
        "bin_width": data.bin_width,
        "discrete_limit_nats": dims * math.log(data.levels),
        **_scale_metrics(o["std"] if likelihood.has_scale else None, data),
        **scale,
        **_collapse_metrics(spec, likelihood, o["log_density"], dims, data, training, scale["global_scale_converged"]),
        "active_units": int(np.sum(unit_activity > ACTIVE_UNIT_THRESHOLD)),
        "unit_activity": [float(v) for v in unit_activity],
        "kl_per_dim": [float(v) for v in np.mean(o["kl"], axis=0)],
        "train_elbo": train_elbo,
        "train_test_gap": None if train_elbo is None or elbo is None else train_elbo - elbo,
    }


def _scale_metrics(std: np.ndarray | None, data: DataContext) -> dict[str, Any]:
    """Summaries of the decoder's standard deviations at the posterior mean (None: no scale)."""
    if std is None:
        return dict.fromkeys(("sigma_min", "sigma_p01", "sigma_median", "frac_below_tau", "sigma_log10_hist"))
    flat = std.reshape(-1)
    return {
        "sigma_min": float(np.min(flat)),
        "sigma_p01": float(np.percentile(flat, 1)),
        "sigma_median": float(np.median(flat)),
        "frac_below_tau": float(np.mean(flat < data.tau)),
        "sigma_log10_hist": sigma_histogram(flat),
    }


def _collapse_metrics(
    spec: RunSpec,
    likelihood,
    log_density: np.ndarray,
    dims: int,
    data: DataContext,
    training: TrainingResult,
    scale_converged: bool | None,
) -> dict[str, Any]:
    """The collapse verdict and what it rests on (excess density, for decoders with a density;
    the training bound) and whether the validation bound had converged."""
    cfg, has_density = spec.eval, likelihood.has_density
    excess = excess_density_frac(log_density, data, cfg.density_c) if has_density else None
    # the same fraction at other limits c, so a table can show which verdicts hang on the chosen c
    excess_by_c = {f"{c:g}": excess_density_frac(log_density, data, c) for c in SENSITIVITY_C} if has_density else None
    collapsed, reason = collapse_verdict(
        training, excess, cfg.collapse_threshold, cfg.density_c, dims, data, likelihood
    )
    change = window_change(training.curves["val_bound"])
    return {
        "excess_density_frac": excess,
        "excess_density_frac_by_c": excess_by_c,
        "density_c": cfg.density_c,
        "variance_collapse": collapsed,
        "collapse_reason": reason,
        "collapse_threshold": cfg.collapse_threshold,
        "max_train_bound": training.max_train_bound,
        "val_bound_final_change": training.final_val_change,
        "collapse_onset_epoch": collapse_onset_epoch(
            training.curves["val_excess_density_frac"], cfg.collapse_threshold
        ),
        "val_bound_window_change": change,
        "convergence_window": CONVERGENCE_WINDOW,
        "converged": converged(
            change,
            dims,
            training.stopped_early,
            scale_converged,
            diverged(training.curves["val_bound"], training.best_epoch + 1),
        ),
    }
