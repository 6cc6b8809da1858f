"""`tox -e peers`: tfp-vae beside pythae on Fashion-MNIST, measured in one run, into
results/benchmarks/peers/<machine>.json; prints each tfp-vae configuration's ratio to pythae.
Needs Fashion-MNIST (apt-get install dataset-fashion-mnist, or tfp-vae data fetch fashion_mnist)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str]) -> int:
    from tfp_vae.environment import machine_slug
    from tfp_vae.report.file_tables import peers_table
    from tfp_vae.report.render import markdown

    out = ROOT / "results" / "benchmarks" / "peers" / f"{machine_slug()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    fresh = out.with_name(f".{out.name}.new")
    rc = subprocess.call(
        [
            sys.executable,
            "-m",
            "pytest",
            "benchmarks/test_peers.py",
            "-p",
            "no:cacheprovider",
            "--benchmark-only",
            "--benchmark-columns=median,iqr,rounds",
            f"--benchmark-json={fresh}",
            *argv,
        ],
        cwd=ROOT,
    )
    if not fresh.is_file() or not json.loads(fresh.read_text()).get("benchmarks"):
        print("no peer benchmark ran (is Fashion-MNIST present?)")
        return rc or 1
    os.replace(fresh, out)
    print("\n" + markdown(peers_table([out])))
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
