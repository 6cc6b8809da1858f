#!/usr/bin/env bash
# Run on a GPU machine with no network, from the repository root, with .whl/ carried
# (scripts/gpu/fetch_wheels.sh): installs the wheels into a private folder and runs
# scripts/gpu/run.py, which writes records, benchmark JSON and a log into OUT.
#   scripts/gpu/run.sh OUT            # the prepared GPU run (under 8 minutes)
#   scripts/gpu/run.sh OUT --dry-run  # the same steps on JAX's CPU platform, tiny (what the tests run)
set -euo pipefail
out="${1:?usage: scripts/gpu/run.sh OUT [--dry-run]}"; shift
cd "$(dirname "$0")/../.."
if [ "${1:-}" != "--dry-run" ] && compgen -G ".whl/*.whl" >/dev/null; then  # the dry run uses its own environment
    site="${TMPDIR:-/tmp}/tfp-vae-site"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl
    export PYTHONPATH="$site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}"
exec python3 scripts/gpu/run.py --out "$out" "$@"
