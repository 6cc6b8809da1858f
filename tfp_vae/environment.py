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


#: Instruction-set extensions that change the code XLA and oneDNN generate for this CPU: the
#: width of a vectorised reduction decides its order of summation, so the last bits of a result
#: (and, through chaotic training, a collapse fraction) and its speed follow them.
CODEGEN_ISA = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512dq",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "avx_vnni",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "asimd",
    "sve",
    "sve2",
)


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                if fields:
                    break
                continue
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_model() -> str:
    return _cpuinfo().get("model name") or platform.processor() or "unknown"


def cpu_identity() -> dict[str, Any]:
    """What a virtual machine's model name hides: vendor, family, model and stepping, and the
    code-generating instruction-set extensions it has. Two CPUs both named "AMD EPYC" were an
    AVX2 Zen 3 (family 25, model 1) and an AVX-512 Zen 5 (family 26, model 2)."""
    info = _cpuinfo()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    number = lambda key: int(info[key]) if info.get(key, "").strip().isdigit() else info.get(key)
    return {
        "vendor": info.get("vendor_id") or info.get("CPU implementer"),
        "family": number("cpu family"),
        "model": number("model"),
        "stepping": number("stepping"),
        "isa": [flag for flag in CODEGEN_ISA if flag in flags],
    }


def machine_slug() -> str:
    """A file-name key for this machine: CPU model name, family and model, and core count, e.g.
    amd-epyc-f26m2-2cores (TFP_VAE_MACHINE overrides). The family and model are in it because
    one model name covers CPUs of different speed and instruction sets."""
    slug = re.sub(r"[^a-z0-9]+", "-", cpu_model().lower()).strip("-")[:48]
    ident = cpu_identity()
    generation = f"-f{ident['family']}m{ident['model']}" if ident["family"] is not None else ""
    return os.environ.get("TFP_VAE_MACHINE") or f"{slug}{generation}-{os.cpu_count()}cores"


def git_commit() -> dict[str, Any]:
    """Commit of the source tree tfp_vae was imported from, and whether it had local changes."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        # "dirty" means changed source: records and reports under results/ do not count
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ":/", ":(top,exclude)results"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
        )
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
        "versions": {
            name: _version(name)
            for name in (
                "tensorflow",
                "tfp-nightly",
                "tensorflow-probability",
                "jax",
                "jaxlib",
                "optax",
                "keras",
                "tf-keras",
                "numpy",
                "scipy",
                "scikit-learn",
                "tfp-vae",
            )
        },
        "cpu_model": cpu_model(),
        "cpu": cpu_identity(),
        "cpu_count": os.cpu_count(),
        "device": device,
        **fields,
        # where this run's compiled programs persist (None: compiled afresh); timing.compile_s depends on it
        "compile_cache": directory_in_force(),
        "git": git_commit(),
    }
