"""Readers of the on-disk formats: IDX (MNIST family), CIFAR python pickles, .mat files.

Every reader returns uint8 images (N, H, W, C) and int64 labels, and rejects bytes
that do not have the declared layout with a DataError naming the file.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

from tfp_vae.errors import DataError

IDX_UBYTE = 0x08


def read_idx(payload: bytes, where: str) -> np.ndarray:
    """Parse an IDX file's (decompressed) bytes: magic 0x0000 08 NDIM, big-endian int32 dims, uint8 data."""
    if len(payload) < 4 or payload[0] != 0 or payload[1] != 0 or payload[2] != IDX_UBYTE:
        raise DataError(f"{where}: not an unsigned-byte IDX file (magic {payload[:4].hex() or 'missing'})")
    ndim = payload[3]
    header = 4 + 4 * ndim
    if len(payload) < header:
        raise DataError(f"{where}: IDX header truncated")
    dims = tuple(int(d) for d in np.frombuffer(payload[4:header], dtype=">i4"))
    expected = int(np.prod(dims))
    if len(payload) - header != expected:
        raise DataError(f"{where}: IDX body has {len(payload) - header} bytes, dims {dims} need {expected}")
    return np.frombuffer(payload, dtype=np.uint8, offset=header).reshape(dims)


def idx_images(payload: bytes, where: str) -> np.ndarray:
    images = read_idx(payload, where)
    if images.ndim != 3:
        raise DataError(f"{where}: expected images (N, H, W), got shape {images.shape}")
    return images[..., None]


def idx_labels(payload: bytes, where: str) -> np.ndarray:
    labels = read_idx(payload, where)
    if labels.ndim != 1:
        raise DataError(f"{where}: expected labels (N,), got shape {labels.shape}")
    return labels.astype(np.int64)


def cifar_batches(archive: bytes, members: list[str], where: str) -> tuple[np.ndarray, np.ndarray]:
    """Read CIFAR-10 python pickles (`data` (N, 3072) uint8 rows CHW, `labels`) from the tarball."""
    images, labels = [], []
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
            names = {Path(m.name).name: m for m in tar.getmembers()}
            for member in members:
                if member not in names:
                    raise DataError(f"{where}: member {member!r} missing from the archive")
                batch = pickle.load(tar.extractfile(names[member]), encoding="bytes")
                data = np.asarray(batch[b"data"], dtype=np.uint8)
                images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
                labels.append(np.asarray(batch[b"labels"], dtype=np.int64))
    except (tarfile.TarError, pickle.UnpicklingError, KeyError, EOFError, ValueError) as exc:
        raise DataError(f"{where}: cannot read CIFAR batches: {exc}") from None
    return np.concatenate(images), np.concatenate(labels)


def svhn_mat(payload: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """SVHN cropped digits: X (32, 32, 3, N) uint8, y (N, 1) with label 10 meaning digit 0."""
    mat = _loadmat(payload, where)
    images = np.ascontiguousarray(np.transpose(mat["X"], (3, 0, 1, 2)).astype(np.uint8))
    labels = mat["y"].reshape(-1).astype(np.int64) % 10
    return images, labels


def frey_mat(payload: bytes, where: str) -> np.ndarray:
    """Frey faces: ff (560, N) uint8, each column a 28x20 image in row-major order."""
    ff = _loadmat(payload, where)["ff"]
    return np.ascontiguousarray(ff.T.reshape(-1, 28, 20, 1).astype(np.uint8))


def _loadmat(payload: bytes, where: str) -> dict:
    from scipy.io import loadmat

    try:
        return loadmat(io.BytesIO(payload))
    except (ValueError, TypeError, OSError) as exc:
        raise DataError(f"{where}: cannot read .mat file: {exc}") from None
