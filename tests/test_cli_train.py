"""`tfp-vae train` end to end on scikit-learn's digits, and `tfp-vae list`."""

from __future__ import annotations

import json

import pytest

from tfp_vae.cli import main
from tfp_vae.decoders import DECODERS


@pytest.mark.slow
def test_train_prints_a_summary_and_writes_the_record(tmp_path, capsys):
    out = tmp_path / "run.json"
    code = main(
        [
            "train",
            "--dataset",
            "digits",
            "--decoder",
            "continuous_bernoulli",
            "--seed",
            "3",
            "--epochs",
            "1",
            "--iwae-k",
            "10",
            "--scaling",
            "dequantized",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    record = json.loads(out.read_text())
    assert record["spec"]["seed"] == 3 and record["spec"]["decoder"] == "continuous_bernoulli"
    assert f"{record['metrics']['iwae_ll']:.4g}" in text
    assert "iwae_ll K=10" in text and str(out) in text


def test_list_decoders_names_every_entry_with_its_parameters(capsys):
    assert main(["list", "decoders"]) == 0
    text = capsys.readouterr().out
    for name, cls in DECODERS.items():
        assert name in text and cls.source in text
        for p in cls.params:
            assert f"{p.name} = {p.default!r}" in text
