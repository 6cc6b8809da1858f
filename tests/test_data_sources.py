"""Readers on files the tests write, verified sources, and downloads from a real HTTP
server on 127.0.0.1 serving a good, a corrupted, a truncated and a stalling file."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import os
import pickle
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tfp_vae.data import dataset_entry, load_pool, readers, store
from tfp_vae.data.types import FileSpec
from tfp_vae.errors import DataError

N, H, W = 3, 7, 5


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def test_idx_reader_round_trips_images_and_labels(rng):
    images = rng.integers(0, 256, size=(N, H, W), dtype=np.uint8)
    labels = np.array([4, 0, 9], np.uint8)
    np.testing.assert_array_equal(readers.idx_images(idx_bytes(images), "x")[..., 0], images)
    assert readers.idx_images(idx_bytes(images), "x").shape == (N, H, W, 1)
    np.testing.assert_array_equal(readers.idx_labels(idx_bytes(labels), "y"), labels)


def test_idx_reader_rejects_truncated_and_wrong_magic(rng):
    payload = idx_bytes(rng.integers(0, 256, size=(N, H, W), dtype=np.uint8))
    with pytest.raises(DataError, match="IDX body has"):
        readers.idx_images(payload[:-4], "cut.idx")
    with pytest.raises(DataError, match="not an unsigned-byte IDX"):
        readers.idx_images(b"\x00\x00\x0d\x03" + payload[4:], "float.idx")


def test_cifar_reader_returns_hwc_images(rng):
    images = rng.integers(0, 256, size=(N, 32, 32, 3), dtype=np.uint8)
    batch = {b"data": images.transpose(0, 3, 1, 2).reshape(N, -1), b"labels": [3, 1, 2]}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        blob = pickle.dumps(batch)
        info = tarfile.TarInfo("cifar-10-batches-py/test_batch")
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))
    got, labels = readers.cifar_batches(buf.getvalue(), ["test_batch"], "c.tar.gz")
    np.testing.assert_array_equal(got, images)
    np.testing.assert_array_equal(labels, [3, 1, 2])
    with pytest.raises(DataError, match="member 'data_batch_1' missing"):
        readers.cifar_batches(buf.getvalue(), ["data_batch_1"], "c.tar.gz")


def test_mat_readers_for_svhn_and_frey(rng, tmp_path):
    from scipy.io import savemat

    x = rng.integers(0, 256, size=(32, 32, 3, N), dtype=np.uint8)
    savemat(tmp_path / "s.mat", {"X": x, "y": np.array([[10], [1], [5]])})
    images, labels = readers.svhn_mat((tmp_path / "s.mat").read_bytes(), "s.mat")
    assert images.shape == (N, 32, 32, 3)
    np.testing.assert_array_equal(images[1], x[..., 1])
    np.testing.assert_array_equal(labels, [0, 1, 5])  # SVHN writes digit 0 as 10
    faces = rng.integers(0, 256, size=(N, 28, 20), dtype=np.uint8)
    savemat(tmp_path / "f.mat", {"ff": faces.reshape(N, -1).T})
    np.testing.assert_array_equal(readers.frey_mat((tmp_path / "f.mat").read_bytes(), "f.mat")[..., 0], faces)


# ---- verification and sources -----------------------------------------------------


def _gz_spec(name: str, payload: bytes, url: str | None = None) -> tuple[FileSpec, bytes]:
    archive = gzip.compress(payload, mtime=0)
    return FileSpec(
        name, url, len(archive), hashlib.sha256(archive).hexdigest(), hashlib.sha256(payload).hexdigest()
    ), archive


def test_verify_uses_the_payload_so_a_recompressed_archive_passes(rng):
    payload = idx_bytes(rng.integers(0, 256, size=(N, H, W), dtype=np.uint8))
    spec, _ = _gz_spec("a.gz", payload)
    recompressed = gzip.compress(payload, compresslevel=1)  # another archive, same payload
    assert hashlib.sha256(recompressed).hexdigest() != spec.archive_sha256
    assert store.verify(recompressed, spec, "a.gz") == payload
    with pytest.raises(DataError, match="SHA-256 of the decompressed payload"):
        store.verify(gzip.compress(payload[:-1] + b"\x01"), spec, "a.gz")
    with pytest.raises(DataError, match="truncated or corrupt gzip"):
        store.verify(recompressed[: len(recompressed) // 2], spec, "a.gz")


def test_missing_data_set_names_every_place_and_the_debian_package(tmp_path, monkeypatch):
    monkeypatch.setenv("TFP_VAE_DATA_DIR", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    entry = dataset_entry("svhn")
    with pytest.raises(DataError) as info:
        load_pool("svhn")
    text = str(info.value)
    assert str(tmp_path / "mine" / "svhn") in text and str(tmp_path / "cache" / "tfp-vae" / "data" / "svhn") in text
    assert "tfp-vae data fetch svhn" in text and entry.install_hint in text
    assert "apt-get install dataset-fashion-mnist" in dataset_entry("fashion_mnist").install_hint


def test_a_corrupt_file_in_the_data_dir_is_rejected_not_used(tmp_path, monkeypatch):
    monkeypatch.setenv("TFP_VAE_DATA_DIR", str(tmp_path))
    target = tmp_path / "mnist"
    target.mkdir()
    for spec in dataset_entry("mnist").files:
        (target / spec.name).write_bytes(gzip.compress(b"not mnist"))
    with pytest.raises(DataError, match="SHA-256 of the file is .* expected 440fcabf"):
        load_pool("mnist")


# ---- downloads from a real local HTTP server ---------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}

    def do_GET(self):
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path.endswith("truncated.gz"):
            self.wfile.write(body[: len(body) // 2])  # announces all, sends half, closes
            return
        if self.path.endswith("stall.gz"):
            self.wfile.write(body[:100])
            self.wfile.flush()
            time.sleep(3)  # longer than the client's timeout
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _Handler.files
    httpd.shutdown()
    httpd.server_close()


def _served(files, path, payload):
    spec, archive = _gz_spec(Path(path).name, payload)
    files[path] = archive
    return spec


def test_download_of_a_good_file_lands_verified_in_the_cache(server, tmp_path, rng):
    base, files = server
    payload = idx_bytes(rng.integers(0, 256, size=(N, H, W), dtype=np.uint8))
    spec = _served(files, "/good.gz", payload)
    dest = store.download(base + "/good.gz", tmp_path / "cache" / "good.gz", spec, timeout=5)
    assert dest.read_bytes() == files["/good.gz"]
    assert sorted(p.name for p in dest.parent.iterdir()) == ["good.gz"]


@pytest.mark.parametrize(
    "path,message",
    [
        ("/corrupt.gz", "SHA-256"),
        ("/truncated.gz", "failed|ended after|truncated"),
        ("/stall.gz", "failed"),
        ("/absent.gz", "404"),
    ],
)
def test_a_bad_download_leaves_nothing_in_the_cache(server, tmp_path, rng, path, message):
    base, files = server
    payload = idx_bytes(rng.integers(0, 256, size=(N, H, W), dtype=np.uint8))
    spec = _served(files, path, payload)
    if path == "/corrupt.gz":
        files[path] = gzip.compress(payload[:-1] + b"\x07")
    if path == "/absent.gz":
        del files[path]
    cache = tmp_path / "cache"
    started = time.perf_counter()
    with pytest.raises(DataError, match=message):
        store.download(base + path, cache / Path(path).name, spec, timeout=1.0)
    assert time.perf_counter() - started < 10  # a stall is bounded by the timeout
    assert list(cache.iterdir()) == []  # no partial or unverified file


def test_fetch_through_a_mirror_then_load_from_the_cache(server, tmp_path, monkeypatch, rng):
    """The whole chain with the real mnist entry: the mirror serves files whose archive
    checksums cannot match the published ones, so fetch must refuse them."""
    base, files = server
    for spec in dataset_entry("mnist").files:
        files[f"/mnist/{spec.name}"] = gzip.compress(b"fake")
    monkeypatch.setenv("TFP_VAE_MIRROR", base)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("TFP_VAE_DATA_DIR", raising=False)
    with pytest.raises(DataError, match="SHA-256"):
        load_pool("mnist")
    assert list((tmp_path / "cache" / "tfp-vae" / "data" / "mnist").iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere, so permissions cannot be tested")
def test_an_unwritable_cache_says_so(tmp_path, server):
    base, files = server
    spec = _served(files, "/good.gz", b"x" * 10)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(DataError, match="cannot write to .* TFP_VAE_DATA_DIR"):
        store.download(base + "/good.gz", locked / "sub" / "good.gz", spec)


def test_an_unwritable_cache_path_says_so_even_as_root(tmp_path, server):
    base, files = server
    spec = _served(files, "/good.gz", b"x" * 10)
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the cache directory should be")
    with pytest.raises(DataError, match="cannot write to .* TFP_VAE_DATA_DIR"):
        store.download(base + "/good.gz", blocker / "good.gz", spec)
