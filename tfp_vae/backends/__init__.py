"""The backend registry: name -> module path, imported only when a run asks for it.

A backend hands the core everything framework-specific: an array namespace (`xp`),
TFP's distributions (`tfd`), stateless random numbers, value-and-gradient, compilation,
the optimiser, pytree helpers, device placement and its environment fields. Nothing
outside this package imports tensorflow or jax.
"""

from __future__ import annotations

import importlib
from functools import lru_cache

from tfp_vae.backends.base import Backend
from tfp_vae.errors import ConfigError, unknown_name

BACKENDS: dict[str, str] = {
    "tensorflow": "tfp_vae.backends.tensorflow",
    "jax": "tfp_vae.backends.jax",
}
#: A spec's backend when it names none: the registry's first.
DEFAULT_BACKEND = next(iter(BACKENDS))

#: What `train.compiler` may name, per backend: "xla" compiles the whole step, epoch and
#: evaluation with XLA; "graph" runs TensorFlow's graph of its own kernels (oneDNN on a CPU)
#: without XLA. JAX has only XLA.
COMPILERS: dict[str, tuple[str, ...]] = {
    "tensorflow": ("xla", "graph"),
    "jax": ("xla",),
}


@lru_cache(maxsize=None)
def get_backend(name: str) -> Backend:
    """The backend called `name` (imports its framework on first use)."""
    try:
        module = BACKENDS[name]
    except KeyError:
        raise ConfigError(unknown_name("backend", name, list(BACKENDS))) from None
    try:
        return importlib.import_module(module).BACKEND
    except ImportError as exc:
        raise ConfigError(
            f"backend {name!r} is not installed here ({exc}); install tfp-vae with the [{name}] extra"
        ) from None


def installed_backends() -> list[str]:
    """The registered backends whose framework imports here (each is imported to find out)."""
    names = []
    for name in BACKENDS:
        try:
            get_backend(name)
            names.append(name)
        except ConfigError:
            pass
    return names


__all__ = ["BACKENDS", "COMPILERS", "Backend", "get_backend", "installed_backends"]
