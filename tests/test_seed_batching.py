"""Seed batching: several seeds of one configuration in one compiled step give each seed the
record it gets trained alone, up to float rounding; a seed that diverges or stops early
leaves the others alone. The tolerance is the reproduction tolerance (rel 1e-3, abs 1e-4):
batched matmuls sum in another order, so the last bits of float32 differ and grow a little
over training; anything systematic (a seed's data order, noise or state mixed up with
another's) moves these numbers by far more."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from conftest import tiny_spec
from tfp_vae.runner.reproduce import compare

#: Two seeds in a group, given out of order so that a group that sorted or swapped them fails.
GROUP_SEEDS = (3, 1)


def _comparable(record: dict) -> dict:
    """What must match: the numbers (metrics, training curves and stopping), not timing or environment."""
    return {"metrics": record["metrics"], "training": record["training"], "status": record["status"]}


@functools.cache
def _solo_record(decoder: str, backend_name: str) -> dict:
    """Seed GROUP_SEEDS[1] of a 3-epoch tiny spec trained alone; two tests compare groups with it
    (a record is a pure function of its spec here, so one training serves both)."""
    from tfp_vae.run import run

    spec = tiny_spec(decoder=decoder, backend=backend_name, seed=GROUP_SEEDS[1], train={"epochs": 3})
    return run(spec, log=lambda s: None)


def _assert_same_record(grouped: dict, solo: dict) -> None:
    diff = compare(_comparable(solo), _comparable(grouped))
    assert diff["verdict"] in ("bit-identical", "within tolerance"), diff


#: One decoder of each kind of per-seed state and output layout: a learned scalar (shared), batch
#: statistics carried across steps (sigma_vae), three outputs per pixel and a training term that is
#: not the likelihood (variational_variance), a likelihood of discrete levels (discretized_logistic).
#: The others are per-pixel Gaussians or Bernoullis of two or one outputs, with nothing carried:
#: a seed mixed up with another would show in these first.
SEED_STATE_DECODERS = ("shared", "sigma_vae", "variational_variance", "discretized_logistic")


@pytest.mark.slow
@pytest.mark.parametrize("decoder", SEED_STATE_DECODERS)
def test_each_seed_of_a_group_gets_the_record_it_gets_alone(decoder, backend):
    """Both backends, in the vmap layout (a GPU's default). 3 epochs of digits at batch 64 is
    ~60 steps, enough for per-seed differences in data order and noise to separate the seeds."""
    from tfp_vae.run import run_group

    specs = [tiny_spec(decoder=decoder, backend=backend.name, seed=s, train={"epochs": 3}) for s in GROUP_SEEDS]
    grouped = run_group(specs, log=lambda s: None, layout="vmap")
    assert [r["spec"]["seed"] for r in grouped] == list(GROUP_SEEDS)
    assert all(r["execution"]["seed_group"] == list(GROUP_SEEDS) for r in grouped)
    assert all(r["execution"]["seed_layout"] == "vmap" for r in grouped)
    # the two seeds really differ (a group that trained one seed twice would pass the check below)
    assert grouped[0]["training"]["curves"]["train_bound"] != grouped[1]["training"]["curves"]["train_bound"]
    solo = _solo_record(decoder, backend.name)
    assert solo["spec"] == specs[1].to_dict() and solo["execution"]["seed_group"] == [GROUP_SEEDS[1]]
    _assert_same_record(grouped[1], solo)


@pytest.mark.parametrize("decoder", ["shared", "sigma_vae"])
def test_seeds_in_sequence_share_one_compiled_epoch_and_each_gets_its_solo_record(decoder, backend):
    """The sequential layout (a CPU's default): the group's seeds one after another through one
    compiled epoch give each seed exactly its solo record (the same compiled function on the same
    shapes). The decoders carry state across the
    seeds' runs if anything does: a learned scalar, batch statistics."""
    from tfp_vae.run import run_group

    specs = [tiny_spec(decoder=decoder, backend=backend.name, seed=s, train={"epochs": 3}) for s in GROUP_SEEDS]
    grouped = run_group(specs, log=lambda s: None, layout="sequential")
    assert all(r["execution"]["seed_layout"] == "sequential" for r in grouped)
    assert grouped[0]["training"]["curves"]["train_bound"] != grouped[1]["training"]["curves"]["train_bound"]
    solo = _solo_record(decoder, backend.name)
    assert solo["spec"] == specs[1].to_dict()
    diff = compare(_comparable(solo), _comparable(grouped[1]))
    assert diff["verdict"] == "bit-identical", diff


@pytest.mark.slow
def test_early_stopping_and_best_epoch_are_per_seed(backend):
    """With patience 1 over 10 epochs the validation bound of some seed stalls for an epoch before
    the others' (the learning rate, 3e-3, is high enough for that and low enough that training is
    not chaotic: at 3e-2 float rounding alone sends a seed elsewhere). The seed that stopped
    while the others trained on matches its solo run: epochs, best epoch, restored parameters."""
    from tfp_vae.run import run, run_group

    make = lambda s: tiny_spec(
        decoder="fixed",
        scaling="dequantized",
        backend=backend.name,
        seed=s,
        train={"epochs": 10, "patience": 1, "learning_rate": 3e-3, "compiler": "xla"},
    )
    seeds = (0, 1, 2, 5)
    grouped = run_group([make(s) for s in seeds], log=lambda s: None, layout="vmap")
    epochs = [r["training"]["epochs_run"] for r in grouped]
    assert len(set(epochs)) > 1 and any(r["training"]["stopped_early"] for r in grouped), epochs
    for seed, record in zip(seeds, grouped):
        if record["training"]["epochs_run"] < max(epochs):  # stopped while others went on
            _assert_same_record(record, run(make(seed), log=lambda s: None))
            break
    else:
        pytest.fail(f"no seed stopped before the others: {epochs}")


def test_a_diverging_seed_freezes_alone(backend):
    """One compiled step for two seeds where seed 0's batch holds a NaN: seed 0 records the bad
    step and keeps its parameters; seed 1 takes exactly the step it takes alone."""
    from tfp_vae.data import dataset_entry
    from tfp_vae.decoders import DataContext
    from tfp_vae.run import build_model
    from tfp_vae.steps import init_carry, multiplier_tree, stack_trees, take_tree, train_step

    spec = tiny_spec(decoder="learned", backend=backend.name)
    entry = dataset_entry("digits")
    data = DataContext(entry.levels, spec.scaling)
    model = build_model(spec, entry.shape, data, backend)
    inits = [backend.tree_map(backend.asarray, model.init(s)) for s in (0, 1)]
    mult = multiplier_tree(model, model.init(0))
    opt_init, step = train_step(backend, model, "raw", data.levels, 1e-2, mult)
    batched, solo_step = backend.compile(backend.vmap(step), "xla"), backend.compile(step, "xla")
    x = np.random.default_rng(0).integers(0, 17, (2, 3, *entry.shape)).astype(np.float32)
    x[0, 1, 2, 3, 0] = np.nan
    seeds = np.arange(8, dtype=np.int32).reshape(2, 2, 2)
    state = (
        stack_trees(backend, inits),
        stack_trees(backend, [opt_init(p) for p in inits]),
        stack_trees(backend, [init_carry(backend, model)] * 2),
    )
    params, _, carry, _ = batched(*state, backend.asarray(x), backend.asarray(seeds))
    assert backend.to_numpy(carry["bad_step"]).tolist() == [0, -1]
    alone, _, alone_carry, _ = solo_step(
        inits[1], opt_init(inits[1]), init_carry(backend, model), backend.asarray(x[1]), backend.asarray(seeds[1])
    )
    assert int(backend.to_numpy(alone_carry["bad_step"])) == -1
    for frozen, start, moved, ref in zip(
        backend.tree_leaves(take_tree(backend, params, 0)),
        backend.tree_leaves(inits[0]),
        backend.tree_leaves(take_tree(backend, params, 1)),
        backend.tree_leaves(alone),
    ):
        np.testing.assert_array_equal(backend.to_numpy(frozen), backend.to_numpy(start))
        np.testing.assert_allclose(backend.to_numpy(moved), backend.to_numpy(ref), rtol=1e-5, atol=1e-6)


def test_vmap_matches_a_loop_over_slices_including_per_seed_random_numbers(backend):
    """The backend's vmap over a function that draws noise from its own seed (TensorFlow's pfor
    runs that op in a loop): each slice equals the function applied to that slice alone."""
    xp = backend.xp

    def f(a, seed):
        return xp.matmul(a, a) + xp.normal(seed, (3, 3))

    a = np.random.default_rng(1).normal(size=(4, 3, 3)).astype(np.float32)
    seeds = np.arange(8, dtype=np.int32).reshape(4, 2)
    mapped = backend.to_numpy(backend.compile(backend.vmap(f), "xla")(backend.asarray(a), backend.asarray(seeds)))
    solo = backend.compile(f, "xla")  # compiled alike: XLA and TF's own kernels need not draw the same numbers
    for i in range(4):
        alone = backend.to_numpy(solo(backend.asarray(a[i]), backend.asarray(seeds[i])))
        np.testing.assert_allclose(mapped[i], alone, rtol=1e-5, atol=1e-6)
    assert not np.allclose(mapped[0] - a[0] @ a[0], mapped[1] - a[1] @ a[1])  # the noise differs by seed


@pytest.mark.slow
@pytest.mark.parametrize("decoder", ["sigma_vae", "shared"])
def test_tensorflow_xla_groups_match_solo(decoder):
    """TensorFlow under XLA (`compiler = "xla"`; the other tests run its graph, which compiles
    ten times faster): pfor inside the compiled epoch loop, its loop for the per-seed random ops
    included, gives each seed its solo record."""
    from tfp_vae.backends import get_backend
    from tfp_vae.errors import ConfigError
    from tfp_vae.run import run, run_group

    try:
        get_backend("tensorflow")
    except ConfigError as exc:
        pytest.skip(str(exc))
    specs = [tiny_spec(decoder=decoder, seed=s, train={"epochs": 3, "compiler": "xla"}) for s in GROUP_SEEDS]
    grouped = run_group(specs, log=lambda s: None, layout="vmap")
    _assert_same_record(grouped[1], run(specs[1], log=lambda s: None))
