"""Studies: validation, stable run ids, resume after SIGKILL, failure isolation, concurrency."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tfp_vae.errors import ConfigError
from tfp_vae.runner.store import ResultStore
from tfp_vae.runner.study import load_study

TINY = """
datasets = ["digits"]
seeds = [0, 1]
[decoders.fixed]
[decoders.floor]
xi = [0.05]
[network]
hidden = [16]
latent = 3
[train]
epochs = 1
batch_size = 64
[eval]
iwae_k = 5
lppl_samples = 3
"""


def write(tmp_path: Path, text: str, name: str = "tiny.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text,needle",
    [
        ("datasets = ['digits']\nseeds = [0]\ncolour = 1\n[decoders.fixed]\n", "unknown key(s) colour"),
        ("datasets = ['imagenet']\nseeds = [0]\n[decoders.fixed]\n", "unknown data set 'imagenet'"),
        ("datasets = ['digits']\nseeds = [0]\n[decoders.gauss]\n", "unknown decoder 'gauss'"),
        ("datasets = ['digits']\nseeds = [0]\n[decoders.floor]\nxi = [0.1, 0.0]\n", "xi = 0.0 is not allowed"),
        ("datasets = ['digits']\nseeds = ['zero']\n[decoders.fixed]\n", "seed = 'zero' has the wrong type"),
        ("datasets = ['digits']\nseeds = [0]\n[decoders.fixed]\n[train]\nepochs = 0\n", "epochs = 0 is not allowed"),
        ("datasets = ['digits']\nseeds = []\n[decoders.fixed]\n", "seeds = [] is not allowed"),
        ("datasets = ['digits'\n", "not valid TOML"),
        (
            "datasets = ['digits']\nseeds = [0]\n[compilers]\ntheano = 'xla'\n[decoders.fixed]\n",
            "unknown backend(s) theano",
        ),
        (
            "datasets = ['digits']\nseeds = [0]\nbackends = ['jax']\n[compilers]\njax = 'graph'\n[decoders.fixed]\n",
            "compiler = 'graph' is not allowed",
        ),
        (
            "datasets = ['digits']\nseeds = [0]\n[decoders.learned]\n\"train.learning_rate\" = [1e-3, 0]\n",
            "learning_rate = 0.0 is not allowed",
        ),
        (  # the form older study files used: one error naming the new one
            "datasets = ['digits']\nseeds = [0]\n[decoders.learned]\nlearning_rate = [1e-3, 1e-4]\n",
            "learning_rate = [0.001, 0.0001] is not allowed; a decoder's table sets learning_rate for that decoder as "
            '"train.learning_rate" = [0.001, 0.0001]',
        ),
    ],
)
def test_each_class_of_bad_study_names_file_and_key(tmp_path, text, needle):
    path = write(tmp_path, text, "bad.toml")
    with pytest.raises(ConfigError) as info:
        load_study(path)
    assert str(path) in str(info.value) and needle in str(info.value)


def test_expansion_and_run_ids_are_stable_under_key_reordering(tmp_path):
    a = load_study(write(tmp_path, TINY, "a.toml"))
    b = load_study(write(tmp_path, 'seeds = [0, 1]\ndatasets = ["digits"]\n' + TINY.split("\n", 3)[3], "b.toml"))
    assert len(a.specs) == 4  # 2 decoders x 2 seeds
    assert [s.run_id() for s in a.specs] == [s.run_id() for s in b.specs]
    assert len({s.run_id() for s in a.specs}) == 4


def test_compilers_set_train_compiler_per_backend(tmp_path):
    """[compilers] overrides [train]'s compiler for the backends it names, and only for those."""
    text = TINY.replace(
        "seeds = [0, 1]", 'seeds = [0, 1]\nbackends = ["tensorflow", "jax"]\n[compilers]\ntensorflow = "graph"'
    )
    specs = load_study(write(tmp_path, text)).specs
    assert {(s.backend, s.train.compiler) for s in specs} == {("tensorflow", "graph"), ("jax", "xla")}
    assert len(specs) == 8


