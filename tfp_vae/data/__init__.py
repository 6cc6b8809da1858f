"""Data set registry, deterministic splits and sources (docs/definitions.md, Data and scalings)."""

from __future__ import annotations

import numpy as np

from tfp_vae.data import store
from tfp_vae.data.catalog import DATASETS, SPLIT_SEED
from tfp_vae.data.types import DatasetEntry, FileSpec, ImageData, Splits
from tfp_vae.errors import ConfigError, DataError, unknown_name


def dataset_entry(name: str) -> DatasetEntry:
    """Look up a data set; an unknown name lists the known ones."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ConfigError(unknown_name("data set", name, list(DATASETS))) from None


def load_pool(name: str, download: bool = True) -> tuple[ImageData, ImageData, store.Location]:
    """(train pool, test, where it came from), every file verified before use."""
    entry = dataset_entry(name)
    loc = store.locate(entry)
    if loc is None:
        if not download:
            raise store.missing(entry, "not found locally")
        try:
            loc = store.fetch(entry)
        except DataError as exc:
            raise store.missing(entry, str(exc)) from None
    payloads = {} if entry.embedded else store.read_verified(entry, loc)
    train, test = entry.load(payloads)
    for part, data in (("train", train), ("test", test)):
        if data.images.shape[1:] != entry.shape:
            raise DataError(f"{name}: {part} images have shape {data.images.shape[1:]}, expected {entry.shape}")
    return train, test, loc


def split_pool(train_pool: ImageData, test: ImageData, validation_fraction: float) -> Splits:
    """Carve the validation split from the training pool, deterministically (never from test)."""
    order = np.random.default_rng(SPLIT_SEED + 1).permutation(len(train_pool))
    n_val = max(1, round(validation_fraction * len(train_pool)))
    return Splits(train_pool.take(np.sort(order[n_val:])), train_pool.take(np.sort(order[:n_val])), test)


__all__ = [
    "DATASETS",
    "DatasetEntry",
    "FileSpec",
    "ImageData",
    "Splits",
    "dataset_entry",
    "load_pool",
    "split_pool",
]
