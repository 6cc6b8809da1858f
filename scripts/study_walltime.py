"""The quick study's wall time with and without seed batching, measured in one run:
`python scripts/study_walltime.py` (or `tox -e bench -- --study-walltime`) runs
benchmarks/studies/quick.toml from scratch twice into temporary stores, with seed groups of
up to 16 seeds and with every seed alone (--seeds-per-group 1), both with two worker processes
that stay up between groups, and writes the two wall times and their ratio to
results/benchmarks/study_walltime/<machine>.json. Takes about a quarter of an hour."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STUDY = "benchmarks/studies/quick.toml"


def timed_study(seeds_per_group: int, workers: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="tfp_vae_walltime_") as results:
        t0 = time.perf_counter()
        rc = subprocess.call([sys.executable, "-m", "tfp_vae.cli", "run", STUDY, "--results", results,
                              "--workers", str(workers), "--seeds-per-group", str(seeds_per_group)], cwd=ROOT)
        wall = time.perf_counter() - t0
        runs = len(list(Path(results).rglob("*.json")))
    return {"seeds_per_group": seeds_per_group, "workers": workers, "wall_s": wall, "runs": runs, "exit": rc}


def main(argv: list[str]) -> int:
    import os

    from tfp_vae.environment import cpu_model, git_commit, machine_slug
    from tfp_vae.runner.execute import DEFAULT_SEEDS_PER_GROUP

    workers = int(argv[argv.index("--workers") + 1]) if "--workers" in argv else 2
    batched = timed_study(DEFAULT_SEEDS_PER_GROUP, workers)
    alone = timed_study(1, workers)
    out = ROOT / "results" / "benchmarks" / "study_walltime" / f"{machine_slug()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"study": STUDY, "cpu_model": cpu_model(), "cores": os.cpu_count(), "git": git_commit(), "with_seed_batching": batched,
              "without_seed_batching": alone, "speedup": alone["wall_s"] / batched["wall_s"]}
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"quick study, {batched['runs']} runs, {workers} workers: {batched['wall_s']:.0f} s with seed groups of up to "
          f"{DEFAULT_SEEDS_PER_GROUP}, {alone['wall_s']:.0f} s with every seed alone ({result['speedup']:.2f}x); {out}")
    return 1 if batched["exit"] or alone["exit"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
