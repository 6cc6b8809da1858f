"""Throughput benchmarks (pytest-benchmark): where a step's time goes, per backend.

The MLP is 784-512-512-16 at batch 128 on 28x28x1 images (the reference configuration);
image content does not change the cost of a dense step, so the images are random
levels. Every benchmark stores examples/s and, where it is a dense workload, the
fraction of its own backend's layer-shape matmul ceiling (benchmarks/roofline.py) it
reaches, in extra_info. Benchmarks record times; they never assert them.
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
import roofline

from tfp_vae.backends import COMPILERS, get_backend, installed_backends
from tfp_vae.config import spec_from_dict
from tfp_vae.decoders import DECODERS, DataContext
from tfp_vae.run import build_model, run
from tfp_vae.seeds import derive_seed
from tfp_vae.steps import EvalFunctions, init_carry, make_train_epoch, multiplier_tree, stack_trees, train_step

SHAPE, LEVELS, BATCH, STEPS = (28, 28, 1), 256, 128, 20
HIDDEN, LATENT = (512, 512), 16


INSTALLED = installed_backends()


def _devices(name: str) -> list[str]:
    backend = get_backend(name)
    return ["cpu"] + (["gpu"] if "gpu" in backend.configure("auto", False).lower() else [])


TARGETS = [(b, d) for b in INSTALLED for d in _devices(b)]


@lru_cache(maxsize=None)
def ceiling_train(backend: str, batch: int, k: int, compiler: str = "xla") -> float:
    layers = roofline.mlp_layers(784, HIDDEN, LATENT, k)
    return roofline.matmul_ceiling(get_backend(backend), roofline.train_step_shapes(batch, layers), compiler=compiler)


@lru_cache(maxsize=None)
def ceiling_decoder(backend: str, rows: int, k: int) -> float:
    layers = roofline.mlp_layers(784, HIDDEN, LATENT, k)
    return roofline.matmul_ceiling(get_backend(backend), roofline.decoder_forward_shapes(rows, layers))


def _model(
    backend_name: str,
    decoder: str,
    scaling: str,
    device: str,
    precision: str = "float32",
    hidden: tuple[int, ...] = HIDDEN,
    latent: int = LATENT,
    tf32: bool = False,
):
    spec = spec_from_dict(
        {
            "decoder": decoder,
            "scaling": scaling,
            "device": device,
            "backend": backend_name,
            "network": {"hidden": list(hidden), "latent": latent},
            "precision": precision,
            "tf32": tf32,
        }
    )
    backend = get_backend(backend_name)
    dev = backend.configure(device, tf32)
    return backend, build_model(spec, SHAPE, DataContext(LEVELS, scaling), backend), dev


def _steps(
    backend_name: str, decoder: str, scaling: str, batch: int = BATCH, compiler: str = "xla", device: str = "cpu"
):
    """A closure running STEPS training steps (the step's state threaded through), and the compile time."""
    backend, model, dev = _model(backend_name, decoder, scaling, device)
    with backend.device_scope(dev):
        init = model.init(0)
        params = backend.tree_map(backend.asarray, init)
        opt_init, step = train_step(backend, model, scaling, LEVELS, 1e-3, multiplier_tree(model, init))
        step = backend.compile(step, compiler)
        state = {"params": params, "opt": opt_init(params), "carry": init_carry(backend, model)}
        rng = np.random.default_rng(0)
        batches = [backend.asarray(rng.integers(0, LEVELS, size=(batch, *SHAPE)).astype(np.float32)) for _ in range(4)]
        seeds = [backend.asarray(np.stack([derive_seed(0, "d", i), derive_seed(0, "z", i)])) for i in range(STEPS)]

    def one(i):
        state["params"], state["opt"], state["carry"], m = step(
            state["params"], state["opt"], state["carry"], batches[i % 4], seeds[i]
        )
        return m

    t0 = time.perf_counter()
    with backend.device_scope(dev):
        np.asarray(one(0)["objective"])
    compile_s = time.perf_counter() - t0

    def run_steps():
        with backend.device_scope(dev):
            m = None
            for i in range(STEPS):
                m = one(i)
            np.asarray(m["objective"])

    run_steps()  # warm
    return run_steps, compile_s


def _record_step(benchmark, backend, decoder, batch, compile_s, **extra):
    median = benchmark.stats.stats.median
    k = DECODERS[decoder].outputs_per_pixel
    achieved = roofline.train_step_flops(batch, roofline.mlp_layers(784, HIDDEN, LATENT, k)) * STEPS / median
    ceiling = ceiling_train(backend, batch, k, extra.get("mode", "xla"))
    benchmark.extra_info.update(
        {
            "examples_per_s": STEPS * batch / median,
            "compile_s": compile_s,
            "batch": batch,
            "backend": backend,
            "matmul_gflops": achieved / 1e9,
            "ceiling_gflops": ceiling / 1e9,
            "ceiling_fraction": achieved / ceiling,
            **extra,
        }
    )


@pytest.mark.parametrize("backend,device", TARGETS)
@pytest.mark.parametrize("decoder", list(DECODERS))
def test_train_step(benchmark, backend, decoder, device):
    run_steps, compile_s = _steps(backend, decoder, "dequantized", device=device)
    benchmark.pedantic(run_steps, rounds=7, iterations=1)
    _record_step(benchmark, backend, decoder, BATCH, compile_s, scaling="dequantized", device=device, mode="xla")


@pytest.mark.parametrize("backend", INSTALLED)
@pytest.mark.parametrize("batch", [32, 256])
def test_train_step_batch_sweep(benchmark, backend, batch):
    run_steps, compile_s = _steps(backend, "learned", "dequantized", batch=batch)
    benchmark.pedantic(run_steps, rounds=5, iterations=1)
    _record_step(benchmark, backend, "learned", batch, compile_s, scaling="dequantized", device="cpu", mode="xla")


@pytest.mark.skipif("tensorflow" not in INSTALLED, reason="TensorFlow is not installed")
def test_train_step_tensorflow_without_xla(benchmark):
    run_steps, compile_s = _steps("tensorflow", "learned", "dequantized", compiler="graph")
    benchmark.pedantic(run_steps, rounds=5, iterations=1)
    _record_step(
        benchmark, "tensorflow", "learned", BATCH, compile_s, scaling="dequantized", device="cpu", mode="graph"
    )


@lru_cache(maxsize=None)
def ceiling_train_precision(backend: str, batch: int, k: int, precision: str) -> float:
    layers = roofline.mlp_layers(784, HIDDEN, LATENT, k)
    return roofline.matmul_ceiling(get_backend(backend), roofline.train_step_shapes(batch, layers), precision)


def _seed_batched_steps(backend_name: str, precision: str, seeds: int, steps: int, device: str = "cpu"):
    """A closure running `steps` steps of `seeds` models of `learned` in one compiled step, and its compile time."""
    backend, model, dev = _model(backend_name, "learned", "dequantized", device, precision)
    with backend.device_scope(dev):
        inits = [model.init(s) for s in range(seeds)]
        opt_init, step = train_step(backend, model, "dequantized", LEVELS, 1e-3, multiplier_tree(model, inits[0]))
        step = backend.compile(backend.vmap(step) if seeds > 1 else step, "xla")
        solo = [backend.tree_map(backend.asarray, p) for p in inits]
        if seeds > 1:
            state = {
                "params": stack_trees(backend, solo),
                "opt": stack_trees(backend, [opt_init(p) for p in solo]),
                "carry": stack_trees(backend, [init_carry(backend, model)] * seeds),
            }
        else:
            state = {"params": solo[0], "opt": opt_init(solo[0]), "carry": init_carry(backend, model)}
        rng = np.random.default_rng(0)
        lead = (seeds,) if seeds > 1 else ()
        batches = [
            backend.asarray(rng.integers(0, LEVELS, size=(*lead, BATCH, *SHAPE)).astype(np.float32)) for _ in range(2)
        ]
        seed_arrays = [
            backend.asarray(np.arange(4 * seeds, dtype=np.int32).reshape(*lead, 2, 2) + 8 * seeds * i)
            for i in range(steps)
        ]

    def run_steps():
        with backend.device_scope(dev):
            m = None
            for i in range(steps):
                state["params"], state["opt"], state["carry"], m = step(
                    state["params"], state["opt"], state["carry"], batches[i % 2], seed_arrays[i]
                )
            np.asarray(m["objective"])

    t0 = time.perf_counter()
    run_steps()  # compiles, then warms
    return run_steps, time.perf_counter() - t0


@pytest.mark.parametrize("backend", INSTALLED)
@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
@pytest.mark.parametrize("seeds", [1, 4, 16, 64])
def test_seed_batched_step(benchmark, backend, precision, seeds):
    """Model-examples/s of the 784-512-512-16 `learned` step at batch 128 with `seeds` models per
    compiled step (seed batching), and the fraction of the same backend's matmul ceiling at
    the step's layer shapes in the same precision."""
    steps = max(3, 64 // seeds)
    run_steps, compile_s = _seed_batched_steps(backend, precision, seeds, steps)
    benchmark.pedantic(run_steps, rounds=5, iterations=1)
    median = benchmark.stats.stats.median
    layers = roofline.mlp_layers(784, HIDDEN, LATENT, DECODERS["learned"].outputs_per_pixel)
    achieved = roofline.train_step_flops(BATCH, layers) * steps * seeds / median
    ceiling = ceiling_train_precision(backend, BATCH, DECODERS["learned"].outputs_per_pixel, precision)
    benchmark.extra_info.update(
        {
            "model_examples_per_s": steps * seeds * BATCH / median,
            "examples_per_s": steps * seeds * BATCH / median,
            "seeds": seeds,
            "precision": precision,
            "batch": BATCH,
            "backend": backend,
            "compile_s": compile_s,
            "matmul_gflops": achieved / 1e9,
            "ceiling_gflops": ceiling / 1e9,
            "ceiling_fraction": achieved / ceiling,
        }
    )


#: The network of the published Fashion-MNIST tables (dense 512-256-128, latent 25, batch 250).
PAPER_HIDDEN, PAPER_LATENT, PAPER_BATCH = (512, 256, 128), 25, 250
#: What test_compiled_epoch sweeps; the GPU run (scripts/gpu/) widens them through the environment.
EPOCH_SEEDS = [int(s) for s in os.environ.get("TFP_VAE_BENCH_SEEDS", "1,4,16,64").split(",")]
EPOCH_MODES = os.environ.get("TFP_VAE_BENCH_MODES", "float32,bfloat16").split(",")  # float32 | tf32 | bfloat16
EPOCH_DEVICE = os.environ.get("TFP_VAE_BENCH_DEVICE", "cpu")
EPOCH_LAYOUTS = os.environ.get("TFP_VAE_BENCH_LAYOUTS", "vmap,sequential").split(",")  # a GPU runs vmap
#: Steps per timed epoch at one seed. With S seeds batched (vmap) an epoch has max(2, EPOCH_STEPS // S)
#: steps; in sequence each seed's epoch keeps EPOCH_STEPS, as a real run's seeds each get a whole
#: epoch per call (a 2-step call would time the call's dispatch, which a run's epoch does not pay).
EPOCH_STEPS = int(os.environ.get("TFP_VAE_BENCH_STEPS", "32"))


def _compiled_epoch(backend_name: str, mode: str, seeds: int, device: str, layout: str, compiler: str):
    """A closure running one compiled epoch of `seeds` models of `learned` (dequantized) on the
    published-table network, its steps and its compile time (the first call). `layout` as in a
    run's seed group: "vmap" (the seeds in one compiled epoch) or "sequential" (one seed after
    another through the one-seed compiled epoch)."""
    precision = "bfloat16" if mode == "bfloat16" else "float32"
    backend, model, dev = _model(
        backend_name, "learned", "dequantized", device, precision, PAPER_HIDDEN, PAPER_LATENT, tf32=mode == "tf32"
    )
    batched = layout == "vmap" and seeds > 1
    steps = max(2, EPOCH_STEPS // seeds) if batched else EPOCH_STEPS
    with backend.device_scope(dev):
        inits = [model.init(s) for s in range(seeds)]
        opt_init, epoch = make_train_epoch(
            backend, model, "dequantized", LEVELS, 1e-3, multiplier_tree(model, inits[0]), compiler, batched=batched
        )
        solo = [backend.tree_map(backend.asarray, p) for p in inits]
        if batched:
            states = [
                [
                    stack_trees(backend, solo),
                    stack_trees(backend, [opt_init(p) for p in solo]),
                    stack_trees(backend, [init_carry(backend, model)] * seeds),
                ]
            ]
        else:
            states = [[p, opt_init(p), init_carry(backend, model)] for p in solo]
        rng = np.random.default_rng(0)
        images = backend.asarray(rng.integers(0, LEVELS, size=(steps * PAPER_BATCH, *SHAPE)).astype(np.float32))
        rows = np.stack([rng.permutation(steps * PAPER_BATCH).reshape(steps, PAPER_BATCH) for _ in range(seeds)], 1)
        seed_arrays = np.arange(steps * seeds * 4, dtype=np.int32).reshape(steps, seeds, 2, 2)
        if batched:
            inputs = [(backend.asarray(rows.astype(np.int32)), backend.asarray(seed_arrays))]
        else:
            inputs = [
                (backend.asarray(rows[:, s].astype(np.int32)), backend.asarray(seed_arrays[:, s])) for s in range(seeds)
            ]

    def run_epoch():
        with backend.device_scope(dev):
            for state, (r, sd) in zip(states, inputs):
                *state[:], metrics = epoch(*state, images, r, sd)
                np.asarray(metrics["objective"])

    t0 = time.perf_counter()
    run_epoch()  # compiles
    return run_epoch, steps, time.perf_counter() - t0


@pytest.mark.parametrize("backend, compiler", [(b, c) for b in INSTALLED for c in COMPILERS[b]])
@pytest.mark.parametrize("mode", EPOCH_MODES)
@pytest.mark.parametrize("seeds", EPOCH_SEEDS)
@pytest.mark.parametrize("layout", EPOCH_LAYOUTS)
def test_compiled_epoch(benchmark, backend, compiler, mode, seeds, layout):
    """Model-examples/s of whole compiled epochs (data on the device, the steps in a compiled
    loop) of the published-table network at batch 250 with `seeds` models per epoch, and the
    fraction of the backend's matmul ceiling at the step's layer shapes, measured in the same
    precision (TF32 counts against the float32 ceiling measured with TF32 on)."""
    if mode == "tf32" and EPOCH_DEVICE != "gpu":
        pytest.skip("TF32 exists on GPUs only")
    if layout == "sequential" and seeds == 1:
        pytest.skip("one seed has one layout (reported under vmap)")
    run_epoch, steps, compile_s = _compiled_epoch(backend, mode, seeds, EPOCH_DEVICE, layout, compiler)
    benchmark.pedantic(run_epoch, rounds=3 if layout == "sequential" and seeds >= 16 else 5, iterations=1)
    median = benchmark.stats.stats.median
    opp = DECODERS["learned"].outputs_per_pixel
    layers = roofline.mlp_layers(784, PAPER_HIDDEN, PAPER_LATENT, opp)
    achieved = roofline.train_step_flops(PAPER_BATCH, layers) * steps * seeds / median
    precision = "bfloat16" if mode == "bfloat16" else "float32"
    ceiling = roofline.matmul_ceiling(
        get_backend(backend), roofline.train_step_shapes(PAPER_BATCH, layers), precision, compiler
    )
    benchmark.extra_info.update(
        {
            "model_examples_per_s": steps * seeds * PAPER_BATCH / median,
            "examples_per_s": steps * seeds * PAPER_BATCH / median,
            "seeds": seeds,
            "layout": layout,
            "compiler": compiler,
            "mode": mode,
            "precision": precision,
            "batch": PAPER_BATCH,
            "backend": backend,
            "device": EPOCH_DEVICE,
            "network": f"{PAPER_HIDDEN}/{PAPER_LATENT}",
            "steps_per_epoch": steps,
            "compile_s": compile_s,
            "matmul_gflops": achieved / 1e9,
            "ceiling_gflops": ceiling / 1e9,
            "ceiling_fraction": achieved / ceiling,
        }
    )


def _iwae(backend_name: str, decoder: str, k: int, chunk: int = 100):
    backend, model, dev = _model(backend_name, decoder, "dequantized", "cpu")
    ev = EvalFunctions(backend, model, compiler="xla", iwae_k=k, k_chunk=chunk, lppl_samples=20)
    params = backend.tree_map(backend.asarray, model.init(0))
    dstate = init_carry(backend, model)["dstate"]
    y = backend.asarray(np.random.default_rng(1).uniform(size=(BATCH, *SHAPE)).astype(np.float32))
    seed = backend.asarray(derive_seed(0, "iwae"))
    np.asarray(ev.iwae(params, dstate, y, seed))
    return lambda: np.asarray(ev.iwae(params, dstate, y, seed))


def _record_iwae(benchmark, backend, decoder, k, chunk=100):
    median = benchmark.stats.stats.median
    opp = DECODERS[decoder].outputs_per_pixel
    layers = roofline.mlp_layers(784, HIDDEN, LATENT, opp)
    achieved = roofline.decoder_forward_flops(BATCH * k, layers) / median
    ceiling = ceiling_decoder(backend, BATCH * chunk, opp)
    benchmark.extra_info.update(
        {
            "examples_per_s": BATCH / median,
            "importance_samples_per_s": BATCH * k / median,
            "k": k,
            "backend": backend,
            "matmul_gflops": achieved / 1e9,
            "ceiling_gflops": ceiling / 1e9,
            "ceiling_fraction": achieved / ceiling,
        }
    )


@pytest.mark.parametrize("backend", INSTALLED)
@pytest.mark.parametrize("decoder", ["fixed", "learned", "student_t", "discretized_logistic"])
def test_eval_pass(benchmark, backend, decoder):
    """One importance-weighted evaluation pass (K = 100) over a batch of 128."""
    benchmark.pedantic(_iwae(backend, decoder, 100), rounds=5, iterations=1)
    _record_iwae(benchmark, backend, decoder, 100)


@pytest.mark.parametrize("backend", INSTALLED)
def test_digits_run(benchmark, backend):
    """A whole run of the quick study's configuration (digits, MLP 128, 12 epochs at batch 32,
    K = 200): training, every evaluation and compilation, in this process."""
    spec = spec_from_dict(
        {
            "decoder": "learned",
            "scaling": "dequantized",
            "backend": backend,
            "network": {"hidden": [128], "latent": 8},
            "train": {"epochs": 12, "batch_size": 32, "patience": 0},
            "eval": {"iwae_k": 200, "k_chunk": 100},
        }
    )
    records = []
    benchmark.pedantic(lambda: records.append(run(spec, log=lambda s: None)), rounds=3, iterations=1)
    t = records[-1]["timing"]
    benchmark.extra_info.update(
        {
            "backend": backend,
            "train_examples_per_s": t["train_examples_per_s"],
            "examples_per_s": t["train_examples_per_s"],
            "compile_s": t["compile_s"],
        }
    )


PEAK_SCRIPT = """
import os, json, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
sys.path.insert(0, "benchmarks")

def status(key):  # VmHWM/VmRSS of this address space (ru_maxrss would include the parent's, kept across exec)
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024

import test_throughput as T
run = T._iwae(sys.argv[1], "learned", 5000)
before = status("VmRSS")
run()
print(json.dumps({"peak_mib": status("VmHWM"), "rss_before_eval_mib": before}))
"""


@pytest.mark.parametrize("backend", INSTALLED)
def test_iwae_k5000_peak_memory(benchmark, backend):
    """Peak memory of a K = 5000 evaluation (chunks of 100) of a batch of 128, in a fresh
    process so the figure is not inherited from other benchmarks: the process's high-water
    mark, the framework and the compiled function included."""
    result = {}

    def once():
        proc = subprocess.run(
            [sys.executable, "-c", PEAK_SCRIPT, backend],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )
        result.update(json.loads(proc.stdout.strip().splitlines()[-1]))

    benchmark.pedantic(once, rounds=1, iterations=1)
    benchmark.extra_info.update({"k": 5000, "k_chunk": 100, "batch": BATCH, "backend": backend, **result})


@pytest.mark.parametrize("backend", INSTALLED)
@pytest.mark.parametrize("decoder", ["fixed", "learned"])
def test_dequantization_overhead(benchmark, backend, decoder):
    """Raw and dequantized steps of one decoder in alternating rounds, so that machine
    noise hits both alike; the ratio of their medians is the cost of drawing the noise."""
    run_raw, _ = _steps(backend, decoder, "raw")
    run_deq, _ = _steps(backend, decoder, "dequantized")
    times = {"raw": [], "dequantized": []}

    def both():
        for name, fn in (("raw", run_raw), ("dequantized", run_deq)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)

    benchmark.pedantic(both, rounds=15, iterations=1)
    raw, deq = float(np.median(times["raw"])), float(np.median(times["dequantized"]))
    benchmark.extra_info.update(
        {
            "raw_step_ms": raw / STEPS * 1e3,
            "dequantized_step_ms": deq / STEPS * 1e3,
            "backend": backend,
            "dequantization_overhead": deq / raw - 1.0,
            "examples_per_s": STEPS * BATCH / deq,
        }
    )
