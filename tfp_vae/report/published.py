"""Published numbers beside ours: a TOML file holding one published table (its models, their
mean +- sd over trials, the protocol they were obtained under), and the table that puts the
records of the corresponding decoders beside it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tfp_vae.config import read_toml
from tfp_vae.errors import ConfigError
from tfp_vae.report.stats import ALPHA, mean_std, welch_against_summary
from tfp_vae.report.tables import Table, _order, fmt

MODEL_KEYS = ("name", "decoder", "lppl", "rmse")
OPTIONAL_MODEL_KEYS = ("fixed_sigma", "correspondence")
PROTOCOL_KEYS = ("learning_rate", "max_epochs", "patience", "trials", "validation")


@dataclass(frozen=True)
class PublishedModel:
    name: str
    #: our decoders that stand for it, as the report labels them ("fixed(sigma0=0.0316228)"), each with
    #: how close it is; a study's records match one of them
    decoders: tuple[tuple[str, str], ...]
    lppl: tuple[float, float]  # mean, sd over the published trials
    rmse: tuple[float, float]
    fixed_sigma: float | None = None  # a Gaussian decoder's one fixed standard deviation, where it has one

    @property
    def rmse_half_unit(self) -> float:
        """Half a unit in the last digit the published rmse is given to (0.094: 0.0005)."""
        text = repr(self.rmse[0]).lower()
        mantissa, _, exponent = text.partition("e")
        decimals = len(mantissa.partition(".")[2].rstrip("0")) if "." in mantissa else 0
        return 0.5 * 10.0 ** (int(exponent or 0) - decimals)


@dataclass(frozen=True)
class Published:
    source: str
    dataset: str
    scaling: str
    protocol: dict[str, Any]
    models: tuple[PublishedModel, ...]


def _pair(value: Any, where: str, key: str) -> tuple[float, float]:
    if not (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, (int, float)) for v in value)
        and value[1] >= 0
    ):
        raise ConfigError(f"{where}: {key} = {value!r} is not allowed; expected [mean, sd] with sd >= 0")
    return float(value[0]), float(value[1])


def load_published(path: str | Path) -> Published:
    """Read and validate a published-table file; every error names the file and the key."""
    path = Path(path)
    data = read_toml(path, "published table")
    where = str(path)
    for key in ("source", "dataset", "scaling"):
        if not isinstance(data.get(key), str):
            raise ConfigError(f"{where}: {key} must be a string")
    protocol = data.get("protocol", {})
    missing = [k for k in PROTOCOL_KEYS if k not in protocol]
    if missing:
        raise ConfigError(f"{where}: [protocol] lacks {', '.join(missing)}; expected {', '.join(PROTOCOL_KEYS)}")
    if not isinstance(protocol["trials"], int) or protocol["trials"] < 2:
        raise ConfigError(
            f"{where}: [protocol] trials = {protocol['trials']!r} is not allowed; expected an integer >= 2"
        )
    models = []
    for i, item in enumerate(data.get("model", [])):
        at = f"{where} [[model]] #{i + 1}"
        unknown = sorted(set(item) - set(MODEL_KEYS) - set(OPTIONAL_MODEL_KEYS))
        missing = [k for k in MODEL_KEYS if k not in item]
        if isinstance(item.get("decoder"), str) and "correspondence" not in item:
            missing.append("correspondence")  # a table of decoders gives each one's instead
        if unknown or missing:
            raise ConfigError(
                f"{at}: keys {', '.join(unknown) or '-'} unknown, {', '.join(missing) or '-'} missing; "
                f"expected {', '.join(MODEL_KEYS)} (and optionally {', '.join(OPTIONAL_MODEL_KEYS)})"
            )
        sigma = item.get("fixed_sigma")
        if sigma is not None and not (isinstance(sigma, (int, float)) and sigma > 0):
            raise ConfigError(f"{at}: fixed_sigma = {sigma!r} is not allowed; expected a number > 0")
        decoder = item["decoder"]
        # one decoder with one correspondence, or a table of decoder label = correspondence (one per study)
        decoders = (
            ((str(decoder), str(item["correspondence"])),)
            if isinstance(decoder, str)
            else tuple((str(k), str(v)) for k, v in decoder.items())
        )
        models.append(
            PublishedModel(
                str(item["name"]),
                decoders,
                _pair(item["lppl"], at, "lppl"),
                _pair(item["rmse"], at, "rmse"),
                None if sigma is None else float(sigma),
            )
        )
    if not models:
        raise ConfigError(f"{where}: no [[model]] given")
    return Published(data["source"], data["dataset"], data["scaling"], dict(protocol), tuple(models))


def _values(xs) -> str:
    """The distinct values in force, '0.0001, 0.001'."""
    return ", ".join(f"{x:g}" for x in sorted(set(float(v) for v in xs if v is not None and v == v)))


def _endings(cells: pd.DataFrame) -> str:
    """'2 stopped by early stopping, 1 capped': how the rows' runs ended (report.load.ending)."""
    counts = cells["ending"].value_counts()
    words = {"stopped": "stopped by early stopping", "capped": "capped at their epoch budget", "diverged": "diverged"}
    return ", ".join(f"{int(counts[e])} {w}" for e, w in words.items() if e in counts) or "n/a"


