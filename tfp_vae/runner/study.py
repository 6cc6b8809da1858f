"""A study is a TOML grid: data sets x scalings x decoders (with per-decoder
hyperparameter sweeps) x seeds x devices x backends, plus shared network/train/eval settings.
A decoder's table may also sweep `learning_rate` (TRAIN_SWEEP_KEYS), over [train]'s.

Loading validates the whole file before anything runs; every error names the
file, the key and what is allowed.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from tfp_vae.config import RunSpec, read_toml, spec_from_dict
from tfp_vae.errors import ConfigError

STUDY_KEYS = ("name", "datasets", "scalings", "decoders", "seeds", "devices", "backends", "network", "train", "eval",
              "tf32", "compilers", "checkpoint", "order")
#: The order runs are taken in: "grid" (the seeds of a configuration together, in seed groups) or
#: "seed-major" (every configuration's seed 0 first, then every seed 1, ..., one seed a group), so
#: that a study stopped part way covers every cell.
ORDERS = ("grid", "seed-major")
#: Keys of a decoder's table that set [train] for that decoder, not a decoder parameter.
TRAIN_SWEEP_KEYS = ("learning_rate",)
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class Study:
    name: str
    path: Path
    specs: tuple[RunSpec, ...]
    order: str = "grid"


def _list(data: Mapping[str, Any], key: str, where: str, default: list[Any] | None = None) -> list[Any]:
    value = data.get(key, default)
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: {key} = {value!r} is not allowed; expected a non-empty list")
    return value


def _sweep(params: Any, decoder: str, where: str, train: bool = False) -> list[dict[str, Any]]:
    """{'xi': [0.01, 0.1], 'link': 'exp'} -> one dict per combination (scalars are single values):
    of the decoder's own parameters, or with `train` of its TRAIN_SWEEP_KEYS."""
    if not isinstance(params, Mapping):
        raise ConfigError(f"{where}: decoders.{decoder} must be a table of parameter values, got {params!r}")
    names = sorted(k for k in params if (k in TRAIN_SWEEP_KEYS) == train)
    values = [v if isinstance(v, list) else [v] for v in (params[n] for n in names)]
    if any(not v for v in values):
        raise ConfigError(f"{where}: decoders.{decoder}: an empty list sweeps nothing")
    return [dict(zip(names, combo)) for combo in itertools.product(*values)]


def _compilers(table: Any, where: str) -> dict[str, str]:
    """[compilers]: train.compiler per backend ({"tensorflow": "graph"}), over [train]'s for that backend.
    Each value is checked with its spec (COMPILERS)."""
    from tfp_vae.backends import BACKENDS

    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: compilers must be a table of backend = compiler, e.g. tensorflow = \"graph\"")
    unknown = sorted(set(table) - set(BACKENDS))
    if unknown:
        raise ConfigError(f"{where}: compilers: unknown backend(s) {', '.join(unknown)}; known: {', '.join(BACKENDS)}")
    return dict(table)


def study_from_dict(data: Mapping[str, Any], path: Path) -> Study:
    where = str(path)
    unknown = sorted(set(data) - set(STUDY_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(STUDY_KEYS)}")
    name = data.get("name", path.stem)
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ConfigError(f"{where}: name = {name!r} is not allowed; expected letters, digits, '_', '-' or '.'")
    decoders = data.get("decoders")
    if not isinstance(decoders, Mapping) or not decoders:
        raise ConfigError(f"{where}: decoders must be a non-empty table, e.g. [decoders.learned]")
    seeds = _list(data, "seeds", where)
    shared = {k: data[k] for k in ("network", "train", "eval", "tf32", "checkpoint") if k in data}
    order = data.get("order", "grid")
    if order not in ORDERS:
        raise ConfigError(f"{where}: order = {order!r} is not allowed; expected one of {', '.join(ORDERS)}")
    compilers = _compilers(data.get("compilers", {}), where)
    specs, seen = [], set()
    for dataset, scaling, decoder, device, backend in itertools.product(
        _list(data, "datasets", where), _list(data, "scalings", where, ["raw"]), list(decoders),
        _list(data, "devices", where, ["cpu"]), _list(data, "backends", where, ["tensorflow"]),
    ):
        base_train = {**shared.get("train", {}), **({"compiler": compilers[backend]} if backend in compilers else {})}
        for params, train_params in itertools.product(_sweep(decoders[decoder], decoder, where),
                                                      _sweep(decoders[decoder], decoder, where, train=True)):
            train = {**base_train, **train_params}
            for seed in seeds:
                spec = spec_from_dict({**shared, "train": train, "dataset": dataset, "scaling": scaling,
                                       "decoder": decoder,
                                       "decoder_params": params, "seed": seed, "device": device,
                                       "backend": backend}, where)
                if spec.run_id() not in seen:
                    seen.add(spec.run_id())
                    specs.append(spec)
    if order == "seed-major":
        specs.sort(key=lambda spec: seeds.index(spec.seed))  # stable: the grid order within each seed
    return Study(name, path, tuple(specs), order)


def load_study(path: str | Path) -> Study:
    """Read and validate a study TOML file."""
    path = Path(path)
    return study_from_dict(read_toml(path, "study"), path)


def describe(spec: RunSpec) -> str:
    params = ",".join(f"{k}={v}" for k, v in sorted(spec.decoder_params.items()))
    return (f"{spec.dataset}/{spec.scaling}/{spec.decoder}{'(' + params + ')' if params else ''}/seed{spec.seed}/"
            f"{spec.device}/{spec.backend}")

