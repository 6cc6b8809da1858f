"""Where worker processes live: this machine (a thread per worker) or a Dask cluster. Both
submit a seed group and hand back its records as the value of a future."""

from __future__ import annotations

import concurrent.futures as cf
import os
import queue
from typing import Any

from tfp_vae.config import RunSpec
from tfp_vae.errors import ConfigError
from tfp_vae.runner.worker_pool import close_idle_workers, latest_epoch_of, run_group_in_worker, threads_per_worker


def _group_arguments(executor, group: list[RunSpec]) -> tuple:
    """run_group_in_worker's arguments for a seed group, as either executor submits them."""
    specs, ids = [s.to_dict() for s in group], [s.run_id() for s in group]
    return specs, ids, executor.threads, executor.workers, executor.compile_cache


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
        return self.pool.submit(run_group_in_worker, *_group_arguments(self, group), self.finished.put)

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
        return latest_epoch_of([s.run_id() for s in group])

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
        return self.client.submit(run_group_in_worker, *_group_arguments(self, group), pure=False)

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
