"""The decoder-entry interface: declared parameters, raw outputs -> tfd.Distribution.

Decoders are written once against the array namespace `xp` and the distributions
namespace `tfd` that a backend hands them, and hold no variables: a learned scalar
(a shared sigma, a learned nu) is a parameter in the run's pytree, a moving average
is state carried by the training step. Both arrive as `dp`, one flat dict of the
decoder's parameters and state; `dp=None` means their initial values.
Nothing outside `tfp_vae.decoders` branches on a decoder's name: everything the
trainer and the evaluator need is a method or attribute here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, NamedTuple

import numpy as np

from tfp_vae.errors import ConfigError

Array = Any  # an array of the run's backend

#: Smallest positive scale added after a softplus/exp: "no floor but dtype eps".
EPS32 = float(np.finfo(np.float32).eps)
IMAGE_NDIMS = 3  # event = (H, W, C)


@dataclass(frozen=True)
class Param:
    """One hyperparameter of a decoder: type, default, valid range and meaning."""

    name: str
    default: Any
    doc: str
    kind: type = float
    low: float | None = None
    low_inclusive: bool = False
    high: float | None = None
    high_inclusive: bool = True
    choices: tuple[Any, ...] | None = None

    def allowed(self) -> str:
        """Human-readable statement of what values are allowed."""
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.low is None and self.high is None:
            return f"any {self.kind.__name__}"
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        lb = "[" if (self.low is not None and self.low_inclusive) else "("
        rb = "]" if (self.high is not None and self.high_inclusive) else ")"
        return f"{self.kind.__name__} in {lb}{lo}, {hi}{rb}"

    def validate(self, value: Any, where: str) -> Any:
        """Return `value` coerced to this parameter's type, or raise ConfigError."""
        bad = ConfigError(f"{where}: {self.name} = {value!r} is not allowed; expected {self.allowed()}")
        if self.kind is bool:
            if not isinstance(value, bool):
                raise bad
            return value
        if self.kind is str:
            if not isinstance(value, str) or (self.choices and value not in self.choices):
                raise bad
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        if self.kind is int and not float(value).is_integer():
            raise bad
        value = self.kind(value)
        if isinstance(value, float) and not math.isfinite(value):
            raise bad
        if self.low is not None and (value < self.low or (value == self.low and not self.low_inclusive)):
            raise bad
        if self.high is not None and (value > self.high or (value == self.high and not self.high_inclusive)):
            raise bad
        return value


@dataclass(frozen=True)
class DataContext:
    """What a decoder must know about the data: grey levels and the scaling in use."""

    levels: int
    scaling: str  # "raw" or "dequantized"

    @property
    def bin_width(self) -> float:
        """Width of one grey level on the [0, 1] scale (docs/definitions.md)."""
        return 1.0 / self.levels if self.scaling == "dequantized" else 1.0 / (self.levels - 1)

    @property
    def tau(self) -> float:
        """Standard deviation of the dequantization noise: bin / sqrt(12)."""
        return self.bin_width / math.sqrt(12.0)


class TrainingTerms(NamedTuple):
    """Per-example training term (what is maximised) and the true log-likelihood."""

    objective: Array
    log_lik: Array


