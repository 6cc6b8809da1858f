"""A seed group's training state on disk, so that a run outlives its process.

One file per trained part of a group (its run ids), written atomically (a temporary file renamed
over the old one): NumPy's .npz of the state's array leaves plus one JSON entry with everything
else (epoch, early-stopping state, curves, the machines it ran on) and what the state belongs to
(the specs and the code). A checkpoint of another spec or another version of the code is refused
with one line naming the difference, never mixed in.

Why not orbax or tf.train.Checkpoint: the same state must be written and read by both backends
(orbax is JAX's, tf.train.Checkpoint TensorFlow's, and the JAX backend must run where TensorFlow
is not installed); the state is a handful of float32 arrays in a fixed order, which .npz stores
exactly and every NumPy reads.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from tfp_vae.errors import TfpVaeError
from tfp_vae.files import cache_dir, write_atomic

#: Where checkpoints go when TFP_VAE_CHECKPOINTS does not say: outside any git checkout.
ENV = "TFP_VAE_CHECKPOINTS"
FORMAT = 1


class CheckpointError(TfpVaeError):
    """A checkpoint that cannot be used for this run (another spec, another code version)."""


def directory() -> Path:
    """$TFP_VAE_CHECKPOINTS, else $XDG_CACHE_HOME/tfp-vae/checkpoints (~/.cache/tfp-vae/checkpoints)."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser()
    return cache_dir("checkpoints")


def path_for(run_ids: list[str]) -> Path:
    """The checkpoint file of the part of a seed group that trains these runs together."""
    name = run_ids[0] if len(run_ids) == 1 else hashlib.sha256(",".join(run_ids).encode()).hexdigest()[:16]
    return directory() / f"{name}.npz"


@lru_cache(maxsize=1)
def code_version() -> str:
    """A hash of the package's source files: a checkpoint is resumed only by the code that wrote it."""
    root = Path(__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def save(path: Path, meta: dict[str, Any], leaves: list[np.ndarray]) -> None:
    """Write `leaves` and `meta` (plus the code version) to `path` atomically."""
    meta = {**meta, "format": FORMAT, "code_version": code_version()}
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.array(json.dumps(meta)), **{f"leaf_{i}": np.asarray(v) for i, v in enumerate(leaves)})
    write_atomic(path, buffer.getvalue())


def load(path: Path, identity: dict[str, Any]) -> tuple[dict[str, Any], list[np.ndarray]] | None:
    """(meta, leaves) of the checkpoint at `path`, None if there is none. Raises CheckpointError if
    it was written for other specs (`identity`: what the caller is about to train) or by other code."""
    if not path.exists():
        return None
    try:
        with np.load(path) as data:
            meta = json.loads(str(data["meta"]))
            leaves = [data[f"leaf_{i}"] for i in range(len(data.files) - 1)]
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint ({exc}); remove it to start the run afresh") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: checkpoint format {meta.get('format')!r}, this code reads {FORMAT}; "
            f"remove it to start the run afresh"
        )
    if meta.get("code_version") != code_version():
        raise CheckpointError(
            f"{path}: written by other code (source hash {meta.get('code_version')}, git "
            f"{str(meta.get('git_commit'))[:12]}) than this ({code_version()}); resume it with that code or remove it"
        )
    for key, value in identity.items():
        if meta.get(key) != value:
            raise CheckpointError(
                f"{path}: checkpoint of {key} {meta.get(key)!r}, not {value!r}; remove it or run the spec it belongs to"
            )
    return meta, leaves


def peek(path: Path) -> dict[str, Any] | None:
    """The bookkeeping of the checkpoint at `path` (epoch, segments, ...) without its arrays; None
    if there is none or it cannot be read."""
    try:
        with np.load(path) as data:
            return json.loads(str(data["meta"]))
    except (OSError, ValueError, KeyError):
        return None


def remove(path: Path) -> None:
    path.unlink(missing_ok=True)
