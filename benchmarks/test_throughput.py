"""Throughput benchmarks (pytest-benchmark): where a step's time goes.

The MLP is 784-512-512-16 at batch 128 on 28x28x1 images (the reference configuration);
image content does not change the cost of a dense step, so the images are random
uint8 levels. Every benchmark stores examples/s and, where it is a dense workload,
the fraction of the layer-shape matmul ceiling (benchmarks/roofline.py) it reaches,
in extra_info. Benchmarks record times; they never assert them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from functools import lru_cache

import numpy as np
import pytest
import tensorflow as tf

import roofline
from tfp_vae import backend_tf as B
from tfp_vae.config import spec_from_dict
from tfp_vae.decoders import DECODERS, DataContext
from tfp_vae.run import build_model
from tfp_vae.seeds import derive_seed

SHAPE, LEVELS, BATCH, STEPS = (28, 28, 1), 256, 128, 20
HIDDEN, LATENT = (512, 512), 16
DEVICES = ["cpu"] + (["gpu"] if tf.config.list_physical_devices("GPU") else [])


@lru_cache(maxsize=None)
def ceiling_train(batch: int, k: int) -> float:
    layers = roofline.mlp_layers(784, HIDDEN, LATENT, k)
    return roofline.matmul_ceiling(roofline.train_step_shapes(batch, layers))


@lru_cache(maxsize=None)
def ceiling_decoder(rows: int, k: int) -> float:
    layers = roofline.mlp_layers(784, HIDDEN, LATENT, k)
    return roofline.matmul_ceiling(roofline.decoder_forward_shapes(rows, layers))


def _model(decoder: str, scaling: str, device: str):
    spec = spec_from_dict({"decoder": decoder, "scaling": scaling, "device": device,
                           "network": {"hidden": list(HIDDEN), "latent": LATENT}})
    dev = B.configure(device, False)
    with B.device_scope(dev):
        return build_model(spec, SHAPE, DataContext(LEVELS, scaling)), dev


def _steps(decoder: str, scaling: str, batch: int = BATCH, jit: bool = True, eager: bool = False, device: str = "cpu"):
    model, dev = _model(decoder, scaling, device)
    with B.device_scope(dev):
        state = B.TrainState(model, 1e-3)
        step = B.make_train_step(model, state, scaling, LEVELS, jit, eager=eager)
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, LEVELS, size=(batch, *SHAPE), dtype=np.uint8) for _ in range(4)]
    seeds = [np.stack([derive_seed(0, "d", i), derive_seed(0, "z", i)]) for i in range(STEPS)]
    t0 = time.perf_counter()
    with B.device_scope(dev):
        step(batches[0], seeds[0])[0].numpy()
    compile_s = time.perf_counter() - t0

    def run():
        with B.device_scope(dev):
            out = None
            for i in range(STEPS):
                out = step(batches[i % 4], seeds[i])
            out[0].numpy()

    run()  # warm
    return model, run, compile_s


def _record_step(benchmark, decoder, batch, compile_s, **extra):
    median = benchmark.stats.stats.median
    k = DECODERS[decoder].outputs_per_pixel
    achieved = roofline.train_step_flops(batch, roofline.mlp_layers(784, HIDDEN, LATENT, k)) * STEPS / median
    ceiling = ceiling_train(batch, k)
    benchmark.extra_info.update({"examples_per_s": STEPS * batch / median, "compile_s": compile_s, "batch": batch,
                                 "matmul_gflops": achieved / 1e9, "ceiling_gflops": ceiling / 1e9,
                                 "ceiling_fraction": achieved / ceiling, **extra})


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("decoder", list(DECODERS))
def test_train_step(benchmark, decoder, device):
    _, run, compile_s = _steps(decoder, "dequantized", device=device)
    benchmark.pedantic(run, rounds=7, iterations=1)
    _record_step(benchmark, decoder, BATCH, compile_s, scaling="dequantized", device=device, mode="xla")


@pytest.mark.parametrize("decoder", ["fixed", "learned", "student_t"])
def test_train_step_raw(benchmark, decoder):
    """Beside test_train_step: the difference is the dequantization noise."""
    _, run, compile_s = _steps(decoder, "raw")
    benchmark.pedantic(run, rounds=7, iterations=1)
    _record_step(benchmark, decoder, BATCH, compile_s, scaling="raw", device="cpu", mode="xla")


@pytest.mark.parametrize("batch", [32, 64, 256, 512])
def test_train_step_batch_sweep(benchmark, batch):
    _, run, compile_s = _steps("learned", "dequantized", batch=batch)
    benchmark.pedantic(run, rounds=5, iterations=1)
    _record_step(benchmark, "learned", batch, compile_s, scaling="dequantized", device="cpu", mode="xla")


@pytest.mark.parametrize("mode", ["graph", "eager"])
def test_train_step_without_xla(benchmark, mode):
    _, run, compile_s = _steps("learned", "dequantized", jit=False, eager=mode == "eager")
    benchmark.pedantic(run, rounds=3 if mode == "eager" else 5, iterations=1)
    _record_step(benchmark, "learned", BATCH, compile_s, scaling="dequantized", device="cpu", mode=mode)


def _iwae(decoder: str, k: int, chunk: int = 100):
    model, dev = _model(decoder, "dequantized", "cpu")
    ev = B.EvalFunctions(model, jit=True, iwae_k=k, k_chunk=chunk, lppl_samples=20)
    y = tf.constant(np.random.default_rng(1).uniform(size=(BATCH, *SHAPE)).astype(np.float32))
    seed = derive_seed(0, "iwae")
    ev.iwae(y, seed).numpy()
    return lambda: ev.iwae(y, seed).numpy()


def _record_iwae(benchmark, decoder, k, chunk=100):
    median = benchmark.stats.stats.median
    opp = DECODERS[decoder].outputs_per_pixel
    layers = roofline.mlp_layers(784, HIDDEN, LATENT, opp)
    achieved = roofline.decoder_forward_flops(BATCH * k, layers) / median
    ceiling = ceiling_decoder(BATCH * chunk, opp)
    benchmark.extra_info.update({"examples_per_s": BATCH / median, "importance_samples_per_s": BATCH * k / median,
                                 "k": k, "matmul_gflops": achieved / 1e9, "ceiling_gflops": ceiling / 1e9,
                                 "ceiling_fraction": achieved / ceiling})


@pytest.mark.parametrize("decoder", list(DECODERS))
def test_eval_pass(benchmark, decoder):
    """One importance-weighted evaluation pass (K = 100) over a batch of 128 per decoder."""
    benchmark.pedantic(_iwae(decoder, 100), rounds=5, iterations=1)
    _record_iwae(benchmark, decoder, 100)


def test_iwae_k1000(benchmark):
    benchmark.pedantic(_iwae("learned", 1000), rounds=3, iterations=1)
    _record_iwae(benchmark, "learned", 1000)


PEAK_SCRIPT = """
import os, json, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
sys.path.insert(0, "benchmarks")

