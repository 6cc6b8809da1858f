"""tfp-vae: train VAEs whose decoders model pixel variance, run and reproduce studies of them,
and report log-likelihood, variance collapse and throughput (definitions: docs/definitions.md)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tomllib
from pathlib import Path
from typing import Any, Sequence

from tfp_vae import compile_cache
from tfp_vae.backends import COMPILERS
from tfp_vae.errors import ConfigError, TfpVaeError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter off the terminal


def _parse_param(text: str) -> tuple[str, Any]:
    """`name=value`, the value read as a TOML value (numbers, booleans), else a string."""
    if "=" not in text:
        raise ConfigError(f"--param {text!r}: expected NAME=VALUE, e.g. --param xi=0.05")
    name, raw = text.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return name.strip(), value


def _spec_from_args(args: argparse.Namespace):
    from tfp_vae.config import RunSpec, spec_from_dict, spec_from_toml

    base = spec_from_toml(args.spec) if args.spec else RunSpec(backend=default_backend())
    top = {
        k: v
        for k, v in (
            ("dataset", args.dataset),
            ("scaling", args.scaling),
            ("decoder", args.decoder),
            ("seed", args.seed),
            ("device", args.device),
            ("backend", args.backend),
            ("precision", args.precision),
        )
        if v is not None
    }
    if args.param:
        top["decoder_params"] = dict(_parse_param(p) for p in args.param)
    train = {
        k: v
        for k, v in (("epochs", args.epochs), ("batch_size", args.batch_size), ("learning_rate", args.lr))
        if v is not None
    }
    if args.compiler:
        train["compiler"] = args.compiler
    evaluation = {k: v for k, v in (("iwae_k", args.iwae_k),) if v is not None}
    merged = dataclasses.asdict(base)
    merged.update(top)
    merged["train"].update(train)
    merged["eval"].update(evaluation)
    if args.decoder is not None and args.decoder != base.decoder and not args.param:
        merged["decoder_params"] = {}  # another decoder's parameters do not carry over
    return spec_from_dict(merged, "command line")


def _count(text: str) -> int:
    """An argparse type: an integer >= 1 (worker and group counts)."""
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed; expected an integer >= 1")
    return value


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def summary_table(record: dict[str, Any]) -> str:
    """A short fixed-width summary of one record."""
    m, t = record["metrics"], record["timing"]
    rows = [
        (
            "run",
            f"{record['spec']['decoder']} on {record['spec']['dataset']} ({record['spec']['scaling']}), "
            f"seed {record['spec']['seed']}",
        ),
        ("status", record["status"]),
        ("elbo (nats)", _fmt(m["elbo"])),
        (f"iwae_ll K={m['iwae_k']} (nats)", _fmt(m["iwae_ll"])),
        (f"lppl S={m['lppl_samples']} (nats)", _fmt(m["lppl"])),
        ("bpd", _fmt(m["bpd"])),
        ("rmse", _fmt(m["rmse"])),
        ("sigma min / p01 / median", " / ".join(_fmt(m[k]) for k in ("sigma_min", "sigma_p01", "sigma_median"))),
        (f"frac_below_tau (tau={m['tau']:.4g})", _fmt(m["frac_below_tau"])),
        (
            "variance_collapse",
            f"{m['variance_collapse']}" + (f" ({m['collapse_reason']})" if m["collapse_reason"] else ""),
        ),
        ("active units", f"{m['active_units']} of {len(m['kl_per_dim'])}"),
        ("train - test elbo gap", _fmt(m["train_test_gap"])),
        ("train examples/s (steady)", _fmt(t["train_examples_per_s"])),
        ("compile s", _fmt(t["compile_s"])),
        ("eval examples/s", _fmt(t["eval_examples_per_s"])),
        ("importance samples/s", _fmt(t["importance_samples_per_s"])),
        ("wall s", _fmt(t["wall_s"])),
        ("peak memory MiB", _fmt(t["peak_memory_mib"])),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _check_writable(path: Path, flag: str) -> None:
    """Fail before any work if `path` cannot be written (its directory is created if needed)."""
    from tfp_vae.files import check_writable

    try:
        check_writable(path.parent)
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot write there ({exc.strerror}); expected a writable path") from None


def cmd_train(args: argparse.Namespace) -> int:
    from tfp_vae.run import group_records, write_record

    spec = _spec_from_args(args)
    out = (
        Path(args.out)
        if args.out
        else Path("runs") / f"{spec.dataset}-{spec.scaling}-{spec.decoder}-s{spec.seed}-{spec.run_id()}.json"
    )
    _check_writable(out, "--out")
    for record in group_records([spec]):  # written before the run's checkpoint is removed
        write_record(record, out)
    print(summary_table(record))
    print(f"record written to {out}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from tfp_vae.data import DATASETS, dataset_entry, store

    names = [args.name] if getattr(args, "name", None) else list(DATASETS)
    entries = [dataset_entry(n) for n in names]
    if args.action == "list" and args.json:
        rows = []
        for e in entries:
            loc = store.locate(e)
            rows.append(
                {
                    "name": e.name,
                    "shape": list(e.shape),
                    "levels": e.levels,
                    "train": e.sizes[0],
                    "test": e.sizes[1],
                    "present": loc is not None,
                    "source": loc.source if loc else None,
                    "directory": str(loc.directory) if loc and loc.directory else None,
                }
            )
        print(json.dumps(rows, indent=1))
        return 0
    if args.action == "list":
        for e in entries:
            loc = store.locate(e)
            where = f"present ({loc.source}{': ' + str(loc.directory) if loc.directory else ''})" if loc else "missing"
            h, w, c = e.shape
            print(f"{e.name:<14} {h}x{w}x{c}, L={e.levels:<3} train {e.sizes[0]:>6}, test {e.sizes[1]:>6}  {where}")
        return 0
    if args.action == "fetch":
        for e in entries:
            loc = store.fetch(e)
            print(f"{e.name}: present ({loc.source}{': ' + str(loc.directory) if loc.directory else ''})")
        return 0
    failed = 0  # verify
    for e in entries:
        loc = store.locate(e)
        if loc is None:
            print(f"{e.name}: missing")
            continue
        try:
            if loc.directory is not None:
                store.read_verified(e, loc)
            print(f"{e.name}: ok ({loc.source})")
        except TfpVaeError as exc:
            failed += 1
            print(f"{e.name}: FAILED: {exc}")
    return 1 if failed else 0


def _compile_cache_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--compile-cache",
        metavar="DIR",
        help=(
            f"where worker processes keep compiled XLA programs between groups and runs (default "
            f"{compile_cache.default_directory()}; '{compile_cache.OFF}': compile every program afresh); "
            f"records do not depend on it"
        ),
    )


def cmd_run(args: argparse.Namespace) -> int:
    from tfp_vae.runner.execute import run_study
    from tfp_vae.runner.store import ResultStore
    from tfp_vae.runner.study import load_study

    study = load_study(args.study)
    store = ResultStore(args.results, study.name)
    progress = run_study(
        study,
        store,
        args.workers,
        args.executor,
        args.scheduler,
        force=args.force,
        rerun_failed=args.rerun_failed,
        seeds_per_group=args.seeds_per_group,
        compile_cache=compile_cache.resolve(args.compile_cache),
    )
    print(
        f"study {study.name}: {progress.done} run, {progress.skipped} skipped, {progress.failed} failed; "
        f"records in {store.dir}"
    )
    return 1 if progress.failed else 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from tfp_vae.report.conclusions import conclusion_lines
    from tfp_vae.runner.execute import run_study
    from tfp_vae.runner.reproduce import reproduce, verdict_lines
    from tfp_vae.runner.study import load_study

    study = load_study(args.study)
    n = 0 if args.all else args.sample
    if n is not None and n < 0:
        raise ConfigError(f"--sample {n} is not allowed; expected an integer >= 1")

    def run_groups(sample, store, groups, workers):
        run_study(
            sample,
            store,
            workers,
            args.executor,
            args.scheduler,
            groups=groups,
            compile_cache=compile_cache.resolve(args.compile_cache),
        )

    found = reproduce(study, args.results, args.out, n, run_groups, workers=args.workers)
    for line in verdict_lines(found.outcomes) + conclusion_lines(found.conclusions):
        print(line)
    return 1 if any(o.failed for o in found.outcomes) else 0


def cmd_status(args: argparse.Namespace) -> int:
    from tfp_vae import checkpoint
    from tfp_vae.runner.store import ResultStore
    from tfp_vae.runner.study import describe, load_study

    study = load_study(args.study)
    store = ResultStore(args.results, study.name)
    counts = {"done": 0, "failed": 0, "pending": 0}
    runs = []
    for spec in study.specs:
        status = store.status(spec.run_id())
        counts[status] += 1
        error = store.read(spec.run_id())["error"] if status == "failed" else None
        saved = checkpoint.peek(checkpoint.path_for([spec.run_id()])) if status == "pending" else None
        epoch = None if saved is None else saved.get("epoch")
        runs.append(
            {
                "run_id": spec.run_id(),
                "run": describe(spec),
                "status": status,
                "error": error,
                "checkpoint_epoch": epoch,
            }
        )
        if status == "failed" and not args.json:
            print(f"failed  {describe(spec)} [{spec.run_id()}]: {error}")
        if epoch is not None and not args.json:
            print(
                f"in progress  {describe(spec)} [{spec.run_id()}]: epoch {epoch} of {spec.train.epochs} "
                f"checkpointed ({checkpoint.path_for([spec.run_id()])})"
            )
    if args.json:
        print(
            json.dumps(
                {"study": study.name, "directory": str(store.dir), **counts, "total": len(study.specs), "runs": runs},
                indent=1,
            )
        )
        return 0
    print(
        f"study {study.name}: {counts['done']} done, {counts['failed']} failed, {counts['pending']} pending "
        f"of {len(study.specs)} ({store.dir})"
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    import time

    from tfp_vae.report.build import build_report

    started = time.perf_counter()
    from tfp_vae.report.declared import published_for

    published = published_for(args.tables, Path(args.runs).name)
    written = build_report(
        args.runs, args.out, benchmarks=args.benchmarks, reproductions=args.reproductions, published=published
    )
    print(f"report of {args.runs}: {len(written)} files in {args.out} ({time.perf_counter() - started:.1f} s)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from tfp_vae.export import export_tensorboard

    written = export_tensorboard(args.runs, args.tensorboard)
    print(f"{len(written)} runs exported to {args.tensorboard}: tensorboard --logdir {args.tensorboard}")
    return 0


def cmd_paper(args: argparse.Namespace) -> int:
    from tfp_vae.report.declared import build_declared

    written = build_declared(args.tables, args.runs_root, args.out)
    print(f"{len(written)} files of declared tables in {args.out}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    if args.json:
        if args.what == "decoders":
            from tfp_vae.decoders import DECODERS

            print(json.dumps([cls.describe() for cls in DECODERS.values()], indent=1))
        elif args.what == "backends":
            from tfp_vae.backends import BACKENDS

            print(json.dumps(list(BACKENDS), indent=1))
        else:
            from tfp_vae.data import DATASETS

            print(
                json.dumps(
                    [
                        {"name": e.name, "shape": list(e.shape), "levels": e.levels, "description": e.description}
                        for e in DATASETS.values()
                    ],
                    indent=1,
                )
            )
        return 0
    if args.what == "backends":
        from tfp_vae.backends import BACKENDS

        for name, module in BACKENDS.items():
            print(f"{name:<12} {module}")
        return 0
    if args.what == "decoders":
        from tfp_vae.decoders import DECODERS

        for cls in DECODERS.values():
            d = cls.describe()
            print(f"{d['name']:<22} {d['summary']}")
            print(f"{'':<22} source: {d['source']}; raw outputs per pixel: {d['outputs_per_pixel']}")
            for name, p in d["params"].items():
                print(f"{'':<22}   {name} = {p['default']!r}  ({p['allowed']}): {p['doc']}")
    else:
        from tfp_vae.data import DATASETS

        for entry in DATASETS.values():
            h, w, c = entry.shape
            print(f"{entry.name:<16} {h}x{w}x{c}, {entry.levels} grey levels: {entry.description}")
    return 0


def default_backend() -> str:
    """The first backend whose framework is installed here (a JAX-only GPU machine has no TensorFlow)."""
    import importlib.util

    from tfp_vae.backends import BACKENDS, DEFAULT_BACKEND

    return next((name for name in BACKENDS if importlib.util.find_spec(name) is not None), DEFAULT_BACKEND)


def _train_parser(sub) -> None:
    from tfp_vae.config import RunSpec

    tr = sub.add_parser("train", help="train and evaluate one VAE, write its JSON record")
    d = RunSpec()  # the defaults each flag names: the spec file's value, where --spec gives one, else these
    tr.add_argument("--spec", help="a run spec TOML file (docs/usage.md); the flags below override its values")
    tr.add_argument("--dataset", help=f"a data set (tfp-vae list datasets; default {d.dataset})")
    tr.add_argument("--scaling", help=f"raw (x / (L - 1)) or dequantized ((x + u) / L) (default {d.scaling})")
    tr.add_argument("--decoder", help=f"a decoder (tfp-vae list decoders; default {d.decoder})")
    tr.add_argument(
        "--param",
        action="append",
        metavar="NAME=VALUE",
        help="a decoder hyperparameter, repeatable (tfp-vae list decoders shows each one's default)",
    )
    tr.add_argument("--seed", type=int, help=f"the run's seed: weights, data order and noise (default {d.seed})")
    tr.add_argument("--epochs", type=int, help=f"the most epochs to train (default {d.train.epochs})")
    tr.add_argument("--batch-size", type=int, help=f"training batch size (default {d.train.batch_size})")
    tr.add_argument("--lr", type=float, help=f"Adam's learning rate (default {d.train.learning_rate:g})")
    tr.add_argument("--iwae-k", type=int, help=f"importance samples of the test bound (default {d.eval.iwae_k})")
    tr.add_argument("--device", help=f"cpu, gpu or auto (default {d.device})")
    tr.add_argument(
        "--backend",
        help=f"tensorflow or jax, TFP's JAX substrate (default: {default_backend()}, the first of them installed here)",
    )
    tr.add_argument("--precision", help=f"float32, or bfloat16 for the dense layers' matmuls (default {d.precision})")
    tr.add_argument(
        "--compiler",
        choices=sorted({c for names in COMPILERS.values() for c in names}),
        help="xla (both backends) or graph (TensorFlow's own kernels without XLA)",
    )
    tr.add_argument("--out", help="record path (default runs/<dataset>-<scaling>-<decoder>-s<seed>-<id>.json)")
    tr.set_defaults(func=cmd_train)
    tr.add_argument("--data-dir", help="directory holding data sets as DIR/<name>/<files> (or TFP_VAE_DATA_DIR)")


def _data_parser(sub) -> None:
    da = sub.add_parser("data", help="data sets: list, fetch, verify")
    da_sub = da.add_subparsers(dest="action", required=True)
    for action, text in (
        ("list", "each data set: present or not, from which source, sizes"),
        ("fetch", "find or download a data set, verified by SHA-256"),
        ("verify", "check the checksums of present data sets"),
    ):
        p = da_sub.add_parser(action, help=text)
        p.add_argument("name", nargs="?" if action != "fetch" else None)
        p.add_argument("--data-dir", help="directory holding data sets as DIR/<name>/<files>")
        p.add_argument("--json", action="store_true", help="machine-readable output (list)")
    da.set_defaults(func=cmd_data)


def _run_parser(sub) -> None:
    from tfp_vae.runner.execute import DEFAULT_SEEDS_PER_GROUP
    from tfp_vae.runner.executors import EXECUTORS

    rn = sub.add_parser("run", help="run a study (a TOML grid of runs), resuming where it stopped")
    rn.add_argument("study")
    rn.add_argument("--workers", type=_count, default=1, help="parallel worker processes, each running a seed group")
    rn.add_argument(
        "--seeds-per-group",
        type=_count,
        default=DEFAULT_SEEDS_PER_GROUP,
        help=f"most seeds trained in one compiled step (seed batching; 1 = none; default "
        f"{DEFAULT_SEEDS_PER_GROUP}); lower it if a group does not fit in memory",
    )
    rn.add_argument(
        "--executor",
        default="local",
        choices=list(EXECUTORS),
        help="local (worker processes here) or dask (default local)",
    )
    rn.add_argument("--scheduler", help="with --executor dask: address of a running Dask scheduler")
    rn.add_argument("--force", action="store_true", help="run every spec again, even those with a record")
    rn.add_argument("--rerun-failed", action="store_true", help="run again the specs whose record is an error")
    rn.add_argument("--results", default="results/runs", help="record root (default results/runs)")
    _compile_cache_argument(rn)
    rn.set_defaults(func=cmd_run)


def _reproduce_parser(sub) -> None:
    from tfp_vae.runner.executors import EXECUTORS

    rq = sub.add_parser("reproduce", help="rerun committed runs from scratch and compare them with their records")
    rq.add_argument("study", help="the study TOML whose committed records are reproduced")
    which = rq.add_mutually_exclusive_group()
    which.add_argument("--sample", type=_count, help="rerun N >= 1 runs (default: one per decoder and scaling)")
    which.add_argument("--all", action="store_true", help="rerun every committed run")
    rq.add_argument(
        "--workers",
        type=_count,
        help="parallel worker processes, each running a seed group (default: as "
        "many as ran when the records were made, so each has the same threads)",
    )
    rq.add_argument("--executor", default="local", choices=list(EXECUTORS), help="local or dask (default local)")
    rq.add_argument("--scheduler", help="with --executor dask: address of a running Dask scheduler")
    rq.add_argument("--results", default="results/runs", help="root of the committed records")
    rq.add_argument("--out", default="results/reproductions", help="root of the reruns, keyed by machine")
    _compile_cache_argument(rq)
    rq.set_defaults(func=cmd_reproduce)


def _status_report_paper_parsers(sub) -> None:
    st = sub.add_parser("status", help="done, failed and pending runs of a study")
    st.add_argument("study")
    st.add_argument("--results", default="results/runs")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(func=cmd_status)
    rp = sub.add_parser("report", help="tables (Markdown, LaTeX, CSV), figures and an HTML page from run records")
    rp.add_argument("runs", help="a directory of run records, e.g. results/runs/quick")
    rp.add_argument("--out", required=True, help="output directory, e.g. results/quick")
    rp.add_argument(
        "--benchmarks", help="directory of pytest-benchmark JSON files to tabulate, e.g. results/benchmarks"
    )
    rp.add_argument("--reproductions", help="root of tfp-vae reproduce output, e.g. results/reproductions")
    rp.add_argument(
        "--tables",
        default="benchmarks/tables.toml",
        help="the paper-table declarations: a published "
        "table declared there for this study (its records' directory name) opens the page "
        "(default benchmarks/tables.toml)",
    )
    rp.set_defaults(func=cmd_report)
    pp = sub.add_parser("paper", help="regenerate the declared paper tables from committed records")
    pp.add_argument("tables", nargs="?", default="benchmarks/tables.toml")
    pp.add_argument("--runs-root", default="results/runs")
    pp.add_argument("--out", default="results/tables")
    pp.set_defaults(func=cmd_paper)


def _export_list_parsers(sub) -> None:
    ex = sub.add_parser("export", help="run records to another viewer's format (TensorBoard)")
    ex.add_argument("runs", help="a directory of run records, e.g. results/runs/quick")
    ex.add_argument(
        "--tensorboard",
        metavar="DIR",
        required=True,
        help="write TensorBoard event files there (view with: tensorboard --logdir DIR)",
    )
    ex.set_defaults(func=cmd_export)
    ls = sub.add_parser("list", help="list a registry: decoders, datasets or backends")
    ls.add_argument("what", choices=("decoders", "datasets", "backends"))
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=cmd_list)


def make_parser() -> argparse.ArgumentParser:
    from tfp_vae import __version__

    parser = argparse.ArgumentParser(
        prog="tfp-vae", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"tfp-vae {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (
        _train_parser,
        _data_parser,
        _run_parser,
        _reproduce_parser,
        _status_report_paper_parsers,
        _export_list_parsers,
    ):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:  # bare `tfp-vae`: what it can do, not an error
        parser.print_help()
        return 0
    args = parser.parse_args(argv)
    if getattr(args, "data_dir", None):
        os.environ["TFP_VAE_DATA_DIR"] = args.data_dir
    try:
        return args.func(args)
    except TfpVaeError as exc:
        print(f"tfp-vae: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `tfp-vae list decoders --json | head`: the reader has all it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that Python's exit flush does not fail again
        return 0


if __name__ == "__main__":
    sys.exit(main())
