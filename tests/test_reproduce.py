"""`tfp-vae reproduce`: reruns committed runs into a separate store and compares them field
by field; a run that should be bit-identical and is not makes it exit non-zero."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tfp_vae import SCHEMA_VERSION
from tfp_vae.cli import main
from tfp_vae.runner.reproduce import compare, sample_specs
from tfp_vae.runner.store import ResultStore
from tfp_vae.runner.study import load_study

STUDY = """
name = "tiny"
datasets = ["digits"]
scalings = ["raw", "dequantized"]
seeds = [0, 1]
backends = ["tensorflow", "jax"]
[decoders.fixed]
[decoders.floor]
xi = 0.05
[network]
hidden = [16]
latent = 3
[train]
epochs = 1
batch_size = 256
[eval]
iwae_k = 4
lppl_samples = 2
max_test_examples = 40
"""


@pytest.fixture
def study(tmp_path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(STUDY)
    return path


def test_default_sample_covers_every_decoder_and_scaling_and_both_backends(study, tmp_path):
    s = load_study(study)
    store = ResultStore(tmp_path / "committed", s.name)
    for spec in s.specs:  # pretend every run is committed
        store.write({"schema_version": SCHEMA_VERSION, "run_id": spec.run_id(), "spec": spec.to_dict(), "status": "ok"})
    picked = sample_specs(s, store, None)
    assert len(picked) == 4  # 2 decoders x 2 scalings, 16 committed runs
    assert {(p.decoder, p.scaling) for p in picked} == {
        (d, c) for d in ("fixed", "floor") for c in ("raw", "dequantized")
    }
    assert {p.backend for p in picked} == {"tensorflow", "jax"} and {p.seed for p in picked} == {0}
    assert len(sample_specs(s, store, 6)) == 6 and len(sample_specs(s, store, 0)) == 16


def test_compare_tells_identical_tolerance_and_different_apart():
    base = {"metrics": {"elbo": -50.0, "curve": [1.0, 2.0], "collapse": False}, "timing": {"wall_s": 3.0}}
    assert compare(base, {**base, "timing": {"wall_s": 9.0}})["verdict"] == "bit-identical"  # timing apart
    near = {**base, "metrics": {**base["metrics"], "elbo": -50.0 * (1 + 1e-6)}}
    assert compare(base, near)["verdict"] == "within tolerance"
    far = {**base, "metrics": {**base["metrics"], "curve": [1.0, 2.5]}}
    result = compare(base, far)
    assert result["verdict"] == "different" and list(result["different"]) == ["metrics.curve"]
    flipped = {**base, "metrics": {**base["metrics"], "collapse": True}}
    assert compare(base, flipped)["verdict"] == "different"
    added = {**base, "metrics": {**base["metrics"], "new_field": 1.0}}  # later code records more
    assert compare(base, added)["verdict"] == "bit-identical"
    lost = {**base, "metrics": {"elbo": -50.0, "curve": [1.0, 2.0]}}  # but never less
    assert compare(base, lost)["verdict"] == "different"


def _edit(record_path: Path, change) -> None:
    record = json.loads(record_path.read_text())
    change(record)
    record_path.write_text(json.dumps(record))


@pytest.mark.slow
def test_reproduce_reruns_compares_and_fails_on_an_unexplained_difference(study, tmp_path, capsys):
    committed, out = tmp_path / "committed", tmp_path / "repro"
    small = tmp_path / "small.toml"  # one decoder, one scaling, one seed, one backend: a 1-run study
    small.write_text(
        STUDY.replace('scalings = ["raw", "dequantized"]', 'scalings = ["raw"]')
        .replace("seeds = [0, 1]", "seeds = [0]")
        .replace('backends = ["tensorflow", "jax"]', 'backends = ["jax"]')
        .replace("[decoders.floor]\nxi = 0.05\n", "")
    )
    assert main(["run", str(small), "--results", str(committed)]) == 0
    args = ["reproduce", str(small), "--results", str(committed), "--out", str(out), "--workers", "1"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "bit-identical" in text and "0 unexpected" in text
    assert "conclusions: 1 of 1 table cells hold" in text
    summaries = list(out.glob("*/tiny/summary.json"))
    assert len(summaries) == 1 and json.loads(summaries[0].read_text())["outcomes"][0]["verdict"] == "bit-identical"
    assert len(list((committed / "tiny").glob("*.json"))) == 1  # committed records untouched
    from tfp_vae.report.build import build_report

    build_report(committed / "tiny", tmp_path / "report", warn=lambda s: None, reproductions=out)
    table = (tmp_path / "report" / "reproduction.md").read_text()
    assert (
        "bit-identical" in table
        and "same CPU model, family and instruction set, versions, backend and threads" in table
    )

    record_path = next((committed / "tiny").glob("*.json"))
    _edit(record_path, lambda r: r["metrics"].__setitem__("elbo", r["metrics"]["elbo"] + 1.0))
    assert main(args) == 1  # same CPU, versions and backend: must have been bit-identical
    text = capsys.readouterr().out
    assert "different" in text and "metrics.elbo" in text and "should be bit-identical" in text

    # What explains a difference, against the same rerun: this machine gives the same record each
    # time (checked above), so these reuse it instead of training it again
    from tfp_vae.runner.reproduce import reproduce, verdict_lines

    rerun = json.loads(next(p for p in summaries[0].parent.glob("*.json") if p.name != "summary.json").read_text())
    assert rerun["run_id"] == record_path.stem

    def explained(change) -> str:
        _edit(record_path, change)
        again = lambda sample, store, groups, workers: store.write(rerun)
        found = reproduce(load_study(small), committed, out, None, again, log=lambda s: None, workers=1)
        assert [o.verdict for o in found.outcomes] == ["different"]  # the elbo edited above
        assert not any(o.failed for o in found.outcomes)  # now explained: what `reproduce` exits 0 on
        return "\n".join(verdict_lines(found.outcomes))

    cores = json.loads(record_path.read_text())["environment"]["cpu_count"]
    # 4x the threads then: explained by the threads (TensorFlow's reductions split by thread count)
    assert f"worker threads {4 * cores} -> {cores}" in explained(lambda r: r["environment"].update(cpu_count=4 * cores))
    _edit(record_path, lambda r: r["environment"].__setitem__("cpu_count", cores))

    # one model name, another generation: the vector width changes the order of summation
    text = explained(lambda r: r["environment"]["cpu"].update(family=1, isa=["avx", "avx2", "sse4_2", "tile9"]))
    assert "CPU family/model 1/" in text and "instruction set " in text and "-tile9" in text
    # a record from before records said it
    assert "CPU family/model not recorded (this machine: family" in explained(lambda r: r["environment"].pop("cpu"))
    # now explained by the machine
    assert "CPU Some Other CPU ->" in explained(lambda r: r["environment"].__setitem__("cpu_model", "Some Other CPU"))


@pytest.mark.slow
def test_reruns_take_as_many_workers_as_the_records_were_made_with(study, tmp_path, capsys):
    """Without --workers, a rerun shares the machine as its record did, so each worker has the
    same threads (runs recorded 3 at a time are rerun 3 at a time)."""
    from tfp_vae.runner.reproduce import recorded_workers, reproduce

    assert recorded_workers([{"execution": {"concurrent_runs": 3}}] * 2 + [{"execution": {}}]) == 3
    committed = tmp_path / "committed"
    small = tmp_path / "small.toml"
    small.write_text(
        STUDY.replace('scalings = ["raw", "dequantized"]', 'scalings = ["raw"]')
        .replace("seeds = [0, 1]", "seeds = [0]")
        .replace('backends = ["tensorflow", "jax"]', 'backends = ["jax"]')
        .replace("[decoders.floor]\nxi = 0.05\n", "")
    )
    assert main(["run", str(small), "--results", str(committed)]) == 0
    record_path = next((committed / "tiny").glob("*.json"))
    _edit(record_path, lambda r: r["execution"].__setitem__("concurrent_runs", 3))
    asked = []
    from tfp_vae.runner.study import load_study

    reproduce(load_study(small), committed, tmp_path / "repro", 0, lambda *a: asked.append(a[-1]), log=lambda s: None)
    assert asked == [3]
    reproduce(
        load_study(small),
        committed,
        tmp_path / "repro",
        0,
        lambda *a: asked.append(a[-1]),
        log=lambda s: None,
        workers=1,
    )
    assert asked == [3, 1]
    said = []  # the whole study's spec has 16 runs, of which this one is committed
    reproduce(load_study(study), committed, tmp_path / "repro", 0, lambda *a: None, log=said.append)
    assert said[0].startswith("reproducing 1 of the 1 committed runs of tiny (16 in its spec;")


def test_conclusions_hold_or_fail_cell_by_cell_on_planted_reruns():
    """Five committed seeds of `learned` (3 collapsed) and `floor` on raw and dequantized digits.
    Reruns: one that repeats its record (holds), one whose collapse verdict flips, one outside
    the committed range, and a dequantized rerun so much better that `floor` takes the best
    entry from `learned` (both cells' ranks change)."""
    from test_report import FLOOR, LEARNED, record
    from tfp_vae.report.conclusions import conclusions

    committed = []
    for seed, (a, b) in enumerate(zip(LEARNED, FLOOR)):
        committed += [
            record("learned", seed, a, collapse=seed < 3),
            record("floor", seed, b, False, params={"xi": 0.02}),
            record("learned", seed, a - 100, False, scaling="dequantized"),
            record("floor", seed, b - 100, False, scaling="dequantized", params={"xi": 0.02}),
        ]
    by_id = {r["run_id"]: r for r in committed}

    def rerun(run_id, **metrics):
        rec = json.loads(json.dumps(by_id[run_id]))
        rec["metrics"].update(metrics)
        return rec

    def verdicts(*reruns):
        return {c["cell"].split(" (")[0]: c for c in conclusions(committed, list(reruns))}

    same = verdicts(rerun("learned-raw-1"))
    assert same["learned digits raw"]["holds"]
    flipped = verdicts(rerun("learned-raw-1", variance_collapse=False))
    assert not flipped["learned digits raw"]["holds"] and not flipped["learned digits raw"]["same_collapse"]
    outside = verdicts(rerun("floor-raw-2", iwae_ll=max(FLOOR) + 1.0))
    assert outside["floor(xi=0.02) digits raw"]["inside_committed_range"] is False
    # the lowest seed's rerun, reproduced within the tolerance but just below it: inside
    low = min(range(len(FLOOR)), key=FLOOR.__getitem__)
    nudged = [rerun(f"floor-raw-{low}", iwae_ll=min(FLOOR) - 0.5 * 1e-3 * abs(min(FLOOR)))]
    assert not conclusions(committed, nudged)[0]["inside_committed_range"]
    assert conclusions(committed, nudged, rtol=1e-3)[0]["inside_committed_range"]
    # every seed rerun as a fresh draw: one falls below the range, their mean does not
    spread = max(FLOOR) - min(FLOOR)
    fresh = [
        rerun(f"floor-raw-{s}", iwae_ll=v - 0.2 * spread if s == low else v + 0.1 * spread) for s, v in enumerate(FLOOR)
    ]
    cell = conclusions(committed, fresh)[0]
    assert min(r["metrics"]["iwae_ll"] for r in fresh) < min(FLOOR) and cell["inside_committed_range"]
    bpd = lambda ll: (-ll + 64 * np.log(17)) / (64 * np.log(2))
    better = [rerun(f"floor-dequantized-{s}", iwae_ll=b + 100, bpd=bpd(b + 100)) for s, b in enumerate(FLOOR)]
    ranked = verdicts(*better)
    assert ranked["floor(xi=0.02) digits dequantized"]["same_rank"] is False


def _bench(path: Path, cpu: str, cores: int, medians: dict[str, float], family: int = 25, model: int = 1) -> Path:
    path.write_text(
        json.dumps(
            {
                "machine_info": {
                    "tfp_vae": {"cpu_model": cpu, "cpu_count": cores},
                    "cpu": {"family": family, "model": model},
                },
                "benchmarks": [{"name": n, "stats": {"median": m}} for n, m in medians.items()],
            }
        )
    )
    return path


def test_benchmarks_are_compared_with_the_closest_machine_as_ratios(tmp_path):
    from tfp_vae.report.bench_compare import closest_reference, ratio_table

    a = _bench(tmp_path / "a.json", "CPU A", 2, {"step": 0.2, "eval": 1.0})
    b = _bench(tmp_path / "b.json", "CPU B", 2, {"step": 0.4, "eval": 2.0})
    new = _bench(tmp_path / "new.json", "CPU B", 16, {"step": 0.1, "eval": 1.0, "only_here": 3.0})
    assert closest_reference(json.loads(new.read_text()), [a, b]) == b  # the same CPU model wins
    t = ratio_table(new, b)
    assert dict(zip(t.numbers["benchmark"], t.numbers["time_ratio"])) == pytest.approx({"eval": 0.5, "step": 0.25})
    new2 = _bench(tmp_path / "new2.json", "CPU C", 2, {"step": 0.1})
    assert closest_reference(json.loads(new2.read_text()), [b, a]) == a  # else the same core count (first by name)
    b_zen5 = _bench(tmp_path / "b5.json", "CPU B", 2, {"step": 0.3}, family=26, model=2)
    new5 = _bench(tmp_path / "new5.json", "CPU B", 2, {"step": 0.3}, family=26, model=2)
    assert closest_reference(json.loads(new5.read_text()), [b, b_zen5]) == b_zen5  # one name, two generations


def test_a_gpu_run_is_compared_with_the_cpus_best_at_the_same_benchmark(tmp_path):
    """Each GPU benchmark over the CPU's highest model-examples/s at the same benchmark, backend
    and precision, whatever seeds either ran; TF32 counts as float32; a mode the CPU lacks is left out."""
    from tfp_vae.report.bench_compare import device_ratio_table

    def bench(path, rows):
        path.write_text(
            json.dumps(
                {
                    "machine_info": {"tfp_vae": {"cpu_model": path.stem, "cpu_count": 2}},
                    "benchmarks": [
                        {
                            "name": f"test_compiled_epoch[{s}-{m}-jax]",
                            "stats": {"median": 1.0},
                            "extra_info": {"backend": "jax", "precision": p, "model_examples_per_s": v},
                        }
                        for s, m, p, v in rows
                    ],
                }
            )
        )
        return path

    cpu = bench(
        tmp_path / "cpu.json",
        [(1, "float32", "float32", 100.0), (64, "float32", "float32", 150.0), (1, "bfloat16", "bfloat16", 90.0)],
    )
    gpu = bench(
        tmp_path / "gpu.json",
        [
            (1024, "float32", "float32", 30000.0),
            (1024, "tf32", "float32", 60000.0),
            (1024, "bfloat16", "bfloat16", 90000.0),
        ],
    )
    t = device_ratio_table(gpu, cpu)
    assert dict(zip(t.numbers["benchmark"], t.numbers["ratio"])) == pytest.approx(
        {
            "test_compiled_epoch[1024-float32-jax]": 200.0,
            "test_compiled_epoch[1024-tf32-jax]": 400.0,
            "test_compiled_epoch[1024-bfloat16-jax]": 1000.0,
        }
    )