def _names(xs) -> str:
    """The distinct strings in force, 'AMD EPYC (cpu)'."""
    return ", ".join(sorted({x for x in xs if isinstance(x, str)}))


def rmse_predicted_gap(model: PublishedModel, cell: pd.DataFrame, rmse_mean: float) -> tuple[float, float] | None:
    """Published minus our LPPL as the two rmse alone predict it, for a model with one fixed sigma
    that our records share: a Gaussian's log density at one posterior sample is
    -D/2 ln(2 pi sigma^2) - SSE / (2 sigma^2), SSE ~ D rmse^2, so the gap is
    D (rmse_ours^2 - rmse_published^2) / (2 sigma^2). A range: the published rmse is known only to
    the digits it is given to (rmse_half_unit). None where it does not apply."""
    if model.fixed_sigma is None:
        return None
    scales = cell[["sigma_min", "sigma_median"]].to_numpy(float)
    if not np.allclose(scales, model.fixed_sigma, rtol=1e-6):  # float32 records of the same sigma
        return None
    dims = float(cell["dims"].iloc[0])
    gap = lambda theirs: dims * (rmse_mean**2 - theirs**2) / (2 * model.fixed_sigma**2)
    half = model.rmse_half_unit
    return gap(model.rmse[0] + half), gap(max(model.rmse[0] - half, 0.0))


def _published_numbers(ok: pd.DataFrame, published: Published) -> list[dict]:
    """One row of numbers per (published model, label of a corresponding decoder) with an LPPL."""
    numbers = []
    for model in published.models:
        correspondence = dict(model.decoders)
        runs = ok[ok["config"].isin(correspondence)]
        for lab in _order(runs["label"]):
            cell = runs[runs["label"] == lab]
            lppl, rmse = cell["lppl"].dropna().to_numpy(float), cell["rmse"].dropna().to_numpy(float)
            if not len(lppl):
                continue
            (lm, ls), (rm, rs) = mean_std(lppl), mean_std(rmse)
            p = welch_against_summary(lppl, model.lppl, published.protocol["trials"])
            predicted = rmse_predicted_gap(model, cell, rm)
            numbers.append(
                {
                    "published": model.name,
                    "decoder": lab,
                    "correspondence": correspondence[cell["config"].iloc[0]],
                    "n": len(lppl),
                    "lppl_mean": lm,
                    "lppl_std": ls,
                    "published_lppl_mean": model.lppl[0],
                    "published_lppl_std": model.lppl[1],
                    "lppl_p": p,
                    "lppl_differs": None if p is None else p < ALPHA,
                    "rmse_mean": rm,
                    "rmse_std": rs,
                    "published_rmse_mean": model.rmse[0],
                    "published_rmse_std": model.rmse[1],
                    "collapsed": int(cell["variance_collapse"].astype(bool).sum()),
                    "rmse_predicted_gap_low": None if predicted is None else predicted[0],
                    "rmse_predicted_gap_high": None if predicted is None else predicted[1],
                    "observed_gap": model.lppl[0] - lm,
                }
            )
    return numbers


