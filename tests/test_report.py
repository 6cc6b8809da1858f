"""The report: aggregation on synthetic records, byte-identical regeneration, every
format parsed back, bad records named and skipped, and the HTML page rendered in
headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tfp_vae import SCHEMA_VERSION
from tfp_vae.errors import TfpVaeError
from tfp_vae.report.build import build_report
from tfp_vae.report.load import load_records
from tfp_vae.report.stats import wilson
from tfp_vae.report.tables import collapse_table, loglik_table


def record(decoder: str, seed: int, iwae: float, collapse: bool, scaling: str = "raw", params=None) -> dict:
    bpd = None if scaling == "raw" else (-iwae + 64 * np.log(17)) / (64 * np.log(2))
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": f"{decoder}-{scaling}-{seed}",
        "status": "ok",
        "spec": {
            "dataset": "digits",
            "scaling": scaling,
            "decoder": decoder,
            "decoder_params": params or {},
            "seed": seed,
            "device": "cpu",
            "backend": "tensorflow",
            "network": {"hidden": [32], "latent": 5},
        },
        "metrics": {
            "elbo": iwae - 3,
            "iwae_ll": iwae,
            "lppl": iwae + 1,
            "bpd": bpd,
            "rmse": 0.1 + 0.01 * seed,
            "sigma_min": 0.001 if collapse else 0.05,
            "sigma_p01": 0.01,
            "sigma_median": 0.2,
            "frac_below_tau": 0.2 if collapse else 0.0,
            "tau": 0.018,
            "variance_collapse": collapse,
            "excess_density_frac": 0.05 if collapse else 0.0,
            "collapse_reason": "excess_density: 5.00% of test pixels ..." if collapse else None,
            "active_units": 4,
            "train_test_gap": 1.0,
            "iwae_k": 50,
            "sigma_log10_hist": [0] * 30 + [seed + 1] * 10 + [0] * 50,
        },
        "training": {"curves": {"train_bound": [iwae - 20, iwae - 5, iwae], "val_bound": [0, 0, 0]}},
        "execution": {"device": "/CPU:0"},
        "timing": {
            "train_examples_per_s": 1000.0 + seed,
            "eval_examples_per_s": 50.0,
            "importance_samples_per_s": 1e4,
            "compile_s": 1.0,
            "peak_memory_mib": 900.0,
            "wall_s": 5.0,
        },
        "environment": {"git": {"commit": "abc"}, "versions": {"tensorflow": "2.21.0"}, "cpu_model": "cpu"},
    }


LEARNED = [50.0, 58.0, 61.0, 55.0, 70.0]
FLOOR = [40.0, 41.0, 39.5, 40.5, 40.2]


@pytest.fixture
def runs(tmp_path) -> Path:
    d = tmp_path / "runs"
    d.mkdir()
    for seed, (a, b) in enumerate(zip(LEARNED, FLOOR)):
        for rec in (
            record("learned", seed, a, collapse=seed < 3),
            record("floor", seed, b, False, params={"xi": 0.02}),
            record("learned", seed, a - 100, False, scaling="dequantized"),
            record("floor", seed, b - 100, False, scaling="dequantized", params={"xi": 0.02}),
        ):
            (d / f"{rec['run_id']}.json").write_text(json.dumps(rec))
    return d


def test_loglik_cells_say_their_seeds_and_mark_collapsed_runs_and_unnormalised_likelihoods(runs, tmp_path):
    """learned raw holds 3 collapsed seeds of 5 (planted): its cell says n = 5 and carries the
    collapse mark with the count; floor's does not. Bernoulli's number is not a normalised
    likelihood of grey levels: marked. With 3 seeds no IQM interval is shown."""
    from tfp_vae.report.tables import COLLAPSED_MARK, NOT_NORMALISED_MARK

    for seed in range(3):
        rec = record("bernoulli", seed, 30.0 + seed, False)
        (runs / f"{rec['run_id']}.json").write_text(json.dumps(rec))
    t = loglik_table(load_records(runs).frame)
    raw_col = t.header.index("digits raw")
    cells = {row[0]: row[raw_col] for row in t.rows}
    assert "(n = 5;" in cells["learned"] and cells["learned"].endswith(f"{COLLAPSED_MARK}3")
    assert COLLAPSED_MARK not in cells["floor(xi=0.02)"] and NOT_NORMALISED_MARK not in cells["floor(xi=0.02)"]
    assert cells["bernoulli"].endswith(NOT_NORMALISED_MARK) and "(n = 3)" in cells["bernoulli"]  # no IQM at n = 3
    assert (
        f"{COLLAPSED_MARK}k: k of the n seeds" in t.caption and f"{NOT_NORMALISED_MARK}: not a normalised" in t.caption
    )


def test_no_empty_faithfulness_table_is_published(tmp_path):
    """Records without the reference decoder give no faithfulness table in any format."""
    d = tmp_path / "runs"
    d.mkdir()
    for seed, value in enumerate(FLOOR):
        rec = record("floor", seed, value, False, params={"xi": 0.02})
        (d / f"{rec['run_id']}.json").write_text(json.dumps(rec))
    written = build_report(d, tmp_path / "out", warn=lambda s: None)
    assert not [p for p in written if p.stem == "faithfulness"]
    assert "faithfulness" not in (tmp_path / "out" / "report.html").read_text()


def test_loglik_table_aggregates_as_computed_independently(runs):
    t = loglik_table(load_records(runs).frame)
    learned = t.numbers[(t.numbers["decoder"] == "learned") & (t.numbers["scaling"] == "raw")].iloc[0]
    assert learned["iwae_ll_mean"] == pytest.approx(np.mean(LEARNED))
    assert learned["iwae_ll_std"] == pytest.approx(np.std(LEARNED, ddof=1))
    # 25 % trimmed: of 5 seeds int(1.25) = 1 is cut at each end, the middle 3 are averaged
    assert learned["iwae_ll_iqm"] == pytest.approx(np.mean(sorted(LEARNED)[1:4]))
    assert learned["iwae_ll_iqm_lo"] <= learned["iwae_ll_iqm"] <= learned["iwae_ll_iqm_hi"]
    assert pd.isna(learned["bpd_mean"])  # raw: no bpd
    deq = t.numbers[(t.numbers["scaling"] == "dequantized") & (t.numbers["decoder"] == "floor(xi=0.02)")].iloc[0]
    assert deq["bpd_mean"] == pytest.approx(np.mean([(-(b - 100) + 64 * np.log(17)) / (64 * np.log(2)) for b in FLOOR]))
    # densities of raw pixels are unbounded: the raw column is never ranked, however high learned scores
    raw_col = t.header.index("digits raw")
    assert not any(j == raw_col for _, j in t.bold)
    # dequantized: learned (about 18 nats better per image, far beyond the seed spread) has the lower bpd
    deq_col = t.header.index("digits dequantized")
    row = {r[0]: i for i, r in enumerate(t.rows)}
    assert (row["learned"], deq_col) in t.bold and (row["floor(xi=0.02)"], deq_col) not in t.bold
    assert "(tied)" not in t.rows[row["floor(xi=0.02)"]][deq_col]


def test_collapse_table_counts_and_wilson(runs):
    t = collapse_table(load_records(runs).frame)
    row = t.numbers[(t.numbers["decoder"] == "learned") & (t.numbers["scaling"] == "raw")].iloc[0]
    assert (row["collapsed"], row["n"]) == (3, 5)
    assert (row["wilson_lo"], row["wilson_hi"]) == pytest.approx(wilson(3, 5))
    assert row["top_reason"] == "excess_density"


def test_report_is_byte_identical_when_regenerated(runs, tmp_path):
    a = build_report(runs, tmp_path / "a", warn=lambda s: None)
    b = build_report(runs, tmp_path / "b", warn=lambda s: None)
    assert [p.name for p in a] == [p.name for p in b] and len(a) >= 15
    for pa, pb in zip(a, b):
        assert pa.read_bytes() == pb.read_bytes(), pa.name


def test_report_does_not_depend_on_the_order_records_are_read_in(runs, tmp_path):
    """The same records under shuffled file names (so read in another order): the same bytes,
    bootstrap intervals included (resampling sees the seeds in seed order either way)."""
    import json
    import random

    shuffled = tmp_path / "other" / runs.name  # the same name: the report's title names the folder
    shuffled.mkdir(parents=True)
    paths = sorted(runs.rglob("*.json"))
    names = [f"{i:03d}.json" for i in range(len(paths))]
    random.Random(7).shuffle(names)
    for path, name in zip(paths, names):
        (shuffled / name).write_text(json.dumps(json.loads(path.read_text())))
    a = build_report(runs, tmp_path / "a", warn=lambda s: None)
    b = build_report(shuffled, tmp_path / "b", warn=lambda s: None)
    for pa, pb in zip(a, b):
        if pa.suffix in (".md", ".csv", ".tex"):
            assert pa.read_bytes() == pb.read_bytes(), pa.name


def test_every_format_parses_back(runs, tmp_path):
    out = tmp_path / "out"
    build_report(runs, out, warn=lambda s: None)
    frame = pd.read_csv(out / "loglik.csv")
    assert set(frame["decoder"]) == {"learned", "floor(xi=0.02)"} and len(frame) == 4
    lines = [line for line in (out / "collapse.md").read_text().splitlines() if line.startswith("|")]
    assert len(lines) == 2 + 4 and len({line.count("|") - line.count("\\|") for line in lines}) == 1
    tex = (out / "loglik.tex").read_text()
    assert tex.count(r"\toprule") == 1 and r"\bottomrule" in tex and r"$\pm$" in tex
    if shutil.which("pdflatex") is None:
        pytest.skip("no TeX engine installed: LaTeX not compiled")
    # every table the report writes, in one document, as a paper would include them
    tables = "\n".join(p.read_text() for p in sorted(out.glob("*.tex")))
    assert tables.count(r"\toprule") >= 5
    doc = tmp_path / "doc.tex"
    doc.write_text("\\documentclass{article}\\usepackage{booktabs}\\begin{document}\n" + tables + "\\end{document}\n")
    proc = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", doc.name], cwd=tmp_path, capture_output=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout[-2000:]


def test_bad_records_are_named_and_skipped(runs, tmp_path):
    (runs / "broken.json").write_text('{"schema_version": 1, "run_id": "x", "spec": {')  # half-written
    (runs / "future.json").write_text(json.dumps({**record("learned", 9, 1.0, False), "schema_version": 99}))
    (runs / "junk.json").write_text("not json at all")
    warnings = []
    loaded = load_records(runs, warn=warnings.append)
    assert len(loaded.records) == 20 and len(warnings) == 3
    text = "\n".join(warnings)
    assert "broken.json" in text and "future.json: skipped: unknown schema version 99" in text and "junk.json" in text


def test_empty_directory_and_unwritable_output_are_clear_errors(tmp_path, runs):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TfpVaeError, match="no readable run records"):
        load_records(empty)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(TfpVaeError, match="cannot write the report there"):
        build_report(runs, blocker / "out")


def test_mixed_code_versions_are_flagged_not_silently_pooled(runs):
    rec = json.loads((runs / "learned-raw-0.json").read_text())
    rec["environment"]["git"]["commit"] = "def"
    (runs / "learned-raw-0.json").write_text(json.dumps(rec))
    t = loglik_table(load_records(runs).frame)
    assert any("learned on digits/raw pools records from 2 commits" in n for n in t.notes)


def _md_rows(md: str) -> list[list[str]]:
    """The body rows of a Markdown table, cells stripped (the header and rule left out)."""
    lines = [line for line in md.splitlines() if line.startswith("|")][2:]
    return [[c.strip() for c in line.strip().strip("|").split(" | ")] for line in lines]


def test_declared_tables_filter_order_and_caption(runs, tmp_path):
    from tfp_vae.errors import ConfigError
    from tfp_vae.report.declared import build_declared

    root = tmp_path / "root"
    shutil.copytree(runs, root / "demo")
    decl = tmp_path / "tables.toml"
    decl.write_text(
        '[[table]]\nname = "t1"\nstudy = "demo"\nkind = "loglik"\nscalings = ["dequantized"]\n'
        'decoders = ["floor(xi=0.02)", "learned"]\ncaption = "My caption"\n'
        '[[table]]\nname = "c1"\nstudy = "demo"\nkind = "collapse"\n'
        'decoders = ["learned", "floor(xi=0.02)"]\n'
    )
    build_declared(decl, root, tmp_path / "out")
    md = (tmp_path / "out" / "t1.md").read_text()
    rows = _md_rows(md)
    assert [r[0] for r in rows] == ["floor(xi=0.02)", "learned"]  # declared order
    assert "My caption" in md and "raw" not in md.split("\n\n")[1] and "**" in rows[1][1]  # bold follows its row
    # the declared lead, then the definitions the columns need, built from the records: K, n, the
    # ranking rule; no sentence about raw columns the table does not have
    caption = md.split("\n\n")[0]
    assert caption.startswith("**t1**: My caption Test log-likelihood (importance-weighted bound, K = 50")
    assert "mean ± std over the n seeds" in caption and "Bold: the lowest mean bpd" in caption
    assert "Raw columns" not in caption
    # a collapse table has one row per decoder and data column: the filter keeps them all
    rows = [r[:2] for r in _md_rows((tmp_path / "out" / "c1.md").read_text())]
    assert rows == [
        ["learned", "digits dequantized"],
        ["learned", "digits raw"],
        ["floor(xi=0.02)", "digits dequantized"],
        ["floor(xi=0.02)", "digits raw"],
    ]
    decl.write_text('[[table]]\nname = "t2"\nstudy = "demo"\nkind = "pie"\n')
    with pytest.raises(
        ConfigError,
        match="kind = 'pie' is not allowed; expected one of loglik, collapse, sensitivity, contrasts, faithfulness, "
        "convergence, backends, throughput, published",
    ):
        build_declared(decl, root, tmp_path / "out")
    # a declared table whose decoders have no records yet (a study in progress) is skipped, with a warning
    decl.write_text('[[table]]\nname = "f0"\nstudy = "demo"\nkind = "faithfulness"\n')
    warnings = []
    assert build_declared(decl, root, tmp_path / "out", warn=warnings.append) == []
    assert len(warnings) == 1 and "table 'f0' skipped: no rows yet in the 20 records of study 'demo'" in warnings[0]
    # a declared faithfulness table whose reference is posterior-collapsed is refused, naming why
    decl.write_text('[[table]]\nname = "f1"\nstudy = "demo"\nkind = "faithfulness"\nreference_decoder = "learned"\n')
    for path in (root / "demo").glob("*.json"):
        rec = json.loads(path.read_text())
        rec["spec"]["network"]["latent"] = 10  # 4 active units of 10: fewer than half
        path.write_text(json.dumps(rec))
    with pytest.raises(
        ConfigError,
        match=r"table 'f1' has no rows: faithfulness: reference 'learned' on digits "
        r"dequantized has 4, 4, 4, 4, 4 active units of 10 latent dimensions",
    ):
        build_declared(decl, root, tmp_path / "out")
    decl.write_text('[[table]]\nname = "p1"\nstudy = "demo"\nkind = "loglik"\npublished = "x.toml"\n')
    with pytest.raises(ConfigError, match="a table of kind 'published' names its published file, and no other"):
        build_declared(decl, root, tmp_path / "out")


def test_collapse_table_gives_the_validation_onset_of_each_cell(tmp_path):
    """Seeds whose validation excess density passed the threshold, and the median first epoch."""
    from tfp_vae.report.load import frame_of

    curves = ([0.0, 0.02, 0.03], [0.0, 0.0, 0.011], [0.0, 0.01, 0.0])  # onsets 2, 3 and none (0.01 is not above)
    recs = []
    for seed, curve in enumerate(curves):
        rec = record("learned", seed, 50.0, False)
        rec["metrics"]["collapse_threshold"] = 0.01
        rec["training"]["curves"]["val_excess_density_frac"] = curve
        recs.append(rec)
    t = collapse_table(frame_of(recs))
    assert t.numbers["onset_seeds"].tolist() == [2] and t.numbers["onset_epoch_median"].tolist() == [2.5]
    assert t.rows[0][4] == "2/3, epoch 2.5"


def test_benchmark_json_becomes_a_table_with_ceiling_fractions(runs, tmp_path):
    bench = tmp_path / "bench"
    bench.mkdir()
    payload = {
        "machine_info": {"tfp_vae": {"cpu_model": "Test CPU", "cpu_count": 2}},
        "benchmarks": [
            {
                "name": "test_train_step[learned-cpu]",
                "stats": {"median": 0.25, "iqr": 0.01},
                "extra_info": {"examples_per_s": 10240.0, "ceiling_fraction": 0.87},
            }
        ],
    }
    (bench / "m.json").write_text(json.dumps(payload))
    # the same model name on another generation (pytest-benchmark's cpuinfo says which)
    (bench / "m2.json").write_text(
        json.dumps({**payload, "machine_info": {**payload["machine_info"], "cpu": {"family": 26, "model": 2}}})
    )
    build_report(runs, tmp_path / "out", warn=lambda s: None, benchmarks=bench)
    rows = _md_rows((tmp_path / "out" / "benchmarks.md").read_text())
    assert [
        "test_train_step[learned-cpu]",
        "250.0",
        "10.0",
        "10240",
        "87%",
        "n/a",
        "n/a",
        "Test CPU (2 threads)",
    ] in rows
    assert [
        "test_train_step[learned-cpu]",
        "250.0",
        "10.0",
        "10240",
        "87%",
        "n/a",
        "n/a",
        "Test CPU, family 26 model 2 (2 threads)",
    ] in rows


def test_peer_ratios_and_study_wall_times_are_tabulated(runs, tmp_path):
    """Peers: each tfp-vae configuration against the peer of the same file; wall times: the ratio."""
    bench = tmp_path / "bench"
    (bench / "peers").mkdir(parents=True)
    (bench / "study_walltime").mkdir()
    ours = {
        "peer": "tfp-vae",
        "backend": "jax",
        "precision": "bfloat16",
        "steady_examples_per_s": 30000.0,
        "whole_train_examples_per_s": 12000.0,
    }  # no compiler: a file from before it was recorded (XLA)
    graph = {**ours, "backend": "tensorflow", "compiler": "graph", "steady_examples_per_s": 25000.0}
    payload = {
        "machine_info": {"tfp_vae": {"cpu_model": "Test CPU", "cpu_count": 2}},
        "benchmarks": [
            {
                "name": "pythae",
                "stats": {"median": 4.0, "iqr": 0.1},
                "extra_info": {"peer": "pythae", "examples_per_s": 12500.0},
            },
            {"name": "ours", "stats": {"median": 2.0, "iqr": 0.1}, "extra_info": ours},
            {"name": "graph", "stats": {"median": 2.0, "iqr": 0.1}, "extra_info": graph},
        ],
    }
    (bench / "peers" / "m.json").write_text(json.dumps(payload))
    walltime = {
        "cpu_model": "Test CPU",
        "cores": 2,
        "git": {"commit": "abcdef123"},
        "speedup": 7.0 / 3.0,
        "with_seed_batching": {"runs": 220, "workers": 2, "seeds_per_group": 16, "wall_s": 300.0},
        "without_seed_batching": {"runs": 220, "workers": 2, "seeds_per_group": 1, "wall_s": 700.0},
    }
    (bench / "study_walltime" / "m.json").write_text(json.dumps(walltime))  # a file from before baselines
    timings = [
        {"label": "baseline v1", "commit": "0123456789", "runs": 220, "workers": 2, "wall_s": 480.0},
        {"label": "cold", "commit": "fedcba9876", "runs": 220, "workers": 2, "wall_s": 240.0},
        {"label": "warm", "commit": "fedcba9876", "runs": 220, "workers": 2, "wall_s": 120.0},
    ]
    (bench / "study_walltime" / "n.json").write_text(
        json.dumps({"cpu_model": "Other CPU", "cores": 4, "timings": timings})
    )
    build_report(runs, tmp_path / "out", warn=lambda s: None, benchmarks=bench)
    peers = _md_rows((tmp_path / "out" / "peers.md").read_text())
    assert ["jax (xla) / bfloat16", "30000", "12000", "pythae 12500", "2.40x", "0.96x", "Test CPU (2 threads)"] in peers
    assert [
        "tensorflow (graph) / bfloat16",
        "25000",
        "12000",
        "pythae 12500",
        "2.00x",
        "0.96x",
        "Test CPU (2 threads)",
    ] in peers
    walls = _md_rows((tmp_path / "out" / "study_walltime.md").read_text())
    assert ["Test CPU (2 threads)", "seed groups of up to 16", "abcdef1", "220", "2", "300", "1.00x"] in walls
    assert ["Test CPU (2 threads)", "every seed alone", "abcdef1", "220", "2", "700", "2.33x"] in walls
    assert ["Other CPU (4 threads)", "baseline v1", "0123456", "220", "2", "480", "1.00x"] in walls
    assert ["Other CPU (4 threads)", "warm", "fedcba9", "220", "2", "120", "0.25x"] in walls


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (.ci/run installs Debian's chromium)")
def test_html_page_renders_tables_and_figures_in_headless_chromium(runs, tmp_path):
    from matplotlib.image import imread

    out = tmp_path / "out"
    build_report(runs, out, warn=lambda s: None)
    url = (out / "report.html").as_uri()
    profile = ["--user-data-dir=" + str(tmp_path / "profile")]
    dom = subprocess.run(
        [CHROMIUM, *FLAGS, *profile, "--enable-logging=stderr", "--v=0", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    # loglik, collapse, sensitivity, contrasts (a flagged raw cell beside its dequantized one), convergence and
    # throughput: no faithfulness table without its reference decoder
    from tfp_vae.report.figures import FIGURES

    figures = len(FIGURES)
    assert dom.stdout.count('<table class="sortable">') == 6 and dom.stdout.count("data:image/png;base64,") == figures
    assert f'data-images-loaded="{figures}"' in dom.stdout  # set by the page's script once every figure decoded
    assert "floor(xi=0.02)" in dom.stdout and "Runs and environments" in dom.stdout
    assert "have runs flagged as collapsed: learned on raw pixels, 3 of 5." in dom.stdout  # the answer in words
    # the page opens with the answer, above every table: the collapse map and the best entries
    assert dom.stdout.index('id="answer"') < dom.stdout.index('<table class="sortable">')
    frame = load_records(runs).frame
    flagged = frame.groupby(["label", "scaling"])["variance_collapse"].agg(["sum", "count"])
    shown = re.findall(r'data-collapsed="(\d+)" data-runs="(\d+)"', dom.stdout)
    assert sorted((int(k), int(n)) for k, n in shown) == sorted((int(k), int(n)) for k, n in flagged.to_numpy())
    assert dom.stdout.count("<li><b>digits dequantized") == 1  # one best entry per ranked column
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console  # no script errors on the page
    shot = tmp_path / "shot.png"
    subprocess.run(
        [CHROMIUM, *FLAGS, *profile, f"--screenshot={shot}", "--window-size=1200,1600", url],
        capture_output=True,
        timeout=120,
        check=True,
    )
    pixels = imread(shot)
    assert pixels.shape[0] == 1600 and pixels.shape[1] == 1200
    assert pixels[..., :3].std() > 0.05  # not blank: text, table borders and plots


def test_no_cell_mixes_devices_or_tf32(runs, tmp_path):
    """The same runs recorded once more on a GPU, and once more with TF32: each lands in a
    column of its own, named by what differs, and a CPU cell keeps its own five seeds."""
    import json

    both = tmp_path / "both"
    both.mkdir()
    for path in runs.glob("*.json"):
        rec = json.loads(path.read_text())
        (both / path.name).write_text(json.dumps(rec))
        gpu = {
            **rec,
            "run_id": rec["run_id"] + "-gpu",
            "spec": {**rec["spec"], "device": "gpu"},
            "execution": {"device": "gpu:0"},
        }
        (both / f"{gpu['run_id']}.json").write_text(json.dumps(gpu))
        tf32 = {**gpu, "run_id": rec["run_id"] + "-tf32", "spec": {**gpu["spec"], "tf32": True}}
        (both / f"{tf32['run_id']}.json").write_text(json.dumps(tf32))
    t = loglik_table(load_records(both).frame)
    assert "digits raw (float32, cpu)" in t.header and "digits raw (float32, gpu)" in t.header
    assert "digits raw (tf32, gpu)" in t.header
    cells = t.numbers[(t.numbers["decoder"] == "learned") & (t.numbers["scaling"] == "raw")]
    assert sorted(zip(cells["device"], cells["precision"], cells["n"])) == [
        ("cpu", "float32", 5),
        ("gpu", "float32", 5),
        ("gpu", "tf32", 5),
    ]


def test_a_decoder_trained_at_two_learning_rates_gets_two_cells():
    from tfp_vae.report.load import frame_of

    recs = []
    for lr in (1e-3, 1e-4):
        for seed in range(3):
            rec = record("learned", seed, 50.0 + 1000 * lr, False)
            rec["spec"]["train"] = {"learning_rate": lr}
            recs.append(rec)
    recs.append({**record("floor", 0, 40.0, False, params={"xi": 0.02}), "run_id": "floor"})
    frame = frame_of(recs)
    assert sorted(set(frame["label"])) == ["floor(xi=0.02)", "learned(lr=0.0001)", "learned(lr=0.001)"]
    t = loglik_table(frame)
    means = dict(zip(t.numbers["decoder"], t.numbers["iwae_ll_mean"]))
    assert means["learned(lr=0.001)"] == pytest.approx(51.0) and means["learned(lr=0.0001)"] == pytest.approx(50.1)


def test_sensitivity_and_endings_count_the_planted_fractions(tmp_path):
    """Excess fractions 0.3 %, 1.5 % and 3 % of one cell: flagged at 1, 2 and 3 thresholds of
    0.1-5 %; at c = 3 only the record whose fraction there is above 1 % counts. Two runs capped
    at their 3-epoch budget, one stopped early."""
    from tfp_vae.report.tables import sensitivity_table

    d = tmp_path / "runs"
    d.mkdir()
    for seed, (frac, at_3) in enumerate([(0.003, 0.0), (0.015, 0.002), (0.03, 0.02)]):
        rec = record("learned", seed, 50.0, frac > 0.01)
        rec["metrics"].update(
            excess_density_frac=frac,
            collapse_threshold=0.01,
            density_c=2.0,
            excess_density_frac_by_c={"1.5": frac * 2, "2": frac, "3": at_3, "4": at_3 / 2},
        )
        rec["spec"]["train"] = {"epochs": 3}
        rec["training"].update(epochs_run=3 if seed else 2, stopped_early=not seed, nonfinite=None)
        (d / f"{rec['run_id']}.json").write_text(json.dumps(rec))
    frame = load_records(d).frame
    t = sensitivity_table(frame)
    (row,) = t.rows
    # c = 1.5 doubles the fractions here: 0.6 %, 3 % and 6 %, two above 1 %
    assert row[2:] == ["3/3", "2/3", "2/3", "1/3", "0/3", "2/3", "2/3", "1/3", "0/3"]
    collapse = collapse_table(frame)
    assert collapse.rows[0][collapse.header.index("runs ended")] == "1 stopped, 2 capped"
    assert "3 epochs" in collapse.caption
    # a run that early stopping ended after its bound fell below its first epoch's diverged, and
    # has not converged, whatever its (older) record says
    rec = record("learned", 9, 50.0, False)
    rec["metrics"].update(converged=True)
    rec["spec"]["train"] = {"epochs": 3}
    rec["training"].update(epochs_run=3, stopped_early=True, nonfinite=None, best_epoch=1)
    rec["training"]["curves"] = {"val_bound": [10.0, 5.0, -1e6]}
    (d / f"{rec['run_id']}.json").write_text(json.dumps(rec))
    rec["run_id"], rec["spec"]["seed"], rec["training"]["curves"] = "swing", 10, {"val_bound": [10.0, 20.0, 12.0]}
    rec["training"]["best_epoch"] = 2
    (d / "swing.json").write_text(json.dumps(rec))
    frame = load_records(d).frame.set_index("seed")
    assert frame.loc[9, "ending"] == "diverged" and not frame.loc[9, "converged"]
    assert frame.loc[10, "ending"] == "stopped" and frame.loc[10, "converged"]


def test_labels_name_settings_off_their_defaults_so_no_cell_pools_them(tmp_path):
    """Two learned configurations that differ only in network.split_decoder get two labels (and
    two configs); a record made before the setting existed counts as its default."""
    d = tmp_path / "runs"
    d.mkdir()
    for seed in range(2):
        for split in (False, True):
            rec = record("learned", seed, 50.0, False)
            rec["run_id"] = f"learned-{split}-{seed}"
            rec["spec"]["network"] = {
                "hidden": [32],
                "latent": 5,
                "activation": "elu",
                **({"split_decoder": True} if split else {}),
            }
            (d / f"{rec['run_id']}.json").write_text(json.dumps(rec))
    old = record("fixed", 0, 40.0, False)
    (d / "old.json").write_text(json.dumps(old))
    frame = load_records(d).frame
    assert sorted(set(frame["label"])) == ["fixed", "learned(act=elu)", "learned(split=True, act=elu)"]
    assert set(frame["config"]) == set(frame["label"])
