"""The main job behind `tox -e bench`: reproduce a sample of the committed runs of the
quick study from scratch and say whether they match, fill in any run of the quick study without
a record, run a representative set of the throughput benchmarks (BENCH_DEFAULT: the training
step of `fixed` and `learned`, the compiled epoch of the published network in each seed layout at
one seed count, an evaluation pass and a whole digits run) and compare them with the closest
committed machine, regenerate the reports, and print how long it took.

`tox -e bench -- --all` does everything: it reproduces every committed run of the quick study,
and when Fashion-MNIST is present one seed group of the paper study (about 15 minutes more on
2 cores), and runs every benchmark case (the Fashion-MNIST quick study is retired: its TOML says
why); `-- --study-walltime` also times the quick study from scratch (scripts/study_walltime.py);
other arguments go to every `tfp-vae run` and `tfp-vae reproduce`, e.g. `tox -e bench -- --workers 1`
(without them, reproduce runs as many workers at a time as made the records, run 2).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAPER_STUDY = "fmnist_paper"
#: The benchmark cases `tox -e bench` runs without --all (a pytest -k expression), and the
#: compiled-epoch settings they take: one seed count per layout, float32.
BENCH_DEFAULT = (
    "(test_train_step and not batch_sweep and not without_xla and (fixed or learned))"
    " or test_compiled_epoch or (test_eval_pass and learned) or test_digits_run"
)
BENCH_DEFAULT_ENV = {"TFP_VAE_BENCH_SEEDS": "4", "TFP_VAE_BENCH_MODES": "float32"}


def sh(*args: str) -> int:
    print("+", " ".join(args), flush=True)
    return subprocess.call(list(args), cwd=ROOT)


def merge_benchmarks(fresh: Path, out: Path) -> None:
    """Move the fresh pytest-benchmark JSON to `out`, keeping the cases of an earlier file of this
    machine that this run did not measure (the representative set replaces only its own cases)."""
    import json

    new = json.loads(fresh.read_text())
    if out.is_file():
        measured = {b["fullname"] for b in new["benchmarks"]}
        kept = [b for b in json.loads(out.read_text()).get("benchmarks", []) if b["fullname"] not in measured]
        new["benchmarks"] = sorted(new["benchmarks"] + kept, key=lambda b: b["fullname"])
    tmp = out.with_name(f".{out.name}.merged")
    tmp.write_text(json.dumps(new, indent=4))
    os.replace(tmp, out)
    fresh.unlink()


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
    if not reproduce_all:
        print(
            "The representative set: `tox -e bench -- --all` adds the Fashion-MNIST studies and every benchmark case."
        )
    elif store.locate(dataset_entry("fashion_mnist")) is not None:
        # fmnist_quick is retired (its TOML says why); the paper study is sampled
        if (ROOT / "results" / "runs" / PAPER_STUDY).is_dir():
            samples[PAPER_STUDY] = ["--sample", "1"]  # one seed group: the study itself takes hours
    else:
        print(
            f"Fashion-MNIST is not present: skipping the sample of benchmarks/studies/{PAPER_STUDY}.toml. "
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
    if not reproduce_all:
        os.environ.update(BENCH_DEFAULT_ENV)
    failures += (
        sh(
            sys.executable,
            "-m",
            "pytest",
            "benchmarks",
            *([] if reproduce_all else ["-k", BENCH_DEFAULT]),
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
        merge_benchmarks(fresh, out)
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
        "Tables: results/quick/README.md (and report.html, *.tex, *.csv), results/fmnist_paper/, "
        f"declared paper tables in results/tables/, reproductions in results/reproductions/, benchmark JSON in {out}"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