def _published_row(r: dict) -> list[str]:
    """The display strings of one row of _published_numbers."""
    p = r["lppl_p"]
    verdict = "n/a" if p is None else (f"differs (p = {p:.2g})" if p < ALPHA else f"consistent (p = {p:.2g})")
    low, high = r["rmse_predicted_gap_low"], r["rmse_predicted_gap_high"]
    return [
        r["published"],
        r["decoder"],
        r["correspondence"],
        f"{r['collapsed']}/{r['n']}",
        f"{fmt(r['lppl_mean'])} ± {fmt(r['lppl_std'])}",
        f"{fmt(r['published_lppl_mean'])} ± {fmt(r['published_lppl_std'])}",
        verdict,
        f"{fmt(r['rmse_mean'], 4)} ± {fmt(r['rmse_std'], 4)}",
        f"{r['published_rmse_mean']:.3g} ± {r['published_rmse_std']:.2g}",
        "n/a" if low is None else f"{low:+.0f} to {high:+.0f} (observed {r['observed_gap']:+.0f})",
    ]


PUBLISHED_HEADER = [
    "published model",
    "ours",
    "correspondence",
    "collapsed",
    "LPPL (ours, nats)",
    "LPPL (published)",
    "ours vs published",
    "rmse (ours)",
    "rmse (published)",
    "LPPL gap predicted by the rmse",
]


def _published_caption(ok: pd.DataFrame, published: Published) -> str:
    trials = published.protocol["trials"]
    proto = published.protocol
    cells = ok[ok["config"].isin([label for m in published.models for label, _ in m.decoders])]
    machines = ""
    if "cpu_model" in cells and cells["cpu_model"].notna().any():
        devices = cells["device"].str.split(":").str[0]
        machines = f"; trained and evaluated on {_names(cells['cpu_model'] + ' (' + devices + ')')}"
    caption = (
        f"Our records beside {published.source} ({published.dataset}, {published.scaling} pixels), mean ± sd: theirs "
        f"over {trials} trials, ours over the seeds of each row. Published protocol: Adam at learning rate "
        f"{proto['learning_rate']:g}, up to {proto['max_epochs']} epochs with early stopping (patience "
        f"{proto['patience']}) on {proto['validation']}. Ours: learning rate {_values(cells['learning_rate'])}"
        f" (named in the row when more than one), {_values(cells['epochs'])} epochs with early stopping "
        f"(patience {_values(cells['patience'])}, min_delta {_values(cells['min_delta'])}, watching "
        f"{_names(cells['monitor'])}) on {_values(100 * cells['validation_fraction'])} "
        f"% of the training images, the test set evaluated once at the best validation epoch; runs ended "
        f"{_endings(cells)}: LPPL with "
        f"{_values(cells['lppl_samples'])} posterior samples on {_values(cells['test_examples'])} test "
        f"images, rmse of the decoder mean at the posterior mean{machines}. 'differs': a Welch t-test from the two "
        "means and "
        f"sds rejects equal means at {ALPHA:g} (the protocol differences above are the first suspects). "
        f"'collapsed': our seeds flagged by the collapse rules, whose LPPL is an unbounded density. 'LPPL gap "
        f"predicted by the rmse', for a model with one fixed sigma: D (rmse_ours^2 - rmse_published^2) / "
        f"(2 sigma^2), the published minus our LPPL that the two reconstruction errors alone account for, beside "
        f"the observed gap, as a range: the published rmse is known only to the digits it is given to; where "
        f"the observed gap falls in it, the gap is how far the decoder mean was trained, not the likelihood."
    )
    return caption


def published_table(df: pd.DataFrame, published: Published) -> Table:
    """For each published model, every label of its corresponding decoder (one per learning rate) in
    the published data set and scaling: our LPPL and rmse (mean ± sd over seeds) beside theirs, and
    whether they differ by more than the two spreads explain (Welch t-test at ALPHA)."""
    ok = df[(df["status"] != "error") & (df["dataset"] == published.dataset) & (df["scaling"] == published.scaling)]
    numbers = _published_numbers(ok, published)
    rows = [_published_row(r) for r in numbers]
    return Table("published", _published_caption(ok, published), pd.DataFrame(numbers), PUBLISHED_HEADER, rows)
