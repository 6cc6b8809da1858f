"""Data set registry, deterministic splits and the two scalings (DESIGN.md section 3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from tfp_vae.errors import ConfigError

#: Splits never depend on the run's seed, so every seed sees the same test set.
SPLIT_SEED = 20140101


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
class DatasetEntry:
    """A registered data set: shape, grey levels and a loader of (train pool, test)."""

    name: str
    shape: tuple[int, int, int]
    levels: int
    description: str
    load: Callable[[], tuple[ImageData, ImageData]]


def _load_digits() -> tuple[ImageData, ImageData]:
    """scikit-learn's bundled digits: 1,797 8x8 images, 17 grey levels; 20 % held out as test."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.uint8)[..., None]
    pool = ImageData(images, bunch.target.astype(np.int64))
    order = np.random.default_rng(SPLIT_SEED).permutation(len(pool))
    n_test = round(0.2 * len(pool))
    return pool.take(np.sort(order[n_test:])), pool.take(np.sort(order[:n_test]))


DATASETS: dict[str, DatasetEntry] = {
    "digits": DatasetEntry("digits", (8, 8, 1), 17, "scikit-learn load_digits (embedded default)", _load_digits),
}


def dataset_entry(name: str) -> DatasetEntry:
    """Look up a data set; an unknown name lists the known ones."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ConfigError(f"unknown data set {name!r}; known data sets: {', '.join(DATASETS)}") from None


def load_splits(name: str, validation_fraction: float) -> Splits:
    """Deterministic train / validation / test splits; validation is carved from train."""
    train_pool, test = dataset_entry(name).load()
    order = np.random.default_rng(SPLIT_SEED + 1).permutation(len(train_pool))
    n_val = max(1, round(validation_fraction * len(train_pool)))
    return Splits(train_pool.take(np.sort(order[n_val:])), train_pool.take(np.sort(order[:n_val])), test)
