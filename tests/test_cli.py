"""The command line as a new user meets it: fast commands that import no framework,
one-line errors with exit code 2 and nothing written, --version, --help, --json,
a progress line with a correct ETA, and start-up noise filtered without hiding warnings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tfp_vae.cli import main, make_parser

ROOT = Path(__file__).resolve().parent.parent
STUDY = ROOT / "benchmarks" / "studies" / "quick.toml"

LIGHT = [
    ["list", "decoders"],
    ["list", "datasets"],
    ["list", "backends", "--json"],
    ["data", "list"],
    ["status", str(STUDY)],
    ["status", str(STUDY), "--json"],
]


@pytest.mark.parametrize("argv", LIGHT, ids=[" ".join(a[:2]) for a in LIGHT])
def test_commands_that_read_or_list_import_no_framework(argv):
    code = (
        "import sys, json\nfrom tfp_vae.cli import main\nrc = main(sys.argv[1:])\n"
        "print(json.dumps([rc, [m for m in ('tensorflow', 'jax') if m in sys.modules]]), file=sys.stderr)"
    )
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120, cwd=ROOT)
    rc, frameworks = json.loads(proc.stderr.strip().splitlines()[-1])
    assert rc == 0 and frameworks == []


def test_report_imports_no_framework(tmp_path):
    """The report, the runner's store and reproduce import no framework and no training code."""
    from test_report import record  # a synthetic record

    runs = tmp_path / "runs"
    runs.mkdir()
    for seed in range(3):
        (runs / f"{seed}.json").write_text(json.dumps(record("learned", seed, 50.0 + seed, False)))
    code = (
        "import sys\nfrom tfp_vae.cli import main\nassert main(sys.argv[1:]) == 0\n"
        "assert 'tensorflow' not in sys.modules and 'jax' not in sys.modules\n"
        "import tfp_vae.runner.store, tfp_vae.runner.reproduce\n"
        "training = [m for m in ('tfp_vae.train', 'tfp_vae.evaluate', 'tfp_vae.run', 'tfp_vae.steps') "
        "if m in sys.modules]\nassert not training, training"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, "report", str(runs), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_version_and_help_list_every_command(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("tfp-vae 0.")
    help_text = make_parser().format_help()
    commands = make_parser()._subparsers._group_actions[0].choices
    assert set(commands) == {"train", "data", "run", "reproduce", "status", "report", "paper", "list", "export"}
    for name in commands:
        assert f"    {name}" in help_text


def test_json_outputs_parse(capsys):
    assert main(["list", "decoders", "--json"]) == 0
    decoders = json.loads(capsys.readouterr().out)
    from tfp_vae.decoders import DECODERS

    assert (
        [d["name"] for d in decoders] == list(DECODERS)
        and decoders[0]["name"] == "fixed"
        and "sigma0" in decoders[0]["params"]
    )
    assert main(["data", "list", "--json"]) == 0
    data = {d["name"]: d for d in json.loads(capsys.readouterr().out)}
    assert data["digits"]["present"] is True and data["digits"]["levels"] == 17
    assert main(["status", str(STUDY), "--json", "--results", "/nonexistent"]) == 0
    status = json.loads(capsys.readouterr().out)
    from tfp_vae.runner.study import load_study

    total = len(load_study(STUDY).specs)  # the quick study's grid
    assert status["pending"] == status["total"] == total and len(status["runs"]) == total


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tfp-vae: error:"), err
    return err[0]


def test_a_study_that_is_not_utf8_is_one_clear_error(tmp_path, capsys):
    bad = tmp_path / "s.toml"
    bad.write_bytes(bytes(range(256)) * 2)
    assert main(["run", str(bad), "--results", str(tmp_path / "runs")]) == 2
    line = _one_error_line(capsys)
    assert str(bad) in line and "not UTF-8" in line
    assert not (tmp_path / "runs").exists()


def test_an_unwritable_out_fails_before_training(tmp_path, capsys):
    started = time.perf_counter()
    assert main(["train", "--out", "/proc/tfp-vae-test/r.json"]) == 2
    assert "--out /proc/tfp-vae-test/r.json: cannot write there" in _one_error_line(capsys)
    assert time.perf_counter() - started < 5  # no training happened (imports aside)


def test_a_compile_cache_that_cannot_be_created_fails_before_any_run(tmp_path, capsys):
    assert main(["run", str(STUDY), "--results", str(tmp_path / "runs"), "--compile-cache", "/proc/tfp-vae-test"]) == 2
    line = _one_error_line(capsys)
    assert "--compile-cache /proc/tfp-vae-test: cannot create it" in line and "'none'" in line
    assert not list((tmp_path / "runs").rglob("*.json"))


def test_a_batch_larger_than_the_training_set_is_rejected_at_load(tmp_path, capsys):
    study = tmp_path / "big.toml"
    study.write_text('datasets = ["digits"]\nseeds = [0]\n[decoders.fixed]\n[train]\nbatch_size = 5000\n')
    assert main(["run", str(study), "--results", str(tmp_path / "runs")]) == 2
    line = _one_error_line(capsys)
    assert "batch_size = 5000" in line and "at most the 1294 training images of digits" in line
    assert not (tmp_path / "runs").exists()


def test_progress_eta_is_time_per_finished_run_times_runs_left():
    """Two workers: 4 runs finished in 20 s of wall time leave 6 runs, 30 s (not 15 s)."""
    from tfp_vae.runner.progress import Progress

    lines: list[str] = []
    progress = Progress(total=10, done=4, running=2, started=time.perf_counter() - 20.0, out=lines.append)
    progress.line("x")
    assert " eta 30s " in lines[0]


def test_startup_noise_is_filtered_and_real_warnings_are_kept(capfd):
    from tfp_vae.backends.quiet import startup_noise_filtered

    with startup_noise_filtered():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
        os.write(2, b"I0000 00:00:1795566008.437948   13714 port.cc:153] oneDNN custom operations are on.\n")
        os.write(2, b"W0000 00:00:1795566008.437948   13714 op.cc:1] a real warning\n")
    err = capfd.readouterr().err
    assert "a real warning" in err and "oneDNN" not in err and "absl" not in err


def test_an_infinite_learning_rate_is_refused_before_training(tmp_path, capsys):
    assert main(["train", "--lr", "inf", "--out", str(tmp_path / "r.json")]) == 2
    line = _one_error_line(capsys)
    assert "learning_rate = inf" in line and "a finite float > 0" in line
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("flag", ["--workers", "--seeds-per-group"])
def test_zero_workers_or_seeds_per_group_is_refused(tmp_path, capsys, flag):
    with pytest.raises(SystemExit) as exc:
        main(["run", str(STUDY), "--results", str(tmp_path / "runs"), flag, "0"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert f"{flag}: '0' is not allowed; expected an integer >= 1" in err[-1]
    assert not (tmp_path / "runs").exists()


def test_a_network_larger_than_the_machine_is_refused_at_load(tmp_path, capsys):
    """latent = 100000 with 100 importance samples of a batch of 128 a chunk: about 1.3e9 latent
    values alone; the estimate names the memory needed against this machine's."""
    from tfp_vae.config import machine_memory_bytes

    study = tmp_path / "huge.toml"
    study.write_text(
        'datasets = ["digits"]\nseeds = [0]\n[decoders.fixed]\n[network]\nhidden = [512]\nlatent = 100000\n'
    )
    total = machine_memory_bytes()
    if total is None or total > 2**40:
        pytest.skip("this machine's memory is unknown or over a TiB")
    assert main(["run", str(study), "--results", str(tmp_path / "runs")]) == 2
    line = _one_error_line(capsys)
    assert "latent = 100000" in line and f"this machine has {total / 2**30:.1f} GiB" in line
    assert not (tmp_path / "runs").exists()


def test_bare_command_prints_the_help(capsys):
    assert main([]) == 0
    assert "COMMAND" in capsys.readouterr().out


def test_python_dash_m_runs_the_command():
    proc = subprocess.run([sys.executable, "-m", "tfp_vae", "--version"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("tfp-vae ")


def test_json_output_survives_a_closed_pipe():
    proc = subprocess.run(
        f"{sys.executable} -m tfp_vae list decoders --json | head -n 1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.stdout.strip() == "[" and "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr


def test_every_train_option_says_what_it_does_and_its_default():
    parser = make_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    for action in train._actions:
        if action.dest in ("help",):
            continue
        assert action.help, f"--{action.dest} has no help"
    text = train.format_help()
    for flag in ("--dataset", "--seed", "--epochs", "--batch-size", "--lr", "--iwae-k", "--backend"):
        assert flag in text
    assert text.count("default") >= 10


def test_a_misspelt_name_gets_a_suggestion_and_every_bad_value_is_reported(capsys, tmp_path):
    assert (
        main(["train", "--decoder", "studentt", "--epochs", "0", "--lr", "-1", "--out", str(tmp_path / "r.json")]) == 2
    )
    err = capsys.readouterr().err
    assert "did you mean 'student_t'" in err and "3 bad values" in err
    assert "epochs = 0" in err and "learning_rate = -1.0" in err


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["reproduce", "s.toml", "--sample", "0"], "'0' is not allowed; expected an integer >= 1"),
        (["run", "s.toml", "--executor", "slurm"], "invalid choice: 'slurm'"),
    ],
)
def test_argparse_refuses_bad_choices(argv, needle, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and needle in capsys.readouterr().err


def test_the_default_backend_is_an_installed_one(monkeypatch):
    import importlib.util

    from tfp_vae.cli import default_backend

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorflow" else real(name, *a))
    assert default_backend() == "jax"  # a GPU machine: JAX without TensorFlow


def test_a_cpu_record_names_no_cuda():
    pytest.importorskip("tensorflow")
    from tfp_vae.backends import get_backend

    env = get_backend("tensorflow").environment("/CPU:0")
    assert env["cuda_version"] is None and env["cudnn_version"] is None


def test_a_study_bar_shows_the_epoch_each_running_run_has_reached():
    import io

    from tqdm import tqdm

    from tfp_vae.runner.progress import Progress

    buffer = io.StringIO()
    progress = Progress(total=3)
    progress.bar = tqdm(total=3, file=buffer)
    progress.epochs(["  seed 0: epoch 94/1000: train bound 1.0", None, "compiling"])
    progress.bar.refresh()
    assert "epoch 94/1000" in buffer.getvalue() and "compiling" not in buffer.getvalue()
