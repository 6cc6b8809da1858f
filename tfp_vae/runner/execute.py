"""Run a study: skip finished runs, claim the rest, train specs that differ only by seed
together (seed batching), in worker processes that stay up between groups.

A worker is a `python -m tfp_vae.runner.worker` process with its own thread settings:
with N parallel workers each gets cores / N threads. It stays up across groups, so the
framework's start-up (seconds per process) is paid once per worker, not once per run,
and a worker that dies is replaced while its group's runs are recorded as errors. The
executor only decides where workers live: this machine (a thread per worker), or a Dask
cluster (a LocalCluster by default, or `--scheduler ADDRESS`; each Dask worker process
keeps its own worker process). Records travel back as values and are written by this
(client) process as they arrive, so workers need no shared disk, and a Ctrl-C or a killed
client loses no finished record: the next invocation resumes. On the local executor a
group's finished seeds arrive while its other seeds still run; from Dask, with the group.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import queue
import re
import select
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tfp_vae.compile_cache import worker_environment
from tfp_vae.config import RunSpec
from tfp_vae.errors import ConfigError, StoreError
from tfp_vae.runner.store import ResultStore
from tfp_vae.runner.study import Study, describe
from tfp_vae.runner.worker import DONE, error_record

#: A seed group still running after this long is taken for hung. Runs of the published protocol
#: take up to 1000 epochs of 10-30 s each on one core of a 2-core CPU (over 8 hours), and a group
#: trains its seeds one after another.
WORKER_TIMEOUT_S = 72 * 3600
#: Seeds trained in one compiled step at most, unless the command line says otherwise: the
#: group's parameters, optimiser state and batches are this many times one run's.
DEFAULT_SEEDS_PER_GROUP = 16
#: A worker is replaced after this many groups, which bounds what compiled functions and
#: framework caches can accumulate in one process.
GROUPS_PER_WORKER = 64
#: While no run finishes for this long, the runner prints each running group's latest epoch.
HEARTBEAT_S = 300.0
#: How often the runner looks for records of a running group's finished seeds.
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


class LocalExecutor:
    """Runs on this machine: a thread per parallel worker, each feeding its own worker process."""

    def __init__(self, workers: int, scheduler: str | None = None, compile_cache: str | None = None):
        if scheduler:
            raise ConfigError("--scheduler is for --executor dask; the local executor runs on this machine")
        self.compile_cache = compile_cache
        self.pool = cf.ThreadPoolExecutor(max_workers=workers)
        self.threads = threads_per_worker(os.cpu_count() or 1, workers)
        self.workers = workers
        self.finished: queue.SimpleQueue = queue.SimpleQueue()  # records of seeds whose group still runs

    def submit(self, group: list[RunSpec]) -> cf.Future:
        return self.pool.submit(
            run_group_in_worker,
            [s.to_dict() for s in group],
            [s.run_id() for s in group],
            self.threads,
            self.workers,
            self.compile_cache,
            self.finished.put,
        )

    def early_records(self) -> list[dict[str, Any]]:
        """Records of finished seeds of groups that still run, each once."""
        out = []
        while True:
            try:
                out.append(self.finished.get_nowait())
            except queue.Empty:
                return out

    def wait_any(self, futures: list, timeout: float | None = None) -> set:
        return cf.wait(futures, timeout, return_when=cf.FIRST_COMPLETED)[0]

    def latest_epoch(self, group: list[RunSpec]) -> str | None:
        worker = _BUSY.get(tuple(s.run_id() for s in group))
        return worker.latest_epoch() if worker is not None else None

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        close_idle_workers()


class DaskExecutor:
    """Runs on Dask workers: a LocalCluster of `workers` single-threaded workers by default,
    or an existing scheduler (for SLURM or PBS, start one with dask-jobqueue)."""

    def __init__(self, workers: int, scheduler: str | None = None, compile_cache: str | None = None):
        from distributed import Client, LocalCluster

        self.cluster, self.compile_cache = None, compile_cache  # a path on the Dask workers' machines
        if scheduler:
            self.client = Client(scheduler)
            self.threads = 1
        else:
            self.cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
            self.client = Client(self.cluster)
            self.threads = threads_per_worker(os.cpu_count() or 1, workers)
        self.workers = 1 if scheduler else workers

    def submit(self, group: list[RunSpec]):
        return self.client.submit(
            run_group_in_worker,
            [s.to_dict() for s in group],
            [s.run_id() for s in group],
            self.threads,
            self.workers,
            self.compile_cache,
            pure=False,
        )

    def wait_any(self, futures: list, timeout: float | None = None) -> set:
        from distributed import wait

        try:
            return set(wait(futures, timeout, return_when="FIRST_COMPLETED").done)
        except TimeoutError:
            return set()

    def latest_epoch(self, group: list[RunSpec]) -> str | None:
        return None  # the worker's log is on its own machine

    def early_records(self) -> list[dict[str, Any]]:
        return []  # a group's records come back together, as the value of its task

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


EXECUTORS: dict[str, type] = {"local": LocalExecutor, "dask": DaskExecutor}


def make_executor(name: str, workers: int, scheduler: str | None = None, compile_cache: str | None = None):
    if name not in EXECUTORS:
        raise ConfigError(f"--executor {name!r} is not allowed; expected one of {', '.join(EXECUTORS)}")
    if workers < 1:
        raise ConfigError(f"--workers {workers} is not allowed; expected an integer >= 1")
    return EXECUTORS[name](workers, scheduler, compile_cache)


#: A worker's epoch line ("  seed 1: epoch 94/1000: ..."), the epoch and the budget.
EPOCH_RE = re.compile(r"epoch \d+/\d+")


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
            f"running {self.running} eta {eta} | {text}"
        )

    def epochs(self, latest: list[str | None]) -> None:
        """On the bar, the epoch each running run has reached ("epoch 94/1000"), so that a long run
        shows progress between finished runs (without a bar the heartbeat lines say it)."""
        if self.bar is None:
            return
        reached = [m.group(0) for m in (EPOCH_RE.search(t or "") for t in latest) if m]
        self.bar.set_postfix_str(f"failed {self.failed}" + (f"; {', '.join(reached)}" if reached else ""))

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


def seed_groups(specs: list[RunSpec], cap: int) -> list[list[RunSpec]]:
    """Specs that differ only by seed, in groups of at most `cap`, in study order."""
    if cap < 1:
        raise ConfigError(f"--seeds-per-group {cap} is not allowed; expected an integer >= 1")
    by_key: dict[str, list[RunSpec]] = {}
    for spec in specs:
        by_key.setdefault(spec.group_key(), []).append(spec)
    return [members[i : i + cap] for members in by_key.values() for i in range(0, len(members), cap)]


def run_study(
    study: Study,
    store: ResultStore,
    workers: int = 1,
    executor: str = "local",
    scheduler: str | None = None,
    force: bool = False,
    rerun_failed: bool = False,
    out: Callable[[str], None] | None = None,
    seeds_per_group: int = DEFAULT_SEEDS_PER_GROUP,
    groups: list[list[RunSpec]] | None = None,
    compile_cache: Path | None = None,
) -> Progress:
    """Run every pending spec of `study`, seed groups of at most `seeds_per_group`, at most `workers`
    groups at a time. `groups` (e.g. the groups of committed records being reproduced) replaces
    the grouping; its specs are run whatever their status. `compile_cache`: the directory the
    workers keep compiled programs in (compile_cache.py; None: every worker compiles afresh)."""
    todo = [s for g in groups for s in g] if groups is not None else pending_specs(study, store, force, rerun_failed)
    force = force or groups is not None
    if groups is not None:
        queue_ = groups
    elif study.order == "seed-major":
        queue_ = [[spec] for spec in todo]  # one seed a group, in the study's seed-major order
    else:
        queue_ = seed_groups(todo, seeds_per_group)
    progress = Progress(total=len(study.specs), skipped=len(study.specs) - len(todo), out=out)
    progress.start(
        f"{len(todo)} to run in {len(queue_)} seed group(s), {progress.skipped} already recorded, executor {executor}"
    )
    if not todo:
        progress.close()
        return progress
    engine = make_executor(executor, workers, scheduler, None if compile_cache is None else str(compile_cache))
    running: dict[Any, list[RunSpec]] = {}
    heard: dict[int, str] = {}  # the epoch line last printed per running group
    saved: set[str] = set()  # run ids whose records are written (a group's finished seeds come first)
    claimed = {spec.run_id(): spec for spec in todo}
    quiet_since = time.perf_counter()

    def unsaved_running() -> int:
        return sum(s.run_id() not in saved for g in running.values() for s in g)

    def save(record: dict[str, Any]) -> None:
        spec = claimed[record["run_id"]]
        try:
            store.write(record)
        except OSError as exc:  # e.g. no space left: say so in one line, keep what is saved
            done = sum(store.status(s.run_id()) == "done" for s in study.specs)
            raise StoreError(
                f"cannot write records to {store.dir} ({exc.strerror or exc}); {done} of "
                f"{len(study.specs)} runs of {study.name} are saved there, intact; make room and run "
                f"the same command again: it resumes from them"
            ) from None
        saved.add(spec.run_id())
        store.release(spec.run_id())
        if record["status"] == "error":
            progress.failed += 1
        else:
            progress.done += 1
        progress.running = unsaved_running()
        progress.line(f"{describe(spec)}: {summary(record)}", finished_one=True)

    try:
        queue_ = list(queue_)
        while queue_ or running:
            while queue_ and len(running) < workers:
                group = []
                for spec in queue_.pop(0):
                    if not store.claim(spec.run_id()):
                        progress.skipped += 1
                        progress.line(f"{describe(spec)} is being run by another invocation")
                    elif not force and store.status(spec.run_id()) == "done":  # finished while we waited
                        store.release(spec.run_id())
                        progress.skipped += 1
                    else:
                        group.append(spec)
                if group:
                    running[engine.submit(group)] = group
            progress.running = unsaved_running()
            if not running:
                break
            finished = engine.wait_any(list(running), POLL_S)
            progress.epochs([engine.latest_epoch(group) for group in running.values()])
            early = engine.early_records()
            for record in early:
                save(record)
            if finished or early:
                quiet_since = time.perf_counter()
            elif time.perf_counter() - quiet_since >= HEARTBEAT_S:  # a long group: say where each running one is
                quiet_since = time.perf_counter()
                for group in running.values():
                    latest = engine.latest_epoch(group)
                    if latest and latest != heard.get(id(group)):
                        heard[id(group)] = latest
                        progress.line(f"{describe(group[0])} (group of {len(group)}): {latest}")
            for future in finished:
                group = running[future]  # until its records are saved: if saving fails, its claims are released
                try:
                    records = future.result()
                except Exception as exc:
                    records = [error_record(s.to_dict(), s.run_id(), f"{type(exc).__name__}: {exc}", "") for s in group]
                for record in engine.early_records() + records:
                    if record["run_id"] not in saved:
                        save(record)
                del running[future]
    finally:
        for group in running.values():
            for spec in group:
                store.release(spec.run_id())
        engine.close()
        progress.close()
    return progress