def test_a_decoder_table_sweeps_its_learning_rate_over_train(tmp_path):
    """ "train.learning_rate" in a decoder's table sets [train] for that decoder only; the rest keep [train]'s."""
    text = TINY.replace("xi = [0.05]", 'xi = [0.05]\n"train.learning_rate" = [3e-3, 1e-4]')
    specs = load_study(write(tmp_path, text)).specs
    rates = {(s.decoder, s.train.learning_rate) for s in specs}
    assert rates == {("fixed", 1e-3), ("floor", 3e-3), ("floor", 1e-4)} and len(specs) == 6
    assert all(s.decoder_params == {"xi": 0.05} for s in specs if s.decoder == "floor")
    assert len({s.run_id() for s in specs}) == 6


def test_a_decoder_table_sets_any_dotted_key_and_tables_add_up(tmp_path):
    """[[decoders.x]] twice: each table's combinations; a dotted key or scaling sets the spec."""
    text = (
        'name = "dotted"\ndatasets = ["digits"]\nseeds = [0, 1]\norder = "seed-major"\n'
        '[decoders.fixed]\n[[decoders.learned]]\n[[decoders.learned]]\n"network.split_decoder" = true\n'
        '"network.activation" = ["relu", "elu"]\n[[decoders.learned]]\nscaling = "dequantized"\n'
        "[network]\nhidden = [8]\nlatent = 3\n"
    )
    specs = load_study(write(tmp_path, text)).specs
    cells = [(s.decoder, s.scaling, s.network.split_decoder, s.network.activation) for s in specs if s.seed == 0]
    assert cells == [
        ("fixed", "raw", False, "relu"),
        ("learned", "raw", False, "relu"),
        ("learned", "raw", True, "relu"),
        ("learned", "raw", True, "elu"),
        ("learned", "dequantized", False, "relu"),
    ]
    assert [s.seed for s in specs] == [0] * 5 + [1] * 5, "seed-major: every cell's seed 0 first"
    with pytest.raises(ConfigError, match="'network.depth'.*network, train, eval, checkpoint|unknown key"):
        load_study(write(tmp_path, text.replace('"network.activation"', '"network.depth"')))
    with pytest.raises(ConfigError, match="order = 'random'"):
        load_study(write(tmp_path, text.replace('"seed-major"', '"random"')))


def _run_cli(args, cwd, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "tfp_vae.cli", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kw,
    )


def _records(store_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(store_dir.glob("*.json"))]


