"""The embedded default data set and its deterministic, disjoint splits."""

from __future__ import annotations

import numpy as np

from tfp_vae.data import load_splits


def test_digits_splits_are_deterministic_disjoint_and_complete():
    a, b = load_splits("digits", 0.1), load_splits("digits", 0.1)
    for part in ("train", "validation", "test"):
        np.testing.assert_array_equal(getattr(a, part).images, getattr(b, part).images)
    sizes = [len(a.train), len(a.validation), len(a.test)]
    assert sum(sizes) == 1797 and sizes[2] == 359 and sizes[1] == 144
    assert a.train.images.dtype == np.uint8 and a.train.images.shape[1:] == (8, 8, 1)
    assert a.train.images.max() == 16  # 17 grey levels
    rows = {p: {img.tobytes() + bytes([lab]) for img, lab in zip(s.images, s.labels)}
            for p, s in (("train", a.train), ("val", a.validation), ("test", a.test))}
    # digits holds a few exact duplicates; disjointness is checked on positions via counts
    assert len(rows["train"] | rows["val"] | rows["test"]) >= 1797 - 10
