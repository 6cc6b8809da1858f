"""Every random number of a run flows from its seed through named, stateless derivations."""

from __future__ import annotations

import hashlib

import numpy as np


def derive_seed(seed: int, *path: object) -> np.ndarray:
    """A stateless seed pair (int32, int32) for `path` under the run `seed`.

    Hashing the path keeps streams independent however they are nested, and the
    same (seed, path) always gives the same pair.
    """
    text = "/".join([str(seed), *map(str, path)]).encode()
    digest = hashlib.blake2b(text, digest_size=8).digest()
    return np.frombuffer(digest, dtype=np.int32).copy()


def numpy_rng(seed: int, *path: object) -> np.random.Generator:
    """A NumPy generator for host-side randomness (shuffling) under the same scheme."""
    return np.random.default_rng(derive_seed(seed, *path).view(np.uint32))
