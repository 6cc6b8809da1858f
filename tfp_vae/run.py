"""One run: `run(spec) -> record`, a JSON-serialisable dict with a schema version."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from tfp_vae import SCHEMA_VERSION, __version__, checkpoint
from tfp_vae.backends import Backend, get_backend
from tfp_vae.config import RunSpec
from tfp_vae.data import Splits, dataset_entry, load_pool, split_pool
from tfp_vae.data.store import Location
from tfp_vae.decoders import DataContext, make_decoder
from tfp_vae.environment import capture, reset_host_peak_memory
from tfp_vae.evaluate import evaluate_group
from tfp_vae.model import VAE
from tfp_vae.networks import Architecture
from tfp_vae.records import VOLATILE_FIELDS, jsonable, write_record  # noqa: F401 - write_record: part of this module's interface
from tfp_vae.steps import EvalFunctions
from tfp_vae.train import make_group_epoch, train_group

#: Record sections that legitimately differ between two runs of one spec.
VOLATILE_SECTIONS = tuple(f for f in VOLATILE_FIELDS if "." not in f)  # the whole sections of records.VOLATILE_FIELDS


def build_model(spec: RunSpec, image_shape: tuple[int, int, int], data: DataContext, backend: Backend) -> VAE:
    """The VAE of a spec on a backend (structure only; parameters come from `VAE.init(seed)`)."""
    likelihood = make_decoder(spec.decoder, spec.decoder_params, data, backend)
    return VAE(
        Architecture(spec.network, image_shape, likelihood.outputs_per_pixel, spec.precision, likelihood.detach_heads),
        likelihood,
    )


def run(spec: RunSpec, log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> dict[str, Any]:
    """Train and evaluate one spec. Divergence is recorded, not raised."""
    return run_group([spec], log)[0]


#: How the seeds of a group share the machine: "vmap", all of them in one compiled step (seed
#: batching), or "sequential", one after another through one compiled epoch (compiled once);
#: "auto" picks by device (seed_layout).
SEED_LAYOUTS = ("auto", "vmap", "sequential")


def seed_layout(layout: str, device: str) -> str:
    """ "auto" resolved: sequential on a CPU, where a seed-batched step is slower per model-example
    than one seed's at every size measured (5 seeds of the quick study's network, 1-64 seeds of the
    published-table network; docs/definitions.md, seed groups), vmap on a GPU, which one small model leaves idle."""
    if layout != "auto":
        return layout
    return "vmap" if "gpu" in device.lower() else "sequential"


def run_group(
    specs: list[RunSpec], log: Callable[[str], None] = lambda s: print(s, file=sys.stderr), layout: str = "auto"
) -> list[dict[str, Any]]:
    """Train specs that differ only by seed together (`layout`, one of SEED_LAYOUTS) and evaluate
    each; one record per spec, each what that seed trained alone would give up to float rounding
    (docs/definitions.md)."""
    return list(group_records(specs, log, layout))


def _check_group(specs: list[RunSpec], layout: str) -> None:
    """Every spec valid, all differing only by seed, each seed once; a known seed layout."""
    if layout not in SEED_LAYOUTS:
        raise ValueError(f"seed layout {layout!r}: one of {', '.join(SEED_LAYOUTS)}")
    for spec in specs:
        spec.check()
    if len({spec.group_key() for spec in specs}) != 1 or len({spec.seed for spec in specs}) != len(specs):
        raise ValueError("a seed group holds specs that differ only by seed, each seed once")


def _log_training(log: Callable[[str], None], spec: RunSpec, n_train: int) -> None:
    log(
        f"  compiling and training (the first epoch's time includes compiling), up to {spec.train.epochs} "
        f"epochs of {n_train // spec.train.batch_size} steps"
    )


def _log_evaluation(log: Callable[[str], None], spec: RunSpec, n_test_pool: int) -> None:
    n_test = min(n_test_pool, spec.eval.max_test_examples or n_test_pool)
    log(
        f"  evaluating on {n_test} test images: bound, LPPL ({spec.eval.lppl_samples} samples) and the "
        f"importance-weighted bound (K = {spec.eval.iwae_k}, the longest part)"
    )


@dataclass
class SeedGroup:
    """One seed group set up to run: its specs, backend and device, seed layout, data and splits,
    model and compiled functions (the training epoch and the evaluation programs)."""

    specs: list[RunSpec]
    backend: Backend
    device: str
    layout: str
    data: DataContext
    splits: Splits
    location: Location
    image_shape: tuple[int, int, int]
    # built by `build`, inside the backend's device scope
    model: VAE | None = None
    evals: EvalFunctions | None = None
    group_epoch: Any = None
    batched: bool = False  # all seeds in one compiled call (vmap layout, more than one seed)

    @classmethod
    def open(cls, specs: list[RunSpec], layout: str, log: Callable[[str], None]) -> SeedGroup:
        """Check the specs, configure the device, load the data and split it (`build` then makes
        the model and compiled functions, inside the backend's device scope)."""
        _check_group(specs, layout)
        first = specs[0]
        backend = get_backend(first.backend)
        device = backend.configure(first.device, first.tf32)
        layout = seed_layout(layout, device)
        entry = dataset_entry(first.dataset)
        data = DataContext(entry.levels, first.scaling)
        train_pool, test, location = load_pool(first.dataset)
        splits = split_pool(train_pool, test, first.train.validation_fraction)
        seeds = [spec.seed for spec in specs]
        log(
            f"run {', '.join(spec.run_id() for spec in specs)}: {first.decoder} on {first.dataset} ({first.scaling}), "
            f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}, "
            f"{len(splits.train)}/{len(splits.validation)}/{len(splits.test)} train/val/test, "
            f"{first.backend} on {device}, {first.precision}" + (f", seeds {layout}" if len(specs) > 1 else "")
        )
        return cls(specs, backend, device, layout, data, splits, location, entry.shape)

    @property
    def seeds(self) -> list[int]:
        return [spec.seed for spec in self.specs]

    def build(self) -> None:
        """The model, the evaluation programs and the training epoch, for the group's layout."""
        first = self.specs[0]
        self.model = build_model(first, self.image_shape, self.data, self.backend)
        self.batched = self.layout == "vmap" and len(self.specs) > 1  # evaluation too takes the seeds in one call
        cfg = first.eval
        self.evals = EvalFunctions(
            self.backend, self.model, first.train.compiler, cfg.iwae_k, cfg.k_chunk, cfg.lppl_samples, self.batched
        )
        self.group_epoch = make_group_epoch(self.backend, self.model, first, self.data, self.batched)

    def parts(self) -> list[list[RunSpec]]:
        """What trains together: all seeds at once (batched), or one seed after another."""
        return [self.specs] if self.batched else [[spec] for spec in self.specs]

    def train(self, part: list[RunSpec], log: Callable[[str], None], saved_at) -> list:
        """(trained parameters, training result) per seed of the part, checkpointed at `saved_at`."""
        _log_training(log, part[0], len(self.splits.train))
        return train_group(
            self.backend,
            self.model,
            part,
            self.splits,
            self.data,
            self.evals,
            self.group_epoch,
            log,
            len(self.specs) > 1,
            saved_at,
        )

    def evaluate(self, part: list[RunSpec], trained_part: list, log: Callable[[str], None]) -> list:
        """(metrics, timing) per seed of the part."""
        trained, trainings = [t for t, _ in trained_part], [r for _, r in trained_part]
        _log_evaluation(log, part[0], len(self.splits.test))
        test, train = self.splits.test.images, self.splits.train.images
        return evaluate_group(
            self.backend, self.model, trained, part, test, train, self.data, self.evals, trainings, self.batched
        )


