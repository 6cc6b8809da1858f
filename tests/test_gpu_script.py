"""The prepared GPU run (scripts/gpu/run.sh) runs here as its dry run, on JAX's CPU platform
with a tiny configuration, so that the script a GPU machine gets cannot rot: every step
passes and leaves what the GPU run would leave (records of the device named, benchmark JSON
of the compiled epoch, a reproduction verdict, a log)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed")
# the dry run stands for the GPU machine, which has JAX and no TensorFlow: it runs where that holds
# (tox -e jax-py312, with the GPU machine's JAX, in CI; tox -e jax), not a second time beside TensorFlow
@pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is not None,
    reason="TensorFlow is installed here; the GPU dry run runs under tox -e jax-py312 (or tox -e jax), without it",
)
def test_the_gpu_script_runs_end_to_end_on_the_cpu(tmp_path):
    # not as an xdist worker: pytest-benchmark turns itself off in any pytest that inherits PYTEST_XDIST_WORKER
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")},
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts/gpu/run.sh"), str(tmp_path), "--dry-run"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    log = (tmp_path / "log.txt").read_text() if (tmp_path / "log.txt").exists() else ""
    assert proc.returncode == 0, proc.stdout[-2000:] + log[-4000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert len(summary) == 5 and set(summary.values()) == {0}, summary
    records = [json.loads(p.read_text()) for p in (tmp_path / "runs").rglob("*.json")]
    assert len(records) == 4  # 2 decoders x 2 seeds of the tiny study
    assert {r["execution"]["backend"] for r in records} == {"jax"} and {r["spec"]["device"] for r in records} == {"cpu"}
    assert all(r["execution"]["seed_group"] == [0, 1] for r in records)  # trained in seed groups
    bench = json.loads((tmp_path / "benchmark.json").read_text())["benchmarks"]
    jax_epochs = [b for b in bench if b["extra_info"].get("backend") == "jax"]
    assert jax_epochs and all(b["extra_info"]["model_examples_per_s"] > 0 for b in jax_epochs)
    assert list((tmp_path / "reproductions").rglob("*.json")), "reproduce wrote nothing"
    assert list(tmp_path.glob("device_ratios_vs_*.md")), "no comparison with the committed CPU figures"
