"""Typed, validated run specs (frozen dataclasses), loadable from TOML or plain dicts.

A `RunSpec` is everything one run depends on; `run(spec)` is a pure function of it
(timings aside). Every check raises `ConfigError` naming the key, the bad value and
what is allowed; nothing runs until the whole spec is valid.
"""

from __future__ import annotations

import contextvars
import dataclasses
import hashlib
import json
import math
import os
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from tfp_vae.backends import BACKENDS, COMPILERS, DEFAULT_BACKEND
from tfp_vae.errors import ConfigError

SCALINGS = ("raw", "dequantized")
DEVICES = ("cpu", "gpu", "auto")
#: float32: every op in float32. bfloat16: dense-layer matmuls take bfloat16 inputs (float32 results);
#: likelihood, KL, reductions and the optimiser stay float32 (docs/definitions.md).
PRECISIONS = ("float32", "bfloat16")
NETWORK_KINDS = ("mlp", "conv")
ACTIVATIONS = ("relu", "elu")
#: What early stopping watches: the single-sample validation bound (ELBO) or the validation
#: LPPL with eval.lppl_samples posterior samples (the published protocol; docs/paper-protocol.md).
MONITORS = ("val_bound", "val_lppl")


def memory_estimate_bytes(spec: "RunSpec", image_shape: tuple[int, int, int], outputs_per_pixel: int) -> int:
    """A lower estimate of a run's peak memory: parameters with their gradients and Adam's two
    moments (4 copies), and the activations of a training batch or of one chunk of importance
    samples, whichever is larger, each kept about 3 times (forward, backward, temporaries)."""
    enc, dec = spec.network.mlp_widths(int(math.prod(image_shape)), outputs_per_pixel)
    params = sum(a * b + b for widths in (enc, dec) for a, b in zip(widths[:-1], widths[1:]))
    rows = max(spec.train.batch_size, spec.eval.batch_size * min(spec.eval.k_chunk, spec.eval.iwae_k))
    activations = rows * (sum(dec) + spec.network.latent)
    return 4 * (4 * params + 3 * activations)


