"""Shared fixtures. Sizes are small and distinct (batch 3, 7x5 pixels, 2 channels)
so that a swapped axis changes a shape and fails."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest

BATCH, H, W, C = 3, 7, 5, 2


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(int(os.environ.get("TFP_VAE_TEST_SEED", "1234")))


def tiny_spec(**overrides):
    """A fast run spec on digits: small MLP, few samples; overrides are merged per section."""
    from tfp_vae.config import spec_from_dict

    base = {
        "dataset": "digits",
        "device": os.environ.get("TFP_VAE_TEST_DEVICE", "cpu"),  # scripts/gpu/run.py runs the tests on a GPU
        "network": {"hidden": [32], "latent": 5},
        "train": {"epochs": 2, "batch_size": 64, "patience": 0},
        "eval": {"iwae_k": 20, "k_chunk": 7, "lppl_samples": 5},
    }
    # TensorFlow's graph compiles in a second where XLA takes ten; tests that need XLA say so
    base["train"]["compiler"] = "graph" if overrides.get("backend", "tensorflow") == "tensorflow" else "xla"
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return spec_from_dict(base)


BACKEND_NAMES = ("tensorflow", "jax")


@pytest.fixture(params=BACKEND_NAMES)
def backend(request):
    """Each installed backend in turn: the same test runs under every one (skipped where absent)."""
    from tfp_vae.backends import get_backend
    from tfp_vae.errors import ConfigError

    try:
        return get_backend(request.param)
    except ConfigError as exc:
        pytest.skip(str(exc))
