"""Compiled programs kept on disk between worker processes (tfp_vae/compile_cache.py)."""

from __future__ import annotations

import pytest

from test_studies import TINY, _records, write
from tfp_vae.runner.store import ResultStore
from tfp_vae.runner.study import load_study


@pytest.mark.slow
def test_compiled_programs_persist_between_studies_and_change_no_record(tmp_path):
    """A study run twice from scratch with one compile cache, under JAX and TensorFlow's XLA: the
    second run adds no entry to the cache (every program came from it), and the records of both
    are those of a run that compiles afresh."""
    from tfp_vae.compile_cache import resolve
    from tfp_vae.run import VOLATILE_SECTIONS
    from tfp_vae.runner.execute import run_study

    both = 'backends = ["jax", "tensorflow"]\n[compilers]\ntensorflow = "xla"\n[decoders.fixed]\n'
    text = TINY.replace("[decoders.fixed]\n", both).replace("[decoders.floor]\nxi = [0.05]\n", "")
    study = load_study(write(tmp_path, text.replace("seeds = [0, 1]", "seeds = [0]")))
    cache = resolve(str(tmp_path / "cache"))

    def entries():
        return {framework: sorted(p.name for p in (cache / framework).iterdir()) for framework in ("jax", "tensorflow")}

    records = {}
    for name, directory in (("afresh", None), ("first", cache), ("second", cache)):
        store = ResultStore(tmp_path / name, study.name)
        progress = run_study(study, store, workers=1, out=lambda s: None, compile_cache=directory)
        assert progress.done == 2 and progress.failed == 0
        records[name] = {r["run_id"]: r for r in _records(store.dir)}
        if name == "first":
            after_first = entries()
    assert all(after_first[framework] for framework in after_first), after_first
    assert entries() == after_first
    assert {r["environment"]["compile_cache"] for r in records["first"].values()} == {str(cache)}
    assert {r["environment"]["compile_cache"] for r in records["afresh"].values()} == {None}

    def stable(runs):
        return {run_id: {k: v for k, v in r.items() if k not in VOLATILE_SECTIONS} for run_id, r in runs.items()}

    assert stable(records["afresh"]) == stable(records["first"]) == stable(records["second"])


def _jit_once_in_a_process(env: dict[str, str]) -> None:
    import subprocess
    import sys

    code = "import jax, jax.numpy as jnp; jax.jit(lambda x: jnp.sin(x) * 3)(jnp.ones(5)).block_until_ready()"
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, timeout=300)


def test_compile_cache_none_overrides_a_cache_the_user_switched_on(tmp_path):
    """`--compile-cache none` compiles afresh even where the caller's environment names a JAX cache
    directory or a TensorFlow one: with the inherited settings alone a program lands in the user's
    directory (the check can fail), with the worker's settings for 'none' nothing does."""
    import os

    from tfp_vae.compile_cache import TF_FLAG, worker_environment

    users = {
        "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "inherited"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
        "TF_XLA_FLAGS": f"--tf_xla_auto_jit=0 {TF_FLAG}={tmp_path / 'tf'}",
    }
    inherited = {**os.environ, **users}
    _jit_once_in_a_process(inherited)
    assert list((tmp_path / "inherited").iterdir())
    for entry in (tmp_path / "inherited").iterdir():
        entry.unlink()
    off = worker_environment(None, inherited)
    assert off["TF_XLA_FLAGS"] == "--tf_xla_auto_jit=0"  # the user's other flags stay
    _jit_once_in_a_process({**inherited, **off})
    assert not list((tmp_path / "inherited").iterdir())
    on = worker_environment(tmp_path / "ours", inherited)
    assert on["TF_XLA_FLAGS"].split() == ["--tf_xla_auto_jit=0", f"{TF_FLAG}={tmp_path / 'ours' / 'tensorflow'}"]