def machine_memory_bytes() -> int | None:
    """Physical memory of this machine, or None where the system does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


#: While a whole spec is checked, the bad values found so far (RunSpec.check reports them all at once).
_FOUND: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("_FOUND", default=None)


def _decoders() -> dict:
    from tfp_vae.decoders import DECODERS

    return DECODERS


def _require(ok: bool, where: str, key: str, value: Any, allowed: str) -> None:
    if not ok:
        message = f"{where}: {key} = {value!r} is not allowed; expected {allowed}"
        found = _FOUND.get()
        if found is None:
            raise ConfigError(message)
        found.append(message)


def _positive_ints(values: Any) -> bool:
    return isinstance(values, tuple) and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values)


@dataclass(frozen=True)
class NetworkSpec:
    """Encoder/decoder architecture. `hidden` is the MLP's hidden widths (mirrored in the decoder)."""

    kind: str = "mlp"
    hidden: tuple[int, ...] = (512, 512)
    latent: int = 16
    conv_channels: tuple[int, ...] = (32, 64)
    activation: str = "relu"
    #: One decoder network per output of a pixel (mean, scale, ...) instead of one network with
    #: k outputs per pixel (the published VAE-Split, Student-VAE and V3AE).
    split_decoder: bool = False

    def mlp_widths(self, pixels: int, outputs_per_pixel: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The dense layers' widths of the MLP: encoder pixels -> hidden -> 2 x latent (the posterior's
        mean and scale), decoder latent -> hidden reversed -> pixels x outputs_per_pixel."""
        encoder = (pixels, *self.hidden, 2 * self.latent)
        return encoder, (self.latent, *reversed(self.hidden), pixels * outputs_per_pixel)

    def check(self, where: str) -> None:
        _require(self.kind in NETWORK_KINDS, where, "kind", self.kind, f"one of {', '.join(NETWORK_KINDS)}")
        _require(
            self.activation in ACTIVATIONS, where, "activation", self.activation, f"one of {', '.join(ACTIVATIONS)}"
        )
        _require(isinstance(self.split_decoder, bool), where, "split_decoder", self.split_decoder, "true or false")
        _require(
            not (self.split_decoder and self.kind == "conv"),
            where,
            "split_decoder",
            self.split_decoder,
            "false with kind = 'conv' (split decoders are MLPs)",
        )
        _require(
            _positive_ints(self.hidden) or self.hidden == (),
            where,
            "hidden",
            self.hidden,
            "a list of positive integers",
        )
        _require(isinstance(self.latent, int) and self.latent > 0, where, "latent", self.latent, "a positive integer")
        _require(
            _positive_ints(self.conv_channels) and len(self.conv_channels) > 0,
            where,
            "conv_channels",
            self.conv_channels,
            "a non-empty list of positive integers",
        )

    def check_shape(self, image_shape: tuple[int, int, int], where: str = "network") -> None:
        """The conv network halves H and W per layer: both must be divisible by 2^layers."""
        if self.kind != "conv":
            return
        down = 2 ** len(self.conv_channels)
        h, w, _ = image_shape
        if h % down or w % down:
            raise ConfigError(
                f"{where}: image shape {h}x{w} cannot pass {len(self.conv_channels)} stride-2 conv layers "
                f"(conv_channels = {list(self.conv_channels)}); H and W must be divisible by {down}: "
                f"use fewer conv_channels or kind = 'mlp'"
            )


@dataclass(frozen=True)
class TrainSpec:
    """Optimisation settings. `patience` = 0 turns early stopping off (the best epoch is still restored)."""

    epochs: int = 20
    batch_size: int = 128
    learning_rate: float = 1e-3
    patience: int = 5
    validation_fraction: float = 0.1
    compiler: str = "xla"  # "xla" | "graph" (TensorFlow only): tfp_vae.backends.COMPILERS
    #: Posterior samples per example in the training objective (its expected log-likelihood is
    #: their mean); the published models train on 20.
    mc_samples: int = 1
    monitor: str = "val_bound"  # MONITORS
    #: An epoch improves on the best only by more than this (Keras' EarlyStopping min_delta).
    min_delta: float = 0.0
    #: Epochs at the start whose objective is log N(y; mean, 1): the mean learns under a fixed unit
    #: variance and the variance outputs get no gradient, then the decoder's own objective takes over
    #: (a variance warm-up; decoders whose `warmup` says they can).
    variance_warmup_epochs: int = 0

    def check(self, where: str) -> None:
        _require(
            isinstance(self.mc_samples, int) and not isinstance(self.mc_samples, bool) and self.mc_samples >= 1,
            where,
            "mc_samples",
            self.mc_samples,
            "an integer >= 1",
        )
        _require(self.monitor in MONITORS, where, "monitor", self.monitor, f"one of {', '.join(MONITORS)}")
        _require(
            isinstance(self.variance_warmup_epochs, int)
            and not isinstance(self.variance_warmup_epochs, bool)
            and self.variance_warmup_epochs >= 0,
            where,
            "variance_warmup_epochs",
            self.variance_warmup_epochs,
            "an integer >= 0 (0 = none)",
        )
        _require(
            isinstance(self.min_delta, float) and math.isfinite(self.min_delta) and self.min_delta >= 0,
            where,
            "min_delta",
            self.min_delta,
            "a finite float >= 0",
        )
        _require(isinstance(self.epochs, int) and self.epochs >= 1, where, "epochs", self.epochs, "an integer >= 1")
        _require(
            isinstance(self.batch_size, int) and self.batch_size >= 1,
            where,
            "batch_size",
            self.batch_size,
            "an integer >= 1",
        )
        _require(
            isinstance(self.learning_rate, float) and math.isfinite(self.learning_rate) and self.learning_rate > 0,
            where,
            "learning_rate",
            self.learning_rate,
            "a finite float > 0",
        )
        _require(
            isinstance(self.patience, int) and self.patience >= 0, where, "patience", self.patience, "an integer >= 0"
        )
        _require(
            isinstance(self.validation_fraction, float) and 0 < self.validation_fraction < 0.5,
            where,
            "validation_fraction",
            self.validation_fraction,
            "a float in (0, 0.5)",
        )
        known = sorted({c for names in COMPILERS.values() for c in names})
        _require(self.compiler in known, where, "compiler", self.compiler, " or ".join(map(repr, known)))


@dataclass(frozen=True)
class EvalSpec:
    """Evaluation settings (docs/definitions.md)."""

    iwae_k: int = 1000
    k_chunk: int = 100
    lppl_samples: int = 20
    batch_size: int = 128
    collapse_threshold: float = 0.01  # of test pixels above the excess-density limit
    density_c: float = 2.0  # the excess-density limit is density_c / bin
    max_test_examples: int = 0  # 0 = the whole test split

    def check(self, where: str) -> None:
        _require(isinstance(self.iwae_k, int) and self.iwae_k >= 1, where, "iwae_k", self.iwae_k, "an integer K >= 1")
        _require(isinstance(self.k_chunk, int) and self.k_chunk >= 1, where, "k_chunk", self.k_chunk, "an integer >= 1")
        _require(
            isinstance(self.lppl_samples, int) and self.lppl_samples >= 1,
            where,
            "lppl_samples",
            self.lppl_samples,
            "an integer >= 1",
        )
        _require(
            isinstance(self.batch_size, int) and self.batch_size >= 1,
            where,
            "batch_size",
            self.batch_size,
            "an integer >= 1",
        )
        _require(
            isinstance(self.collapse_threshold, float) and 0 <= self.collapse_threshold < 1,
            where,
            "collapse_threshold",
            self.collapse_threshold,
            "a float in [0, 1)",
        )
        _require(
            isinstance(self.density_c, float) and self.density_c > 1.0,
            where,
            "density_c",
            self.density_c,
            "a float > 1 (a model of the discrete levels reaches density 1 / bin)",
        )
        _require(
            isinstance(self.max_test_examples, int) and self.max_test_examples >= 0,
            where,
            "max_test_examples",
            self.max_test_examples,
            "an integer >= 0 (0 = all)",
        )


@dataclass(frozen=True)
class CheckpointSpec:
    """How often a run saves its training state (tfp_vae/checkpoint.py): after every `every_epochs`
    epochs (0: not by count) or when `every_minutes` have passed since the last save (0: not by time).
    Not part of a run's identity: it cannot change a number."""

    every_epochs: int = 0
    every_minutes: float = 10.0

    def check(self, where: str) -> None:
        _require(
            isinstance(self.every_epochs, int) and not isinstance(self.every_epochs, bool) and self.every_epochs >= 0,
            where,
            "every_epochs",
            self.every_epochs,
            "an integer >= 0 (0 = off)",
        )
        _require(
            isinstance(self.every_minutes, float) and math.isfinite(self.every_minutes) and self.every_minutes >= 0,
            where,
            "every_minutes",
            self.every_minutes,
            "a float >= 0 (0 = off)",
        )


