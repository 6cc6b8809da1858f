"""The environment record: library versions, CPU, GPU, numerical flags, git commit."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_commit() -> dict[str, Any]:
    """Commit of the source tree tfp_vae was imported from, and whether it had local changes."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    if commit.returncode != 0:
        return {"commit": None, "dirty": None}
    return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def op_determinism_enabled() -> bool | None:
    """Whether TensorFlow's op determinism is on (the public API has a setter only)."""
    try:
        from tensorflow.python.framework import config as tf_config
    except ImportError:
        return None
    return bool(tf_config.is_op_determinism_enabled())


def capture(device: str, jit: bool) -> dict[str, Any]:
    """Everything about the machine and libraries a reader needs to trust a number."""
    import tensorflow as tf

    build = tf.sysconfig.get_build_info()
    gpus = tf.config.list_physical_devices("GPU")
    gpu_names = [tf.config.experimental.get_device_details(g).get("device_name") for g in gpus]
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {name: _version(name) for name in
                     ("tensorflow", "tensorflow-probability", "keras", "tf-keras", "numpy", "scipy", "scikit-learn", "tfp-vae")},
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "tf_threads": {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                       "inter_op": tf.config.threading.get_inter_op_parallelism_threads()},
        "device": device,
        "gpus": gpu_names,
        "cuda_version": build.get("cuda_version"),
        "cudnn_version": build.get("cudnn_version"),
        "xla_jit": jit,
        "tf32": tf.config.experimental.tensor_float_32_execution_enabled(),
        "op_determinism": op_determinism_enabled(),
        "git": git_commit(),
    }
