"""Encoder and decoder networks (MLP and small convolutional) as pure functions.

`Architecture.init(seed)` draws the parameters, a pytree of NumPy float32 arrays
(Glorot uniform from the run's seed, so both backends start from the same weights);
`encode` and `decode` apply them with the backend's array namespace `xp`. Layers are
written out rather than taken from a framework so the same code runs on every backend.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from tfp_vae.config import NetworkSpec
from tfp_vae.seeds import numpy_rng

Params = dict[str, Any]


def _glorot(shape: tuple[int, ...], fan_in: int, fan_out: int, seed: int, *path: object) -> np.ndarray:
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return numpy_rng(seed, *path).uniform(-limit, limit, size=shape).astype(np.float32)


def _dense(n_in: int, n_out: int, seed: int, *path: object) -> Params:
    return {"w": _glorot((n_in, n_out), n_in, n_out, seed, *path), "b": np.zeros(n_out, np.float32)}


def _conv(c_in: int, c_out: int, seed: int, transpose: bool, *path: object) -> Params:
    shape = (3, 3, c_out, c_in) if transpose else (3, 3, c_in, c_out)
    return {"w": _glorot(shape, 9 * c_in, 9 * c_out, seed, *path), "b": np.zeros(c_out, np.float32)}


@dataclass(frozen=True)
class Architecture:
    """The static shape of a VAE's networks; parameters live in the pytree, not here."""

    spec: NetworkSpec
    image_shape: tuple[int, int, int]
    outputs_per_pixel: int
    precision: str = "float32"
    #: Outputs of a pixel after the first whose head sees the decoder's features through a stop-gradient
    #: (the faithful decoder): their loss then trains their own head and nothing upstream.
    detach_heads: bool = False

    def _act(self, xp, h):
        """The hidden layers' nonlinearity (network.activation)."""
        return getattr(xp, self.spec.activation)(h)

    def _dense(self, xp, h, layer: Params):
        """h @ w + b; under bfloat16 the matmul's inputs are bfloat16, its result and the bias float32."""
        matmul = xp.matmul_bf16 if self.precision == "bfloat16" else xp.matmul
        return matmul(h, layer["w"]) + layer["b"]

    @property
    def _down(self) -> int:
        return 2 ** len(self.spec.conv_channels)

    @property
    def _conv_start(self) -> tuple[int, int, int]:
        h, w, _ = self.image_shape
        return h // self._down, w // self._down, self.spec.conv_channels[-1]

    def init(self, seed: int) -> Params:
        """{"encoder": {"conv": [...], "dense": [...]}, "decoder": {...}} drawn from `seed`."""
        spec, (h, w, c), k = self.spec, self.image_shape, self.outputs_per_pixel
        enc: Params = {"conv": [], "dense": []}
        dec: Params = {"conv": [], "dense": []}
        if spec.kind == "conv":
            spec.check_shape(self.image_shape)
            chans = (c, *spec.conv_channels)
            enc["conv"] = [_conv(a, b, seed, False, "enc_conv", i) for i, (a, b) in enumerate(zip(chans, chans[1:]))]
            features, hidden_enc = int(np.prod(self._conv_start)), spec.hidden[:1]
            back = (*reversed(spec.conv_channels), c * k)
            dec["conv"] = [_conv(a, b, seed, True, "dec_conv", i) for i, (a, b) in enumerate(zip(back, back[1:]))]
            dense_out, hidden_dec = int(np.prod(self._conv_start)), spec.hidden[:1]
            widths, dec_widths = (features, *hidden_enc, 2 * spec.latent), (spec.latent, *hidden_dec, dense_out)
        else:
            widths, dec_widths = spec.mlp_widths(h * w * c, k)
        enc["dense"] = [_dense(a, b, seed, "enc_dense", i) for i, (a, b) in enumerate(zip(widths, widths[1:]))]
        if spec.split_decoder:  # one MLP per output of a pixel, each drawn from its own stream
            widths = spec.mlp_widths(h * w * c, 1)[1]
            towers = [
                [_dense(a, b, seed, "dec_tower", j, i) for i, (a, b) in enumerate(zip(widths, widths[1:]))]
                for j in range(k)
            ]
            return {"encoder": enc, "decoder": {"towers": towers}}
        dec["dense"] = [_dense(a, b, seed, "dec_dense", i) for i, (a, b) in enumerate(zip(dec_widths, dec_widths[1:]))]
        if spec.kind != "conv":
            dec["dense"][-1] = self._outputs_major(dec["dense"][-1])
        return {"encoder": enc, "decoder": dec}

    def _outputs_major(self, layer: Params) -> Params:
        """The MLP's last layer with its columns ordered output by output (all pixels' first outputs,
        then all their second), not pixel by pixel: decode's slices raw[..., j] then read contiguous
        memory. The weights are the ones drawn pixel by pixel, moved, so the function is the same."""
        k = self.outputs_per_pixel
        move = lambda a: np.ascontiguousarray(np.moveaxis(a.reshape(*a.shape[:-1], -1, k), -1, -2)).reshape(a.shape)
        return {"w": move(layer["w"]), "b": move(layer["b"])}

    def _detached_last(self, xp, h, layer: Params):
        """The MLP's last layer with its first output block (the mean) on the features h and the other
        blocks (outputs-major columns) on stop_gradient(h)."""
        pixels = int(np.prod(self.image_shape))
        head = {"w": layer["w"][:, :pixels], "b": layer["b"][:pixels]}
        rest = {"w": layer["w"][:, pixels:], "b": layer["b"][pixels:]}
        return xp.concat([self._dense(xp, h, head), self._dense(xp, xp.stop_gradient(h), rest)], -1)

    def _mlp(self, xp, layers: list[Params], h):
        """Dense layers with the activation between them, none after the last."""
        for layer in layers[:-1]:
            h = self._act(xp, self._dense(xp, h, layer))
        return self._dense(xp, h, layers[-1])

    def encode(self, xp, p: Params, x) -> tuple[Any, Any]:
        """x (B, H, W, C) -> (mu, sigma) of q(z | x), each (B, latent)."""
        h = x
        for layer in p["conv"]:
            h = self._act(xp, xp.conv2d(h, layer["w"]) + layer["b"])
        h = xp.reshape(h, (x.shape[0], -1))
        for layer in p["dense"][:-1]:
            h = self._act(xp, self._dense(xp, h, layer))
        out = self._dense(xp, h, p["dense"][-1])
        latent = self.spec.latent
        return out[:, :latent], xp.softplus(out[:, latent:]) + 1e-6

    def decode(self, xp, p: Params, z) -> Any:
        """z (B, latent) -> raw decoder outputs (B, H, W, C, k)."""
        if "towers" in p:
            inputs = [z] + [xp.stop_gradient(z) if self.detach_heads else z] * (len(p["towers"]) - 1)
            return xp.stack(
                [xp.reshape(self._mlp(xp, tower, x), (-1, *self.image_shape)) for tower, x in zip(p["towers"], inputs)],
                -1,
            )
        h = z
        n_dense, convs = len(p["dense"]), p["conv"]
        if self.detach_heads and convs:
            raise ValueError("a decoder with detached heads (faithful) needs an MLP network, not kind = 'conv'")
        for i, layer in enumerate(p["dense"]):
            if i == n_dense - 1 and self.detach_heads and not convs:
                h = self._detached_last(xp, h, layer)
                break
            h = self._dense(xp, h, layer)
            if i < n_dense - 1 or convs:
                h = self._act(xp, h)
        if convs:
            h = xp.reshape(h, (-1, *self._conv_start))
            for i, layer in enumerate(convs):
                h = xp.conv2d_transpose(h, layer["w"]) + layer["b"]
                if i < len(convs) - 1:
                    h = self._act(xp, h)
        if convs:
            return xp.reshape(h, (-1, *self.image_shape, self.outputs_per_pixel))
        # outputs-major columns (_outputs_major), each output's block sliced and stacked: XLA folds
        # raw[..., j] back to block j, a contiguous read. Pixel-major columns (fused strided reads)
        # and a moved axis (a transposing copy that XLA:CPU fused into the likelihood as scalar
        # code) each made decode + likelihood several times slower on a CPU.
        pixels = int(np.prod(self.image_shape))
        return xp.stack(
            [
                xp.reshape(h[..., j * pixels : (j + 1) * pixels], (-1, *self.image_shape))
                for j in range(self.outputs_per_pixel)
            ],
            -1,
        )
