"""tfp-vae beside a peer library, measured in the same run (`tox -e peers`, outside the default
envlist and CI): pythae's training pipeline and tfp-vae's training, the same MLP
(784-512-512-16, ReLU), batch 128, Adam at 1e-3, one epoch of Fashion-MNIST's training split.

pythae's figure is its whole `TrainingPipeline` call (data processing, the training epoch, its
evaluation pass over the validation split, saving the model) over the training images; tfp-vae's
are its steady training rate (compilation apart) and its whole training call (compilation and
the validation pass included), so the two ends of the comparison are both on the table. The
decoders match: pythae's VAE with an MSE reconstruction loss is a Gaussian of fixed variance,
tfp-vae's `fixed`. Benchmarks record times; they never assert them.
"""

from __future__ import annotations

import os
import tempfile
import time

import numpy as np
import pytest

from tfp_vae.backends import COMPILERS, get_backend, installed_backends
from tfp_vae.config import spec_from_dict
from tfp_vae.data import dataset_entry, load_pool, split_pool, store
from tfp_vae.decoders import DataContext
from tfp_vae.run import build_model
from tfp_vae.steps import EvalFunctions
from tfp_vae.train import make_group_epoch, train_group

HIDDEN, LATENT, BATCH, LR = (512, 512), 16, 128, 1e-3
#: What both sides train, written into each benchmark's extra_info: the report's caption is built from it.
SETUP = {
    "dataset": "fashion_mnist",
    "epochs": 1,
    "layers": [784, *HIDDEN, LATENT],
    "batch_size": BATCH,
    "optimizer": "Adam",
    "learning_rate": LR,
    "decoder": "fixed-variance Gaussian (tfp-vae's `fixed`, pythae's MSE loss)",
}

pytestmark = pytest.mark.skipif(
    store.locate(dataset_entry("fashion_mnist")) is None,
    reason="Fashion-MNIST is not present (apt-get install dataset-fashion-mnist)",
)


def _splits():
    pool, test, _ = load_pool("fashion_mnist")
    return split_pool(pool, test, 0.1)


def _pythae_model():
    torch = pytest.importorskip("torch")
    pytest.importorskip("pythae")
    from pythae.models import VAE, VAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder
    from torch import nn

    class Encoder(BaseEncoder):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(
                nn.Flatten(), nn.Linear(784, HIDDEN[0]), nn.ReLU(), nn.Linear(HIDDEN[0], HIDDEN[1]), nn.ReLU()
            )
            self.mu, self.log_var = nn.Linear(HIDDEN[1], LATENT), nn.Linear(HIDDEN[1], LATENT)

        def forward(self, x):
            h = self.body(x)
            return ModelOutput(embedding=self.mu(h), log_covariance=self.log_var(h))

    class Decoder(BaseDecoder):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(
                nn.Linear(LATENT, HIDDEN[1]),
                nn.ReLU(),
                nn.Linear(HIDDEN[1], HIDDEN[0]),
                nn.ReLU(),
                nn.Linear(HIDDEN[0], 784),
            )

        def forward(self, z):
            return ModelOutput(reconstruction=self.body(z).reshape(-1, 1, 28, 28))

    torch.manual_seed(0)
    config = VAEConfig(input_dim=(1, 28, 28), latent_dim=LATENT, reconstruction_loss="mse")
    return VAE(model_config=config, encoder=Encoder(), decoder=Decoder())


def test_peer_pythae_training_pipeline(benchmark):
    """pythae 0.1.2 (PyTorch, CPU): one epoch through its TrainingPipeline, evaluation included."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("pythae")
    import pythae
    from pythae.pipelines import TrainingPipeline
    from pythae.trainers import BaseTrainerConfig

    splits = _splits()
    to_torch = lambda x: x.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    train, val = to_torch(splits.train.images), to_torch(splits.validation.images)

    def once():
        with tempfile.TemporaryDirectory() as out:
            config = BaseTrainerConfig(
                output_dir=out,
                num_epochs=1,
                learning_rate=LR,
                no_cuda=True,
                per_device_train_batch_size=BATCH,
                per_device_eval_batch_size=BATCH,
            )
            TrainingPipeline(training_config=config, model=_pythae_model())(train_data=train, eval_data=val)

    benchmark.pedantic(once, rounds=3, iterations=1)
    median = benchmark.stats.stats.median
    benchmark.extra_info.update(
        {
            "peer": "pythae",
            "peer_version": pythae.__version__ if hasattr(pythae, "__version__") else "0.1.2",
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "examples_per_s": len(train) / median,
            "train_examples": len(train),
            "measures": "whole TrainingPipeline call, one epoch, evaluation included",
            "setup": SETUP,
        }
    )


@pytest.mark.parametrize("backend,compiler", [(b, c) for b in installed_backends() for c in COMPILERS[b]])
@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_peer_tfp_vae_training(benchmark, backend, compiler, precision):
    """tfp-vae, the same network and data: `fixed` on raw Fashion-MNIST, two epochs, so that the
    second gives the steady rate and the first (compilation and its validation pass included)
    the whole-epoch rate that stands beside pythae's one epoch; every compiler of the backend."""
    spec = spec_from_dict(
        {
            "dataset": "fashion_mnist",
            "decoder": "fixed-variance Gaussian (tfp-vae's `fixed`, pythae's MSE loss)",
            "backend": backend,
            "precision": precision,
            "network": {"hidden": list(HIDDEN), "latent": LATENT},
            "train": {
                "epochs": 2,
                "batch_size": BATCH,
                "learning_rate": LR,
                "patience": 0,
                "validation_fraction": 0.1,
                "compiler": compiler,
            },
        }
    )
    b = get_backend(backend)
    device = b.configure("cpu", False)
    entry = dataset_entry("fashion_mnist")
    data = DataContext(entry.levels, spec.scaling)
    splits = _splits()
    results = []

    def once():
        with b.device_scope(device):
            model = build_model(spec, entry.shape, data, b)
            evals = EvalFunctions(b, model, compiler, 10, 10, 1)
            t0 = time.perf_counter()
            epoch = make_group_epoch(b, model, spec, data, batched=False)
            _, result = train_group(b, model, [spec], splits, data, evals, epoch, log=lambda s: None)[0]
            results.append((result, time.perf_counter() - t0))

    benchmark.pedantic(once, rounds=3, iterations=1)
    steady = float(np.median([r.steady_examples / r.steady_s for r, _ in results]))
    # first epoch = compilation + one steady epoch + one validation pass (the two passes take
    # what the call took beyond its two epochs)
    first = [r.compile_s + r.steady_s + (s - r.compile_s - 2 * r.steady_s) / 2 for r, s in results]
    whole = float(np.median([len(splits.train) / f for f in first]))
    benchmark.extra_info.update(
        {
            "peer": "tfp-vae",
            "backend": backend,
            "compiler": compiler,
            "precision": precision,
            "examples_per_s": steady,
            "steady_examples_per_s": steady,
            "whole_train_examples_per_s": whole,
            "train_examples": len(splits.train),
            "threads": os.cpu_count(),
            "measures": "steady training rate (second epoch); whole_train: the first epoch with compilation and "
            "its validation pass",
            "setup": SETUP,
        }
    )
