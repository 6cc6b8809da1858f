"""The main job behind `tox -e bench`: reproduce a sample of the committed runs of the
quick study (and, when Fashion-MNIST is present, of the Fashion-MNIST quick study and one
seed group of the paper study, about 15 minutes on 2 cores) from scratch and say whether
they match, fill in any run of the quick studies without a record (never the paper study's:
hours; `tfp-vae run benchmarks/studies/fmnist_paper.toml` runs or resumes it), run the
throughput benchmarks and compare them with the closest committed machine, and regenerate
the reports.

`tox -e bench -- --all` reproduces every committed run; `-- --study-walltime` also times
the quick study from scratch (scripts/study_walltime.py); other arguments go to every
`tfp-vae run` and `tfp-vae reproduce`, e.g. `tox -e bench -- --workers 1` (without them,
reproduce runs as many workers at a time as made the records, run 2).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAPER_STUDY = "fmnist_paper"


def sh(*args: str) -> int:
    print("+", " ".join(args), flush=True)
    return subprocess.call(list(args), cwd=ROOT)


def main(argv: list[str]) -> int:
    started = time.perf_counter()
    reproduce_all = "--all" in argv
    study_walltime = "--study-walltime" in argv
    # reproduce shares the machine as the records did unless told otherwise; run takes 2 workers
    user_args = [a for a in argv if a not in ("--all", "--study-walltime")]
    run_args = user_args or ["--workers", "2"]
    from tfp_vae.data import dataset_entry, store
    from tfp_vae.environment import machine_slug

    studies, samples = ["quick"], {}
    if store.locate(dataset_entry("fashion_mnist")) is not None:
        studies.append("fmnist_quick")
        if (ROOT / "results" / "runs" / PAPER_STUDY).is_dir():
            samples[PAPER_STUDY] = ["--sample", "1"]  # one seed group: the study itself takes hours
    else:
        print(
            "Fashion-MNIST is not present: skipping benchmarks/studies/fmnist_quick.toml. "
            "Get it with `apt-get install dataset-fashion-mnist` (Debian) or `tfp-vae data fetch fashion_mnist`."
        )
    failures = 0
    # 1. reproduce: rerun committed runs from scratch and compare (non-zero when a run that
    #    should be bit-identical is not)
    for study in [*studies, *samples]:
        which = samples.get(study, ["--all"] if reproduce_all else [])
        failures += sh("tfp-vae", "reproduce", f"benchmarks/studies/{study}.toml", *which, *user_args) != 0
    # 2. the quick studies themselves: only runs without a committed record
    for study in studies:
        failures += sh("tfp-vae", "run", f"benchmarks/studies/{study}.toml", *run_args) != 0
    # 3. throughput benchmarks, compared with the committed JSON of the closest machine
    bench_dir = ROOT / "results" / "benchmarks"
    out = bench_dir / f"{machine_slug()}.json"
    fresh = bench_dir / f".{out.name}.new"
    failures += (
        sh(
            sys.executable,
            "-m",
            "pytest",
            "benchmarks",
            "--ignore=benchmarks/test_peers.py",
            "-p",
            "no:cacheprovider",
            "--benchmark-only",
            "--benchmark-columns=median,iqr,rounds",
            "--benchmark-sort=name",
            f"--benchmark-json={fresh}",
        )
        != 0
    )
    if fresh.is_file():
        import json

        from tfp_vae.report.bench_compare import closest_reference, ratio_table
        from tfp_vae.report.render import markdown

        reference = closest_reference(json.loads(fresh.read_text()), list(bench_dir.glob("*.json")))
        if reference is not None:
            print("\n" + markdown(ratio_table(fresh, reference)))
        os.replace(fresh, out)
    # 3b. on request, the quick study from scratch, with an empty and a filled compile cache (~15 min)
    if study_walltime:
        failures += sh(sys.executable, "scripts/study_walltime.py") != 0
    # 4. reports and the declared paper tables
    for study in [*studies, *samples]:
        failures += (
            sh(
                "tfp-vae",
                "report",
                f"results/runs/{study}",
                "--out",
                f"results/{study}",
                "--benchmarks",
                "results/benchmarks",
                "--reproductions",
                "results/reproductions",
            )
            != 0
        )
    failures += sh("tfp-vae", "paper", "benchmarks/tables.toml") != 0
    print(f"\nbench finished in {time.perf_counter() - started:.0f} s with {failures} failed step(s).")
    print(
        "Tables: results/quick/README.md (and report.html, *.tex, *.csv), results/fmnist_quick/, "
        "results/fmnist_paper/, "
        f"declared paper tables in results/tables/, reproductions in results/reproductions/, benchmark JSON in {out}"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
