"""A study is a TOML grid: data sets x scalings x decoders (with per-decoder
hyperparameter sweeps) x seeds x devices x backends, plus shared network/train/eval settings.
A decoder's table may also set or sweep the spec for that decoder: `learning_rate`, `scaling` or any
dotted key ("network.activation"), over the shared sections' values; an array of tables
([[decoders.learned]] twice) runs each table's combinations.

Loading validates the whole file before anything runs; every error names the
file, the key and what is allowed.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from tfp_vae.backends import DEFAULT_BACKEND
from tfp_vae.config import RunSpec, read_toml, spec_from_dict
from tfp_vae.errors import ConfigError

STUDY_KEYS = (
    "name",
    "datasets",
    "scalings",
    "decoders",
    "seeds",
    "devices",
    "backends",
    "network",
    "train",
    "eval",
    "tf32",
    "compilers",
    "checkpoint",
    "order",
)
#: The order runs are taken in: "grid" (the seeds of a configuration together, in seed groups) or
#: "seed-major" (every configuration's seed 0 first, then every seed 1, ..., one seed a group), so
#: that a study stopped part way covers every cell.
ORDERS = ("grid", "seed-major")
#: Keys of a decoder's table that set the spec for that decoder, not a decoder parameter: these, and
#: any dotted key of a section ("train.learning_rate", "network.split_decoder").
SPEC_SWEEP_KEYS = ("scaling",)
#: Keys of a section that older study files wrote bare in a decoder's table, and their dotted form.
MOVED_KEYS = {"learning_rate": "train.learning_rate"}
SPEC_SECTIONS = ("network", "train", "eval", "checkpoint")
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


def _is_override(key: str) -> bool:
    """Whether a key of a decoder's table sets the spec (a dotted key such as "network.activation",
    or "scaling") rather than one of the decoder's own parameters."""
    return "." in key or key in SPEC_SWEEP_KEYS


def _combinations(table: Mapping[str, Any], names: list[str], decoder: str, where: str) -> list[dict[str, Any]]:
    values = [v if isinstance(v, list) else [v] for v in (table[n] for n in names)]
    if any(not v for v in values):
        raise ConfigError(f"{where}: decoders.{decoder}: an empty list sweeps nothing")
    return [dict(zip(names, combo)) for combo in itertools.product(*values)]


def _sweep(params: Any, decoder: str, where: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """A decoder's table -> (decoder parameters, spec overrides) per combination, lists swept and
    scalars single values: {'xi': [0.01, 0.1], 'network.activation': 'elu'} gives two. An array of
    tables ([[decoders.learned]] twice) is the union of each table's combinations."""
    tables = params if isinstance(params, list) else [params]
    out = []
    for table in tables:
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where}: decoders.{decoder} must be a table of parameter values, got {params!r}")
        for old in sorted(set(table) & set(MOVED_KEYS)):
            raise ConfigError(
                f"{where}: decoders.{decoder}: {old} = {table[old]!r} is not allowed; a decoder's table sets "
                f'{old} for that decoder as "{MOVED_KEYS[old]}" = {table[old]!r} (any dotted key of a spec sweeps)'
            )
        own = sorted(k for k in table if not _is_override(k))
        overrides = sorted(k for k in table if _is_override(k))
        out += list(
            itertools.product(
                _combinations(table, own, decoder, where), _combinations(table, overrides, decoder, where)
            )
        )
    return out


def _with_overrides(spec: dict[str, Any], overrides: Mapping[str, Any], where: str) -> dict[str, Any]:
    """`spec` (a plain dict) with each override set: a dotted key its section's key ("train.learning_rate"),
    "scaling" the top-level key."""
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in spec.items()}
    for key, value in overrides.items():
        path = tuple(key.split("."))
        if len(path) == 1:
            out[path[0]] = value
        elif len(path) == 2 and path[0] in SPEC_SECTIONS:
            out.setdefault(path[0], {})[path[1]] = value
        else:
            raise ConfigError(
                f"{where}: {key!r} is not allowed in a decoder's table; expected a decoder "
                f"parameter, scaling or a key of one of {', '.join(SPEC_SECTIONS)} such as "
                f"'network.activation'"
            )
    return out


def _compilers(table: Any, where: str) -> dict[str, str]:
    """[compilers]: train.compiler per backend ({"tensorflow": "graph"}), over [train]'s for that backend.
    Each value is checked with its spec (COMPILERS)."""
    from tfp_vae.backends import BACKENDS

    if not isinstance(table, Mapping):
        raise ConfigError(f'{where}: compilers must be a table of backend = compiler, e.g. tensorflow = "graph"')
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
        _list(data, "datasets", where),
        _list(data, "scalings", where, ["raw"]),
        list(decoders),
        _list(data, "devices", where, ["cpu"]),
        _list(data, "backends", where, [DEFAULT_BACKEND]),
    ):
        base_train = {**shared.get("train", {}), **({"compiler": compilers[backend]} if backend in compilers else {})}
        for params, overrides in _sweep(decoders[decoder], decoder, where):
            base = {
                **shared,
                "train": base_train,
                "dataset": dataset,
                "scaling": scaling,
                "decoder": decoder,
                "decoder_params": params,
                "device": device,
                "backend": backend,
            }
            for seed in seeds:
                spec = spec_from_dict({**_with_overrides(base, overrides, where), "seed": seed}, where)
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
    return (
        f"{spec.dataset}/{spec.scaling}/{spec.decoder}{'(' + params + ')' if params else ''}/seed{spec.seed}/"
        f"{spec.device}/{spec.backend}"
    )
