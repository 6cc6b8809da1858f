"""Bad input gives one clear error naming the value and what is allowed, and exits non-zero."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tfp_vae.cli import main
from tfp_vae.config import spec_from_dict, spec_from_toml
from tfp_vae.errors import ConfigError

CASES = [
    (["--decoder", "gaussian"], ["'gaussian'", "known decoders", "learned", "discretized_logistic"]),
    (["--decoder", "floor", "--param", "xi=0"], ["xi = 0", "(0, inf)"]),
    (["--decoder", "floor", "--param", "xi=-0.5"], ["xi = -0.5", "(0, inf)"]),
    (["--decoder", "student_t", "--param", "nu=2"], ["nu = 2", "(2, inf)"]),
    (["--decoder", "student_t", "--param", "nu=2.5", "--param", "learn_nu=true"], ["nu = 2.5", ">= 3"]),
    (["--decoder", "beta_nll", "--param", "beta=1.5"], ["beta = 1.5", "[0, 1]"]),
    (["--decoder", "beta_nll", "--param", "beta=-0.1"], ["beta = -0.1", "[0, 1]"]),
    (["--decoder", "fixed", "--param", "xi=0.1"], ["unknown parameter", "xi", "sigma0"]),
    (["--iwae-k", "0"], ["iwae_k = 0", "K >= 1"]),
    (["--dataset", "imagenet"], ["'imagenet'", "digits"]),
    (["--scaling", "logit"], ["scaling = 'logit'", "raw, dequantized"]),
    (["--device", "tpu"], ["device = 'tpu'", "cpu, gpu, auto"]),
    (["--device", "gpu"], ["no GPU"]),
]


@pytest.mark.parametrize("argv,needles", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_cli_rejects_bad_value_with_a_message(argv, needles, capsys, tmp_path):
    assert main(["train", *argv, "--out", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tfp-vae: error:")
    for needle in needles:
        assert needle in err
    assert not (tmp_path / "r.json").exists()


def test_conv_network_on_a_shape_it_cannot_take():
    with pytest.raises(ConfigError, match=r"8x8 cannot pass 4 stride-2 conv layers.*divisible by 16"):
        spec_from_dict({"network": {"kind": "conv", "conv_channels": [4, 4, 4, 4]}})


def test_toml_spec_errors_name_the_file_and_key(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('decoder = "learned"\n[train]\nepochs = "ten"\n')
    with pytest.raises(ConfigError, match=r"bad\.toml \[train\]: epochs = 'ten' has the wrong type"):
        spec_from_toml(path)
    path.write_text('decoder = "learned"\n[train]\nepoch = 3\n')
    with pytest.raises(ConfigError, match=r"unknown key\(s\) epoch; allowed: epochs"):
        spec_from_toml(path)


def test_the_installed_command_exits_non_zero():
    proc = subprocess.run(
        [sys.executable, "-m", "tfp_vae.cli", "train", "--decoder", "beta_nll", "--param", "beta=2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert "beta = 2" in proc.stderr and "Traceback" not in proc.stderr
