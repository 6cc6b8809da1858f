"""The TensorFlow backend: TFP's distributions, philox stateless random numbers,
GradientTape, tf.function (with XLA when asked) and a functional Adam."""

from __future__ import annotations

import contextvars
import os
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's later chatter; real errors still show

import numpy as np

from tfp_vae.backends.base import Backend, Ops
from tfp_vae.backends.quiet import startup_noise_filtered
from tfp_vae.environment import host_peak_memory_mib
from tfp_vae.errors import ConfigError

with startup_noise_filtered():
    import tensorflow as tf
    import tensorflow_probability as tfp


def _conv2d_transpose(x, w):
    n, h, wd, _ = x.shape
    return tf.nn.conv2d_transpose(x, w, [n, 2 * h, 2 * wd, w.shape[2]], strides=2, padding="SAME")


def _fori_loop(lower, upper, body, init):
    return tf.while_loop(lambda i, c: i < upper, lambda i, c: (i + 1, body(i, c)), (tf.constant(lower), init))[1]


#: True while a function is traced for XLA or for pfor (vmap): there `choose` selects.
_SELECTING = contextvars.ContextVar("selecting", default=False)


def _choose(pred, true_fn, false_fn):
    """tf.cond on TF's graph (the guarded step 13 % faster than a select there), but both branches
    selected elementwise where a function is traced for XLA (its tf.cond copies the state handed
    to the branches: 8 % slower than a select) or for pfor (which cannot compile a branch whose
    predicate differs by seed under XLA)."""
    if _SELECTING.get():
        return tf.nest.map_structure(lambda a, b: tf.where(pred, a, b), true_fn(), false_fn())
    return tf.cond(pred, true_fn, false_fn)


def _selecting(f, selecting: bool):
    """f, with `choose` selecting while it is traced if `selecting`."""

    def traced(*args, **kwargs):
        token = _SELECTING.set(selecting or _SELECTING.get())
        try:
            return f(*args, **kwargs)
        finally:
            _SELECTING.reset(token)

    return traced


def _sum_image(x):
    """Per-example sum over (H, W, C) as a matrix-vector product, as on JAX (XLA:CPU's fused sum
    is slower); with TF32 enabled a matmul would round every term, so then a plain sum."""
    if tf.config.experimental.tensor_float_32_execution_enabled():
        return tf.reduce_sum(x, [-3, -2, -1])
    flat = tf.reshape(x, tf.concat([tf.shape(x)[:-3], [-1]], 0))
    return tf.linalg.matvec(flat, tf.ones(tf.shape(flat)[-1:], flat.dtype))


def _matmul_bf16(a, b):
    """Inputs rounded to bfloat16, products and sums in float32: what JAX computes with
    preferred_element_type=float32. A product of two bfloat16 values is exact in float32, so
    rounding, widening and a float32 matmul is that computation exactly. TensorFlow's own
    bfloat16 matmul cannot say it: on a CPU without bf16 units (AMD EPYC here) its kernel
    accumulates in bfloat16 (results 0.6 % off on a 3x4x5 product), and with oneDNN it rounds
    the float32 sum to bfloat16, so the number would depend on the CPU."""
    widen = lambda x: tf.cast(tf.cast(x, tf.bfloat16), tf.float32)
    return tf.matmul(widen(a), widen(b))


OPS = Ops(
    exp=tf.exp,
    log=tf.math.log,
    sqrt=tf.sqrt,
    square=tf.square,
    softplus=tf.math.softplus,
    sigmoid=tf.sigmoid,
    relu=tf.nn.relu,
    elu=tf.nn.elu,
    floor=tf.floor,
    round=tf.round,
    clip=tf.clip_by_value,
    where=tf.where,
    stop_gradient=tf.stop_gradient,
    digamma=tf.math.digamma,
    isfinite=tf.math.is_finite,
    sum=lambda x, axis=None: tf.reduce_sum(x, axis),
    sum_image=_sum_image,
    mean=lambda x, axis=None: tf.reduce_mean(x, axis),
    all=lambda x: tf.reduce_all(x),
    logsumexp=lambda x, axis=None: tf.reduce_logsumexp(x, axis),
    logaddexp=lambda a, b: tf.reduce_logsumexp(tf.stack([a, b]), 0),
    fori_loop=_fori_loop,
    choose=_choose,
    take=lambda x, idx: tf.gather(x, idx, axis=0),
    set_row=lambda buf, i, value: tf.tensor_scatter_nd_update(buf, tf.reshape(i, (1, 1)), value[None]),
    matmul=tf.matmul,
    matmul_bf16=_matmul_bf16,
    reshape=tf.reshape,
    concat=lambda xs, axis: tf.concat(xs, axis),
    stack=lambda xs, axis=0: tf.stack(xs, axis),
    broadcast_to=tf.broadcast_to,
    full=lambda shape, value: tf.fill(shape, tf.constant(value, tf.float32)),
    conv2d=lambda x, w: tf.nn.conv2d(x, w, strides=2, padding="SAME"),
    conv2d_transpose=_conv2d_transpose,
    # philox asked for explicitly: under XLA on CPU "auto_select" made the training step ~3x slower
    normal=lambda seed, shape: tf.random.stateless_normal(shape, seed, alg="philox"),
    uniform=lambda seed, shape: tf.random.stateless_uniform(shape, seed, alg="philox"),
    fold_in=lambda seed, i: tf.random.experimental.stateless_fold_in(seed, i, alg="philox"),
)


