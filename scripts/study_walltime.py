"""The quick study's wall time, every variant measured one after the other in one run:
`python scripts/study_walltime.py [--workers N] [--baseline REV]` (or `tox -e bench --
--study-walltime`) runs benchmarks/studies/quick.toml from scratch into temporary stores

- with the code of REV, checked out in a temporary git worktree, when --baseline is given (the
  commit a speed target was set against), running REV's own quick.toml;
- with this checkout's code and an empty compile cache: what a first run on a machine costs;
- again with that cache, which now holds every program: what a rerun costs;

each with N worker processes (default 2) that stay up between seed groups, and writes the wall
times to results/benchmarks/study_walltime/<machine>.json. Takes about a quarter of an hour."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STUDY = "benchmarks/studies/quick.toml"


def timed_study(label: str, code: Path, workers: int, extra: list[str]) -> dict:
    """One run of `code`'s quick study from scratch into a temporary store."""
    env = {**os.environ, "PYTHONPATH": str(code)}  # `code`'s package, whatever is installed
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=code, capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="tfp_vae_walltime_") as results:
        print(f"study_walltime: {label} ({commit[:7]}) ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(
            [
                sys.executable,
                "-m",
                "tfp_vae.cli",
                "run",
                STUDY,
                "--results",
                results,
                "--workers",
                str(workers),
                *extra,
            ],
            cwd=code,
            env=env,
        )
        wall = time.perf_counter() - t0
        runs = len(list(Path(results).rglob("*.json")))
    print(f"study_walltime: {label}: {wall:.0f} s, {runs} runs", file=sys.stderr, flush=True)
    return {"label": label, "commit": commit, "workers": workers, "wall_s": wall, "runs": runs, "exit": rc}


def main(argv: list[str]) -> int:
    from tfp_vae.environment import cpu_identity, cpu_model, git_commit, machine_slug

    workers = int(argv[argv.index("--workers") + 1]) if "--workers" in argv else 2
    baseline = argv[argv.index("--baseline") + 1] if "--baseline" in argv else None
    timings = []
    with tempfile.TemporaryDirectory(prefix="tfp_vae_walltime_code_") as scratch:
        if baseline:
            tree = Path(scratch) / "baseline"
            subprocess.run(
                ["git", "worktree", "add", "--detach", str(tree), baseline], cwd=ROOT, check=True, capture_output=True
            )
            try:
                timings.append(timed_study(f"baseline {baseline}", tree, workers, []))
            finally:
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
        cache = Path(scratch) / "compile_cache"
        for label in ("this code, empty compile cache", "this code, compile cache from the run before"):
            timings.append(timed_study(label, ROOT, workers, ["--compile-cache", str(cache)]))
    out = ROOT / "results" / "benchmarks" / "study_walltime" / f"{machine_slug()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "study": STUDY,
        "cpu_model": cpu_model(),
        "cpu": cpu_identity(),
        "cores": os.cpu_count(),
        "git": git_commit(),
        "timings": timings,
    }
    out.write_text(json.dumps(result, indent=1) + "\n")
    first = timings[0]["wall_s"]
    for t in timings:
        print(
            f"quick study, {t['runs']} runs, {workers} workers, {t['label']}: {t['wall_s']:.0f} s "
            f"({t['wall_s'] / first:.2f} of the first)"
        )
    print(out)
    return 1 if any(t["exit"] for t in timings) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
