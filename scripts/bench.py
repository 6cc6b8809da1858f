"""The main job behind `tox -e bench`: the quick study (resuming), the Fashion-MNIST
quick study when that data set is present, the throughput benchmarks, the report.

Arguments (tox posargs) go to every `tfp-vae run`, e.g. `tox -e bench -- --workers 1`.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def sh(*args: str) -> int:
    print("+", " ".join(args), flush=True)
    return subprocess.call(list(args), cwd=ROOT)


def machine_slug() -> str:
    """A file name for this machine's benchmark JSON: CPU model and core count."""
    model = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1]
                break
    except OSError:
        pass
    slug = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")[:48]
    return os.environ.get("TFP_VAE_MACHINE") or f"{slug}-{os.cpu_count()}cores"


def main(argv: list[str]) -> int:
    started = time.perf_counter()
    run_args = argv or ["--workers", "2"]
    failures = 0
    failures += sh("tfp-vae", "run", "benchmarks/studies/quick.toml", *run_args) != 0
    from tfp_vae.data import dataset_entry, store

    if store.locate(dataset_entry("fashion_mnist")) is not None:
        failures += sh("tfp-vae", "run", "benchmarks/studies/fmnist_quick.toml", *run_args) != 0
    else:
        print("Fashion-MNIST is not present: skipping benchmarks/studies/fmnist_quick.toml. "
              "Get it with `apt-get install dataset-fashion-mnist` (Debian) or `tfp-vae data fetch fashion_mnist`.")
    out = f"results/benchmarks/{machine_slug()}.json"
    failures += sh(sys.executable, "-m", "pytest", "benchmarks", "-p", "no:cacheprovider", "--benchmark-only",
                   "--benchmark-columns=median,iqr,rounds", "--benchmark-sort=name", f"--benchmark-json={out}") != 0
    for study in ("quick", "fmnist_quick"):
        if (ROOT / "results" / "runs" / study).is_dir():
            failures += sh("tfp-vae", "report", f"results/runs/{study}", "--out", f"results/{study}",
                           "--benchmarks", "results/benchmarks") != 0
    failures += sh("tfp-vae", "paper", "benchmarks/tables.toml") != 0
    print(f"\nbench finished in {time.perf_counter() - started:.0f} s with {failures} failed step(s).")
    print("Tables: results/quick/README.md (and report.html, *.tex, *.csv), results/fmnist_quick/, "
          f"declared paper tables in results/tables/, benchmark JSON in {out}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
