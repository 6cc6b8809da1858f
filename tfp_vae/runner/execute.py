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

import time
from pathlib import Path
from typing import Any, Callable

from tfp_vae.config import RunSpec
from tfp_vae.errors import ConfigError, StoreError
from tfp_vae.runner.executors import make_executor
from tfp_vae.runner.progress import Progress, summary
from tfp_vae.runner.store import ResultStore
from tfp_vae.runner.study import Study, describe
from tfp_vae.runner.worker import error_record
from tfp_vae.runner.worker_pool import POLL_S

#: Seeds trained in one compiled step at most, unless the command line says otherwise: the
#: group's parameters, optimiser state and batches are this many times one run's.
DEFAULT_SEEDS_PER_GROUP = 16
#: While no run finishes for this long, the runner prints each running group's latest epoch.
HEARTBEAT_S = 300.0


def pending_specs(study: Study, store: ResultStore, force: bool, rerun_failed: bool) -> list[RunSpec]:
    out = []
    for spec in study.specs:
        status = store.status(spec.run_id())
        if force or status == "pending" or (status == "failed" and rerun_failed):
            out.append(spec)
    return out


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
    force = force or groups is not None  # given groups run whatever their status
    if groups is None:
        groups = [[spec] for spec in todo] if study.order == "seed-major" else seed_groups(todo, seeds_per_group)
    progress = Progress(total=len(study.specs), skipped=len(study.specs) - len(todo), out=out)
    progress.start(
        f"{len(todo)} to run in {len(groups)} seed group(s), {progress.skipped} already recorded, executor {executor}"
    )
    if todo:
        engine = make_executor(executor, workers, scheduler, None if compile_cache is None else str(compile_cache))
        _Schedule(study, store, engine, workers, progress, todo, force).run(list(groups))
    progress.close()
    return progress


class _Schedule:
    """One invocation's bookkeeping: which groups run, which records are saved, what was last said."""

    def __init__(self, study, store, engine, workers, progress, todo, force):
        self.study, self.store, self.engine, self.workers, self.progress = study, store, engine, workers, progress
        self.force = force
        self.claimed = {spec.run_id(): spec for spec in todo}
        self.running: dict[Any, list[RunSpec]] = {}  # future -> its group, until its records are saved
        self.saved: set[str] = set()  # run ids whose records are written (a group's finished seeds come first)
        self.last_epoch_line: dict[int, str] = {}  # per running group, the epoch line last printed
        self.quiet_since = time.perf_counter()

    def run(self, waiting: list[list[RunSpec]]) -> None:
        try:
            while waiting or self.running:
                while waiting and len(self.running) < self.workers:
                    self.start(waiting.pop(0))
                self.progress.running = self.unsaved_running()
                if not self.running:
                    break
                self.step()
        finally:  # what did not finish is released for the next invocation
            for group in self.running.values():
                for spec in group:
                    self.store.release(spec.run_id())
            self.engine.close()

    def start(self, group: list[RunSpec]) -> None:
        """Claim the group's runs and submit those that are still to do."""
        mine = []
        for spec in group:
            if not self.store.claim(spec.run_id()):
                self.progress.skipped += 1
                self.progress.line(f"{describe(spec)} is being run by another invocation")
            elif not self.force and self.store.status(spec.run_id()) == "done":  # finished while we waited
                self.store.release(spec.run_id())
                self.progress.skipped += 1
            else:
                mine.append(spec)
        if mine:
            self.running[self.engine.submit(mine)] = mine

    def step(self) -> None:
        """Wait up to POLL_S; save whatever records arrived; say where long groups are."""
        finished = self.engine.wait_any(list(self.running), POLL_S)
        self.progress.epochs([self.engine.latest_epoch(group) for group in self.running.values()])
        early = self.engine.early_records()
        for record in early:
            self.save(record)
        if finished or early:
            self.quiet_since = time.perf_counter()
        elif time.perf_counter() - self.quiet_since >= HEARTBEAT_S:
            self.heartbeat()
        for future in finished:
            self.finish(future)

    def heartbeat(self) -> None:
        """A long group: print each running group's latest epoch line, once per new line."""
        self.quiet_since = time.perf_counter()
        for group in self.running.values():
            latest = self.engine.latest_epoch(group)
            if latest and latest != self.last_epoch_line.get(id(group)):
                self.last_epoch_line[id(group)] = latest
                self.progress.line(f"{describe(group[0])} (group of {len(group)}): {latest}")

    def finish(self, future) -> None:
        """Save a finished group's records; a group that raised becomes error records."""
        group = self.running[future]  # stays running until saved: if saving fails, its claims are released
        try:
            records = future.result()
        except Exception as exc:
            records = [error_record(s.to_dict(), s.run_id(), f"{type(exc).__name__}: {exc}", "") for s in group]
        for record in self.engine.early_records() + records:
            if record["run_id"] not in self.saved:
                self.save(record)
        del self.running[future]

    def unsaved_running(self) -> int:
        return sum(s.run_id() not in self.saved for g in self.running.values() for s in g)

    def save(self, record: dict[str, Any]) -> None:
        spec = self.claimed[record["run_id"]]
        try:
            self.store.write(record)
        except OSError as exc:  # e.g. no space left: say so in one line, keep what is saved
            done = sum(self.store.status(s.run_id()) == "done" for s in self.study.specs)
            raise StoreError(
                f"cannot write records to {self.store.dir} ({exc.strerror or exc}); {done} of "
                f"{len(self.study.specs)} runs of {self.study.name} are saved there, intact; make room and run "
                f"the same command again: it resumes from them"
            ) from None
        self.saved.add(spec.run_id())
        self.store.release(spec.run_id())
        if record["status"] == "error":
            self.progress.failed += 1
        else:
            self.progress.done += 1
        self.progress.running = self.unsaved_running()
        self.progress.line(f"{describe(spec)}: {summary(record)}", finished_one=True)
