"""Training loop: seeded shuffling and noise, Adam, early stopping on the validation
bound, per-epoch curves, and the non-finite guard that ends a run without raising."""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

import numpy as np

from tfp_vae import checkpoint
from tfp_vae.backends import Backend
from tfp_vae.config import RunSpec
from tfp_vae.data import Splits
from tfp_vae.decoders import DataContext
from tfp_vae.eval_data import EvalData, Trained, TrainingResult, excess_density_frac, per_example_group
from tfp_vae.model import VAE
from tfp_vae.seeds import derive_seed, numpy_rng
from tfp_vae.steps import EvalFunctions, init_carry, make_train_epoch, multiplier_tree, stack_trees, take_tree


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


class _SeedTrack:
    """One seed's bookkeeping in a group: its result, best epoch and whether it still trains."""

    def __init__(self, spec: RunSpec, tag: str):
        self.spec = spec
        self.tag = tag  # prefix of this seed's log lines
        self.result = TrainingResult()
        if spec.train.monitor == "val_lppl":
            self.result.curves["val_lppl"] = []
        self.best_val, self.best, self.since_best = -math.inf, None, 0
        self.active = True

    def end_epoch(
        self,
        epoch: int,
        steps_per_epoch: int,
        bad_step: int,
        train_objective: float,
        train_bound: float,
        check: dict[str, float | None],
        snapshot: Callable[[], Trained],
        elapsed: float,
        log: Callable[[str], None],
    ) -> None:
        """Record one epoch: the non-finite guard, the curves, the best epoch and early stopping."""
        result, cfg = self.result, self.spec.train
        result.epochs_run = epoch + 1
        if bad_step >= 0:
            result.nonfinite = {
                "epoch": bad_step // steps_per_epoch,
                "step": bad_step % steps_per_epoch,
                "global_step": bad_step,
            }
            for key in result.curves:
                result.curves[key].append(None)
            log(f"  {self.tag}epoch {epoch + 1}: non-finite loss or gradient at step {bad_step}; run ended")
            self.active = False
            return
        values = {"train_objective": train_objective, "train_bound": train_bound, **check}
        for key in result.curves:
            value = values[key]
            result.curves[key].append(None if value is None else _finite_or_none(value))
        val_bound, min_sigma, excess = check["val_bound"], check["val_min_sigma"], check["val_excess_density_frac"]
        sigma_text = (
            "" if min_sigma is None else (f"  min sd {min_sigma:.3g}  sd below tau {check['val_frac_below_tau']:.2%}")
        )
        sigma_text += "" if excess is None else f"  excess density {excess:.2%}"
        lppl_text = f"  val lppl {check['val_lppl']:.2f}" if "val_lppl" in check else ""
        log(
            f"  {self.tag}epoch {epoch + 1}/{cfg.epochs}: train bound {train_bound:.2f}  "
            f"val bound {val_bound:.2f}{lppl_text}{sigma_text}  ({elapsed:.1f} s)"
        )
        monitored = check[cfg.monitor]
        if monitored is not None and math.isfinite(monitored) and monitored - cfg.min_delta > self.best_val:
            self.best_val, self.since_best, result.best_epoch = monitored, 0, epoch
            self.best = snapshot()  # arrays are immutable: keeping the pytree is a snapshot
        else:
            self.since_best += 1
            if cfg.patience and self.since_best >= cfg.patience:
                result.stopped_early = True
                self.active = False
                log(f"  {self.tag}early stop: no validation improvement for {cfg.patience} epochs")


