"""run(spec) -> record: determinism, strict JSON, the non-finite guard, the train step."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

from conftest import tiny_spec
from tfp_vae import SCHEMA_VERSION
from tfp_vae.run import VOLATILE_SECTIONS, run, write_record


def _stable(record):
    return {k: v for k, v in record.items() if k not in VOLATILE_SECTIONS}


@pytest.mark.slow
@pytest.mark.parametrize("decoder,scaling", [("learned", "dequantized"), ("sigma_vae", "raw")])
def test_same_spec_and_seed_give_identical_records(decoder, scaling):
    spec = tiny_spec(decoder=decoder, scaling=scaling)
    first, second = run(spec, log=lambda s: None), run(spec, log=lambda s: None)
    assert _stable(first) == _stable(second)
    other_seed = run(tiny_spec(decoder=decoder, scaling=scaling, seed=1), log=lambda s: None)
    assert other_seed["metrics"]["elbo"] != first["metrics"]["elbo"]


def test_record_is_strict_json_with_schema_and_every_metric(tmp_path):
    record = run(tiny_spec(decoder="floor", scaling="dequantized", decoder_params={"xi": 0.01}), log=lambda s: None)
    path = write_record(record, tmp_path / "r.json")
    loaded = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert loaded["schema_version"] == SCHEMA_VERSION
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary file left behind
    m = loaded["metrics"]
    assert m["elbo"] <= m["iwae_ll"] + 1.0  # single-sample vs K = 20: within noise of the bound order
    # bpd of dequantized data from its definition
    expected_bpd = (-m["iwae_ll"] + 64 * np.log(17)) / (64 * np.log(2))
    assert abs(m["bpd"] - expected_bpd) < 1e-9
    assert m["sigma_min"] >= 0.01 and m["sigma_min"] <= m["sigma_p01"] <= m["sigma_median"]
    hist = np.array(m["sigma_log10_hist"])
    assert hist.sum() == m["test_examples"] * m["dims"]  # every test pixel counted once
    assert hist[: int((np.log10(0.01) + 8) * 10)].sum() == 0  # nothing below the floor xi = 0.01
    assert len(m["kl_per_dim"]) == 5 and 0 <= m["active_units"] <= 5
    assert abs(m["train_test_gap"] - (m["train_elbo"] - m["elbo"])) < 1e-9
    assert len(loaded["training"]["curves"]["val_bound"]) == loaded["training"]["epochs_run"] == 2
    t = loaded["timing"]
    assert t["train_examples_per_s"] > 0 and t["importance_samples_per_s"] > 0 and t["compile_s"] > 0
    env = loaded["environment"]
    assert env["versions"]["tensorflow"].startswith("2.21") and env["op_determinism"] is True
    assert env["tf32"] is False
    # the CPU beyond its model name: family and the code-generating extensions it has (lscpu agrees)
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout if shutil.which("lscpu") else ""
    fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
    if "CPU family" in fields:
        assert env["cpu"]["family"] == int(fields["CPU family"]) and env["cpu"]["model"] == int(fields["Model"])
        flags = set(fields.get("Flags", "").split())
        assert env["cpu"]["isa"] and set(env["cpu"]["isa"]) <= flags
        assert ("avx512f" in env["cpu"]["isa"]) == ("avx512f" in flags)


@pytest.mark.slow
def test_raw_scaling_has_no_bpd_but_the_discretized_likelihood_does():
    gaussian = run(tiny_spec(decoder="fixed"), log=lambda s: None)["metrics"]
    assert gaussian["bpd"] is None
    discrete = run(tiny_spec(decoder="discretized_logistic"), log=lambda s: None)["metrics"]
    assert discrete["iwae_ll"] < 0  # a log-probability of discrete data
    assert abs(discrete["bpd"] - (-discrete["iwae_ll"] / (64 * np.log(2)))) < 1e-9


def test_a_non_finite_loss_ends_the_run_with_a_record_not_an_exception():
    # exp link with a learning rate of 10: the first Adam step sends log sigma far
    # enough that exp overflows to inf on the next step
    spec = tiny_spec(decoder="learned", decoder_params={"link": "exp"}, train={"learning_rate": 10.0, "epochs": 3})
    record = run(spec, log=lambda s: None)
    assert record["status"] == "nonfinite"
    nonfinite = record["training"]["nonfinite"]
    assert nonfinite is not None and nonfinite["epoch"] == 0
    assert record["training"]["epochs_run"] == 1
    assert record["metrics"]["variance_collapse"] is True
    assert record["metrics"]["collapse_reason"].startswith("nonfinite")
    json.dumps(record, allow_nan=False)  # still strict JSON


@pytest.mark.parametrize("compiler", ["xla", "graph"])
def test_a_non_finite_step_changes_nothing_and_the_steps_after_it_neither(backend, compiler):
    """The guard of a seed trained alone, under each compiler (a branch on JAX and on TF's graph,
    a select under TF's XLA): a batch holding a NaN leaves the parameters, Adam's state and the
    decoder's state exactly as they were and records its step; a healthy batch after it changes
    nothing either, while the same healthy batch from the start moves all three."""
    from tfp_vae.backends import COMPILERS
    from tfp_vae.data import dataset_entry
    from tfp_vae.decoders import DataContext
    from tfp_vae.run import build_model
    from tfp_vae.steps import init_carry, multiplier_tree, train_step

    if compiler not in COMPILERS[backend.name]:
        pytest.skip(f"{backend.name} has no compiler {compiler!r}")
    spec = tiny_spec(decoder="sigma_vae", backend=backend.name)  # carries a decoder state
    entry = dataset_entry("digits")
    data = DataContext(entry.levels, spec.scaling)
    model = build_model(spec, entry.shape, data, backend)
    params = backend.tree_map(backend.asarray, model.init(0))
    opt_init, step = train_step(backend, model, "raw", data.levels, 1e-2, multiplier_tree(model, model.init(0)))
    step = backend.compile(step, compiler)
    start = (params, opt_init(params), init_carry(backend, model))
    healthy = np.random.default_rng(0).integers(0, 17, (3, *entry.shape)).astype(np.float32)
    poisoned = healthy.copy()
    poisoned[1, 2, 3, 0] = np.nan
    seeds = backend.asarray(np.arange(4, dtype=np.int32).reshape(2, 2))
    leaves = lambda state: [backend.to_numpy(v) for v in backend.tree_leaves((state[0], state[1], state[2]["dstate"]))]

    after_nan = step(*start, backend.asarray(poisoned), seeds)
    after_both = step(*after_nan[:3], backend.asarray(healthy), seeds)
    moved = step(*start, backend.asarray(healthy), seeds)
    for state in (after_nan, after_both):
        assert int(backend.to_numpy(state[2]["bad_step"])) == 0
        for kept, original in zip(leaves(state), leaves(start)):
            np.testing.assert_array_equal(kept, original)
    assert int(backend.to_numpy(moved[2]["bad_step"])) == -1
    changed = [not np.array_equal(a, b) for a, b in zip(leaves(moved), leaves(start))]
    n_params, n_opt = len(backend.tree_leaves(start[0])), len(backend.tree_leaves(start[1]))
    assert all(changed[:n_params]) and any(changed[n_params : n_params + n_opt]) and any(changed[n_params + n_opt :])


def test_bernoulli_reference_has_no_scale_statistics_and_no_bpd():
    m = run(tiny_spec(decoder="bernoulli", scaling="dequantized"), log=lambda s: None)["metrics"]
    assert m["frac_below_tau"] is None and m["sigma_min"] is None and m["bpd"] is None
    assert m["variance_collapse"] is False


def test_conv_network_trains_on_digits():
    record = run(
        tiny_spec(decoder="student_t", network={"kind": "conv", "conv_channels": [4, 6], "hidden": [16]}),
        log=lambda s: None,
    )
    assert record["status"] == "ok" and record["metrics"]["iwae_ll"] is not None


def test_collapse_onset_and_convergence_follow_their_definitions():
    from tfp_vae.records import (
        CONVERGENCE_NATS_PER_DIM,
        CONVERGENCE_WINDOW,
        collapse_onset_epoch,
        converged,
        window_change,
    )

    assert collapse_onset_epoch([0.0, None, 0.01, 0.02, 0.0], 0.01) == 4  # above, not at, the threshold; 1-based
    assert collapse_onset_epoch([0.0, 0.005], 0.01) is None and collapse_onset_epoch([], 0.01) is None
    bound = [float(10 * e) for e in range(CONVERGENCE_WINDOW + 3)]
    assert window_change(bound) == 10.0 * CONVERGENCE_WINDOW
    assert window_change([1.0, 4.0]) == 3.0 and window_change([1.0]) is None and window_change([None, 2.0]) is None
    dims, tol = 100, CONVERGENCE_NATS_PER_DIM * 100
    assert converged(0.9 * tol, dims, False, None) and not converged(1.1 * tol, dims, False, None)
    assert converged(10 * tol, dims, True, None)  # early stopping found the plateau
    assert not converged(0.0, dims, False, False)  # a global scale away from its optimum has not converged
    assert not converged(10 * tol, dims, True, None, fell=True)  # early stopping ended a divergence


def test_a_run_diverged_when_after_its_best_epoch_the_bound_fell_below_its_first():
    from tfp_vae.records import diverged

    # the three shapes of Fashion-MNIST's natural-parameter runs: up, then -1e6 and lower
    assert diverged([475.0, 664.0, 806.0, 529.0, -4.6e6, -1820.0], best_epoch=3)
    assert not diverged([475.0, 664.0, 806.0, 529.0, 480.0], best_epoch=3)  # a swing, not below the start
    assert not diverged([475.0, 400.0, 806.0, 700.0], best_epoch=3)  # below the start only before the best
    assert not diverged([475.0, None, 806.0, None], best_epoch=3) and not diverged([], best_epoch=None)


def test_a_record_states_its_collapse_onset_and_convergence_from_its_own_curves():
    record = run(tiny_spec(decoder="learned", train={"epochs": 3}), log=lambda s: None)
    m, curves = record["metrics"], record["training"]["curves"]
    excess = curves["val_excess_density_frac"]
    first = next((e + 1 for e, v in enumerate(excess) if v is not None and v > m["collapse_threshold"]), None)
    assert m["collapse_onset_epoch"] == first
    assert m["val_bound_window_change"] == pytest.approx(curves["val_bound"][-1] - curves["val_bound"][0])
    assert m["converged"] == (abs(m["val_bound_window_change"]) <= 0.001 * m["dims"])