class Decoder:
    """Base class of every decoder entry.

    `raw` is the decoder network's output with shape (..., H, W, C, k), where
    k = `outputs_per_pixel`. Subclasses override `_distribution` and, where the
    training objective is not the log-likelihood, `training_terms`.
    """

    name: ClassVar[str]
    source: ClassVar[str]
    summary: ClassVar[str]
    params: ClassVar[tuple[Param, ...]] = ()
    outputs_per_pixel: ClassVar[int] = 1
    #: Whether the decoder has a scale whose statistics and collapse are tracked.
    has_scale: ClassVar[bool] = True
    #: A proper density on [0, 1]^D (so bpd of dequantized data is defined).
    proper_density: ClassVar[bool] = True
    #: A probability of the discrete grey levels (bpd = -log2 p / D).
    discrete: ClassVar[bool] = False
    #: Whether the decoder assigns a density (or a pmf per bin) to an observed pixel value,
    #: so that the excess-density collapse rule applies (Bernoulli on grey levels does not).
    has_density: ClassVar[bool] = True
    #: Whether the network's heads after the mean see its features through a stop-gradient (networks.py).
    detach_heads: ClassVar[bool] = False
    #: Whether raw[..., 0] is the mean and the other outputs only shape the spread, so that a variance
    #: warm-up (train.variance_warmup_epochs) can train the mean alone under a unit variance.
    warmup: ClassVar[bool] = False

    def __init__(self, hyper: Mapping[str, Any] | None, data: DataContext, backend: Any = None):
        from tfp_vae.backends import DEFAULT_BACKEND, get_backend

        backend = DEFAULT_BACKEND if backend is None else backend
        self.hyper = self.resolve(hyper or {})
        self.data = data
        self.backend = get_backend(backend) if isinstance(backend, str) else backend
        self.xp, self.tfd = self.backend.xp, self.backend.tfd

    # -- parameters and state (plain floats; the run turns them into backend arrays) ------
    def init_params(self) -> dict[str, float]:
        """Initial values of this decoder's own trainable parameters (none by default)."""
        return {}

    def init_state(self) -> dict[str, float]:
        """Initial values of state the training step carries (none by default)."""
        return {}

    def lr_multipliers(self) -> dict[str, float]:
        """Learning-rate multipliers of this decoder's parameters, by name (default 1)."""
        return {}

    def _dp(self, dp: Mapping[str, Array] | None) -> Mapping[str, Array]:
        if dp is not None:
            return dp
        return {k: self.backend.asarray(np.float32(v)) for k, v in {**self.init_params(), **self.init_state()}.items()}

    @classmethod
    def resolve(cls, hyper: Mapping[str, Any]) -> dict[str, Any]:
        """Fill defaults and validate; raise ConfigError naming the bad value."""
        known = {p.name: p for p in cls.params}
        unknown = sorted(set(hyper) - set(known))
        if unknown:
            allowed = ", ".join(known) or "none"
            raise ConfigError(f"decoder {cls.name!r}: unknown parameter(s) {', '.join(unknown)}; allowed: {allowed}")
        out = {n: p.validate(hyper.get(n, p.default), f"decoder {cls.name!r}") for n, p in known.items()}
        cls.check_together(out)
        return out

    @classmethod
    def check_together(cls, hyper: dict[str, Any]) -> None:
        """Cross-parameter checks; override where parameters constrain each other."""

    # -- what the trainer and evaluator call -------------------------------------------
    def target(self, y: Array) -> Array:
        """Map scaled data y in [0, 1] to the space the likelihood is defined on."""
        return y

    def distribution(self, raw: Array, dp: Mapping[str, Array] | None = None):
        """The likelihood p(x | z) whose event shape is the image (H, W, C)."""
        return self.tfd.Independent(self._distribution(raw, self._dp(dp)), reinterpreted_batch_ndims=IMAGE_NDIMS)

    def log_lik(self, y: Array, raw: Array, dp: Mapping[str, Array] | None = None) -> Array:
        """log p(y | z) per example, in nats, as evaluated (never the training surrogate)."""
        # = self.distribution(raw, dp).log_prob: the same sum, taken by sum_image (faster on XLA)
        return self.xp.sum_image(self._distribution(raw, self._dp(dp)).log_prob(self.target(y)))

    def training_terms(
        self, y: Array, raw: Array, dp: Mapping[str, Array] | None = None
    ) -> tuple[TrainingTerms, dict[str, Array]]:
        """Per-example training objective and true log-likelihood (equal by default), and the
        decoder's new state (empty for stateless decoders)."""
        ll = self.log_lik(y, raw, dp)
        return TrainingTerms(ll, ll), {}

    def warmup_terms(self, y: Array, raw: Array, dp: Mapping[str, Array] | None = None) -> TrainingTerms:
        """The objective while the variance is held fixed: log N(y; mean, 1), which trains the mean
        alone (the other outputs get no gradient), and the true log-likelihood."""
        unit = self.xp.sum_image(self.tfd.Normal(raw[..., 0], self.xp.full((), 1.0)).log_prob(self.target(y)))
        return TrainingTerms(unit, self.log_lik(y, raw, dp))

    def mean(self, raw: Array) -> Array:
        """Decoder mean on the [0, 1] scale, shape (..., H, W, C)."""
        return raw[..., 0]

    def stddev(self, raw: Array, dp: Mapping[str, Array] | None = None) -> Array | None:
        """Per-pixel standard deviation of p(x | z) on the [0, 1] scale (inf where it does not
        exist), or None for decoders whose spread is not tracked (see docs/definitions.md)."""
        return None

    def pixel_log_density(self, y: Array, raw: Array, dp: Mapping[str, Array] | None = None) -> Array:
        """Per-pixel log density of the observed value on the [0, 1] scale, shape (..., H, W, C).

        The excess-density collapse rule compares it with log(c / bin) for every decoder alike.
        A likelihood of discrete levels overrides this with log(pmf / bin)."""
        return self._distribution(raw, self._dp(dp)).log_prob(self.target(y))

    def global_scale(self, dp: Mapping[str, Array] | None = None) -> Array | None:
        """A learned scale shared by all pixels (checked against its closed-form optimum), or None."""
        return None

    def _distribution(self, raw: Array, dp: Mapping[str, Array]):
        raise NotImplementedError

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """Plain-data description for `tfp-vae list decoders` and records."""
        return {
            "name": cls.name,
            "summary": cls.summary,
            "source": cls.source,
            "outputs_per_pixel": cls.outputs_per_pixel,
            "params": {p.name: {"default": p.default, "allowed": p.allowed(), "doc": p.doc} for p in cls.params},
        }


def positive(xp, raw: Array, link: str = "softplus") -> Array:
    """Map an unconstrained output to a positive scale: link(raw) + dtype eps."""
    value = xp.softplus(raw) if link == "softplus" else xp.exp(raw)
    return value + EPS32