#: Keys added after records were committed, left out of a spec's dict at these values, so that a
#: spec that does not use them keeps the run id (and the record) it had before they existed.
LATER_DEFAULTS = {
    "network": {"activation": "relu", "split_decoder": False},
    "train": {"mc_samples": 1, "monitor": "val_bound", "min_delta": 0.0, "variance_warmup_epochs": 0},
}
#: Sections of a spec that cannot change a number: in its dict, not in its run id.
NOT_IDENTITY = ("checkpoint",)


@dataclass(frozen=True)
class RunSpec:
    """One run: (data set, scaling, decoder, network, training, evaluation, seed, device, backend, precision)."""

    dataset: str = "digits"
    scaling: str = "raw"
    decoder: str = "learned"
    decoder_params: dict[str, Any] = field(default_factory=dict)
    network: NetworkSpec = field(default_factory=NetworkSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    eval: EvalSpec = field(default_factory=EvalSpec)
    seed: int = 0
    device: str = "cpu"
    backend: str = DEFAULT_BACKEND
    tf32: bool = False
    precision: str = "float32"
    checkpoint: CheckpointSpec = field(default_factory=CheckpointSpec)

    def check(self, where: str = "run spec") -> None:
        """Every check of the spec; all its bad values are reported at once, in one ConfigError."""
        errors: list[str] = []
        token = _FOUND.set(errors)
        try:
            *checks, memory = self._checks(where)
            for check in checks:
                try:
                    check()
                except ConfigError as exc:
                    errors.append(str(exc))
                except (TypeError, ValueError, KeyError, AttributeError):
                    if not errors:  # else a check that depends on a value already reported as bad
                        raise
        finally:
            _FOUND.reset(token)
        if not errors:
            memory()  # only a spec whose values are all valid can be sized
        if len(errors) == 1:
            raise ConfigError(errors[0])
        if errors:
            raise ConfigError(f"{len(errors)} bad values:\n  " + "\n  ".join(errors))

    def _checks(self, where: str) -> list:
        """The spec's checks, each a callable that raises ConfigError; later ones may need earlier ones' values."""
        from tfp_vae.data import dataset_entry
        from tfp_vae.decoders import decoder_class

        def registry(lookup):  # registry errors say what is known; prefix them with where the value came from
            def check():
                try:
                    lookup()
                except ConfigError as exc:
                    raise ConfigError(f"{where}: {exc}") from None

            return check

        entry = lambda: dataset_entry(self.dataset)
        pool = lambda: entry().sizes[0]
        n_train = lambda: pool() - max(1, round(self.train.validation_fraction * pool()))
        train = f"{where} [train]"
        return [
            registry(entry),
            registry(lambda: decoder_class(self.decoder).resolve(self.decoder_params)),
            *self._top_level_checks(where),
            lambda: self.network.check(f"{where} [network]"),
            lambda: self.network.check_shape(entry().shape, f"{where} [network] on {self.dataset}"),
            lambda: self.train.check(train),
            lambda: _require(
                not self.train.variance_warmup_epochs or decoder_class(self.decoder).warmup,
                train,
                "variance_warmup_epochs",
                self.train.variance_warmup_epochs,
                f"0 for decoder {self.decoder!r}, which has no per-pixel variance to hold fixed (decoders "
                f"that can: {', '.join(n for n, c in _decoders().items() if c.warmup)})",
            ),
            lambda: _require(
                self.train.compiler in COMPILERS[self.backend],
                train,
                "compiler",
                self.train.compiler,
                f"on backend {self.backend!r} one of {', '.join(map(repr, COMPILERS[self.backend]))}",
            ),
            lambda: _require(
                not pool() or self.train.batch_size <= n_train(),
                train,
                "batch_size",
                self.train.batch_size,
                f"at most the {n_train()} training images of {self.dataset}",
            ),
            lambda: self.eval.check(f"{where} [eval]"),
            lambda: self.checkpoint.check(f"{where} [checkpoint]"),
            lambda: self.check_memory(entry().shape, decoder_class(self.decoder).outputs_per_pixel, where),
        ]

    def _top_level_checks(self, where: str) -> list:
        """Checks of the spec's own values (not its sections'), each independent of the others."""

        def require(ok, *args):
            return lambda: _require(ok(), *args)

        return [
            require(lambda: self.scaling in SCALINGS, where, "scaling", self.scaling, f"one of {', '.join(SCALINGS)}"),
            require(
                lambda: isinstance(self.seed, int) and not isinstance(self.seed, bool) and 0 <= self.seed < 2**31,
                where,
                "seed",
                self.seed,
                "an integer in [0, 2^31)",
            ),
            require(lambda: self.device in DEVICES, where, "device", self.device, f"one of {', '.join(DEVICES)}"),
            require(lambda: self.backend in BACKENDS, where, "backend", self.backend, f"one of {', '.join(BACKENDS)}"),
            require(lambda: isinstance(self.tf32, bool), where, "tf32", self.tf32, "true or false"),
            require(
                lambda: self.precision in PRECISIONS,
                where,
                "precision",
                self.precision,
                f"one of {', '.join(PRECISIONS)}",
            ),
        ]

    def check_memory(self, image_shape: tuple[int, int, int], outputs_per_pixel: int, where: str) -> None:
        """Refuse, before any work, a CPU run whose network and batches cannot fit in this machine's memory."""
        need, total = memory_estimate_bytes(self, image_shape, outputs_per_pixel), machine_memory_bytes()
        if self.device == "cpu" and total and need > total:
            widths = "-".join(map(str, (int(math.prod(image_shape)), *self.network.hidden, self.network.latent)))
            raise ConfigError(
                f"{where}: network {widths} (latent = {self.network.latent}) with batch {self.train.batch_size} and "
                f"{min(self.eval.k_chunk, self.eval.iwae_k)} importance samples a chunk needs about "
                f"{need / 2**30:.1f} GiB; this machine has {total / 2**30:.1f} GiB: use a smaller network, "
                f"latent, batch_size or k_chunk"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready dict (tuples become lists); decoder params with defaults filled."""
        from tfp_vae.decoders import decoder_class

        out = json.loads(json.dumps(dataclasses.asdict(self)))
        out["decoder_params"] = decoder_class(self.decoder).resolve(self.decoder_params)
        for section, defaults in LATER_DEFAULTS.items():
            for key, value in defaults.items():
                if out[section][key] == value:
                    del out[section][key]
        if self.checkpoint == CheckpointSpec():
            del out["checkpoint"]
        return out

    def identity(self) -> dict[str, Any]:
        """to_dict without what cannot change a number (NOT_IDENTITY)."""
        return {k: v for k, v in self.to_dict().items() if k not in NOT_IDENTITY}

    def group_key(self) -> str:
        """What specs share to train in one seed group: everything but the seed."""
        return json.dumps({**self.identity(), "seed": None}, sort_keys=True, separators=(",", ":"))

    def run_id(self) -> str:
        """Stable id: a hash of the canonical (sorted-key, defaults-filled) spec."""
        canonical = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _coerce(value: Any, hint: Any, where: str, key: str) -> Any:
    """Coerce TOML values to the dataclass field's type (lists to tuples, ints to floats)."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: {key} must be a table, got {value!r}")
        return build(hint, value, f"{where} [{key}]")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: {key} = {value!r} is not allowed; expected a list")
        return tuple(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: {key} must be a table, got {value!r}")
        return dict(value)
    expected = {int: int, float: float, str: str, bool: bool}.get(hint)
    if expected is not None and (not isinstance(value, expected) or (expected is int and isinstance(value, bool))):
        raise ConfigError(f"{where}: {key} = {value!r} has the wrong type; expected {expected.__name__}")
    return value


def build(cls: type, mapping: Mapping[str, Any], where: str) -> Any:
    """Build dataclass `cls` from `mapping`, rejecting unknown keys and wrong types."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(mapping) - set(names))
    if unknown:
        renamed = "".join(f" ({k!r} is now {RENAMED[k]!r})" for k in unknown if k in RENAMED)
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}{renamed}; allowed: {', '.join(names)}")
    return cls(**{k: _coerce(v, hints[k], where, k) for k, v in mapping.items()})


#: Keys of earlier versions, named in the error that refuses them.
RENAMED = {"jit": 'compiler = "xla" | "graph"'}


def spec_from_dict(mapping: Mapping[str, Any], where: str = "run spec") -> RunSpec:
    """Validated RunSpec from a plain mapping."""
    spec = build(RunSpec, mapping, where)
    spec.check(where)
    return spec


def read_toml(path: str | Path, what: str) -> dict[str, Any]:
    """A TOML file as a dict; unreadable, non-UTF-8 or malformed files raise one ConfigError
    naming the file and what is wrong."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: cannot read {what}: not UTF-8 text (byte {exc.start}); expected a TOML file"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: cannot read {what}: not valid TOML: {exc}") from None


def spec_from_toml(path: str | Path) -> RunSpec:
    """Validated RunSpec from a TOML file; errors name the file."""
    return spec_from_dict(read_toml(path, "spec"), str(path))
