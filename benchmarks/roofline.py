"""The machine's ceiling for this workload: matmul throughput of the same backend
(TensorFlow or JAX), compiled as the step is (XLA, or TensorFlow's own kernels) and in
its precision, at exactly the layer shapes a step uses, measured in the same run.

A dense layer (B, n_in) -> (B, n_out) costs 2 B n_in n_out FLOPs forward, the same
again for the weight gradient and for the input gradient (not needed by the first
layer). `fraction = achieved / ceiling` says how much of what matmuls of these
shapes can do a benchmark reaches.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from tfp_vae.config import NetworkSpec


def mlp_layers(
    image_pixels: int, hidden: Sequence[int], latent: int, outputs_per_pixel: int
) -> list[tuple[int, int, bool]]:
    """(n_in, n_out, is_first) of every dense layer of the VAE: encoder then decoder (NetworkSpec.mlp_widths)."""
    enc, dec = NetworkSpec(hidden=tuple(hidden), latent=latent).mlp_widths(image_pixels, outputs_per_pixel)
    layers = [(a, b, i == 0) for i, (a, b) in enumerate(zip(enc, enc[1:]))]
    layers += [(a, b, False) for a, b in zip(dec, dec[1:])]
    return layers


def train_step_flops(batch: int, layers) -> float:
    return float(sum((4 if first else 6) * batch * a * b for a, b, first in layers))


def decoder_forward_flops(rows: int, layers) -> float:
    """Forward matmul FLOPs of the decoder only (what one importance sample costs)."""
    dec = [(a, b) for a, b, _ in layers][-(len(layers) // 2) :]
    return float(sum(2 * rows * a * b for a, b in dec))


def _time_jitted(fn, args, reps: int = 20, rounds: int = 5) -> float:
    np.asarray(fn(*args))
    best = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(reps):
            out = fn(*args)
        np.asarray(out)
        best.append((time.perf_counter() - t0) / reps)
    return float(np.median(best))


def matmul_ceiling(
    backend, shapes: list[tuple[int, int, int]], precision: str = "float32", compiler: str = "xla"
) -> float:
    """FLOP/s of matmuls (m, k) @ (k, n) for all `shapes` on `backend`, each timed compiled by
    `compiler` (the step's: a ceiling of another compiler's kernels is no ceiling of this step),
    total FLOPs over total median time; in bfloat16 as the networks run them under that
    precision (float32 inputs rounded to bfloat16 in the same compiled function)."""
    rng = np.random.default_rng(0)
    total_flops, total_s = 0.0, 0.0
    matmul = backend.xp.matmul_bf16 if precision == "bfloat16" else backend.xp.matmul
    fn = backend.compile(lambda x, y: matmul(x, y), compiler)
    for m, k, n in shapes:
        a = backend.asarray(rng.standard_normal((m, k)).astype(np.float32))
        b = backend.asarray(rng.standard_normal((k, n)).astype(np.float32))
        total_s += _time_jitted(fn, (a, b))
        total_flops += 2.0 * m * k * n
    return total_flops / total_s


def train_step_shapes(batch: int, layers) -> list[tuple[int, int, int]]:
    """The matmuls of forward and backward passes: x W, x^T g, g W^T."""
    shapes = []
    for a, b, first in layers:
        shapes += [(batch, a, b), (a, batch, b)]
        if not first:
            shapes.append((batch, b, a))
    return shapes


def decoder_forward_shapes(rows: int, layers) -> list[tuple[int, int, int]]:
    return [(rows, a, b) for a, b, _ in layers[-(len(layers) // 2) :]]
