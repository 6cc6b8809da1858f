"""The decoder registry: name -> decoder entry class (docs/adding-a-decoder.md).

Adding a decoder means writing one `Decoder` subclass and adding it to `DECODERS`.
"""

from __future__ import annotations

from typing import Any, Mapping

from tfp_vae.decoders.base import DataContext, Decoder, Param, TrainingTerms
from tfp_vae.decoders.discrete import Bernoulli, ContinuousBernoulli, DiscretizedLogistic
from tfp_vae.decoders.faithful import Faithful
from tfp_vae.decoders.gaussian import BetaNLL, Fixed, Floor, Learned, MapPrecision, Shared, SigmaVAE
from tfp_vae.decoders.heavy_tailed import StudentT, StudentTPixel, VariationalVariance
from tfp_vae.decoders.natural import Natural
from tfp_vae.errors import ConfigError, unknown_name

DECODERS: dict[str, type[Decoder]] = {
    cls.name: cls
    for cls in (
        Fixed,
        Learned,
        Shared,
        SigmaVAE,
        Floor,
        StudentT,
        BetaNLL,
        MapPrecision,
        StudentTPixel,
        VariationalVariance,
        Faithful,
        Natural,
        Bernoulli,
        ContinuousBernoulli,
        DiscretizedLogistic,
    )
}


def decoder_class(name: str) -> type[Decoder]:
    """Look up a decoder entry by name; an unknown name lists the known ones."""
    try:
        return DECODERS[name]
    except KeyError:
        raise ConfigError(unknown_name("decoder", name, list(DECODERS))) from None


def make_decoder(name: str, hyper: Mapping[str, Any], data: DataContext, backend: Any = "tensorflow") -> Decoder:
    """Build a decoder entry with validated hyperparameters, on a backend (a name or a Backend)."""
    return decoder_class(name)(hyper, data, backend)


__all__ = ["DECODERS", "DataContext", "Decoder", "Param", "TrainingTerms", "decoder_class", "make_decoder"]
