"""This run's benchmark JSON against the committed JSON of the closest machine: ratios
(this machine / reference) of the median time of each benchmark both files hold, never
absolute claims. Closest: the same CPU model, family and model, else the same CPU model, else
the same core count, else any."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from tfp_vae.report.file_tables import benchmark_machine
from tfp_vae.report.tables import Table


def _info(data: dict) -> dict:
    return data.get("machine_info", {}).get("tfp_vae", {})


def closest_reference(new: dict, candidates: list[Path]) -> Path | None:
    """The committed benchmark file of the machine most like the one that wrote `new`."""
    loaded = [(p, json.loads(p.read_text())) for p in sorted(candidates)]
    for key in (_generation, lambda d: _info(d).get("cpu_model"), lambda d: _info(d).get("cpu_count")):
        same = [p for p, d in loaded if key(d) == key(new)]
        if same:
            return same[0]
    return loaded[0][0] if loaded else None


def _generation(data: dict) -> tuple:
    """CPU model name with family and model (pytest-benchmark's cpuinfo): one name covers CPUs
    of different generations."""
    cpu = data.get("machine_info", {}).get("cpu", {})
    return _info(data).get("cpu_model"), cpu.get("family"), cpu.get("model")


def ratio_table(new_path: Path, reference_path: Path) -> Table:
    """Median time of this run over the reference's, per benchmark both have (below 1: faster here)."""
    new, ref = json.loads(Path(new_path).read_text()), json.loads(Path(reference_path).read_text())
    medians = {b["name"]: b["stats"]["median"] for b in ref.get("benchmarks", [])}
    numbers, rows = [], []
    for b in sorted(new.get("benchmarks", []), key=lambda b: b["name"]):
        if b["name"] not in medians:
            continue
        ratio = b["stats"]["median"] / medians[b["name"]]
        numbers.append(
            {
                "benchmark": b["name"],
                "median_s": b["stats"]["median"],
                "reference_median_s": medians[b["name"]],
                "time_ratio": ratio,
            }
        )
        rows.append([b["name"], f"{b['stats']['median'] * 1e3:.1f}", f"{medians[b['name']] * 1e3:.1f}", f"{ratio:.2f}"])
    ref_machine = benchmark_machine(ref, Path(reference_path).stem)
    caption = (
        f"This machine ({_info(new).get('cpu_model', '?')}) against the committed benchmarks of {ref_machine}: "
        "median time per round, and their ratio (this / reference; below 1 is faster here)."
    )
    return Table(
        "benchmark_ratios",
        caption,
        pd.DataFrame(numbers),
        ["benchmark", "median ms here", "median ms reference", "ratio"],
        rows,
    )


def _epochs(data: dict) -> list[dict]:
    return [b for b in data.get("benchmarks", []) if "model_examples_per_s" in b.get("extra_info", {})]


def device_ratio_table(gpu_path: Path, cpu_path: Path) -> Table:
    """A GPU's benchmark JSON against a CPU's: for every seed-batched benchmark the GPU ran,
    its model-examples/s over the CPU's best at that benchmark, backend and precision (any
    number of seeds: the most the CPU reached), so 1024 seeds on a GPU meet the CPU's best."""
    gpu, cpu = json.loads(Path(gpu_path).read_text()), json.loads(Path(cpu_path).read_text())
    best: dict[tuple, float] = {}
    for b in _epochs(cpu):
        e = b["extra_info"]
        key = (b["name"].split("[")[0], e.get("backend"), e.get("precision"))
        best[key] = max(best.get(key, 0.0), e["model_examples_per_s"])
    numbers, rows = [], []
    for b in sorted(_epochs(gpu), key=lambda b: b["name"]):
        e = b["extra_info"]
        # TF32 runs float32 matmuls on tensor cores: it is measured against the CPU's float32
        key = (b["name"].split("[")[0], e.get("backend"), e.get("precision"))
        if key not in best:
            continue
        ratio = e["model_examples_per_s"] / best[key]
        numbers.append(
            {
                "benchmark": b["name"],
                "gpu_model_examples_per_s": e["model_examples_per_s"],
                "cpu_best_model_examples_per_s": best[key],
                "ratio": ratio,
            }
        )
        rows.append([b["name"], f"{e['model_examples_per_s']:.0f}", f"{best[key]:.0f}", f"{ratio:.1f}x"])
    caption = (
        f"{benchmark_machine(gpu, Path(gpu_path).stem)} against {benchmark_machine(cpu, Path(cpu_path).stem)}: "
        "model-examples/s of each seed-batched benchmark the GPU ran, over the most the CPU reached at the "
        "same benchmark, backend and precision (TF32 against float32), at any number of seeds."
    )
    return Table(
        "device_ratios",
        caption,
        pd.DataFrame(numbers),
        ["benchmark", "GPU model-examples/s", "CPU best model-examples/s", "GPU / CPU"],
        rows,
    )
