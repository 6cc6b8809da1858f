"""`tfp-vae reproduce STUDY`: rerun committed runs from scratch and say whether they match.

Runs are rerun into a separate store keyed by machine (never over the committed
records) and compared with their committed record field by field, timing and
environment apart: bit-identical, equal within the stated tolerance, or different
(which fields, by how much). A difference is explained by what differs between the
two environments: CPU model, family and instruction set (one model name covers CPUs of
different generations), library versions, backend, and the threads each worker had
(TensorFlow's kernels split a reduction by thread count, so its last bits follow it). Where
nothing differs, a record is expected to be bit-identical (determinism), and anything else
is a failure. The reruns use as many parallel workers as the records were made with, so that
each has the same threads, unless told otherwise.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from tfp_vae.environment import cpu_identity, cpu_model, machine_slug
from tfp_vae.records import SAME_ENVIRONMENT, VOLATILE_FIELDS, write_record
from tfp_vae.runner.store import ResultStore
from tfp_vae.runner.study import Study
from tfp_vae.runner.worker_pool import threads_per_worker

#: Floats equal within this relative (or, near zero, absolute) tolerance count as reproduced.
RTOL, ATOL = 1e-3, 1e-4
#: Sections that legitimately differ between two runs of one spec.
IGNORED = VOLATILE_FIELDS
ENV_KEYS = ("cpu_model", "framework_versions", "versions")


def sample_specs(study: Study, store: ResultStore, n: int | None) -> list:
    """Committed specs to rerun: with n None, one per (decoder with parameters, data set,
    scaling), the lowest seed, backends taken in turn, so every decoder and scaling is covered;
    with n, that list extended round-robin over further seeds and backends to n runs; 0 = all."""
    committed = [s for s in study.specs if store.status(s.run_id()) == "done"]
    if n == 0:
        return committed
    groups: dict[tuple, list] = {}
    for spec in sorted(committed, key=lambda s: (s.seed, s.backend)):
        key = (spec.dataset, spec.scaling, spec.decoder, json.dumps(spec.decoder_params, sort_keys=True))
        groups.setdefault(key, []).append(spec)
    picked = []
    for i, members in enumerate(groups.values()):
        backends = sorted({s.backend for s in members})
        want = backends[i % len(backends)]
        picked.append(next(s for s in members if s.backend == want))
    if n is None:
        return picked
    rest = [s for members in groups.values() for s in members if s not in picked]
    rest.sort(key=lambda s: (s.seed, s.backend))
    return (picked + rest)[:n]


def recorded_groups(study: Study, store: ResultStore, sample: list) -> list[list]:
    """The seed groups the sampled runs were trained in, from their records: a run is
    reproduced by retraining its whole group, since seed batching rounds differently from
    a group of another size."""
    by_key_seed = {(s.group_key(), s.seed): s for s in study.specs}
    groups, covered = [], set()
    for spec in sample:
        if spec.run_id() in covered:
            continue
        seeds = store.read(spec.run_id()).get("execution", {}).get("seed_group") or [spec.seed]
        group = [by_key_seed.get((spec.group_key(), seed)) for seed in seeds]
        if any(member is None for member in group):  # the study no longer has that seed: the run alone
            group = [spec]
        covered.update(member.run_id() for member in group)
        groups.append(group)
    return groups


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    if isinstance(value, list) and value and isinstance(value[0], (dict, list)):
        out = {}
        for i, v in enumerate(value):
            out.update(_flatten(v, f"{prefix}{i}."))
        return out
    return {prefix[:-1]: value}


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if (
        isinstance(a, (int, float))
        and isinstance(b, (int, float))
        and not isinstance(a, bool)
        and not isinstance(b, bool)
    ):
        return math.isclose(a, b, rel_tol=RTOL, abs_tol=ATOL)
    return a == b


def _size(a: Any, b: Any) -> str:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return f"{a:.6g} -> {b:.6g}"
    return f"{str(a)[:40]} -> {str(b)[:40]}"


def compare(committed: dict[str, Any], rerun: dict[str, Any]) -> dict[str, Any]:
    """Field-by-field comparison of two records of one spec, timing and environment apart."""
    a = {k: v for k, v in _flatten(committed).items() if not k.startswith(IGNORED)}
    b = {k: v for k, v in _flatten(rerun).items() if not k.startswith(IGNORED)}
    # a field only the rerun has was added by later code: nothing to compare it with
    keys = sorted(set(a))
    unequal = [k for k in keys if a.get(k) != b.get(k)]
    beyond = [k for k in unequal if not _close(a.get(k), b.get(k))]
    verdict = "bit-identical" if not unequal else ("within tolerance" if not beyond else "different")
    return {
        "verdict": verdict,
        "fields_compared": len(keys),
        "fields_unequal": len(unequal),
        "different": {k: _size(a.get(k), b.get(k)) for k in beyond[:20]},
        "different_count": len(beyond),
    }


def worker_threads(record: dict[str, Any]) -> int | None:
    """The threads the record's worker process had: the machine's cores over the runs sharing it."""
    cores, sharing = (
        (record.get("environment") or {}).get("cpu_count"),
        (record.get("execution") or {}).get("concurrent_runs"),
    )
    return threads_per_worker(cores, sharing) if cores and sharing else None


def recorded_workers(records: list[dict[str, Any]]) -> int:
    """How many runs shared the machine when most of these records were made (1 if none says)."""
    counts = [r.get("execution", {}).get("concurrent_runs") or 1 for r in records]
    return max(set(counts), key=counts.count) if counts else 1


def _cpu_identity_differences(a: dict[str, Any] | None, b: dict[str, Any] | None) -> list[str]:
    """Family, model and instruction set of two CPUs of one model name; a record made before
    records said them cannot be expected to match bit for bit (one name covers both AVX2 and
    AVX-512 CPUs, whose vectorised reductions sum in different orders)."""
    if not a or not b:
        have = b or a or {}
        return [f"CPU family/model not recorded (this machine: family {have.get('family')}, model {have.get('model')})"]
    out = []
    if (a.get("family"), a.get("model")) != (b.get("family"), b.get("model")):
        out.append(f"CPU family/model {a.get('family')}/{a.get('model')} -> {b.get('family')}/{b.get('model')}")
    isa_a, isa_b = set(a.get("isa", [])), set(b.get("isa", []))
    gained, lost = sorted(isa_b - isa_a), sorted(isa_a - isa_b)
    if gained or lost:
        out.append("instruction set " + " ".join([f"+{f}" for f in gained] + [f"-{f}" for f in lost]))
    return out


def environment_differences(committed: dict[str, Any], rerun: dict[str, Any]) -> list[str]:
    """What differs between the environments of two records: CPU model, family and instruction set,
    library versions, backend, worker threads."""
    ea, eb = committed.get("environment") or {}, rerun.get("environment") or {}
    out = []
    if ea.get("cpu_model") != eb.get("cpu_model"):
        out.append(f"CPU {ea.get('cpu_model')} -> {eb.get('cpu_model')}")
    out += _cpu_identity_differences(ea.get("cpu"), eb.get("cpu"))
    for section in ("framework_versions", "versions"):
        va, vb = ea.get(section) or {}, eb.get(section) or {}
        for name in sorted(set(va) | set(vb)):
            if name != "tfp-vae" and va.get(name) != vb.get(name):
                out.append(f"{name} {va.get(name)} -> {vb.get(name)}")
    if (committed.get("execution") or {}).get("backend") != (rerun.get("execution") or {}).get("backend"):
        out.append("backend")
    if worker_threads(committed) != worker_threads(rerun):
        out.append(f"worker threads {worker_threads(committed)} -> {worker_threads(rerun)}")
    if (ea.get("git") or {}).get("commit") != (eb.get("git") or {}).get("commit"):
        out.append(
            f"code {str((ea.get('git') or {}).get('commit'))[:10]} -> {str((eb.get('git') or {}).get('commit'))[:10]}"
        )
    return out


@dataclass
class Reproduction:
    """What `reproduce` found: one Outcome per rerun, and the conclusions verdict per table cell."""

    outcomes: list["Outcome"]
    conclusions: list[dict[str, Any]]


@dataclass
class Outcome:
    run_id: str
    label: str
    verdict: str
    expected_identical: bool
    explanation: list[str]
    detail: dict[str, Any]

    @property
    def failed(self) -> bool:
        """A run that should be bit-identical (same CPU and instruction set, versions, backend, threads) and is not."""
        return self.expected_identical and self.verdict != "bit-identical"


def reproduce(
    study: Study,
    committed_root: str | Path,
    out_root: str | Path,
    n: int | None,
    run_groups: Callable[[Study, ResultStore, list, int], Any],
    log: Callable[[str], None] = print,
    workers: int | None = None,
) -> Reproduction:
    """Rerun the sample of `study` into out_root/<machine>/<study>/ and compare, run by run and
    table cell by table cell (report.conclusions); writes summary.json. `run_groups(sample, store,
    groups, workers)` runs them, `workers` at a time (default: as many as when they were recorded)."""
    from tfp_vae.report.conclusions import conclusions
    from tfp_vae.runner.study import describe

    committed = ResultStore(committed_root, study.name)
    groups = recorded_groups(study, committed, sample_specs(study, committed, n))
    specs = [spec for group in groups for spec in group]
    machine = machine_slug()
    fresh = ResultStore(Path(out_root) / machine, study.name)
    workers = workers or recorded_workers([committed.read(spec.run_id()) or {} for spec in specs])
    n_committed = sum(committed.status(spec.run_id()) == "done" for spec in study.specs)
    log(
        f"reproducing {len(specs)} of the {n_committed} committed runs of {study.name} ({len(study.specs)} in its "
        f"spec; {len(groups)} seed group(s), as recorded) on {cpu_model()} into {fresh.dir}, {workers} at a time"
    )
    run_groups(Study(study.name, study.path, tuple(specs)), fresh, groups, workers)
    outcomes = []
    for spec in specs:
        old, new = committed.read(spec.run_id()), fresh.read(spec.run_id())
        if new is None or new.get("status") == "error":
            error = (new or {}).get("error", "no record")
            outcomes.append(Outcome(spec.run_id(), describe(spec), "failed to run", True, [], {"error": error}))
            continue
        diff = compare(old, new)
        env = environment_differences(old, new)
        code_only = all(e.startswith("code ") for e in env)
        outcomes.append(Outcome(spec.run_id(), describe(spec), diff["verdict"], code_only, env, diff))
    all_committed = [rec for spec in study.specs if (rec := committed.read(spec.run_id())) is not None]
    cells = conclusions(
        all_committed, [rec for spec in specs if (rec := fresh.read(spec.run_id())) is not None], RTOL, ATOL
    )
    summary = {
        "study": study.name,
        "machine": machine,
        "cpu_model": cpu_model(),
        "cpu": cpu_identity(),
        "rtol": RTOL,
        "atol": ATOL,
        "outcomes": [o.__dict__ | {"failed": o.failed} for o in outcomes],
        "conclusions": cells,
    }
    write_record(summary, fresh.dir / "summary.json")
    return Reproduction(outcomes, cells)


def verdict_lines(outcomes: list[Outcome]) -> list[str]:
    """The verdict table as text, one line per run, then the counts."""
    lines = []
    for o in outcomes:
        why = "; ".join(o.explanation) or SAME_ENVIRONMENT
        extra = (
            ""
            if o.verdict != "different"
            else " (" + ", ".join(f"{k}: {v}" for k, v in list(o.detail["different"].items())[:3]) + ")"
        )
        flag = "  <- should be bit-identical" if o.failed else ""
        lines.append(f"{o.verdict:<17} {o.label} [{why}]{extra}{flag}")
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.verdict] = counts.get(o.verdict, 0) + 1
    lines.append(
        "verdict: "
        + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
        + f"; {sum(o.failed for o in outcomes)} unexpected"
    )
    return lines