_XLA = {"xla": True, "graph": False}  # tf.function's jit_compile per compiler


def asarray(x: Any):
    x = np.asarray(x)
    return tf.constant(x if x.dtype.kind in "iub" else x.astype(np.float32))


def value_and_grad(f):
    """value_and_grad(f)(params, *args) -> ((value, aux), grads) for f(params, *args) -> (value, aux)."""

    def wrapped(params, *args):
        with tf.GradientTape() as tape:
            tape.watch(tf.nest.flatten(params))
            value, aux = f(params, *args)
        grads = tape.gradient(value, params, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return (value, aux), grads

    return wrapped


def vmap(f):
    """f mapped over the leading axis of every argument, vectorised by TensorFlow's pfor. Stateless
    random ops whose seed differs per seed have no vectorised form: pfor runs just those in a loop."""

    def mapped(*args):
        return tf.vectorized_map(lambda a: _selecting(f, True)(*a), args, fallback_to_while_loop=True, warn=False)

    return mapped


def adam(learning_rate: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8):
    """Adam exactly as optax.adam computes it (bias-corrected moments, eps outside the root):
    TensorFlow has no functional optimiser library, and Keras' optimisers hold variables."""

    def init(params):
        zeros = tf.nest.map_structure(tf.zeros_like, params)
        return {"count": tf.constant(0, tf.int32), "mu": zeros, "nu": tf.nest.map_structure(tf.zeros_like, params)}

    def update(grads, state, params=None):
        count = state["count"] + 1
        t = tf.cast(count, tf.float32)
        mu = tf.nest.map_structure(lambda m, g: b1 * m + (1.0 - b1) * g, state["mu"], grads)
        nu = tf.nest.map_structure(lambda v, g: b2 * v + (1.0 - b2) * tf.square(g), state["nu"], grads)
        c1, c2 = 1.0 - b1**t, 1.0 - b2**t
        updates = tf.nest.map_structure(lambda m, v: -learning_rate * (m / c1) / (tf.sqrt(v / c2) + eps), mu, nu)
        return updates, {"count": count, "mu": mu, "nu": nu}

    return init, update


def configure(device: str, tf32: bool) -> str:
    """Process-wide settings, and `device` resolved to a TF device string."""
    tf.config.experimental.enable_op_determinism()
    tf.config.experimental.enable_tensor_float_32_execution(tf32)
    with startup_noise_filtered():  # the first device probe reports a missing CUDA driver
        gpus = tf.config.list_physical_devices("GPU")
    if device == "gpu" and not gpus:
        raise ConfigError(
            "device = 'gpu' was asked for but TensorFlow sees no GPU on this machine; use device = 'cpu' or 'auto'"
        )
    return "/GPU:0" if device == "gpu" or (device == "auto" and gpus) else "/CPU:0"


def peak_memory_mib(device: str) -> float:
    """Peak host memory of this process since the run began (VmHWM), or of the GPU allocator on a GPU."""
    if "GPU" in device:
        return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
    return host_peak_memory_mib()


def environment(device: str) -> dict[str, Any]:
    from tensorflow.python.framework import config as tf_config

    build = tf.sysconfig.get_build_info()
    gpus = tf.config.list_physical_devices("GPU")
    on_gpu = bool(gpus) and "gpu" in device.lower()
    return {
        "framework_versions": {"tensorflow": tf.__version__, "tensorflow_probability": tfp.__version__},
        "threads": {
            "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
        },
        "gpus": [tf.config.experimental.get_device_details(g).get("device_name") for g in gpus],
        # the build's CUDA says nothing about a run on a CPU: only a GPU run names it
        "cuda_version": build.get("cuda_version") if on_gpu else None,
        "cudnn_version": build.get("cudnn_version") if on_gpu else None,
        "tf32": tf.config.experimental.tensor_float_32_execution_enabled(),
        "op_determinism": bool(tf_config.is_op_determinism_enabled()),
    }


BACKEND = Backend(
    name="tensorflow",
    xp=OPS,
    tfd=tfp.distributions,
    asarray=asarray,
    to_numpy=lambda t: np.asarray(t),
    tree_map=tf.nest.map_structure,
    tree_leaves=tf.nest.flatten,
    value_and_grad=value_and_grad,
    vmap=vmap,
    # autograph off: the core has no tensor-dependent Python control flow, and tracing is faster
    compile=lambda f, compiler="xla": tf.function(
        _selecting(f, _XLA[compiler]), jit_compile=_XLA[compiler], autograph=False
    ),
    adam=adam,
    configure=configure,
    device_scope=lambda device: tf.device(device),
    peak_memory_mib=peak_memory_mib,
    environment=environment,
)
