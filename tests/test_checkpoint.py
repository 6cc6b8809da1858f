"""Runs that outlive their process: a run stopped after any epoch and resumed from its checkpoint
gives the record of a run never stopped (timings and environment aside); a checkpoint of another
spec or other code is refused, never mixed in."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import tiny_spec
from tfp_vae import checkpoint
from tfp_vae.run import VOLATILE_SECTIONS, run

EPOCHS = 6


class Killed(Exception):
    """Stands for the process dying at the end of an epoch."""


def _spec(backend: str, **train):
    # patience 2 with a monitor that improves by a margin: early stopping and the best weights are
    # part of what a checkpoint must carry
    return tiny_spec(
        backend=backend,
        decoder="learned",
        train={"epochs": EPOCHS, "patience": 2, "min_delta": 0.5, **train},
        checkpoint={"every_epochs": 1, "every_minutes": 0.0},
    )


def _kill_after(epoch: int):
    """A log that dies at the line of epoch `epoch` + 1, after `epoch` epochs were checkpointed."""

    def log(line: str) -> None:
        if f"epoch {epoch + 1}/" in line:
            raise Killed(line)

    return log


def _numbers(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in VOLATILE_SECTIONS}


@pytest.fixture(autouse=True)
def checkpoints(tmp_path, monkeypatch):
    monkeypatch.setenv(checkpoint.ENV, str(tmp_path / "checkpoints"))
    return tmp_path / "checkpoints"


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "tensorflow"])
def test_a_run_killed_after_any_epoch_resumes_to_the_same_record(backend, checkpoints):
    pytest.importorskip(backend)
    spec = _spec(backend)
    whole = run(spec, log=lambda s: None)
    assert not list(checkpoints.glob("*.npz")), "a finished run leaves no checkpoint"
    # random epochs to die at, drawn once per test session; the draw is printed for a rerun
    kill_at = sorted(np.random.default_rng().choice(np.arange(1, whole["training"]["epochs_run"]), 2, replace=False))
    print(f"killing after epochs {kill_at}")
    for epoch in kill_at:
        with pytest.raises(Killed):
            run(spec, log=_kill_after(epoch))
        assert checkpoint.path_for([spec.run_id()]).exists()
    resumed = run(spec, log=lambda s: None)
    assert _numbers(resumed) == _numbers(whole)
    segments = resumed["environment"]["segments"]
    assert [s["from_epoch"] for s in segments] == [0, kill_at[0], kill_at[1]]
    assert not checkpoint.path_for([spec.run_id()]).exists()


@pytest.mark.slow
def test_a_killed_process_resumes_to_the_same_record(tmp_path, checkpoints):
    """A real SIGKILL of `tfp-vae train` part way through, then the same command again."""
    pytest.importorskip("jax")
    spec = _spec("jax", epochs=40, patience=0)
    spec_file = tmp_path / "spec.toml"
    spec_file.write_text(_toml(spec.to_dict()))
    env = {**os.environ, checkpoint.ENV: str(checkpoints)}
    cmd = [sys.executable, "-m", "tfp_vae.cli", "train", "--spec", str(spec_file)]
    whole = subprocess.run(cmd + ["--out", str(tmp_path / "whole.json")], env=env, capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr
    proc = subprocess.Popen(
        cmd + ["--out", str(tmp_path / "resumed.json")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    ckpt = checkpoint.path_for([spec.run_id()])
    deadline = time.monotonic() + 300
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists(), "the process finished before it could be killed"
    again = subprocess.run(cmd + ["--out", str(tmp_path / "resumed.json")], env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "resumed from" in again.stderr
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("whole", "resumed"))
    assert _numbers(a) == _numbers(b)
    assert len(b["environment"]["segments"]) == 2


def _toml(spec: dict) -> str:
    """A spec dict as TOML (its values are strings, numbers, booleans and lists: JSON's spelling)."""
    top = [f"{k} = {json.dumps(v)}" for k, v in spec.items() if not isinstance(v, dict)]
    tables = [
        f"[{k}]\n" + "\n".join(f"{kk} = {json.dumps(vv)}" for kk, vv in v.items())
        for k, v in spec.items()
        if isinstance(v, dict)
    ]
    return "\n".join(top) + "\n" + "\n".join(tables) + "\n"


def test_a_checkpoint_of_another_spec_is_refused(checkpoints):
    pytest.importorskip("jax")
    spec, other = _spec("jax"), _spec("jax", learning_rate=0.002)
    with pytest.raises(Killed):
        run(spec, log=_kill_after(2))
    checkpoint.path_for([spec.run_id()]).rename(checkpoint.path_for([other.run_id()]))
    with pytest.raises(checkpoint.CheckpointError, match=f"run_ids.*{spec.run_id()}.*not.*{other.run_id()}"):
        run(other, log=lambda s: None)


def test_a_checkpoint_of_other_code_is_refused(checkpoints, monkeypatch):
    pytest.importorskip("jax")
    spec = _spec("jax")
    with pytest.raises(Killed):
        run(spec, log=_kill_after(2))
    monkeypatch.setattr(checkpoint, "code_version", lambda: "0123456789abcdef")
    with pytest.raises(checkpoint.CheckpointError, match="written by other code"):
        run(spec, log=lambda s: None)
    assert checkpoint.path_for([spec.run_id()]).exists(), "a refused checkpoint is kept"


def test_checkpoint_settings_do_not_change_a_runs_identity():
    a = tiny_spec(backend="jax")
    b = tiny_spec(backend="jax", checkpoint={"every_epochs": 3, "every_minutes": 1.0})
    assert a.run_id() == b.run_id() and a.group_key() == b.group_key()
    assert "checkpoint" not in a.to_dict() and b.to_dict()["checkpoint"]["every_epochs"] == 3


def test_the_checkpoint_directory_is_outside_git_by_default(monkeypatch, tmp_path):
    monkeypatch.delenv(checkpoint.ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert checkpoint.directory() == Path(tmp_path) / "tfp-vae" / "checkpoints"


def test_status_shows_a_run_in_progress_with_its_epoch(tmp_path, capsys):
    pytest.importorskip("jax")
    from tfp_vae.cli import main
    from tfp_vae.runner.study import load_study

    study_file = tmp_path / "tiny.toml"
    study_file.write_text(
        'name = "tiny"\ndatasets = ["digits"]\nseeds = [0]\nbackends = ["jax"]\n'
        "[decoders.learned]\n[network]\nhidden = [32]\nlatent = 5\n"
        "[train]\nepochs = 6\nbatch_size = 64\npatience = 0\n"
        "[eval]\niwae_k = 20\nk_chunk = 7\nlppl_samples = 5\n"
        "[checkpoint]\nevery_epochs = 1\nevery_minutes = 0.0\n"
    )
    spec = load_study(study_file).specs[0]
    with pytest.raises(Killed):
        run(spec, log=_kill_after(3))
    assert main(["status", str(study_file), "--results", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert f"[{spec.run_id()}]: epoch 3 of 6 checkpointed" in out and "0 done, 0 failed, 1 pending" in out
