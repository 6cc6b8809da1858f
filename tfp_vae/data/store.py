"""Where data set files come from, tried in order (README, Data):

1. an explicit directory (`TFP_VAE_DATA_DIR` or `--data-dir`), as DIR/<name>/<file>;
2. the cache, $XDG_CACHE_HOME/tfp-vae/data/<name>/ (default ~/.cache/tfp-vae/data/<name>/);
3. system packages (Debian's dataset-fashion-mnist: /usr/share/datasets/fashion-mnist/);
4. a download from the canonical address (or `TFP_VAE_MIRROR`/<name>/<file>),
   verified by SHA-256 before it is moved into the cache atomically.

Every file is verified before use: a single-file .gz by the SHA-256 of its
decompressed payload where known, otherwise by the archive's SHA-256.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

from tfp_vae.data.types import DatasetEntry, FileSpec
from tfp_vae.errors import DataError
from tfp_vae.files import cache_dir

DOWNLOAD_TIMEOUT_S = 60.0
CHUNK = 1 << 20


def data_dir() -> Path | None:
    value = os.environ.get("TFP_VAE_DATA_DIR")
    return Path(value).expanduser() if value else None


def cache_root() -> Path:
    """Where downloaded data sets are kept: files.cache_dir("data")."""
    return cache_dir("data")


@dataclass(frozen=True)
class Location:
    source: str  # "data dir", "cache", "system" or "embedded"
    directory: Path | None


def candidates(entry: DatasetEntry) -> list[Location]:
    """Directories to look in, in order."""
    found = []
    if (d := data_dir()) is not None:
        found.append(Location("data dir", d / entry.name))
    found.append(Location("cache", cache_root() / entry.name))
    found.extend(Location("system", Path(p)) for p in entry.system_dirs)
    return found


def locate(entry: DatasetEntry) -> Location | None:
    """The first location holding every file of the data set, or None."""
    if entry.embedded:
        return Location("embedded", None)
    for loc in candidates(entry):
        if all((loc.directory / f.name).is_file() for f in entry.files):
            return loc
    return None


def verify(raw: bytes, spec: FileSpec, where: str) -> bytes:
    """Return the payload (decompressed for .gz) if its checksum matches; else raise DataError."""
    payload = raw
    if spec.gzipped:
        try:
            payload = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{where}: truncated or corrupt gzip file ({exc}); delete it and fetch again") from None
    if spec.payload_sha256 is not None:
        got, expected, what = hashlib.sha256(payload).hexdigest(), spec.payload_sha256, "decompressed payload"
    elif spec.archive_sha256 is not None:
        got, expected, what = hashlib.sha256(raw).hexdigest(), spec.archive_sha256, "file"
    else:
        return payload  # no published checksum: such files only come from the user's own directories
    if got != expected:
        raise DataError(
            f"{where}: SHA-256 of the {what} is {got}, expected {expected}; the file is corrupt or "
            f"not the published one, and was not used"
        )
    return payload


def read_verified(entry: DatasetEntry, loc: Location) -> dict[str, bytes]:
    return {f.name: verify((loc.directory / f.name).read_bytes(), f, str(loc.directory / f.name)) for f in entry.files}


def _progress(name: str, done: int, total: int | None, started: float) -> None:
    rate = done / max(time.perf_counter() - started, 1e-9) / 2**20
    size = f"{done / 2**20:.1f}/{total / 2**20:.1f} MiB" if total else f"{done / 2**20:.1f} MiB"
    print(f"\r  downloading {name}: {size} at {rate:.1f} MiB/s", end="", file=sys.stderr, flush=True)


def download(url: str, dest: Path, spec: FileSpec, timeout: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """Download `url` to `dest`: a temporary file beside it, verified, then renamed.

    Any failure (HTTP error, stall past `timeout`, checksum, Ctrl-C) removes the
    temporary file, so the cache never holds a partial or unverified file.
    """
    if spec.archive_sha256 is None and spec.payload_sha256 is None:
        raise DataError(
            f"{spec.name}: no published checksum is known, so it is never downloaded; place it in a data directory"
        )
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    except OSError as exc:
        raise DataError(
            f"cannot write to {dest.parent} ({exc.strerror}); set TFP_VAE_DATA_DIR or XDG_CACHE_HOME "
            f"to a writable directory"
        ) from None
    tmp = Path(tmp_name)
    try:
        started = time.perf_counter()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            done = 0
            while chunk := response.read(CHUNK):
                out.write(chunk)
                done += len(chunk)
                _progress(spec.name, done, total, started)
            out.flush()
            os.fsync(out.fileno())
        print(file=sys.stderr)
        if total is not None and done != total:
            raise DataError(f"{url}: download ended after {done} of {total} bytes")
        verify(tmp.read_bytes(), spec, url)
        os.replace(tmp, dest)
        return dest
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
        reason = exc if isinstance(exc, urllib.error.HTTPError) else getattr(exc, "reason", exc)
        raise DataError(f"download of {url} failed: {reason}") from None
    finally:
        tmp.unlink(missing_ok=True)


def file_url(entry: DatasetEntry, spec: FileSpec) -> str | None:
    mirror = os.environ.get("TFP_VAE_MIRROR")
    if mirror:
        return f"{mirror.rstrip('/')}/{entry.name}/{spec.name}"
    return spec.url


def fetch(entry: DatasetEntry) -> Location:
    """Make the data set present: find it, or download every missing file into the cache."""
    loc = locate(entry)
    if loc is not None:
        return loc
    cache = Location("cache", cache_root() / entry.name)
    for spec in entry.files:
        target = cache.directory / spec.name
        if target.is_file():
            continue
        url = file_url(entry, spec)
        if url is None or (spec.archive_sha256 is None and spec.payload_sha256 is None):
            raise missing(entry, "it has no verifiable download")
        download(url, target, spec)
    return cache


def missing(entry: DatasetEntry, why: str) -> DataError:
    looked = "\n".join(f"  - {loc.source}: {loc.directory}" for loc in candidates(entry))
    hint = f"\n{entry.install_hint}" if entry.install_hint else ""
    return DataError(
        f"data set {entry.name!r} is not present ({why}). Looked in:\n{looked}\n"
        f"Get it with `tfp-vae data fetch {entry.name}`, or put its files "
        f"({', '.join(f.name for f in entry.files)}) in $TFP_VAE_DATA_DIR/{entry.name}/.{hint}"
    )
