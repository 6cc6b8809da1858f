"""Plain data types of the data layer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class ImageData:
    """uint8 images (N, H, W, C) in {0..levels-1}, with integer labels."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.images)

    def take(self, index: np.ndarray) -> "ImageData":
        return ImageData(self.images[index], self.labels[index])


@dataclass(frozen=True)
class Splits:
    train: ImageData
    validation: ImageData
    test: ImageData


@dataclass(frozen=True)
class FileSpec:
    """One file of a data set: canonical address, archive size and SHA-256, and the
    SHA-256 of its decompressed payload (for single-file .gz; Debian's re-packed
    archives differ as archives but not as payload)."""

    name: str
    url: str | None
    size: int | None = None
    archive_sha256: str | None = None
    payload_sha256: str | None = None

    @property
    def gzipped(self) -> bool:
        return self.name.endswith(".gz") and not self.name.endswith(".tar.gz")


#: A loader gets the verified payloads by file name and returns (train pool, test).
Loader = Callable[[dict[str, bytes]], tuple[ImageData, ImageData]]


@dataclass(frozen=True)
class DatasetEntry:
    """A registered data set: shape, grey levels, files, where a system package puts them."""

    name: str
    shape: tuple[int, int, int]
    levels: int
    description: str
    load: Loader
    files: tuple[FileSpec, ...] = ()
    system_dirs: tuple[str, ...] = ()
    sizes: tuple[int, int] = (0, 0)  # (train pool, test)
    install_hint: str = ""
    embedded: bool = field(default=False)
