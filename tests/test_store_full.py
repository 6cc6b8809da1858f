"""A study whose results disk fills up ends with one line (how many records are saved, that a
rerun resumes), leaves the saved records intact and no claim behind, and resumes once there
is room. A real full disk: a tmpfs of a few records' size (needs root, as CI has)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tfp_vae.cli import main

STUDY = """name = "full"
datasets = ["digits"]
seeds = [0, 1, 2]
[decoders.fixed]
[decoders.learned]
[network]
hidden = [8]
latent = 2
[train]
epochs = 1
batch_size = 256
compiler = "graph"
[eval]
iwae_k = 2
lppl_samples = 1
max_test_examples = 20
"""


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=40k", "tmpfs", str(mount)], capture_output=True
        ).returncode
        != 0
    ):
        pytest.skip("mounting a tmpfs needs root")
    yield mount
    subprocess.run(["umount", str(mount)], capture_output=True)


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_a_rerun_resumes(tmp_path, small_disk, capsys):
    study = tmp_path / "full.toml"
    study.write_text(STUDY)
    results = small_disk / "runs"
    assert main(["run", str(study), "--results", str(results), "--seeds-per-group", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    line = err[-1]
    saved = sorted(p for p in (results / "full").iterdir() if p.suffix == ".json")
    assert line.startswith("tfp-vae: error: cannot write records to") and "No space left" in line
    assert f"{len(saved)} of 6 runs of full are saved there" in line and "run the same command again" in line
    assert 0 < len(saved) < 6
    assert all(json.loads(p.read_text())["status"] == "ok" for p in saved)  # intact, no partial file
    assert not [p for p in (results / "full").iterdir() if p.suffix != ".json"]  # no lock or temporary file
    subprocess.run(["mount", "-o", "remount,size=4m", str(small_disk)], check=True)
    assert main(["run", str(study), "--results", str(results), "--seeds-per-group", "1"]) == 0
    assert len([p for p in (results / "full").iterdir() if p.suffix == ".json"]) == 6
