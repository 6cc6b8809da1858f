"""Tables read from measurement files rather than from run records: pytest-benchmark JSON
(`tox -e bench`, `tox -e peers`), scripts/study_walltime.py's timings and `tfp-vae reproduce`'s
summaries. Each file is read once; captions are built from what the files say."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from tfp_vae.records import SAME_ENVIRONMENT
from tfp_vae.report.tables import Table, fmt


def _read(files: list) -> list[tuple[Path, dict]]:
    """(path, parsed JSON) of each file, in path order."""
    return [(path, json.loads(path.read_text())) for path in sorted(Path(f) for f in files)]


def benchmark_machine(data: dict, fallback: str) -> str:
    """'CPU model, family F model M (N threads)' of a pytest-benchmark JSON written with
    benchmarks/conftest.py: one model name covers CPUs of different generations."""
    info = data.get("machine_info", {}).get("tfp_vae", {})
    return machine_label(
        info.get("cpu_model", fallback), info.get("cpu_count", "?"), data.get("machine_info", {}).get("cpu")
    )


def machine_label(cpu_model: str, threads: Any, cpu: dict | None) -> str:
    """'AMD EPYC, family 26 model 2 (2 threads)'; without family and model where a file predates them."""
    generation = f", family {cpu['family']} model {cpu['model']}" if (cpu or {}).get("family") is not None else ""
    return f"{cpu_model}{generation} ({threads} threads)"


def benchmark_table(files: list) -> Table:
    """pytest-benchmark JSON files (results/benchmarks/): median time, examples/s and the
    fraction of the layer-shape matmul ceiling, per benchmark and machine."""
    numbers = []
    for path, data in _read(files):
        machine = benchmark_machine(data, path.stem)
        for b in sorted(data.get("benchmarks", []), key=lambda b: b["name"]):
            extra = b.get("extra_info", {})
            numbers.append(
                {
                    "machine": machine,
                    "benchmark": b["name"],
                    "median_s": b["stats"]["median"],
                    "iqr_s": b["stats"]["iqr"],
                    "examples_per_s": extra.get("examples_per_s"),
                    "ceiling_fraction": extra.get("ceiling_fraction"),
                    "peak_mib": extra.get("peak_mib"),
                    "dequantization_overhead": extra.get("dequantization_overhead"),
                }
            )
    rows = [
        [
            row["benchmark"],
            f"{row['median_s'] * 1e3:.1f}",
            f"{row['iqr_s'] * 1e3:.1f}",
            fmt(row["examples_per_s"], 0),
            "n/a" if row["ceiling_fraction"] is None else f"{row['ceiling_fraction']:.0%}",
            "n/a" if row["dequantization_overhead"] is None else f"{row['dequantization_overhead']:+.1%}",
            fmt(row["peak_mib"], 0),
            row["machine"],
        ]
        for row in numbers
    ]
    header = [
        "benchmark",
        "median ms",
        "IQR ms",
        "examples/s",
        "of matmul ceiling",
        "dequantization overhead",
        "peak MiB",
        "machine",
    ]
    caption = (
        "Throughput benchmarks (pytest-benchmark): median and IQR per round, examples/s, and the fraction of "
        "the float32 matmul throughput at the same layer shapes measured in the same run."
    )
    return Table("benchmarks", caption, pd.DataFrame(numbers), header, rows)


def _peer_rows(machine: str, extras: list[dict]) -> list[dict]:
    """Each tfp-vae configuration of one file against each peer of the same file."""
    return [
        {
            "machine": machine,
            "peer": peer["peer"],
            "peer_examples_per_s": peer["examples_per_s"],
            "backend": ours["backend"],
            "compiler": ours.get("compiler", "xla"),  # files before it: XLA
            "precision": ours["precision"],
            "steady_examples_per_s": ours["steady_examples_per_s"],
            "whole_train_examples_per_s": ours["whole_train_examples_per_s"],
            "ratio_steady": ours["steady_examples_per_s"] / peer["examples_per_s"],
            "ratio_whole": ours["whole_train_examples_per_s"] / peer["examples_per_s"],
        }
        for peer in extras
        if peer.get("peer") not in (None, "tfp-vae")
        for ours in extras
        if ours.get("peer") == "tfp-vae"
    ]


def describe_peer_setup(setup: dict) -> str:
    """'1 epoch of fashion_mnist, MLP 784-512-512-16, batch 128, Adam 0.001, a ... decoder'."""
    network = "-".join(str(n) for n in setup["layers"])
    epochs = f"{setup['epochs']} epoch{'' if setup['epochs'] == 1 else 's'}"
    return (
        f"{epochs} of {setup['dataset']}, MLP {network}, batch {setup['batch_size']}, "
        f"{setup['optimizer']} {setup['learning_rate']:g}, a {setup['decoder']} decoder"
    )


def peers_table(files: list) -> Table:
    """`tox -e peers` JSON files (results/benchmarks/peers/): each tfp-vae configuration's training
    rate against the peer's, both measured in the same run on the same machine."""
    numbers, setups = [], set()
    for path, data in _read(files):
        extras = [b.get("extra_info", {}) for b in data.get("benchmarks", [])]
        numbers += _peer_rows(benchmark_machine(data, path.stem), extras)
        setups |= {describe_peer_setup(e["setup"]) if "setup" in e else "setup not recorded" for e in extras}
    rows = [
        [
            f"{row['backend']} ({row['compiler']}) / {row['precision']}",
            fmt(row["steady_examples_per_s"], 0),
            fmt(row["whole_train_examples_per_s"], 0),
            f"{row['peer']} {fmt(row['peer_examples_per_s'], 0)}",
            f"{row['ratio_steady']:.2f}x",
            f"{row['ratio_whole']:.2f}x",
            row["machine"],
        ]
        for row in numbers
    ]
    header = [
        "tfp-vae",
        "train ex/s (steady)",
        "train ex/s (whole epoch)",
        "peer ex/s (whole pipeline)",
        "ratio (steady)",
        "ratio (whole)",
        "machine",
    ]
    caption = (
        f"Peers (`tox -e peers`): {'; '.join(sorted(setups))}, measured in one run per machine. The peer's rate "
        "is its whole training pipeline (evaluation included); tfp-vae's steady rate leaves compilation out, "
        "its whole-epoch rate does not."
    )
    return Table("peers", caption, pd.DataFrame(numbers), header, rows)