def epoch_inputs(specs: list[RunSpec], epoch: int, n_train: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The epoch's rows and step seeds, derived on the host from each seed as a step-by-step loop
    would: rows int32 (T, S, B) (a fresh permutation per seed and epoch, the remainder dropped) and
    seeds int32 (T, S, 2, 2) (dequantization and latent noise per step)."""
    steps = n_train // batch_size
    rows = np.stack(
        [
            numpy_rng(spec.seed, "shuffle", epoch).permutation(n_train)[: steps * batch_size].reshape(steps, batch_size)
            for spec in specs
        ],
        1,
    ).astype(np.int32)
    seeds = np.array(
        [
            [[derive_seed(spec.seed, "dequant", epoch, i), derive_seed(spec.seed, "z", epoch, i)] for spec in specs]
            for i in range(steps)
        ],
        dtype=np.int32,
    ).reshape(steps, len(specs), 2, 2)
    return rows, seeds


def validate(
    backend: Backend,
    model: VAE,
    state: Trained,
    val: list[EvalData],
    specs: list[RunSpec],
    data: DataContext,
    evals: EvalFunctions,
    epoch: int,
    batched: bool,
) -> list[dict[str, float | None]]:
    """Per seed: validation bound, smallest sd, fraction of sd below tau and excess-density fraction
    (and the validation LPPL where early stopping watches it), every seed of a group evaluated in
    one call per batch."""
    spec, lik = specs[0], model.likelihood
    bounds = per_example_group(backend, evals.elbo, state, val, spec.eval.batch_size, ("val_z", epoch), specs, batched)
    at_mean = per_example_group(backend, evals.at_mean, state, val, spec.eval.batch_size, None, specs, batched)
    lppls = (
        per_example_group(backend, evals.lppl, state, val, spec.eval.batch_size, ("val_lppl_z", epoch), specs, batched)
        if spec.train.monitor == "val_lppl"
        else None
    )
    out = []
    for s, ((bound,), (_, std, log_density, _, _)) in enumerate(zip(bounds, at_mean)):
        out.append(
            {
                **({} if lppls is None else {"val_lppl": float(np.mean(lppls[s][0]))}),
                "val_bound": float(np.mean(bound)),
                "val_min_sigma": float(np.min(std)) if lik.has_scale else None,
                "val_frac_below_tau": float(np.mean(std < data.tau)) if lik.has_scale else None,
                "val_excess_density_frac": (
                    excess_density_frac(log_density, data, spec.eval.density_c) if lik.has_density else None
                ),
            }
        )
    return out


class GroupEpoch(NamedTuple):
    """A group's compiled epochs: `run` trains with the decoder's objective, `warm` (None without a
    variance warm-up) with the warm-up objective; both share `opt_init`'s optimiser state."""

    opt_init: Callable
    run: Callable
    warm: Callable | None = None


def make_group_epoch(backend: Backend, model: VAE, spec: RunSpec, data: DataContext, batched: bool) -> GroupEpoch:
    """The compiled epochs for the specs of a group (they differ only by seed); build them once
    and train every seed (or every seed batch) of the group with them, so that they compile once."""
    multipliers = multiplier_tree(model, model.init(spec.seed))
    cfg = spec.train
    opt_init, run = make_train_epoch(
        backend, model, spec.scaling, data.levels, cfg.learning_rate, multipliers, cfg.compiler, batched, cfg.mc_samples
    )
    warm = None
    if cfg.variance_warmup_epochs:
        warm = make_train_epoch(
            backend,
            model,
            spec.scaling,
            data.levels,
            cfg.learning_rate,
            multipliers,
            cfg.compiler,
            batched,
            cfg.mc_samples,
            warmup=True,
        )[1]
    return GroupEpoch(opt_init, run, warm)


@dataclass
class TrainState:
    """A part's whole training state after `epoch` epochs: what the loop carries from one epoch to
    the next, so that a run stopped after any epoch and resumed from it gives the same record."""

    epoch: int
    params: Any  # backend pytrees, with a leading seed axis in the vmap layout
    opt_state: Any
    carry: Any
    tracks: list[_SeedTrack]
    epoch_s: list[float] = field(default_factory=list)  # training seconds of each epoch of this process
    train_s: float = 0.0  # training seconds of earlier processes (a resumed run)
    segments: list[dict[str, Any]] = field(default_factory=list)  # where each stretch of epochs ran


def initial_state(backend: Backend, model: VAE, specs: list[RunSpec], opt_init: Callable, tagged: bool) -> TrainState:
    """Epoch 0: each seed's initial weights, optimiser state and step carry."""
    solo = [backend.tree_map(backend.asarray, model.init(spec.seed)) for spec in specs]
    if len(specs) > 1:
        params = stack_trees(backend, solo)
        opt_state = stack_trees(backend, [opt_init(p) for p in solo])
        carry = stack_trees(backend, [init_carry(backend, model)] * len(specs))
    else:
        params, opt_state, carry = solo[0], opt_init(solo[0]), init_carry(backend, model)
    tracks = [_SeedTrack(spec, f"seed {spec.seed}: " if tagged else "") for spec in specs]
    return TrainState(0, params, opt_state, carry, tracks)


def _seed_view(backend: Backend, batched: bool) -> Callable:
    return (lambda tree, s: take_tree(backend, tree, s)) if batched else (lambda tree, s: tree)


def _state_trees(state: TrainState, template: TrainState, view: Callable) -> list[tuple[Any, Any]]:
    """(tree, template tree) pairs of every array of a state, in a fixed order: the arrays a
    checkpoint stores (best weights where a seed has them)."""
    pairs = [(state.params, template.params), (state.opt_state, template.opt_state), (state.carry, template.carry)]
    for s, track in enumerate(state.tracks):
        if track.best is not None:
            pairs.append(
                ((track.best.params, track.best.dstate), (view(template.params, s), view(template.carry["dstate"], s)))
            )
    return pairs


def save_state(backend: Backend, path, state: TrainState, specs: list[RunSpec]) -> None:
    """Write `state` to the checkpoint file `path` (tfp_vae/checkpoint.py)."""
    from tfp_vae.environment import git_commit

    leaves = [
        backend.to_numpy(leaf)
        for tree in (state.params, state.opt_state, state.carry)
        for leaf in backend.tree_leaves(tree)
    ]
    for track in state.tracks:
        if track.best is not None:
            leaves += [backend.to_numpy(leaf) for leaf in backend.tree_leaves((track.best.params, track.best.dstate))]
    meta = {
        "run_ids": [spec.run_id() for spec in specs],
        "epoch": state.epoch,
        "train_s": state.train_s + sum(state.epoch_s),
        "segments": state.segments,
        "git_commit": git_commit().get("commit"),
        "tracks": [
            {
                "best_val": track.best_val,
                "since_best": track.since_best,
                "active": track.active,
                "has_best": track.best is not None,
                "result": dataclasses.asdict(track.result),
            }
            for track in state.tracks
        ],
    }
    checkpoint.save(path, meta, leaves)


def restore_state(
    backend: Backend, meta: dict[str, Any], leaves: list[np.ndarray], fresh: TrainState, batched: bool
) -> TrainState:
    """The state a checkpoint holds, rebuilt on the structure of a fresh one of the same specs."""
    it = iter(leaves)
    fill = lambda tree: backend.tree_map(lambda _: backend.asarray(next(it)), tree)
    view = _seed_view(backend, batched)
    params, opt_state, carry = fill(fresh.params), fill(fresh.opt_state), fill(fresh.carry)
    for s, (track, saved) in enumerate(zip(fresh.tracks, meta["tracks"])):
        track.best_val, track.since_best, track.active = saved["best_val"], saved["since_best"], saved["active"]
        track.result = TrainingResult(**saved["result"])
        if saved["has_best"]:
            best_params, best_dstate = fill((view(fresh.params, s), view(fresh.carry["dstate"], s)))
            track.best = Trained(best_params, best_dstate)
    return TrainState(meta["epoch"], params, opt_state, carry, fresh.tracks, [], meta["train_s"], meta["segments"])


class _Saver:
    """When to write a checkpoint: every `every_epochs` epochs or `every_minutes` minutes."""

    def __init__(self, spec: RunSpec, path):
        self.path, self.cfg, self.last = path, spec.checkpoint, time.monotonic()

    def due(self, epoch: int) -> bool:
        cfg = self.cfg
        by_count = cfg.every_epochs > 0 and epoch % cfg.every_epochs == 0
        by_time = cfg.every_minutes > 0 and time.monotonic() - self.last >= 60.0 * cfg.every_minutes
        return self.path is not None and (by_count or by_time)

    def saved(self) -> None:
        self.last = time.monotonic()


def _segment(from_epoch: int) -> dict[str, Any]:
    from tfp_vae.environment import cpu_model, machine_slug

    return {"from_epoch": from_epoch, "machine": machine_slug(), "cpu": cpu_model()}


def train_group(
    backend: Backend,
    model: VAE,
    specs: list[RunSpec],
    splits: Splits,
    data: DataContext,
    evals: EvalFunctions,
    group_epoch: GroupEpoch,
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
    tag_seeds: bool | None = None,
    checkpoint_path=None,
) -> list[tuple[Trained, TrainingResult]]:
    """Train specs that differ only in their seed together, one compiled epoch for all of them (seed
    batching, when there is more than one). Each seed keeps its own initial weights, data order,
    noise, non-finite guard, early stopping and best epoch, exactly as if it were trained alone;
    a seed that diverges or stops early leaves the others training. Returns one
    (best-epoch parameters, result) per spec, in order. `group_epoch` is make_group_epoch's, batched
    when there is more than one spec, and so is `evals`. `tag_seeds`: prefix log lines with the seed
    (default: when there is more than one spec). `checkpoint_path`: resume from the training state
    there if there is one, and save it there as the specs' [checkpoint] says (None: never)."""
    cfg = specs[0].train
    batched = len(specs) > 1
    opt_init = group_epoch.opt_init
    view = _seed_view(backend, batched)
    val = [EvalData(backend, splits.validation.images, spec, data.levels, "validation") for spec in specs]
    n_train = len(splits.train)
    steps_per_epoch = n_train // cfg.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"batch_size {cfg.batch_size} exceeds the {n_train} training images")
    images = backend.asarray(splits.train.images.astype(np.float32))  # on the device once for the whole group
    state = initial_state(backend, model, specs, opt_init, batched if tag_seeds is None else tag_seeds)
    saved = (
        None
        if checkpoint_path is None
        else checkpoint.load(checkpoint_path, {"run_ids": [spec.run_id() for spec in specs]})
    )
    if saved is not None:
        state = restore_state(backend, *saved, state, batched)
        log(
            f"  resumed from {checkpoint_path} after epoch {state.epoch} "
            f"(written on {state.segments[-1]['cpu'] if state.segments else 'unknown'})"
        )
    state.segments.append(_segment(state.epoch))
    saver = _Saver(specs[0], checkpoint_path)
    t_start = time.perf_counter()
    run = _EpochRunner(backend, model, specs, data, evals, group_epoch, images, val, batched, log)
    while state.epoch < cfg.epochs and any(track.active for track in state.tracks):
        run(state)
        # a stopped seed keeps stepping with the others (its best epoch is already kept) until all stop
        state.epoch += 1
        if state.epoch < cfg.epochs and any(track.active for track in state.tracks) and saver.due(state.epoch):
            save_state(backend, checkpoint_path, state, specs)
            saver.saved()
    return _group_results(state, state.train_s + time.perf_counter() - t_start, steps_per_epoch * cfg.batch_size, view)


class _EpochRunner:
    """One epoch of a seed group: the compiled epoch (the warm-up's while it lasts), then each active
    seed's validation and early-stopping bookkeeping (EarlyStopping.end_epoch)."""

    def __init__(self, backend, model, specs, data, evals, group_epoch, images, val, batched, log):
        self.backend, self.model, self.specs, self.data, self.evals = backend, model, specs, data, evals
        self.group_epoch, self.images, self.val, self.batched, self.log = group_epoch, images, val, batched, log
        self.view = _seed_view(backend, batched)
        self.n_train = int(images.shape[0])

    def __call__(self, state: TrainState) -> None:
        backend, cfg, epoch = self.backend, self.specs[0].train, state.epoch
        n_train = self.n_train
        t_epoch = time.perf_counter()
        rows, seeds = epoch_inputs(self.specs, epoch, n_train, cfg.batch_size)
        if not self.batched:
            rows, seeds = rows[:, 0], seeds[:, 0]
        run_epoch = self.group_epoch.warm if epoch < cfg.variance_warmup_epochs else self.group_epoch.run
        params, opt_state, carry, metrics = run_epoch(
            state.params, state.opt_state, state.carry, self.images, backend.asarray(rows), backend.asarray(seeds)
        )
        state.params, state.opt_state, state.carry = params, opt_state, carry
        # (steps,) or (steps, seeds): per-seed means over the epoch
        train_objective = np.mean(backend.to_numpy(metrics["objective"]), 0).reshape(-1)
        train_bound = np.mean(backend.to_numpy(metrics["bound"]), 0).reshape(-1)
        bad_steps = backend.to_numpy(carry["bad_step"]).reshape(-1)
        elapsed = time.perf_counter() - t_epoch
        state.epoch_s.append(elapsed)
        trained = Trained(params, carry["dstate"])
        checks = validate(
            backend, self.model, trained, self.val, self.specs, self.data, self.evals, epoch, self.batched
        )
        for s, track in enumerate(state.tracks):
            if track.active:
                snapshot = lambda s=s: Trained(self.view(params, s), self.view(carry["dstate"], s))
                track.end_epoch(
                    epoch,
                    n_train // cfg.batch_size,
                    int(bad_steps[s]),
                    float(train_objective[s]),
                    float(train_bound[s]),
                    checks[s],
                    snapshot,
                    elapsed,
                    self.log,
                )


def _group_results(state: TrainState, train_s: float, examples_per_epoch: int, view) -> list:
    """(best-epoch parameters, result) per seed, with the group's timings."""
    compile_s, steady_epoch_s = split_compile_time(state.epoch_s)
    out = []
    for s, track in enumerate(state.tracks):
        result = track.result
        result.train_s, result.compile_s = train_s, compile_s
        # this seed's steady rate: its epochs after the first of this process (the first call compiles)
        steady_epochs = max(min(result.epochs_run, len(state.epoch_s)) - 1, 0) if steady_epoch_s > 0 else 0
        result.steady_s = steady_epoch_s * steady_epochs
        result.steady_examples = steady_epochs * examples_per_epoch
        result.segments = state.segments
        out.append((track.best or Trained(view(state.params, s), view(state.carry["dstate"], s)), result))
    return out


def split_compile_time(epoch_s: list[float]) -> tuple[float, float]:
    """(compile seconds, seconds of one steady epoch) from the training wall time of each epoch: the
    first call compiles, so compilation is the first epoch's excess over the median later epoch
    (with a single epoch, all of it, and the steady time is unknown: 0)."""
    if len(epoch_s) < 2:
        return (epoch_s[0] if epoch_s else 0.0), 0.0
    steady = float(np.median(epoch_s[1:]))
    return max(epoch_s[0] - steady, 0.0), steady