def status(key):  # VmHWM/VmRSS of this address space (ru_maxrss would include the parent's, kept across exec)
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024

import test_throughput as T
run = T._iwae("learned", 5000)
before = status("VmRSS")
run()
print(json.dumps({"peak_mib": status("VmHWM"), "rss_before_eval_mib": before}))
"""


def test_iwae_k5000_peak_memory(benchmark):
    """Peak memory of a K = 5000 evaluation (chunks of 100) of a batch of 128, in a fresh
    process so the figure is not inherited from other benchmarks: the process's high-water
    mark, TensorFlow and the compiled function included."""
    result = {}

    def once():
        proc = subprocess.run([sys.executable, "-c", PEAK_SCRIPT], capture_output=True, text=True, timeout=600,
                              cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        result.update(json.loads(proc.stdout.strip().splitlines()[-1]))

    benchmark.pedantic(once, rounds=1, iterations=1)
    benchmark.extra_info.update({"k": 5000, "k_chunk": 100, "batch": BATCH, **result})


@pytest.mark.parametrize("decoder", ["fixed", "learned", "student_t"])
def test_dequantization_overhead(benchmark, decoder):
    """Raw and dequantized steps of one decoder in alternating rounds, so that machine
    noise hits both alike; the ratio of their medians is the cost of drawing the noise."""
    _, run_raw, _ = _steps(decoder, "raw")
    _, run_deq, _ = _steps(decoder, "dequantized")
    times = {"raw": [], "dequantized": []}

    def both():
        for name, run in (("raw", run_raw), ("dequantized", run_deq)):
            t0 = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t0)

    benchmark.pedantic(both, rounds=15, iterations=1)
    raw, deq = float(np.median(times["raw"])), float(np.median(times["dequantized"]))
    benchmark.extra_info.update({"raw_step_ms": raw / STEPS * 1e3, "dequantized_step_ms": deq / STEPS * 1e3,
                                 "dequantization_overhead": deq / raw - 1.0, "examples_per_s": STEPS * BATCH / deq})
