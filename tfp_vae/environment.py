"""The environment record: library versions, CPU, GPU, numerical flags, git commit."""

from __future__ import annotations

import os
import platform
import re
import resource
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from tfp_vae.compile_cache import directory_in_force


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


def machine_slug() -> str:
    """A file-name key for this machine: CPU model and core count (TFP_VAE_MACHINE overrides)."""
    slug = re.sub(r"[^a-z0-9]+", "-", cpu_model().lower()).strip("-")[:48]
    return os.environ.get("TFP_VAE_MACHINE") or f"{slug}-{os.cpu_count()}cores"


def git_commit() -> dict[str, Any]:
    """Commit of the source tree tfp_vae was imported from, and whether it had local changes."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        # "dirty" means changed source: records and reports under results/ do not count
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":/",
                                ":(top,exclude)results"], cwd=here, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    if commit.returncode != 0:
        return {"commit": None, "dirty": None}
    return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def reset_host_peak_memory() -> bool:
    """Start a new high-water mark of this process's resident memory (Linux: writing 5 to
    /proc/self/clear_refs resets VmHWM), so that the peak read after a run is that run's
    rather than the most any earlier run in this worker process used. False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def host_peak_memory_mib() -> float:
    """Peak resident memory of this process since the last reset (VmHWM), else since it started."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def capture(backend, device: str) -> dict[str, Any]:
    """Everything about the machine and libraries a reader needs to trust a number."""
    fields = backend.environment(device)
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "backend": backend.name,
        "versions": {name: _version(name) for name in
                     ("tensorflow", "tfp-nightly", "tensorflow-probability", "jax", "jaxlib", "optax", "keras",
                      "tf-keras", "numpy", "scipy", "scikit-learn", "tfp-vae")},
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "device": device,
        **fields,
        # where this run's compiled programs persist (None: compiled afresh); timing.compile_s depends on it
        "compile_cache": directory_in_force(),
        "git": git_commit(),
    }
