"""`tfp-vae export --tensorboard DIR`: run records as TensorBoard event files, so that runs can be
looked at in TensorBoard (its scalars and HParams dashboards). The JSON records stay the source
of truth: an export is made from them and can be made again at any time.

Each run becomes one TensorBoard run (a folder under DIR): its spec as hyperparameters, each
per-epoch curve as a scalar series (step = epoch), and its final metrics as scalars at its last
epoch. Needs the `tensorboard` package (the [tensorboard] extra)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from tfp_vae.errors import TfpVaeError
from tfp_vae.report.load import load_records

#: Final metrics exported as scalars (numbers of a record's `metrics`).
METRICS = (
    "elbo",
    "iwae_ll",
    "lppl",
    "bpd",
    "rmse",
    "excess_density_frac",
    "frac_below_tau",
    "sigma_min",
    "active_units",
    "train_test_gap",
)


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        elif isinstance(value, (list, tuple)):
            out[f"{prefix}{key}"] = ",".join(map(str, value))
        elif value is not None:
            out[f"{prefix}{key}"] = value
    return out


def _scalar(tag: str, value: float, step: int):
    from tensorboard.compat.proto import event_pb2, summary_pb2

    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=float(value))])
    return event_pb2.Event(step=step, wall_time=float(step), summary=summary)


def _event(summary, step: int):
    """An event holding `summary` (the hparams plugin builds TensorFlow's proto class where TensorFlow
    is installed, and TensorBoard's otherwise: the bytes are the same)."""
    from tensorboard.compat.proto import event_pb2, summary_pb2

    return event_pb2.Event(
        step=step, wall_time=float(step), summary=summary_pb2.Summary.FromString(summary.SerializeToString())
    )


def export_tensorboard(runs: str | Path, out: str | Path) -> list[Path]:
    """One TensorBoard run folder under `out` per record under `runs`; returns the folders."""
    try:
        from tensorboard.plugins.hparams import summary as hparams
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
    except ImportError:
        raise TfpVaeError(
            "export --tensorboard needs the tensorboard package: pip install 'tfp-vae[tensorboard]'"
        ) from None
    out = Path(out)
    written = []
    for record in load_records(runs).records:
        if record.get("status") == "error":
            continue
        spec = record["spec"]
        folder = out / f"{spec['decoder']}-{spec['scaling']}-{spec['backend']}-seed{spec['seed']}-{record['run_id']}"
        writer = EventFileWriter(str(folder))
        params = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in _flat(spec).items()}
        writer.add_event(_event(hparams.session_start_pb(hparams=params), 0))
        for name, curve in ((record.get("training") or {}).get("curves") or {}).items():
            for epoch, value in enumerate(curve or []):
                if value is not None and math.isfinite(value):
                    writer.add_event(_scalar(f"curves/{name}", value, epoch + 1))
        last = int((record.get("training") or {}).get("epochs_run") or 0)
        for name in METRICS:
            value = (record.get("metrics") or {}).get(name)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                writer.add_event(_scalar(f"metrics/{name}", value, last))
        writer.add_event(_event(hparams.session_end_pb(1), last))
        writer.close()
        written.append(folder)
    return written
