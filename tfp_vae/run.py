"""One run: `run(spec) -> record`, a JSON-serialisable dict with a schema version."""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tfp_vae import SCHEMA_VERSION, __version__
from tfp_vae.backends import Backend, get_backend
from tfp_vae.config import RunSpec
from tfp_vae.data import dataset_entry, load_pool, split_pool
from tfp_vae.decoders import DataContext, make_decoder
from tfp_vae.environment import capture
from tfp_vae.evaluate import evaluate
from tfp_vae.model import VAE
from tfp_vae.networks import Architecture
from tfp_vae.steps import EvalFunctions
from tfp_vae.train import train

#: Record sections that legitimately differ between two runs of one spec.
VOLATILE_SECTIONS = ("timing", "environment")


def build_model(spec: RunSpec, image_shape: tuple[int, int, int], data: DataContext, backend: Backend) -> VAE:
    """The VAE of a spec on a backend (structure only; parameters come from `VAE.init(seed)`)."""
    likelihood = make_decoder(spec.decoder, spec.decoder_params, data, backend)
    return VAE(Architecture(spec.network, image_shape, likelihood.outputs_per_pixel), likelihood)


def run(spec: RunSpec, log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> dict[str, Any]:
    """Train and evaluate one spec. Divergence is recorded, not raised."""
    spec.check()
    t_wall = time.perf_counter()
    backend = get_backend(spec.backend)
    device = backend.configure(spec.device, spec.tf32)
    entry = dataset_entry(spec.dataset)
    data = DataContext(entry.levels, spec.scaling)
    train_pool, test, location = load_pool(spec.dataset)
    splits = split_pool(train_pool, test, spec.train.validation_fraction)
    log(f"run {spec.run_id()}: {spec.decoder} on {spec.dataset} ({spec.scaling}), seed {spec.seed}, "
        f"{len(splits.train)}/{len(splits.validation)}/{len(splits.test)} train/val/test, "
        f"{spec.backend} on {device}")
    with backend.device_scope(device):
        model = build_model(spec, entry.shape, data, backend)
        evals = EvalFunctions(backend, model, spec.train.jit, spec.eval.iwae_k, spec.eval.k_chunk, spec.eval.lppl_samples)
        trained, training = train(backend, model, spec, splits, data, evals, log)
        metrics, eval_timing = evaluate(backend, model, trained, spec, splits.test.images, splits.train.images, data,
                                        evals, training)
    status = "ok" if training.nonfinite is None else "nonfinite"
    timing = {
        "wall_s": time.perf_counter() - t_wall,
        "train_s": training.train_s,
        "compile_s": training.compile_s,
        "train_examples_per_s": training.steady_examples / training.steady_s if training.steady_s > 0 else None,
        **eval_timing,
        "peak_memory_mib": backend.peak_memory_mib(device),
    }
    record = {
        "schema_version": SCHEMA_VERSION,
        "tfp_vae_version": __version__,
        "run_id": spec.run_id(),
        "spec": spec.to_dict(),
        "status": status,
        "metrics": metrics,
        "training": {
            "epochs_run": training.epochs_run,
            "best_epoch": training.best_epoch + 1 if training.best_epoch >= 0 else None,
            "stopped_early": training.stopped_early,
            "nonfinite": training.nonfinite,
            "curves": training.curves,
            "train_examples": len(splits.train),
            "validation_examples": len(splits.validation),
        },
        "execution": {"device": device, "backend": backend.name, "xla": spec.train.jit or backend.always_compiles,
                      "tf32": spec.tf32, "precision": "float32",
                      # runs sharing this machine while this one ran (set by the study runner)
                      "concurrent_runs": int(os.environ.get("TFP_VAE_CONCURRENT_RUNS", "1"))},
        "timing": timing,
        "environment": {**capture(backend, device, spec.train.jit or backend.always_compiles),
                        "data_source": {"source": location.source, "directory": str(location.directory or "")}},
    }
    return jsonable(record)


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