def _walltime_timings(data: dict) -> list[dict]:
    """A study_walltime file's timings, in the order they ran; files written before the script took a
    baseline held seed groups against every seed alone, at one commit."""
    if "timings" in data:
        return data["timings"]
    commit = (data.get("git") or {}).get("commit")
    on, off = data["with_seed_batching"], data["without_seed_batching"]
    return [
        {**on, "label": f"seed groups of up to {on['seeds_per_group']}", "commit": commit},
        {**off, "label": "every seed alone", "commit": commit},
    ]


def study_walltime_table(files: list) -> Table:
    """scripts/study_walltime.py JSON files: the quick study from scratch in each variant the script
    ran (a baseline commit, this code with an empty and with a filled compile cache), one after the
    other in one run, each against the first of its file."""
    numbers = []
    for _, data in _read(files):
        machine = machine_label(data["cpu_model"], data["cores"], data.get("cpu"))
        timings = _walltime_timings(data)
        numbers += [
            {
                "machine": machine,
                "variant": t["label"],
                "commit": t["commit"],
                "runs": t["runs"],
                "workers": t["workers"],
                "wall_s": t["wall_s"],
                "ratio_to_first": t["wall_s"] / timings[0]["wall_s"],
            }
            for t in timings
        ]
    rows = [
        [
            row["machine"],
            row["variant"],
            str(row["commit"])[:7],
            str(row["runs"]),
            str(row["workers"]),
            f"{row['wall_s']:.0f}",
            f"{row['ratio_to_first']:.2f}x",
        ]
        for row in numbers
    ]
    header = ["machine", "variant", "commit", "runs", "workers", "wall s", "vs the first"]
    caption = (
        "The quick study from scratch (scripts/study_walltime.py), each variant in worker processes that stay "
        "up between seed groups, measured one after the other in one run; the last column is each wall time "
        "over the first of its run."
    )
    return Table("study_walltime", caption, pd.DataFrame(numbers), header, rows)


def _reproduction_caption(summaries: list[dict]) -> str:
    tolerances = sorted({(d.get("rtol"), d.get("atol")) for d in summaries})
    stated = " or ".join(f"relative {r:g}, absolute {a:g}" for r, a in tolerances if r is not None) or "as recorded"
    held = "; ".join(
        f"on {d['cpu_model']}, {sum(c['holds'] for c in d['conclusions'])} of {len(d['conclusions'])} table cells hold"
        for d in summaries
        if "conclusions" in d
    )
    return (
        "Reproduction: committed runs rerun from scratch (tfp-vae reproduce) and compared field by field, "
        f"timing and environment apart: bit-identical, within tolerance ({stated}), or "
        "different. With the same CPU model, family and instruction set, library versions, backend and worker "
        "threads a run must be bit-identical."
        + (
            f" Conclusions ({held}): a cell holds when each rerun seed keeps its collapse verdict, the mean "
            "test iwae_ll of its reruns lies within its committed seeds' range (widened by the tolerance), "
            "and the cell keeps its best or tied mark."
            if held
            else ""
        )
    )


def reproduction_table(files: list) -> Table:
    """Reruns of committed runs (`tfp-vae reproduce`, summary.json per machine and study): which
    reproduced and how, on which machine, and what differs from the committed environment."""
    summaries = [data for _, data in _read(files)]
    numbers = [
        {
            "machine": data["machine"],
            "cpu_model": data["cpu_model"],
            "run_id": o["run_id"],
            "run": o["label"],
            "verdict": o["verdict"],
            "expected_identical": o["expected_identical"],
            "unexpected": o["failed"],
            "differs": "; ".join(o["explanation"]) or SAME_ENVIRONMENT,
            "fields": ", ".join(f"{k}: {v}" for k, v in list((o["detail"].get("different") or {}).items())[:3]),
        }
        for data in summaries
        for o in data.get("outcomes", [])
    ]
    rows = [
        [
            row["run"],
            row["verdict"] + (" (unexpected)" if row["unexpected"] else ""),
            row["cpu_model"],
            row["differs"],
            row["fields"] or "-",
        ]
        for row in numbers
    ]
    header = ["run", "verdict", "rerun on", "what differs from the committed environment", "fields beyond tolerance"]
    return Table("reproduction", _reproduction_caption(summaries), pd.DataFrame(numbers), header, rows)
