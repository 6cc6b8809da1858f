"""The prepared GPU run (issue: CPU and GPU): on a machine with JAX and a GPU, one call does
everything and writes it into OUT: a check that JAX sees the GPU, the JAX tests on the GPU,
the compiled-epoch benchmark at 1 to 1024 seeds in float32, TF32 and bfloat16, the quick
study's JAX half on the GPU in seed groups, and `tfp-vae reproduce` of one GPU record.
`--dry-run` runs the same steps on JAX's CPU platform with a tiny configuration, so that
the tests can run this script and it cannot rot. Each step has a time limit; a step that
fails is logged and the others still run; the exit status says whether all passed."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
JAX_TESTS = [
    "tests/test_jax_without_tensorflow.py",
    "tests/test_seed_batching.py",
    "tests/test_precision.py",
    "tests/test_decoder_log_prob.py",
    "tests/test_training_objectives.py",
]


#: What differs between the GPU run and its dry run on the CPU.
PROFILES = {
    "gpu": {
        "device": "gpu",
        "platform": "cuda",
        "bench_seeds": "1,16,64,256,1024",
        "bench_modes": "float32,tf32,bfloat16",
        "bench_steps": "32",
        "bench_layouts": "vmap",
        "pytest_k": None,
        "bench_k": "test_compiled_epoch",
        "study": {},
        "limits": (120, 150, 100, 50),
    },  # with the 60 s check: 8 minutes
    "dry-run": {
        "device": "cpu",
        "platform": "cpu",
        "bench_seeds": "2",
        "bench_modes": "float32",
        "bench_steps": "4",
        "bench_layouts": "vmap,sequential",
        "pytest_k": "deterministic and learned",
        # the GPU machine has JAX only: the dry run times what the GPU run times, not TensorFlow too
        "bench_k": "test_compiled_epoch and jax",
        "limits": (300, 300, 300, 300),
        "study": {
            "seeds": [0, 1],
            "scalings": ["raw"],
            "decoders": {"learned": {}, "floor": {"xi": 0.02}},
            "train": {"epochs": 2},
            "eval": {"iwae_k": 10},
        },
    },
}


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def toml_text(data: dict) -> str:
    """A study as TOML: top-level values, then tables (a study nests at most two levels)."""
    lines = [f"{k} = {toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for key, table in data.items():
        if isinstance(table, dict):
            flat = {k: v for k, v in table.items() if not isinstance(v, dict)}
            lines += ["", f"[{key}]"] + [f"{k} = {toml_value(v)}" for k, v in flat.items()]
            for sub, inner in table.items():
                if isinstance(inner, dict):
                    lines += [f"[{key}.{sub}]"] + [f"{k} = {toml_value(v)}" for k, v in inner.items()]
    return "\n".join(lines) + "\n"


def gpu_study(profile: dict, name: str) -> dict:
    """The quick study's JAX half on the profile's device, with the profile's reductions."""
    study = tomllib.loads((ROOT / "benchmarks/studies/quick.toml").read_text())
    study.update({"name": name, "backends": ["jax"], "devices": [profile["device"]]})
    for key, value in profile["study"].items():
        study[key] = {**study.get(key, {}), **value} if key in ("train", "eval") else value
    return study


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for records, benchmark JSON and the log")
    parser.add_argument("--dry-run", action="store_true", help="JAX's CPU platform, tiny configuration")
    args = parser.parse_args(argv)
    profile = PROFILES["dry-run" if args.dry_run else "gpu"]
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = (out / "log.txt").open("a")
    env = {
        **os.environ,
        "JAX_PLATFORMS": profile["platform"],
        "TFP_VAE_TEST_DEVICE": profile["device"],
        "TFP_VAE_BENCH_DEVICE": profile["device"],
        "TFP_VAE_BENCH_SEEDS": profile["bench_seeds"],
        "TFP_VAE_BENCH_MODES": profile["bench_modes"],
        "TFP_VAE_BENCH_STEPS": profile["bench_steps"],
        "TFP_VAE_BENCH_LAYOUTS": profile["bench_layouts"],
        "PYTHONUNBUFFERED": "1",
    }
    results: dict[str, int] = {}

    def step(label: str, cmd: list[str], limit: int) -> int:
        print(f"== {label}: {' '.join(cmd)} (limit {limit} s)", file=log, flush=True)
        print(f"== {label}", flush=True)
        t0 = time.perf_counter()
        try:
            rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=limit).returncode
        except subprocess.TimeoutExpired:
            rc = 124
        print(f"== {label}: exit {rc} after {time.perf_counter() - t0:.0f} s", file=log, flush=True)
        print(f"   exit {rc} after {time.perf_counter() - t0:.0f} s", flush=True)
        results[label] = rc
        return rc

    py = sys.executable
    code = (
        "import jax; d = jax.devices(); print(d); "
        f"assert any(x.platform == {'gpu' if profile['device'] == 'gpu' else 'cpu'!r} for x in d), d"
    )
    if step("jax sees the device", [py, "-c", code], 60) != 0:
        return 1
    t_tests, t_bench, t_study, t_repro = profile["limits"]
    k = ["-k", profile["pytest_k"]] if profile["pytest_k"] else []
    step("JAX tests", [py, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *k, *JAX_TESTS], t_tests)
    step(
        "compiled-epoch benchmark",
        [
            py,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "benchmarks/test_throughput.py",
            "-k",
            profile["bench_k"],
            "--benchmark-json",
            str(out / "benchmark.json"),
        ],
        t_bench,
    )
    bench_json = out / "benchmark.json"
    if bench_json.is_file():  # the device against every committed CPU's figures
        from tfp_vae.report.bench_compare import device_ratio_table
        from tfp_vae.report.render import markdown

        for ref in sorted((ROOT / "results" / "benchmarks").glob("*.json")):
            (out / f"device_ratios_vs_{ref.stem}.md").write_text(markdown(device_ratio_table(bench_json, ref)) + "\n")
    name = "quick_gpu" if profile["device"] == "gpu" else "quick_gpu_dry_run"
    study_path = out / f"{name}.toml"
    study_path.write_text(toml_text(gpu_study(profile, name)))
    cli = [py, "-c", "import sys; from tfp_vae.cli import main; sys.exit(main(sys.argv[1:]))"]
    step(
        "quick study, JAX on the device",
        [*cli, "run", str(study_path), "--results", str(out / "runs"), "--workers", "1", "--seeds-per-group", "16"],
        t_study,
    )
    step(
        "reproduce one record",
        [
            *cli,
            "reproduce",
            str(study_path),
            "--results",
            str(out / "runs"),
            "--out",
            str(out / "reproductions"),
            "--sample",
            "1",
            "--workers",
            "1",
        ],
        t_repro,
    )
    (out / "summary.json").write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))
    return 0 if all(rc == 0 for rc in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
