"""What training and evaluation share: the trained state and the training result, splits scaled once for evaluation,
compiled per-batch functions applied over a split (one seed or a seed group at a time), and
the excess-density fraction. Imports neither the trainer (train.py, steps.py) nor the evaluation
(evaluate.py, run.py), which both build on it (tests/test_import_graph.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from tfp_vae.backends import Backend
from tfp_vae.config import RunSpec
from tfp_vae.decoders import DataContext
from tfp_vae.model import scale_images
from tfp_vae.seeds import derive_seed


def padded_batches(n: int, batch_size: int) -> Iterator[tuple[slice, int]]:
    """Slices of a padded batching: (slice, number of valid rows)."""
    for start in range(0, n, batch_size):
        yield slice(start, start + batch_size), min(batch_size, n - start)


def pad_to(x: np.ndarray, batch_size: int) -> np.ndarray:
    """Pad the first axis to `batch_size` with copies of row 0 so compiled shapes stay fixed."""
    if len(x) == batch_size:
        return x
    return np.concatenate([x, np.repeat(x[:1], batch_size - len(x), axis=0)])


@dataclass
class Trained:
    """What training leaves for evaluation: the restored parameters and decoder state."""

    params: Any
    dstate: Any


@dataclass
class TrainingResult:
    epochs_run: int = 0
    best_epoch: int = -1
    stopped_early: bool = False
    nonfinite: dict[str, int] | None = None
    curves: dict[str, list[float | None]] = field(
        default_factory=lambda: {
            "train_objective": [],
            "train_bound": [],
            "val_bound": [],
            "val_min_sigma": [],
            "val_frac_below_tau": [],
            "val_excess_density_frac": [],
        }
    )
    compile_s: float = 0.0
    steady_examples: int = 0
    steady_s: float = 0.0
    train_s: float = 0.0
    #: Each stretch of epochs and the machine it ran on: one for a run never interrupted, one more
    #: per resumption from a checkpoint ({"from_epoch", "machine", "cpu"}).
    segments: list[dict[str, Any]] = field(default_factory=list)

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


class EvalData:
    """A split scaled once with a fixed seed (dequantization noise is fixed for evaluation)."""

    def __init__(self, backend: Backend, images: np.ndarray, spec: RunSpec, levels: int, purpose: str):
        seed = backend.asarray(derive_seed(spec.seed, "eval_noise", purpose))
        x = backend.asarray(images.astype(np.float32))
        self.y = backend.to_numpy(scale_images(backend.xp, x, spec.scaling, levels, seed))
        self.purpose = purpose

    def __len__(self) -> int:
        return len(self.y)


def per_example_group(
    backend: Backend,
    fn: Callable,
    state: Trained,
    datas: list[EvalData],
    batch_size: int,
    seed_path: tuple[Any, ...] | None,
    specs: list[RunSpec],
    batched: bool = True,
) -> list[list[np.ndarray]]:
    """Apply a compiled per-batch function over each seed's split in padded batches; `batched`: `fn`
    is mapped over a leading seed axis of the state, the data (each seed's own scaling of one split)
    and the seeds. Memory is one batch per seed. Returns, per seed, its outputs concatenated."""
    n = len(datas[0])
    parts: list[list[list[np.ndarray]]] = [[] for _ in datas]
    for i, (sl, valid) in enumerate(padded_batches(n, batch_size)):
        ys = [pad_to(d.y[sl], batch_size) for d in datas]
        args = [state.params, state.dstate, backend.asarray(np.stack(ys) if batched else ys[0])]
        if seed_path is not None:
            seeds = [derive_seed(spec.seed, *seed_path, d.purpose, i) for spec, d in zip(specs, datas)]
            args.append(backend.asarray(np.stack(seeds) if batched else seeds[0]))
        out = fn(*args)
        out = [backend.to_numpy(o) for o in (out if isinstance(out, tuple) else (out,))]
        for s in range(len(datas)):
            parts[s].append([(o[s] if batched else o)[:valid] for o in out])
    return [[np.concatenate(col) for col in zip(*seed_parts)] for seed_parts in parts]
