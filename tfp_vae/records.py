"""Run records as files: strict JSON, written atomically. Imports no training code, so the
runner's store and the report can use it without loading a framework."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from tfp_vae.files import write_atomic

#: Fixed log10-sigma bins of a record's sigma histogram (values outside are clipped into the
#: end bins), so histograms of different runs add up.
SIGMA_LOG10_EDGES = np.linspace(-8.0, 1.0, 91)
#: A global learned scale within this relative distance of its closed-form optimum has converged
#: (a record's global_scale_converged).
SCALE_CONVERGENCE_RTOL = 0.1
#: A run has converged when its validation bound moved by at most CONVERGENCE_NATS_PER_DIM nats per
#: pixel (0.78 nats on 28x28 images, 0.064 on 8x8 digits) over its last CONVERGENCE_WINDOW epochs,
#: or early stopping ended it, and its global learned scale (if any) is at its optimum, and it did
#: not diverge (`diverged`).
CONVERGENCE_WINDOW = 5
#: The fields of a record that legitimately differ between two runs of one spec (where and how long
#: it ran, and how many runs shared the machine): every comparison of records leaves them out.
VOLATILE_FIELDS = ("timing", "environment", "execution.concurrent_runs")
#: Why two records of one spec may differ only in the last bits when nothing else explains it.
SAME_ENVIRONMENT = "same CPU model, family and instruction set, versions, backend and threads"
#: The excess-density limits c (in units of 1 / bin) each record also states its fraction at
#: (metrics.excess_density_frac_by_c), for the verdicts' sensitivity to c.
SENSITIVITY_C = (1.5, 2.0, 3.0, 4.0)
CONVERGENCE_NATS_PER_DIM = 0.001


def collapse_onset_epoch(val_excess: list[float | None], threshold: float) -> int | None:
    """The first epoch (1-based) whose validation excess-density fraction is above the collapse
    threshold; None if none is (or the decoder has no density)."""
    return next((e + 1 for e, v in enumerate(val_excess) if v is not None and v > threshold), None)


def window_change(val_bound: list[float | None], window: int = CONVERGENCE_WINDOW) -> float | None:
    """The validation bound of the last epoch minus that `window` epochs earlier (fewer when fewer
    were run); None with one epoch or a missing value."""
    if len(val_bound) < 2:
        return None
    first, last = val_bound[-1 - min(window, len(val_bound) - 1)], val_bound[-1]
    return None if first is None or last is None else last - first


def diverged(val_bound: list[float | None], best_epoch: int | None) -> bool:
    """Whether, after its best epoch (1-based), the validation bound fell below its first epoch's:
    training undid all it had learned. Early stopping then ends a divergence, not a plateau."""
    if not val_bound or val_bound[0] is None or not best_epoch:
        return False
    return any(v is not None and v < val_bound[0] for v in val_bound[best_epoch:])


def converged(
    change: float | None, dims: int, stopped_early: bool, scale_converged: bool | None, fell: bool = False
) -> bool:
    """The record's `converged` (CONVERGENCE_WINDOW, CONVERGENCE_NATS_PER_DIM); `fell`: `diverged`."""
    plateau = stopped_early or (change is not None and abs(change) <= CONVERGENCE_NATS_PER_DIM * dims)
    return bool(plateau and scale_converged is not False and not fell)


def jsonable(value: Any) -> Any:
    """Strict-JSON copy: NumPy scalars to Python, non-finite floats to None."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def write_record(record: dict[str, Any], path: str | Path) -> Path:
    """Write atomically (files.write_atomic): a reader sees the old record or the whole new one."""
    return write_atomic(path, json.dumps(record, indent=1, sort_keys=True, allow_nan=False) + "\n")
