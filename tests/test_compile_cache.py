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
