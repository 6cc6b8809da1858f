"""Where tfp-vae keeps files of its own and how it writes them: one cache directory, and writes
that leave either the old file or the whole new one, never a part (a killed process, a full disk)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

#: The directory name under $XDG_CACHE_HOME (~/.cache): data sets, compiled programs, checkpoints.
CACHE_NAME = "tfp-vae"


def cache_dir(*parts: str) -> Path:
    """$XDG_CACHE_HOME/tfp-vae/<parts>, ~/.cache/tfp-vae/<parts> where XDG_CACHE_HOME is not set."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", CACHE_NAME, *parts)


def write_atomic(path: str | Path, content: str | bytes, mode: int = 0o644) -> Path:
    """Write `content` to `path` through a temporary file in the same directory, fsynced, then
    renamed over it; the directory is created if needed and the temporary file removed on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.chmod(tmp, mode)  # mkstemp creates 0600; results are meant to be shared
        with os.fdopen(fd, "wb") as fh:
            fh.write(content.encode() if isinstance(content, str) else content)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def check_writable(directory: Path) -> None:
    """Create `directory` if needed and write and remove a probe file in it; raises OSError if it cannot."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=directory)
    os.close(fd)
    os.unlink(probe)
