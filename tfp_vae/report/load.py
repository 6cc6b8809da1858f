"""Read run records into a pandas DataFrame, one row per run.

A bad file (malformed JSON, half-written, unknown schema version) is reported by
name and skipped: one bad record never stops the report.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from tfp_vae import SCHEMA_VERSION, config
from tfp_vae.errors import TfpVaeError
from tfp_vae.records import collapse_onset_epoch, diverged


@dataclass
class Loaded:
    frame: pd.DataFrame
    records: list[dict[str, Any]]
    problems: list[str] = field(default_factory=list)


def decoder_label(decoder: str, params: dict[str, Any]) -> str:
    """`floor(xi=0.02)`: the decoder with its parameters that differ from the defaults."""
    from tfp_vae.decoders import DECODERS

    cls = DECODERS.get(decoder)
    defaults = {p.name: p.default for p in cls.params} if cls else {}
    shown = {k: v for k, v in sorted(params.items()) if defaults.get(k, object()) != v}
    return decoder + (
        f"({', '.join(f'{k}={v:g}' if isinstance(v, float) else f'{k}={v}' for k, v in shown.items())})"
        if shown
        else ""
    )


#: The metrics of a record (record["metrics"]) that become frame columns of the same name.
METRIC_COLUMNS = (
    "elbo",
    "iwae_ll",
    "lppl",
    "bpd",
    "rmse",
    "sigma_min",
    "sigma_p01",
    "sigma_median",
    "frac_below_tau",
    "tau",
    "excess_density_frac",
    "variance_collapse",
    "collapse_reason",
    "active_units",
    "train_test_gap",
    "iwae_k",
    "sigma_log10_hist",
    "global_scale",
    "global_scale_optimum",
    "global_scale_converged",
    "collapse_threshold",
    "density_c",
    "val_bound_final_change",
    "val_bound_window_change",
    "converged",
    "dims",
    "lppl_samples",
    "test_examples",
    "discrete_limit_nats",
)
#: The timings of a record (record["timing"]) that become frame columns of the same name.
TIMING_COLUMNS = (
    "train_examples_per_s",
    "eval_examples_per_s",
    "importance_samples_per_s",
    "compile_s",
    "peak_memory_mib",
    "wall_s",
)


def _row(rec: dict[str, Any]) -> dict[str, Any]:
    row = _fields(rec)
    # records made before `converged` excluded a divergence count one that early stopping ended
    if row["ending"] == "diverged" and row["converged"]:
        row["converged"] = False
    return row


def _fields(rec: dict[str, Any]) -> dict[str, Any]:
    spec, m = rec["spec"], rec.get("metrics") or {}
    t, env = rec.get("timing") or {}, rec.get("environment") or {}
    curves = (rec.get("training") or {}).get("curves") or {}
    return {
        "run_id": rec["run_id"],
        "status": rec["status"],
        "dataset": spec["dataset"],
        "scaling": spec["scaling"],
        "decoder": spec["decoder"],
        "label": decoder_label(spec["decoder"], spec.get("decoder_params") or {}),
        "seed": spec["seed"],
        **{k: (spec.get("train") or {}).get(k) for k in ("learning_rate", "epochs", "patience", "validation_fraction")},
        # the early-stopping rule; records made before it could be chosen watched the bound, with no margin
        "monitor": (spec.get("train") or {}).get("monitor", "val_bound"),
        "min_delta": (spec.get("train") or {}).get("min_delta", 0.0),
        # one label per device ("/CPU:0" of older TensorFlow records is "cpu:0")
        "device": str((rec.get("execution") or {}).get("device", spec["device"])).strip("/").lower(),
        # TF32 is a precision of its own: float32 matmuls on a GPU's tensor cores
        "precision": "tf32"
        if spec.get("tf32") and spec.get("precision", "float32") == "float32"
        else spec.get("precision", "float32"),
        "backend": spec["backend"],
        "error": rec.get("error"),
        "compiler": (rec.get("execution") or {}).get("compiler") or (spec.get("train") or {}).get("compiler"),
        "seeds_per_step": len((rec.get("execution") or {}).get("seed_group") or [spec["seed"]]),
        **{k: m.get(k) for k in METRIC_COLUMNS},
        "collapse_onset_epoch": m.get(
            "collapse_onset_epoch",
            collapse_onset_epoch(curves.get("val_excess_density_frac") or [], m.get("collapse_threshold") or 0.0),
        ),
        "network": json.dumps(spec.get("network"), sort_keys=True),
        **{column: setting(spec, path) for column, (path, _) in SETTINGS.items()},
        **{k: t.get(k) for k in TIMING_COLUMNS},
        "train_bound_curve": curves.get("train_bound"),
        "val_bound_curve": curves.get("val_bound"),
        "val_excess_curve": curves.get("val_excess_density_frac"),
        "commit": ((env.get("git") or {}).get("commit") or "unknown")[:12],
        "tensorflow": (env.get("versions") or {}).get("tensorflow"),
        "jax": (env.get("versions") or {}).get("jax"),
        "cpu_model": env.get("cpu_model"),
        "cpu_generation": cpu_generation(env.get("cpu")),
        "ending": ending(rec.get("training") or {}, (spec.get("train") or {}).get("epochs")),
        "excess_by_c": m.get("excess_density_frac_by_c"),
    }


def cpu_generation(cpu: dict | None) -> str:
    """'family 26 model 2' of a record's environment.cpu; 'unrecorded' for records made before
    records said it (one model name, such as "AMD EPYC", covers several generations)."""
    if not cpu or cpu.get("family") is None:
        return "unrecorded"
    return f"family {cpu['family']} model {cpu['model']}"


def ending(training: dict, epochs: int | None) -> str | None:
    """How training ended (docs/definitions.md, How a run ends): 'diverged' (a non-finite loss, or
    records.diverged),
    'stopped' (early stopping fired) or 'capped' (the epoch budget ran out first)."""
    if not training:
        return None
    if training.get("nonfinite") or diverged(
        (training.get("curves") or {}).get("val_bound"), training.get("best_epoch")
    ):
        return "diverged"
    if training.get("stopped_early"):
        return "stopped"
    return "capped" if epochs is not None and training.get("epochs_run", 0) >= epochs else "stopped"


def load_records(directory: str | Path, warn: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> Loaded:
    """Every `*.json` record under `directory`, sorted by file name (so output is stable)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise TfpVaeError(f"{directory}: not a directory of run records")
    records, problems = [], []
    for path in sorted(directory.rglob("*.json")):
        try:
            rec = json.loads(path.read_text())
            version = rec.get("schema_version") if isinstance(rec, dict) else None
            if version != SCHEMA_VERSION:
                raise ValueError(f"unknown schema version {version!r} (this tfp-vae reads {SCHEMA_VERSION})")
            for key in ("run_id", "spec", "status"):
                if key not in rec:
                    raise ValueError(f"missing key {key!r}")
        except (OSError, ValueError) as exc:  # JSONDecodeError is a ValueError
            problems.append(f"{path}: skipped: {exc}")
            warn(problems[-1])
            continue
        records.append(rec)
    if not records:
        raise TfpVaeError(f"{directory}: no readable run records" + (f" ({len(problems)} skipped)" if problems else ""))
    # seeds in seed order within each configuration, whatever the files are called: an
    # aggregate that resamples (the bootstrap) then does not depend on the order records are read in
    records.sort(key=lambda r: (json.dumps({**r["spec"], "seed": None}, sort_keys=True), r["spec"].get("seed", 0)))
    return Loaded(frame_of(records), records, problems)


