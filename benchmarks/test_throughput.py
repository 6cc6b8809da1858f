"""Throughput of the compiled training step and of importance-weighted evaluation.

The MLP is 784-512-512-16 at batch 128 on 28x28x1 images (DESIGN.md section 6).
Image content does not change the cost of a dense step, so the images are
random uint8 levels; every figure goes to extra_info as examples/s.
Benchmarks record times; they never assert them.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import tensorflow as tf

from tfp_vae import backend_tf as B
from tfp_vae.config import spec_from_dict
from tfp_vae.decoders import DataContext
from tfp_vae.run import build_model
from tfp_vae.seeds import derive_seed

SHAPE, LEVELS, BATCH, STEPS = (28, 28, 1), 256, 128, 20


def _setup(decoder: str, scaling: str, jit: bool = True):
    spec = spec_from_dict({"decoder": decoder, "scaling": scaling, "train": {"jit": jit}})
    B.configure("cpu", False)
    data = DataContext(LEVELS, scaling)
    model = build_model(spec, SHAPE, data)
    state = B.TrainState(model, 1e-3)
    step = B.make_train_step(model, state, scaling, LEVELS, jit)
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, LEVELS, size=(BATCH, *SHAPE), dtype=np.uint8) for _ in range(4)]
    seeds = [np.stack([derive_seed(0, "d", i), derive_seed(0, "z", i)]) for i in range(STEPS)]
    t0 = time.perf_counter()
    step(batches[0], seeds[0])[0].numpy()
    compile_s = time.perf_counter() - t0

    def steps():
        out = None
        for i in range(STEPS):
            out = step(batches[i % 4], seeds[i])
        out[0].numpy()

    steps()  # warm
    return model, steps, compile_s


@pytest.mark.parametrize("decoder", ["fixed", "learned", "student_t", "variational_variance", "discretized_logistic"])
@pytest.mark.parametrize("scaling", ["raw", "dequantized"])
def test_train_step(benchmark, decoder, scaling):
    _, steps, compile_s = _setup(decoder, scaling)
    benchmark.pedantic(steps, rounds=7, iterations=1)
    median = benchmark.stats.stats.median
    benchmark.extra_info.update({"examples_per_s": STEPS * BATCH / median, "compile_s": compile_s,
                                 "batch": BATCH, "steps_per_round": STEPS, "jit": True})


@pytest.mark.parametrize("k", [1000])
def test_iwae_evaluation(benchmark, k):
    model, _, _ = _setup("learned", "dequantized")
    ev = B.EvalFunctions(model, jit=True, iwae_k=k, k_chunk=100, lppl_samples=20)
    y = tf.constant(np.random.default_rng(1).uniform(size=(BATCH, *SHAPE)).astype(np.float32))
    seed = derive_seed(0, "iwae")
    ev.iwae(y, seed).numpy()
    benchmark.pedantic(lambda: ev.iwae(y, seed).numpy(), rounds=3, iterations=1)
    median = benchmark.stats.stats.median
    benchmark.extra_info.update({"examples_per_s": BATCH / median, "importance_samples_per_s": BATCH * k / median, "k": k})
