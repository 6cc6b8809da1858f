"""`tfp-vae export --tensorboard`: the records' curves, metrics and spec, read back with
TensorBoard's own event reader."""

from __future__ import annotations

import json

import pytest

from test_report import record
from tfp_vae.cli import main


def test_export_writes_what_tensorboard_reads_back(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    runs = tmp_path / "runs"
    runs.mkdir()
    rec = record("learned", 2, 55.0, False)
    rec["training"]["epochs_run"] = 3
    (runs / "a.json").write_text(json.dumps(rec))
    failed = {**record("floor", 0, 1.0, False), "run_id": "bad", "status": "error"}
    (runs / "b.json").write_text(json.dumps(failed))
    assert main(["export", str(runs), "--tensorboard", str(tmp_path / "tb")]) == 0
    assert "1 runs exported" in capsys.readouterr().out
    (folder,) = (tmp_path / "tb").iterdir()
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    curve = [(e.step, e.value) for e in acc.Scalars("curves/train_bound")]
    assert curve == [(1, 35.0), (2, 50.0), (3, 55.0)]  # the record's train_bound curve, epoch by epoch
    assert [(e.step, e.value) for e in acc.Scalars("metrics/iwae_ll")] == [(3, 55.0)]
    start = acc.SummaryMetadata("_hparams_/session_start_info").plugin_data.content
    hparams = plugin_data_pb2.HParamsPluginData.FromString(start).session_start_info.hparams
    assert hparams["decoder"].string_value == "learned" and hparams["seed"].number_value == 2
    assert hparams["network.hidden"].string_value == "32"
