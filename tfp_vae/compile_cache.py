"""Compiled programs kept on disk between processes: XLA's persistent compilation caches of JAX and
of TensorFlow's XLA path, switched on in a study's worker processes.

A seed group compiles its training epoch and five evaluation programs, and on a small network that
is most of its time. The raw and dequantized groups of one decoder compile the same evaluation
programs (they take pixels already scaled), and a rerun compiles exactly what the first run did. A
program loaded from the cache is the executable a fresh compile gives, so records do not change;
only the time of a group's first epoch and first evaluation (timing.compile_s) does. TensorFlow's
graph (compiler "graph") compiles nothing with XLA and is not affected. Each framework keys its
entries by the program, its own version and its compile options (TensorFlow also compares the
stored program with the one it is about to run), and writes an entry to a temporary file that it
then renames, so one directory serves every version, machine and concurrent worker sharing it.
"""

from __future__ import annotations

import os
from pathlib import Path

from tfp_vae.errors import ConfigError
from tfp_vae.files import cache_dir

#: How a study runner tells its worker processes where the cache is ("none": no cache).
ENV = "TFP_VAE_COMPILE_CACHE"
OFF = "none"


def default_directory() -> Path:
    """$XDG_CACHE_HOME/tfp-vae/xla, ~/.cache/tfp-vae/xla where XDG_CACHE_HOME is not set."""
    return cache_dir("xla")


def resolve(value: str | None) -> Path | None:
    """The directory `--compile-cache value` names (None: the default; "none": no cache), created
    now, so that a path that cannot hold it fails before any work."""
    if value is not None and value.strip().lower() == OFF:
        return None
    directory = default_directory() if value is None else Path(value).expanduser()
    try:
        for framework in ("jax", "tensorflow"):
            (directory / framework).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"--compile-cache {directory}: cannot create it ({exc.strerror}); expected a writable "
            f"directory, or '{OFF}' to compile every program afresh"
        ) from None
    return directory


#: TensorFlow's flag naming its persistent cache directory (in TF_XLA_FLAGS).
TF_FLAG = "--tf_xla_persistent_cache_directory"


def _tf_flags_without_cache(flags: str) -> str:
    """TF_XLA_FLAGS with any cache directory of its own removed (the caller's flag then rules)."""
    return " ".join(flag for flag in flags.split() if not flag.startswith(TF_FLAG + "=") and flag != TF_FLAG)


def worker_environment(directory: Path | None, inherited: dict[str, str] | None = None) -> dict[str, str]:
    """The environment variables that switch both frameworks' caches on (or, for None, off, even
    where the `inherited` environment, os.environ by default, switched one on) in a process that
    has not loaded either yet (each framework reads them when it loads)."""
    inherited = os.environ if inherited is None else inherited
    tf_flags = _tf_flags_without_cache(inherited.get("TF_XLA_FLAGS", ""))
    if directory is None:
        return {ENV: OFF, "JAX_ENABLE_COMPILATION_CACHE": "false", "TF_XLA_FLAGS": tf_flags}
    tf_flags = f"{tf_flags} {TF_FLAG}={directory / 'tensorflow'}"
    return {
        ENV: str(directory),
        "JAX_ENABLE_COMPILATION_CACHE": "true",
        "JAX_COMPILATION_CACHE_DIR": str(directory / "jax"),
        # every program, however quickly it compiles: a group compiles several of about a second each
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
        "TF_XLA_FLAGS": tf_flags.strip(),
    }


def directory_in_force() -> str | None:
    """The cache directory this process's compilations use, as its study runner set it; None: none."""
    value = os.environ.get(ENV, OFF)
    return None if value == OFF else value
