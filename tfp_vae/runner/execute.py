"""Run a study: skip finished runs, claim the rest, run each in its own process.

Every run is a fresh `python -m tfp_vae.runner.worker` process, so TensorFlow state
and thread settings never leak between runs; with N parallel runs each gets
cores / N threads. The executor only decides where that process starts: a local
thread pool, or a Dask cluster (a LocalCluster by default, or `--scheduler ADDRESS`).
Records travel back as values and are written by this (client) process as they
arrive, so workers need no shared disk, and a Ctrl-C or a killed client loses no
finished record: the next invocation resumes.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tfp_vae.config import RunSpec
from tfp_vae.errors import ConfigError
from tfp_vae.runner.store import ResultStore
from tfp_vae.runner.study import Study, describe
from tfp_vae.runner.worker import error_record

WORKER_TIMEOUT_S = 6 * 3600


def run_isolated(spec_dict: dict[str, Any], run_id: str, threads: int, concurrent: int = 1) -> dict[str, Any]:
    """Run one spec in a fresh Python process on this machine; never raises. `concurrent` (how
    many runs share the machine) goes into the record beside its timings."""
    env = {**os.environ, "TF_NUM_INTRAOP_THREADS": str(threads), "TF_NUM_INTEROP_THREADS": str(min(2, threads)),
           "OMP_NUM_THREADS": str(threads), "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3"),
           "TFP_VAE_CONCURRENT_RUNS": str(concurrent)}
    if threads == 1:  # XLA on CPU (the JAX backend) otherwise starts a thread per core in every run
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
                            " intra_op_parallelism_threads=1").strip()
    with tempfile.TemporaryDirectory(prefix="tfp_vae_run_") as tmp:
        out = Path(tmp) / "record.json"
        try:
            proc = subprocess.run([sys.executable, "-m", "tfp_vae.runner.worker", str(out)], input=json.dumps(spec_dict),
                                  capture_output=True, text=True, env=env, timeout=WORKER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return error_record(spec_dict, run_id, f"TimeoutExpired: run exceeded {WORKER_TIMEOUT_S} s", "")
        if proc.returncode != 0 or not out.is_file():
            tail = proc.stderr[-4000:]
            return error_record(spec_dict, run_id, f"worker process exited with code {proc.returncode}", tail)
        return json.loads(out.read_text())


class LocalExecutor:
    """Runs on this machine: a thread per parallel run, each waiting on its own process."""

    def __init__(self, workers: int, scheduler: str | None = None):
        if scheduler:
            raise ConfigError("--scheduler is for --executor dask; the local executor runs on this machine")
        self.pool = cf.ThreadPoolExecutor(max_workers=workers)
        self.threads = max(1, (os.cpu_count() or 1) // workers)
        self.workers = workers

    def submit(self, spec: RunSpec) -> cf.Future:
        return self.pool.submit(run_isolated, spec.to_dict(), spec.run_id(), self.threads, self.workers)

    def wait_any(self, futures: list) -> set:
        return cf.wait(futures, return_when=cf.FIRST_COMPLETED)[0]

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


class DaskExecutor:
    """Runs on Dask workers: a LocalCluster of `workers` single-threaded workers by default,
    or an existing scheduler (for SLURM or PBS, start one with dask-jobqueue)."""

    def __init__(self, workers: int, scheduler: str | None = None):
        from distributed import Client, LocalCluster

        self.cluster = None
        if scheduler:
            self.client = Client(scheduler)
            self.threads = 1
        else:
            self.cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                        dashboard_address=None)
            self.client = Client(self.cluster)
            self.threads = max(1, (os.cpu_count() or 1) // workers)
        self.workers = 1 if scheduler else workers

    def submit(self, spec: RunSpec):
        return self.client.submit(run_isolated, spec.to_dict(), spec.run_id(), self.threads, self.workers, pure=False)

    def wait_any(self, futures: list) -> set:
        from distributed import wait

        return set(wait(futures, return_when="FIRST_COMPLETED").done)

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


EXECUTORS: dict[str, type] = {"local": LocalExecutor, "dask": DaskExecutor}


def make_executor(name: str, workers: int, scheduler: str | None = None):
    if name not in EXECUTORS:
        raise ConfigError(f"--executor {name!r} is not allowed; expected one of {', '.join(EXECUTORS)}")
    if workers < 1:
        raise ConfigError(f"--workers {workers} is not allowed; expected an integer >= 1")
    return EXECUTORS[name](workers, scheduler)


@dataclass
class Progress:
    """Counts over the whole study. On a terminal a tqdm progress bar (its ETA is tqdm's:
    the observed rate times what remains); otherwise, as in logs and CI, one line per event."""

    total: int
    done: int = 0
    failed: int = 0
    skipped: int = 0
    running: int = 0
    started: float = field(default_factory=time.perf_counter)
    out: Callable[[str], None] | None = None
    bar: Any = None

    def start(self, text: str) -> None:
        """Print the opening line, and open the bar when stderr is a terminal and no `out` is set."""
        if self.out is None and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, initial=self.skipped, unit="run", file=sys.stderr, dynamic_ncols=True)
        self.line(text)

    def line(self, text: str, finished_one: bool = False) -> None:
        finished = self.done + self.failed
        if self.bar is not None:
            if finished_one:
                self.bar.update(1)
            self.bar.set_postfix_str(f"failed {self.failed}", refresh=False)
            self.bar.write(text, file=sys.stderr)
            return
        elapsed = time.perf_counter() - self.started
        remaining = self.total - self.skipped - finished
        # elapsed / finished is already the wall time per run with the workers in parallel
        eta = f"{elapsed / finished * remaining:.0f}s" if finished else "?"
        (self.out or (lambda s: print(s, file=sys.stderr, flush=True)))(
            f"[{finished + self.skipped}/{self.total}] done {self.done + self.skipped} failed {self.failed} "
            f"running {self.running} eta {eta} | {text}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def pending_specs(study: Study, store: ResultStore, force: bool, rerun_failed: bool) -> list[RunSpec]:
    out = []
    for spec in study.specs:
        status = store.status(spec.run_id())
        if force or status == "pending" or (status == "failed" and rerun_failed):
            out.append(spec)
    return out


def summary(record: dict[str, Any]) -> str:
    if record["status"] == "error":
        return f"FAILED {record['error']}"
    m, t = record["metrics"], record["timing"]
    iwae = "n/a" if m["iwae_ll"] is None else f"{m['iwae_ll']:.2f}"
    return f"{record['status']} iwae_ll {iwae} collapse {m['variance_collapse']} ({t['wall_s']:.1f}s)"


def run_study(study: Study, store: ResultStore, workers: int = 1, executor: str = "local", scheduler: str | None = None,
              force: bool = False, rerun_failed: bool = False, out: Callable[[str], None] | None = None) -> Progress:
    """Run every pending spec of `study`, at most `workers` at a time."""
    todo = pending_specs(study, store, force, rerun_failed)
    progress = Progress(total=len(study.specs), skipped=len(study.specs) - len(todo), out=out)
    progress.start(f"{len(todo)} to run, {progress.skipped} already recorded, executor {executor}")
    if not todo:
        progress.close()
        return progress
    engine = make_executor(executor, workers, scheduler)
    running: dict[Any, RunSpec] = {}
    try:
        queue = list(todo)
        while queue or running:
            while queue and len(running) < workers:
                spec = queue.pop(0)
                if not store.claim(spec.run_id()):
                    progress.skipped += 1
                    progress.line(f"{describe(spec)} is being run by another invocation")
                    continue
                if not force and store.status(spec.run_id()) == "done":  # finished while we waited
                    store.release(spec.run_id())
                    progress.skipped += 1
                    continue
                running[engine.submit(spec)] = spec
            progress.running = len(running)
            if not running:
                break
            for future in engine.wait_any(list(running)):
                spec = running.pop(future)
                try:
                    record = future.result()
                except Exception as exc:  # noqa: BLE001 - e.g. a Dask worker was lost
                    record = error_record(spec.to_dict(), spec.run_id(), f"{type(exc).__name__}: {exc}", "")
                store.write(record)
                store.release(spec.run_id())
                if record["status"] == "error":
                    progress.failed += 1
                else:
                    progress.done += 1
                progress.running = len(running)
                progress.line(f"{describe(spec)}: {summary(record)}", finished_one=True)
    finally:
        for spec in running.values():
            store.release(spec.run_id())
        engine.close()
        progress.close()
    return progress