#: Settings of a spec that a study may set for one decoder (a dotted key of a decoder's table), as
#: frame column: (path in the spec, name in a label). A record whose setting is not its default has
#: it in its label ('learned(split=True)'), so that no cell pools them. A learning rate that differs
#: between a decoder's records is named last ('learned(lr=0.0001)') and is not part of `config`,
#: the model a published row stands for.
SETTINGS = {
    "split_decoder": (("network", "split_decoder"), "split"),
    "activation": (("network", "activation"), "act"),
    "mc_samples": (("train", "mc_samples"), "samples"),
    "variance_warmup_epochs": (("train", "variance_warmup_epochs"), "warmup"),
}
#: Each setting's default, where the spec defines it (config.LATER_DEFAULTS), by frame column.
LATER_DEFAULTS = {column: config.LATER_DEFAULTS[section][key] for column, ((section, key), _) in SETTINGS.items()}


def setting(spec: dict, path: tuple[str, str]) -> Any:
    """A setting of a record's spec; a record made before the setting existed has its default."""
    section, key = path
    value = (spec.get(section) or {}).get(key)
    column = next(c for c, (p, _) in SETTINGS.items() if p == path)
    return LATER_DEFAULTS[column] if value is None else value


def frame_of(records: list[dict]) -> pd.DataFrame:
    """The tables' frame of records already read: one row per record, in the order given. A
    decoder's label names every setting its records differ in (SETTINGS), the learning rate last."""
    frame = pd.DataFrame([_row(r) for r in records])
    if frame.empty:
        return frame
    for column, (_, short) in SETTINGS.items():
        changed = frame[column] != LATER_DEFAULTS[column]
        frame.loc[changed, "label"] = [
            _with(lab, short, v) for lab, v in zip(frame.loc[changed, "label"], frame.loc[changed, column])
        ]
    frame["config"] = frame["label"]  # the model, whatever the learning rate
    swept = frame.groupby("decoder")["learning_rate"].transform("nunique") > 1
    frame.loc[swept, "label"] = [
        _with(lab, "lr", lr) for lab, lr in zip(frame.loc[swept, "label"], frame.loc[swept, "learning_rate"])
    ]
    return frame


def _with(label: str, name: str, value: Any) -> str:
    """`label` with name=value added to its parentheses."""
    text = f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}"
    return f"{label[:-1]}, {text})" if label.endswith(")") else f"{label}({text})"
