"""The JAX backend trains and evaluates with no TensorFlow installed (the GPU machines this
project can use have JAX and no TensorFlow). Run by `tox -e jax-py312` (and `tox -e jax`), environments without
TensorFlow; where TensorFlow is installed, TFP's JAX substrate imports it opportunistically,
so the import check only means something there."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import subprocess
import sys

import pytest

from conftest import tiny_spec
from tfp_vae.run import run

HAS_TF = importlib.util.find_spec("tensorflow") is not None


@pytest.mark.skipif(HAS_TF, reason="TensorFlow is installed here; tox -e jax-py312 checks the backend without it")
def test_a_jax_run_imports_no_tensorflow(tmp_path):
    out = tmp_path / "r.json"
    code = f"""
import sys, json
from tfp_vae.cli import main
assert main(["train", "--backend", "jax", "--decoder", "shared", "--epochs", "1", "--iwae-k", "5",
             "--out", {str(out)!r}]) == 0
assert "tensorflow" not in sys.modules, sorted(m for m in sys.modules if m.startswith("tensorflow"))[:5]
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record["execution"]["backend"] == "jax" and record["environment"]["versions"]["tensorflow"] is None
    # the record names the JAX that ran: the one installed here, whichever release it is
    assert record["environment"]["framework_versions"]["jax"] == importlib.metadata.version("jax")


@pytest.mark.slow
@pytest.mark.parametrize("decoder", ["learned", "sigma_vae", "student_t", "discretized_logistic"])
def test_jax_runs_are_deterministic(decoder):
    """Same spec and seed: the same record, timings and environment aside."""
    spec = tiny_spec(decoder=decoder, backend="jax", scaling="dequantized")
    first, second = run(spec, log=lambda s: None), run(spec, log=lambda s: None)
    strip = lambda r: {k: v for k, v in r.items() if k not in ("timing", "environment")}
    assert strip(first) == strip(second)
    assert first["execution"]["backend"] == "jax"
