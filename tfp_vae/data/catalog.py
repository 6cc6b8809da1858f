"""The data sets tfp-vae knows: shapes, grey levels, files and their checksums.

Archive sizes and SHA-256 of the canonical downloads are those published in the
tensorflow-datasets wheel (url_checksums/*.txt) and, for CIFAR-10's python
tarball, in Keras' loader. Fashion-MNIST's payload checksums were computed from
the decompressed IDX files (identical for Debian's re-packed archives).
"""

from __future__ import annotations

import numpy as np

import tfp_vae.data.readers as readers
from tfp_vae.data.types import DatasetEntry, FileSpec, ImageData

SPLIT_SEED = 20140101  # splits never depend on the run's seed


def _digits(_: dict[str, bytes]) -> tuple[ImageData, ImageData]:
    """scikit-learn's bundled digits: 1,797 8x8 images, 17 grey levels; 20 % held out as test."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pool = ImageData(bunch.images.astype(np.uint8)[..., None], bunch.target.astype(np.int64))
    order = np.random.default_rng(SPLIT_SEED).permutation(len(pool))
    n_test = round(0.2 * len(pool))
    return pool.take(np.sort(order[n_test:])), pool.take(np.sort(order[:n_test]))


def _idx_loader(prefix: str):
    def load(payloads: dict[str, bytes]) -> tuple[ImageData, ImageData]:
        parts = []
        for split in ("train", "t10k"):
            img_name, lab_name = f"{split}-images-idx3-ubyte.gz", f"{split}-labels-idx1-ubyte.gz"
            images = readers.idx_images(payloads[img_name], f"{prefix}/{img_name}")
            labels = readers.idx_labels(payloads[lab_name], f"{prefix}/{lab_name}")
            parts.append(ImageData(images, labels))
        return parts[0], parts[1]

    return load


def _idx_files(base: str, checksums: dict[str, tuple[int, str, str | None]]) -> tuple[FileSpec, ...]:
    return tuple(
        FileSpec(name, f"{base}/{name}", size, sha, payload) for name, (size, sha, payload) in checksums.items()
    )


def _cifar10(payloads: dict[str, bytes]) -> tuple[ImageData, ImageData]:
    archive = payloads["cifar-10-python.tar.gz"]
    train = readers.cifar_batches(archive, [f"data_batch_{i}" for i in range(1, 6)], "cifar-10-python.tar.gz")
    test = readers.cifar_batches(archive, ["test_batch"], "cifar-10-python.tar.gz")
    return ImageData(*train), ImageData(*test)


def _svhn(payloads: dict[str, bytes]) -> tuple[ImageData, ImageData]:
    return (
        ImageData(*readers.svhn_mat(payloads["train_32x32.mat"], "train_32x32.mat")),
        ImageData(*readers.svhn_mat(payloads["test_32x32.mat"], "test_32x32.mat")),
    )


def _frey(payloads: dict[str, bytes]) -> tuple[ImageData, ImageData]:
    images = readers.frey_mat(payloads["frey_rawface.mat"], "frey_rawface.mat")
    pool = ImageData(images, np.zeros(len(images), np.int64))
    order = np.random.default_rng(SPLIT_SEED).permutation(len(pool))
    n_test = round(0.1 * len(pool))
    return pool.take(np.sort(order[n_test:])), pool.take(np.sort(order[:n_test]))


FASHION_MNIST_FILES = _idx_files(
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com",
    {
        "train-images-idx3-ubyte.gz": (
            26421880,
            "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        ),
        "train-labels-idx1-ubyte.gz": (
            29515,
            "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        ),
        "t10k-images-idx3-ubyte.gz": (
            4422102,
            "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        ),
        "t10k-labels-idx1-ubyte.gz": (
            5148,
            "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        ),
    },
)

# MNIST payload checksums are not known here (no copy on this machine): archives are verified.
MNIST_FILES = _idx_files(
    "https://storage.googleapis.com/cvdf-datasets/mnist",
    {
        "train-images-idx3-ubyte.gz": (
            9912422,
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            None,
        ),
        "train-labels-idx1-ubyte.gz": (28881, "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", None),
        "t10k-images-idx3-ubyte.gz": (
            1648877,
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            None,
        ),
        "t10k-labels-idx1-ubyte.gz": (4542, "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", None),
    },
)

DATASETS: dict[str, DatasetEntry] = {
    e.name: e
    for e in (
        DatasetEntry(
            "digits",
            (8, 8, 1),
            17,
            "scikit-learn load_digits (embedded default, always present)",
            _digits,
            sizes=(1438, 359),
            embedded=True,
        ),
        DatasetEntry(
            "fashion_mnist",
            (28, 28, 1),
            256,
            "Fashion-MNIST (Xiao et al. 2017), IDX",
            _idx_loader("fashion_mnist"),
            FASHION_MNIST_FILES,
            ("/usr/share/datasets/fashion-mnist",),
            (60000, 10000),
            "on Debian: apt-get install dataset-fashion-mnist",
        ),
        DatasetEntry(
            "mnist",
            (28, 28, 1),
            256,
            "MNIST (LeCun et al. 1998), IDX",
            _idx_loader("mnist"),
            MNIST_FILES,
            sizes=(60000, 10000),
        ),
        DatasetEntry(
            "cifar10",
            (32, 32, 3),
            256,
            "CIFAR-10 python pickle tarball",
            _cifar10,
            (
                FileSpec(
                    "cifar-10-python.tar.gz",
                    "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                    170498071,
                    "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
                ),
            ),
            sizes=(50000, 10000),
        ),
        # No published SHA-256 is available offline for these: they load from a data or
        # cache directory the user fills, and are never downloaded unverified.
        DatasetEntry(
            "svhn",
            (32, 32, 3),
            256,
            "SVHN cropped digits (.mat)",
            _svhn,
            (FileSpec("train_32x32.mat", None), FileSpec("test_32x32.mat", None)),
            sizes=(73257, 26032),
            install_hint="place train_32x32.mat and test_32x32.mat from the SVHN site in $TFP_VAE_DATA_DIR/svhn/",
        ),
        DatasetEntry(
            "frey_faces",
            (28, 20, 1),
            256,
            "Frey faces (.mat), 10 % held out as test",
            _frey,
            (FileSpec("frey_rawface.mat", None),),
            sizes=(1770, 195),
            install_hint="place frey_rawface.mat in $TFP_VAE_DATA_DIR/frey_faces/",
        ),
    )
}