def group_records(
    specs: list[RunSpec], log: Callable[[str], None] = lambda s: print(s, file=sys.stderr), layout: str = "auto"
) -> Iterator[dict[str, Any]]:
    """run_group's records, in spec order, each as soon as it is ready: in the sequential layout a
    seed is trained and evaluated before the next one starts, so a process killed part way through
    a group has lost only the seed it was on."""
    if not specs:
        return []
    reset_host_peak_memory()  # the peak recorded is this group's, not the worker process's
    t_wall = time.perf_counter()
    group = SeedGroup.open(specs, layout, log)
    environment = None
    with group.backend.device_scope(group.device):
        group.build()
        for part in group.parts():
            saved_at = checkpoint.path_for([spec.run_id() for spec in part])
            trained_part = group.train(part, log, saved_at)
            environment = environment or {
                **capture(group.backend, group.device),
                "data_source": {"source": group.location.source, "directory": str(group.location.directory or "")},
            }
            evaluated = group.evaluate(part, trained_part, log)
            for spec, (_, training), (metrics, eval_timing) in zip(part, trained_part, evaluated):
                record = _record(
                    spec,
                    metrics,
                    eval_timing,
                    training,
                    group.splits,
                    group.backend,
                    group.device,
                    group.seeds,
                    environment,
                    group.layout,
                )
                # from the group's start: the group's wall time for its last seed (for all, batched)
                record["timing"]["wall_s"] = time.perf_counter() - t_wall
                record["timing"]["peak_memory_mib"] = group.backend.peak_memory_mib(group.device)
                # where it trained: one machine, or one per stretch between checkpoints
                record["environment"] = {**record["environment"], "segments": training.segments}
                yield jsonable(record)
            # the caller has written the part's records (a generator resumes after its consumer)
            checkpoint.remove(saved_at)


def _record(
    spec: RunSpec,
    metrics: dict[str, Any],
    eval_timing: dict[str, float],
    training,
    splits,
    backend: Backend,
    device: str,
    group_seeds: list[int],
    environment: dict[str, Any],
    layout: str,
) -> dict[str, Any]:
    status = "ok" if training.nonfinite is None else "nonfinite"
    timing = {
        "train_s": training.train_s,
        "compile_s": training.compile_s,
        # this seed's examples per second; the group trained len(group_seeds) times as many
        "train_examples_per_s": training.steady_examples / training.steady_s if training.steady_s > 0 else None,
        **eval_timing,
    }
    return {
        "schema_version": SCHEMA_VERSION,
        "tfp_vae_version": __version__,
        "run_id": spec.run_id(),
        "spec": spec.to_dict(),
        "status": status,
        "metrics": metrics,
        "training": {
            "epochs_run": training.epochs_run,
            "best_epoch": training.best_epoch + 1 if training.best_epoch >= 0 else None,
            "stopped_early": training.stopped_early,
            "nonfinite": training.nonfinite,
            "curves": training.curves,
            "train_examples": len(splits.train),
            "validation_examples": len(splits.validation),
        },
        "execution": {
            "device": device_label(device),
            "backend": backend.name,
            "compiler": spec.train.compiler,
            "tf32": spec.tf32,
            "precision": spec.precision,
            # the seeds run in one group with this one, itself included, and how (seed_layout)
            "seed_group": list(group_seeds),
            "seed_layout": layout if len(group_seeds) > 1 else None,
            # runs sharing this machine while this one ran (set by the study runner)
            "concurrent_runs": int(os.environ.get("TFP_VAE_CONCURRENT_RUNS", "1")),
        },
        "timing": timing,
        "environment": environment,
    }


def device_label(device: str) -> str:
    """One label per device whatever the backend calls it: "/CPU:0" (TensorFlow) and "cpu:0" (JAX) -> "cpu:0"."""
    return device.strip("/").lower()