@pytest.mark.slow
def test_a_study_killed_part_way_resumes_without_loss_or_duplicates(tmp_path):
    path = write(tmp_path, TINY)
    store_dir = tmp_path / "results" / "runs" / "tiny"
    proc = _run_cli(["run", str(path)], tmp_path, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and len(list(store_dir.glob("*.json"))) < 1:
        time.sleep(0.2)
    assert list(store_dir.glob("*.json")), "no record appeared before the deadline"
    os.killpg(proc.pid, signal.SIGKILL)  # the client and its workers, without warning
    proc.wait()
    kept = {r["run_id"]: r for r in _records(store_dir)}
    assert 1 <= len(kept) < 4
    second = _run_cli(["run", str(path)], tmp_path)
    out, _ = second.communicate(timeout=300)
    assert second.returncode == 0, out
    records = _records(store_dir)
    assert sorted(r["run_id"] for r in records) == sorted(s.run_id() for s in load_study(path).specs)
    for run_id, record in kept.items():  # finished records were not run again
        assert next(r for r in records if r["run_id"] == run_id)["timing"] == record["timing"]
    assert not list(store_dir.glob(".*"))  # no temporary files or locks left


@pytest.mark.slow
def test_a_failing_run_is_recorded_and_the_study_goes_on(tmp_path, monkeypatch):
    # mnist is absent here (empty data dir and cache): its run fails, digits runs go on
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("TFP_VAE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TFP_VAE_MIRROR", "http://127.0.0.1:9")  # refuses at once
    text = TINY.replace('datasets = ["digits"]', 'datasets = ["mnist", "digits"]').replace(
        "seeds = [0, 1]", "seeds = [0]"
    )
    path = write(tmp_path, text)
    proc = _run_cli(["run", str(path)], tmp_path)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1  # failures make the exit status non-zero, after finishing
    records = _records(tmp_path / "results" / "runs" / "tiny")
    assert len(records) == 4
    failed = [r for r in records if r["status"] == "error"]
    assert {r["spec"]["dataset"] for r in failed} == {"mnist"} and len(failed) == 2
    assert "DataError" in failed[0]["error"] and "Traceback" in failed[0]["traceback"]
    status = subprocess.run(
        [sys.executable, "-m", "tfp_vae.cli", "status", str(path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "2 done, 2 failed, 0 pending" in status.stdout and "not present" in status.stdout


@pytest.mark.slow
def test_two_concurrent_invocations_leave_one_record_per_spec(tmp_path):
    path = write(tmp_path, TINY)
    procs = [_run_cli(["run", str(path)], tmp_path) for _ in range(2)]
    outs = [p.communicate(timeout=400)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    records = _records(tmp_path / "results" / "runs" / "tiny")
    assert len(records) == 4 and len({r["run_id"] for r in records}) == 4
    ran = sum(out.count(": ok ") for out in outs)
    assert ran == 4  # each spec ran exactly once across both invocations


@pytest.mark.slow
def test_dask_executor_gives_the_records_of_the_local_pool(tmp_path):
    from tfp_vae.run import VOLATILE_SECTIONS
    from tfp_vae.runner.execute import run_study

    study = load_study(write(tmp_path, TINY))
    stores = {name: ResultStore(tmp_path / name, study.name) for name in ("local", "dask")}
    for name, store in stores.items():
        progress = run_study(study, store, workers=2, executor=name, out=lambda s: None)
        assert progress.done == 4 and progress.failed == 0

    def stable(store):
        return {r["run_id"]: {k: v for k, v in r.items() if k not in VOLATILE_SECTIONS} for r in _records(store.dir)}

    local, dask = stable(stores["local"]), stable(stores["dask"])
    assert len(local) == 4 and local == dask


def test_store_claims_are_exclusive_and_stale_locks_are_taken_over(tmp_path):
    store = ResultStore(tmp_path, "s")
    assert store.claim("abc") and not store.claim("abc")
    store.release("abc")
    lock = tmp_path / "s" / ".abc.lock"
    lock.write_text("999999999")  # a process that does not exist
    partial, other = tmp_path / "s" / ".abc.json.x1y2", tmp_path / "s" / ".abd.json.x1y2"
    partial.write_text('{"run_id": "ab')  # what a writer killed mid-record leaves
    other.write_text("{")
    assert store.claim("abc")
    assert not partial.exists() and other.exists()  # another run's temporary is that run's claimant's


def test_seed_groups_join_specs_that_differ_only_by_seed_up_to_the_cap(tmp_path):
    from tfp_vae.runner.execute import seed_groups

    study = load_study(write(tmp_path, TINY.replace("seeds = [0, 1]", "seeds = [4, 0, 2]")))
    groups = seed_groups(list(study.specs), cap=2)
    assert [[(s.decoder, s.seed) for s in g] for g in groups] == [
        [("fixed", 4), ("fixed", 0)],
        [("fixed", 2)],
        [("floor", 4), ("floor", 0)],
        [("floor", 2)],
    ]
    assert len(seed_groups(list(study.specs), cap=16)) == 2
    with pytest.raises(ConfigError, match="--seeds-per-group 0 is not allowed"):
        seed_groups(list(study.specs), cap=0)


@pytest.mark.slow
def test_a_study_runs_seed_groups_in_workers_that_stay_up(tmp_path):
    """3 seeds x 2 decoders with groups of at most 2 and one worker: four groups, one worker
    process for all of them; each record names the seeds it trained with."""
    from tfp_vae.runner import execute, worker_pool

    study = load_study(write(tmp_path, TINY.replace("seeds = [0, 1]", "seeds = [0, 1, 2]")))
    store = ResultStore(tmp_path / "runs", study.name)
    started = []
    original = worker_pool.WorkerProcess.__init__

    def counting(self, *args):
        started.append(1)
        original(self, *args)

    worker_pool.WorkerProcess.__init__ = counting
    try:
        progress = execute.run_study(study, store, workers=1, seeds_per_group=2, out=lambda s: None)
    finally:
        worker_pool.WorkerProcess.__init__ = original
    assert progress.done == 6 and progress.failed == 0 and len(started) == 1
    groups = sorted(
        (r["spec"]["decoder"], r["spec"]["seed"], tuple(r["execution"]["seed_group"])) for r in _records(store.dir)
    )
    assert groups == [
        ("fixed", 0, (0, 1)),
        ("fixed", 1, (0, 1)),
        ("fixed", 2, (2,)),
        ("floor", 0, (0, 1)),
        ("floor", 1, (0, 1)),
        ("floor", 2, (2,)),
    ]


@pytest.mark.slow
def test_a_group_cut_short_keeps_the_seeds_it_finished(tmp_path):
    """On a CPU a group's seeds run one after another and each record reaches the client when its
    seed is done: the worker killed the moment the first record arrives leaves that record whole,
    and only the seed it was still training becomes an error."""
    from tfp_vae.runner.worker_pool import WorkerProcess

    study = load_study(write(tmp_path, TINY.replace("epochs = 1", "epochs = 40")))
    group = [s for s in study.specs if s.decoder == "fixed"]
    dicts, ids = [s.to_dict() for s in group], [s.run_id() for s in group]
    worker, early = WorkerProcess(1, 1), []

    def first_then_kill(record):
        early.append(record)
        worker.proc.kill()

    records, reusable = worker.run_group(dicts, ids, timeout_s=300, on_record=first_then_kill, poll_s=0.05)
    worker.close()
    assert [r["run_id"] for r in early] == ids[:1] and early[0]["status"] == "ok"
    assert records[0] == early[0] and records[1]["status"] == "error" and not reusable
    assert early[0]["execution"]["seed_group"] == [0, 1]


@pytest.mark.slow
def test_a_worker_that_dies_costs_its_group_only(tmp_path):
    """A worker process killed before it answers: its group's runs become error records naming
    the exit; the next group gets a fresh worker and runs."""
    from tfp_vae.runner.worker_pool import WorkerProcess, close_idle_workers, run_group_in_worker

    study = load_study(write(tmp_path, TINY))
    group = [s for s in study.specs if s.decoder == "fixed"]
    dicts, ids = [s.to_dict() for s in group], [s.run_id() for s in group]
    worker = WorkerProcess(1, 1)
    worker.proc.kill()
    worker.proc.wait()
    records, reusable = worker.run_group(dicts, ids, timeout_s=60)
    worker.close()
    assert not reusable and [r["status"] for r in records] == ["error", "error"]
    assert "exit" in records[0]["error"] and records[0]["run_id"] == ids[0]
    try:
        fresh = run_group_in_worker(dicts, ids, threads=1)
    finally:
        close_idle_workers()
    assert [r["status"] for r in fresh] == ["ok", "ok"] and [r["run_id"] for r in fresh] == ids


@pytest.mark.slow
def test_a_long_group_reports_its_latest_epoch_while_it_runs(tmp_path, monkeypatch):
    """While no group finishes, the runner prints each running group's latest epoch line, once per
    new line; the group's records are the same as ever."""
    import re

    from tfp_vae.runner import execute

    monkeypatch.setattr(execute, "HEARTBEAT_S", 0.2)
    text = TINY.replace("epochs = 1", "epochs = 3").replace("[decoders.floor]\nxi = [0.05]\n", "")
    study = load_study(write(tmp_path, text))
    lines = []
    progress = execute.run_study(study, ResultStore(tmp_path / "runs", study.name), workers=1, out=lines.append)
    assert progress.done == 2 and progress.failed == 0
    beats = [line.split(" | ", 1)[1] for line in lines if "(group of 2)" in line]
    assert beats and all(
        re.search(r"/fixed/seed0/.* \(group of 2\): seed [01]: epoch [123]/3: train bound", b) for b in beats
    ), lines
    assert any("epoch 3/3" in b for b in beats)  # the last epoch's line, while the group evaluates
    assert len(set(beats)) == len(beats)  # a line is printed once
