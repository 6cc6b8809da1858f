"""Run records as files: strict JSON, written atomically. Imports no training code, so the
runner's store and the report can use it without loading a framework."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

#: Fixed log10-sigma bins of a record's sigma histogram (values outside are clipped into the
#: end bins), so histograms of different runs add up.
SIGMA_LOG10_EDGES = np.linspace(-8.0, 1.0, 91)
#: A global learned scale within this relative distance of its closed-form optimum has converged
#: (a record's global_scale_converged).
SCALE_CONVERGENCE_RTOL = 0.1

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
    """Write atomically: temporary file in the same directory, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; records are meant to be shared
        with os.fdopen(fd, "w") as fh:
            json.dump(record, fh, indent=1, sort_keys=True, allow_nan=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
