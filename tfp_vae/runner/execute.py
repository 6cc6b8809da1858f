"""Run a study: skip finished runs, claim the rest, run each in its own process.

Each run gets a fresh process (spawn, one task per child), so TensorFlow state and
thread settings never leak between runs; with N workers each gets cores / N
threads. Records are written by this (client) process as results arrive, so a
Ctrl-C or a killed process loses no finished record and the next invocation resumes.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

from tfp_vae import SCHEMA_VERSION, __version__
from tfp_vae.config import RunSpec
from tfp_vae.runner.store import ResultStore
from tfp_vae.runner.study import Study, describe


def run_in_worker(spec_dict: dict[str, Any], threads: int) -> dict[str, Any]:
    """Worker entry point: set threads, run one spec, never raise (errors become records)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from tfp_vae.config import spec_from_dict

    spec = spec_from_dict(spec_dict)
    try:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, threads)))
        from tfp_vae.run import run

        return run(spec, log=lambda s: None)
    except Exception as exc:  # noqa: BLE001 - a failing run is recorded and the study goes on
        return error_record(spec, exc, traceback.format_exc())


def error_record(spec: RunSpec, exc: BaseException, tb: str) -> dict[str, Any]:
    return {"schema_version": SCHEMA_VERSION, "tfp_vae_version": __version__, "run_id": spec.run_id(),
            "spec": spec.to_dict(), "status": "error", "error": f"{type(exc).__name__}: {exc}", "traceback": tb}


@dataclass
class Progress:
    total: int
    done: int = 0
    failed: int = 0
    skipped: int = 0
    running: int = 0
    started: float = field(default_factory=time.perf_counter)
    out: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True)

    def line(self, text: str) -> None:
        finished = self.done + self.failed
        elapsed = time.perf_counter() - self.started
        remaining = self.total - self.skipped - finished
        eta = elapsed / finished * remaining if finished else float("nan")
        self.out(f"[{finished + self.skipped}/{self.total}] done {self.done + self.skipped} failed {self.failed} "
                 f"running {self.running} eta {eta:.0f}s | {text}")


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
    return (f"{record['status']} iwae_ll {m['iwae_ll']} collapse {m['variance_collapse']} "
            f"({t['wall_s']:.1f}s)")


def run_study(study: Study, store: ResultStore, workers: int = 1, force: bool = False,
              rerun_failed: bool = False, out: Callable[[str], None] | None = None) -> Progress:
    """Run every pending spec of `study` in a local process pool."""
    todo = pending_specs(study, store, force, rerun_failed)
    progress = Progress(total=len(study.specs), skipped=len(study.specs) - len(todo))
    if out is not None:
        progress.out = out
    progress.line(f"{len(todo)} to run, {progress.skipped} already recorded")
    threads = max(1, (os.cpu_count() or 1) // max(1, workers))
    ctx = multiprocessing.get_context("spawn")
    claimed: dict[cf.Future, RunSpec] = {}
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, max_tasks_per_child=1) as pool:
        try:
            queue = list(todo)
            while queue or claimed:
                while queue and len(claimed) < workers:
                    spec = queue.pop(0)
                    if not store.claim(spec.run_id()):
                        progress.skipped += 1
                        progress.line(f"{describe(spec)} is being run by another invocation")
                        continue
                    if not force and store.status(spec.run_id()) == "done":  # finished while we waited
                        store.release(spec.run_id())
                        progress.skipped += 1
                        continue
                    claimed[pool.submit(run_in_worker, spec.to_dict(), threads)] = spec
                progress.running = len(claimed)
                if not claimed:
                    break
                finished, _ = cf.wait(claimed, return_when=cf.FIRST_COMPLETED)
                for future in finished:
                    spec = claimed.pop(future)
                    try:
                        record = future.result()
                    except Exception as exc:  # noqa: BLE001 - e.g. the worker process died
                        record = error_record(spec, exc, traceback.format_exc())
                    store.write(record)
                    store.release(spec.run_id())
                    if record["status"] == "error":
                        progress.failed += 1
                    else:
                        progress.done += 1
                    progress.running = len(claimed)
                    progress.line(f"{describe(spec)}: {summary(record)}")
        finally:
            for spec in claimed.values():
                store.release(spec.run_id())
    return progress
