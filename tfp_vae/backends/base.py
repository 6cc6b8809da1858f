"""What every backend provides: plain data plus functions, no framework imports here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Ops:
    """The small array namespace decoders, networks and the model are written against.

    Each field is a function of the backend's arrays; shapes are static Python tuples."""

    exp: Callable
    log: Callable
    sqrt: Callable
    square: Callable
    softplus: Callable
    sigmoid: Callable
    relu: Callable
    elu: Callable
    floor: Callable
    round: Callable
    clip: Callable  # clip(x, low, high)
    where: Callable
    stop_gradient: Callable
    digamma: Callable
    isfinite: Callable
    sum: Callable  # sum(x, axis)
    sum_image: Callable  # sum_image(x): per-example sum over the last three (image) axes, float32 exact
    mean: Callable  # mean(x, axis)
    all: Callable
    logsumexp: Callable  # logsumexp(x, axis)
    logaddexp: Callable  # logaddexp(a, b), elementwise
    fori_loop: Callable  # fori_loop(lower, upper, body(i, carry) -> carry, init): a compiled loop
    choose: Callable  # choose(pred, true_fn, false_fn): true_fn() if pred else false_fn() (same structure);
    # a backend may evaluate both and select, so neither branch may have effects
    take: Callable  # take(x, indices): rows of x along axis 0 (a gather; indices of any shape)
    set_row: Callable  # set_row(buffer, i, value): buffer with buffer[i] = value (i may be traced)
    matmul: Callable
    matmul_bf16: Callable  # matmul_bf16(a, b): inputs rounded to bfloat16, float32 result
    reshape: Callable  # reshape(x, shape)
    concat: Callable  # concat(list, axis)
    stack: Callable  # stack(list, axis)
    broadcast_to: Callable  # broadcast_to(x, shape)
    full: Callable  # full(shape, value) in float32
    conv2d: Callable  # conv2d(x NHWC, w HWIO): stride 2, SAME
    conv2d_transpose: Callable  # conv2d_transpose(x, w [h, w, out, in]): stride 2, SAME, doubles H and W
    normal: Callable  # normal(seed, shape): standard normal from a stateless seed
    uniform: Callable  # uniform(seed, shape): U[0, 1) from a stateless seed
    fold_in: Callable  # fold_in(seed, i): a new seed for stream i


@dataclass(frozen=True)
class Backend:
    """A backend: the namespaces, the functional-programming primitives and the machine."""

    name: str
    xp: Ops
    tfd: Any
    asarray: Callable  # numpy (or Python scalar) -> backend array; keeps integer dtypes
    to_numpy: Callable  # backend array -> numpy
    tree_map: Callable  # tree_map(f, tree, *rest)
    tree_leaves: Callable
    value_and_grad: Callable  # value_and_grad(f)(params, *args) -> ((value, aux), grads)
    vmap: Callable  # vmap(f)(*args): f mapped over the leading axis of every argument (seed batching)
    compile: Callable  # compile(f, compiler) -> f compiled by `compiler` (one of COMPILERS[name])
    adam: Callable  # adam(learning_rate) -> (init(params), update(grads, state, params) -> (updates, state))
    configure: Callable  # configure(device, tf32) -> device string
    device_scope: Callable  # device_scope(device) -> context manager
    peak_memory_mib: Callable  # peak_memory_mib(device)
    environment: Callable  # environment(device) -> dict of versions, threads, GPU fields
