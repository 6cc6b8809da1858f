"""The client side of the worker protocol (worker.py is the other side): worker processes with
their own thread settings, fed one seed group at a time, kept idle between groups and replaced
when they die or have run GROUPS_PER_WORKER groups."""

from __future__ import annotations

import json
import os
import queue
import select
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

from tfp_vae.compile_cache import worker_environment
from tfp_vae.runner.worker import DONE, error_record

#: A seed group still running after this long is taken for hung. Runs of the published protocol
#: take up to 1000 epochs of 10-30 s each on one core of a 2-core CPU (over 8 hours), and a group
#: trains its seeds one after another.
WORKER_TIMEOUT_S = 72 * 3600
#: A worker is replaced after this many groups, which bounds what compiled functions and
#: framework caches can accumulate in one process.
GROUPS_PER_WORKER = 64
#: How often a running group's directory is looked at for records of its finished seeds.
POLL_S = 2.0


def threads_per_worker(cores: int, workers: int) -> int:
    """The threads each of `workers` parallel worker processes gets on a machine of `cores`."""
    return max(1, cores // workers)


def worker_env(threads: int, concurrent: int, compile_cache: str | None = None) -> dict[str, str]:
    """The environment of a worker process: its thread budget, how many runs share the machine and
    where compiled programs persist (compile_cache.py; None: nowhere)."""
    env = {
        **os.environ,
        **worker_environment(None if compile_cache is None else Path(compile_cache)),
        "TF_NUM_INTRAOP_THREADS": str(threads),
        "TF_NUM_INTEROP_THREADS": str(min(2, threads)),
        "OMP_NUM_THREADS": str(threads),
        "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3"),
        "TFP_VAE_CONCURRENT_RUNS": str(concurrent),
    }
    if threads == 1:  # XLA on CPU (the JAX backend) otherwise starts a thread per core in every run
        env["XLA_FLAGS"] = (
            env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        ).strip()
    return env


class WorkerProcess:
    """One `python -m tfp_vae.runner.worker` process, fed one seed group at a time."""

    def __init__(self, threads: int, concurrent: int, compile_cache: str | None = None):
        self.log = tempfile.TemporaryFile(mode="w+", prefix="tfp_vae_worker_")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tfp_vae.runner.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env=worker_env(threads, concurrent, compile_cache),
        )
        self.groups = 0

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the worker's log; pread leaves the file offset, which the worker writes at, alone."""
        fd = self.log.fileno()
        size = os.fstat(fd).st_size
        return os.pread(fd, chars, max(0, size - chars)).decode("utf-8", "replace")

    def latest_epoch(self) -> str | None:
        """The last epoch line the worker logged (train.py's "epoch e/E: ..."), stripped; None yet."""
        lines = [line.strip() for line in self.log_tail().splitlines() if " epoch " in f" {line.strip()}"]
        return lines[-1] if lines else None

    def run_group(
        self,
        spec_dicts: list[dict[str, Any]],
        run_ids: list[str],
        timeout_s: float = WORKER_TIMEOUT_S,
        on_record: Callable[[dict[str, Any]], None] | None = None,
        poll_s: float = POLL_S,
    ) -> tuple[list[dict[str, Any]], bool]:
        """(one record per spec, whether the worker is still usable); never raises. `on_record` is
        called with each record the worker has written while the group still runs (looked for
        every `poll_s`), so that a client killed part way through a group keeps its finished seeds."""
        with tempfile.TemporaryDirectory(prefix="tfp_vae_group_") as out:
            found: dict[str, dict[str, Any]] = {}

            def collect(notify: bool) -> None:
                for run_id in run_ids:
                    path = Path(out) / f"{run_id}.json"
                    if run_id not in found and path.is_file():  # written atomically: one that is there is whole
                        found[run_id] = json.loads(path.read_text())
                        if notify and on_record is not None:
                            on_record(found[run_id])

            failure = None
            try:
                self.proc.stdin.write(json.dumps({"specs": spec_dicts, "out": out}) + "\n")
                self.proc.stdin.flush()
                deadline, answer = time.monotonic() + timeout_s, None
                while answer is None and time.monotonic() < deadline:
                    wait = min(poll_s, deadline - time.monotonic())
                    ready, _, _ = select.select([self.proc.stdout], [], [], max(wait, 0.0))
                    if ready:
                        answer = self.proc.stdout.readline()
                    else:
                        collect(notify=True)
                if answer is None:
                    failure = f"TimeoutExpired: seed group exceeded {timeout_s:.0f} s"
                elif answer.strip() != DONE:
                    failure = f"worker process exited with code {self.proc.poll()}"
            except (BrokenPipeError, OSError) as exc:
                failure = f"worker process unreachable ({exc}), exit code {self.proc.poll()}"
            collect(notify=False)
            records = [
                found.get(run_id)
                or error_record(spec_dict, run_id, failure or "worker wrote no record", self.log_tail())
                for spec_dict, run_id in zip(spec_dicts, run_ids)
            ]
        self.groups += 1
        return records, failure is None and self.groups < GROUPS_PER_WORKER

    def close(self) -> None:
        """End the process: end of input first, a kill if it does not go."""
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        self.log.close()


#: Idle workers of this process, by (threads, concurrent, compile_cache): a thread of the local executor, or
#: a Dask worker process, takes one, feeds it a group and puts it back.
_IDLE: dict[tuple[int, int, str | None], queue.SimpleQueue] = {}
_IDLE_LOCK = threading.Lock()
#: Busy workers of this process, by the run ids of the group each is running.
_BUSY: dict[tuple[str, ...], WorkerProcess] = {}


def run_group_in_worker(
    spec_dicts: list[dict[str, Any]],
    run_ids: list[str],
    threads: int,
    concurrent: int = 1,
    compile_cache: str | None = None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run one seed group in an idle worker process of this machine (started if there is none);
    never raises. `concurrent` (how many groups share the machine) goes into the records;
    `compile_cache`: the directory compiled programs persist in (None: none); `on_record`: as in
    WorkerProcess.run_group."""
    with _IDLE_LOCK:
        idle = _IDLE.setdefault((threads, concurrent, compile_cache), queue.SimpleQueue())
    try:
        worker = idle.get_nowait()
    except queue.Empty:
        worker = WorkerProcess(threads, concurrent, compile_cache)
    _BUSY[tuple(run_ids)] = worker
    try:
        records, reusable = worker.run_group(spec_dicts, run_ids, on_record=on_record)
    finally:
        del _BUSY[tuple(run_ids)]
    if reusable:
        idle.put(worker)
    else:
        worker.close()
    return records


def close_idle_workers() -> None:
    """End every idle worker process of this process."""
    with _IDLE_LOCK:
        pools = list(_IDLE.values())
        _IDLE.clear()
    for idle in pools:
        while True:
            try:
                idle.get_nowait().close()
            except queue.Empty:
                break


def latest_epoch_of(run_ids: list[str]) -> str | None:
    """The last epoch line of the worker running the group of `run_ids` on this machine; None if none."""
    worker = _BUSY.get(tuple(run_ids))
    return worker.latest_epoch() if worker is not None else None
