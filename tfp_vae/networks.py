"""Encoder and decoder networks (MLP and small convolutional), as plain tf.Modules.

Weights are initialised from stateless seeds (Glorot uniform), so a run's initial
parameters depend on its seed alone. Layers are written out rather than taken from
Keras so that a later seed-batched variant can stack them along a leading axis.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import tensorflow as tf

from tfp_vae.config import NetworkSpec
from tfp_vae.seeds import derive_seed


def _glorot(shape: Sequence[int], fan_in: int, fan_out: int, seed: np.ndarray) -> tf.Tensor:
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return tf.random.stateless_uniform(shape, seed, -limit, limit, alg="philox")


class Dense(tf.Module):
    def __init__(self, n_in: int, n_out: int, seed: np.ndarray, name: str):
        super().__init__(name=name)
        self.w = tf.Variable(_glorot([n_in, n_out], n_in, n_out, seed), name="w")
        self.b = tf.Variable(tf.zeros([n_out]), name="b")

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        return tf.matmul(x, self.w) + self.b


class Conv(tf.Module):
    """3x3 convolution with stride 2 ('SAME'), or its transpose for upsampling."""

    def __init__(self, c_in: int, c_out: int, seed: np.ndarray, transpose: bool, name: str):
        super().__init__(name=name)
        self.transpose = transpose
        shape = [3, 3, c_out, c_in] if transpose else [3, 3, c_in, c_out]
        self.w = tf.Variable(_glorot(shape, 9 * c_in, 9 * c_out, seed), name="w")
        self.b = tf.Variable(tf.zeros([c_out]), name="b")
        self.c_out = c_out

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        if self.transpose:
            shape = tf.shape(x)
            out_shape = tf.stack([shape[0], 2 * shape[1], 2 * shape[2], self.c_out])
            y = tf.nn.conv2d_transpose(x, self.w, out_shape, strides=2, padding="SAME")
        else:
            y = tf.nn.conv2d(x, self.w, strides=2, padding="SAME")
        return y + self.b


class Encoder(tf.Module):
    """x (B, H, W, C) -> (mu, sigma) of q(z | x), each (B, latent)."""

    def __init__(self, spec: NetworkSpec, image_shape: tuple[int, int, int], seed: int):
        super().__init__(name="encoder")
        h, w, c = image_shape
        self.conv = []
        features = h * w * c
        if spec.kind == "conv":
            spec.check_shape(image_shape)
            chans = (c, *spec.conv_channels)
            self.conv = [Conv(a, b, derive_seed(seed, "enc_conv", i), False, f"conv{i}") for i, (a, b) in enumerate(zip(chans, chans[1:]))]
            down = 2 ** len(spec.conv_channels)
            features = (h // down) * (w // down) * spec.conv_channels[-1]
        widths = (features, *(spec.hidden if spec.kind == "mlp" else spec.hidden[:1]), 2 * spec.latent)
        self.dense = [Dense(a, b, derive_seed(seed, "enc_dense", i), f"dense{i}") for i, (a, b) in enumerate(zip(widths, widths[1:]))]
        self.latent = spec.latent

    def __call__(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        h = x
        for layer in self.conv:
            h = tf.nn.relu(layer(h))
        h = tf.reshape(h, [tf.shape(x)[0], -1])
        for layer in self.dense[:-1]:
            h = tf.nn.relu(layer(h))
        out = self.dense[-1](h)
        mu, pre_sigma = out[:, : self.latent], out[:, self.latent :]
        return mu, tf.math.softplus(pre_sigma) + 1e-6


class DecoderNet(tf.Module):
    """z (B, latent) -> raw decoder outputs (B, H, W, C, k)."""

    def __init__(self, spec: NetworkSpec, image_shape: tuple[int, int, int], outputs_per_pixel: int, seed: int):
        super().__init__(name="decoder")
        h, w, c = image_shape
        self.out_shape = (h, w, c, outputs_per_pixel)
        self.conv = []
        if spec.kind == "conv":
            spec.check_shape(image_shape)
            down = 2 ** len(spec.conv_channels)
            self.start = (h // down, w // down, spec.conv_channels[-1])
            dense_out = int(np.prod(self.start))
            chans = (*reversed(spec.conv_channels), c * outputs_per_pixel)
            self.conv = [Conv(a, b, derive_seed(seed, "dec_conv", i), True, f"deconv{i}") for i, (a, b) in enumerate(zip(chans, chans[1:]))]
            hidden = spec.hidden[:1]
        else:
            dense_out = h * w * c * outputs_per_pixel
            hidden = tuple(reversed(spec.hidden))
        widths = (spec.latent, *hidden, dense_out)
        self.dense = [Dense(a, b, derive_seed(seed, "dec_dense", i), f"dense{i}") for i, (a, b) in enumerate(zip(widths, widths[1:]))]

    def __call__(self, z: tf.Tensor) -> tf.Tensor:
        h = z
        for i, layer in enumerate(self.dense):
            h = layer(h)
            if i < len(self.dense) - 1 or self.conv:
                h = tf.nn.relu(h)
        if self.conv:
            h = tf.reshape(h, [-1, *self.start])
            for i, layer in enumerate(self.conv):
                h = layer(h)
                if i < len(self.conv) - 1:
                    h = tf.nn.relu(h)
        return tf.reshape(h, [-1, *self.out_shape])
