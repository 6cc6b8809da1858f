"""Deterministic, disjoint splits; dequantized values in their own bins; Fashion-MNIST."""

from __future__ import annotations

import numpy as np
import pytest

from tfp_vae.data import dataset_entry, load_pool, split_pool, store
from tfp_vae.data.types import ImageData
from tfp_vae.model import scale_images


def test_splits_are_deterministic_disjoint_and_complete():
    n = 101
    pool = ImageData(np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1), np.arange(n))
    test = ImageData(np.zeros((7, 1, 1, 1), np.uint8), np.zeros(7, np.int64))
    a, b = split_pool(pool, test, 0.2), split_pool(pool, test, 0.2)
    np.testing.assert_array_equal(a.validation.labels, b.validation.labels)
    assert len(a.validation) == 20 and len(a.train) == 81
    assert set(a.train.labels).isdisjoint(a.validation.labels)
    assert sorted([*a.train.labels, *a.validation.labels]) == list(range(n))


def test_digits_splits_have_the_declared_sizes():
    s = split_pool(*load_pool("digits")[:2], 0.1)
    assert (len(s.train), len(s.validation), len(s.test)) == (1294, 144, 359)
    assert s.train.images.dtype == np.uint8 and s.train.images.max() == 16


@pytest.mark.parametrize("levels", [17, 256])
def test_dequantized_values_fall_in_their_own_bins(backend, rng, levels):
    x = backend.asarray(rng.integers(0, levels, size=(3, 7, 5, 2)).astype(np.float32))

    def scaled(scaling, seed):
        return np.asarray(scale_images(backend.xp, x, scaling, levels, backend.asarray(np.array(seed, np.int32))))

    y = scaled("dequantized", [1, 2])
    assert np.all(np.floor(y * levels) == np.asarray(x))
    np.testing.assert_array_equal(y, scaled("dequantized", [1, 2]))  # fixed for a fixed seed
    assert not np.array_equal(y, scaled("dequantized", [1, 3]))  # fresh for another seed
    np.testing.assert_allclose(scaled("raw", [1, 2]), np.asarray(x) / (levels - 1), rtol=1e-6)


def test_fashion_mnist_from_the_system_package():
    entry = dataset_entry("fashion_mnist")
    loc = store.locate(entry)
    if loc is None:
        pytest.skip("Fashion-MNIST is not present: on Debian, apt-get install dataset-fashion-mnist (.ci/run does)")
    s = split_pool(*load_pool("fashion_mnist")[:2], 0.1)
    assert len(s.train) + len(s.validation) == 60000 and len(s.test) == 10000
    assert s.test.images.shape[1:] == (28, 28, 1) and s.test.images.dtype == np.uint8
    pool = np.concatenate([s.train.labels, s.validation.labels])
    np.testing.assert_array_equal(np.bincount(pool), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(s.test.labels), [1000] * 10)
