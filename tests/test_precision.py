"""precision = "bfloat16": dense-layer matmuls take bfloat16 inputs, everything else stays
float32. bfloat16 keeps 8 bits of mantissa (relative rounding 2^-9 = 0.2 %), so the networks'
outputs move by about that much per layer, and a trained model by a little more."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import tiny_spec

#: Stated agreement of a bfloat16 run with the float32 run of the same spec on digits (64 pixels,
#: 5 epochs): test iwae_ll within 1 nat per image (the value is ~24 nats: ~4 %) and rmse within 2 %.
IWAE_LL_ATOL_NATS = 1.0
RMSE_RTOL = 0.02


@pytest.mark.slow
@pytest.mark.parametrize("decoder", ["learned", "bernoulli"])
def test_bfloat16_and_float32_runs_of_one_spec_agree_on_digits(decoder, backend):
    from tfp_vae.run import run

    records = {
        p: run(
            tiny_spec(
                decoder=decoder,
                backend=backend.name,
                scaling="dequantized",
                precision=p,
                network={"hidden": [64]},
                train={"epochs": 5},
            ),
            log=lambda s: None,
        )
        for p in ("float32", "bfloat16")
    }
    low, full = records["bfloat16"], records["float32"]
    assert low["execution"]["precision"] == "bfloat16" and full["execution"]["precision"] == "float32"
    assert low["run_id"] != full["run_id"]  # precision is part of what a run is
    a, b = low["metrics"], full["metrics"]
    assert abs(a["iwae_ll"] - b["iwae_ll"]) <= IWAE_LL_ATOL_NATS, (a["iwae_ll"], b["iwae_ll"])
    assert math.isclose(a["rmse"], b["rmse"], rel_tol=RMSE_RTOL)
    # and bfloat16 really ran: the training curves are not the float32 ones
    assert low["training"]["curves"]["train_bound"] != full["training"]["curves"]["train_bound"]


def test_bfloat16_matmul_rounds_its_inputs_and_returns_float32(backend):
    """Against NumPy: inputs rounded to bfloat16 (round to nearest even of the top 16 bits),
    products summed in float32 or better, the result rounded once more where the backend does."""
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(3, 7)).astype(np.float32), rng.normal(size=(7, 5)).astype(np.float32)

    def to_bf16(x):
        bits = x.view(np.uint32).astype(np.uint64)
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        return rounded.astype(np.uint32).view(np.float32)

    got = backend.to_numpy(backend.xp.matmul_bf16(backend.asarray(a), backend.asarray(b)))
    assert got.dtype == np.float32 and got.shape == (3, 5)
    want = to_bf16(a).astype(np.float64) @ to_bf16(b).astype(np.float64)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert np.max(np.abs(got - a.astype(np.float64) @ b)) > 1e-4  # it did round
