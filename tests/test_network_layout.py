"""The decoder MLP's last layer is stored outputs-major; decode must still be the network drawn
pixel by pixel: raw[b, h, w, c, j] = (relu(...) @ W + b) at column ((h * W + w) * C + c) * k + j."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import BATCH, C, H, W
from tfp_vae.backends import get_backend
from tfp_vae.config import NetworkSpec
from tfp_vae.networks import Architecture, _dense


@pytest.mark.parametrize("backend_name", ["tensorflow", "jax"])
def test_decode_is_the_pixel_major_network_it_was_drawn_as(backend_name, rng):
    k, latent, hidden = 3, 4, (6,)
    arch = Architecture(NetworkSpec(hidden=hidden, latent=latent), (H, W, C), k)
    seed = 11
    drawn = [
        _dense(a, b, seed, "dec_dense", i) for i, (a, b) in enumerate(zip((latent, *hidden), (*hidden, H * W * C * k)))
    ]
    drawn[-1]["b"] = rng.normal(size=H * W * C * k).astype(np.float32)  # a bias that is not zero shows its order too
    params = arch.init(seed)["decoder"]
    moved = arch._outputs_major(drawn[-1])
    params["dense"][-1] = moved
    z = rng.normal(size=(BATCH, latent)).astype(np.float32)
    expected = (np.maximum(z @ drawn[0]["w"] + drawn[0]["b"], 0) @ drawn[1]["w"] + drawn[1]["b"]).reshape(
        BATCH, H, W, C, k
    )
    backend = get_backend(backend_name)
    tree = backend.tree_map(backend.asarray, params)
    raw = backend.to_numpy(arch.decode(backend.xp, tree, backend.asarray(z)))
    assert raw.shape == (BATCH, H, W, C, k)
    np.testing.assert_allclose(raw, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(arch.init(seed)["decoder"]["dense"][0]["w"], drawn[0]["w"])  # the same draw
