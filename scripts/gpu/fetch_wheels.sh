#!/usr/bin/env bash
# Run where pip reaches PyPI: fetch into .whl/ (ignored by git) exactly the wheels a GPU
# machine lacks to run tfp-vae's JAX backend: CPython 3.12, manylinux x86-64, the versions of
# constraints/py312-gpu.txt, one file per distribution, none of those its image already holds
# (scripts/gpu/present.txt). Then carry .whl to the machine and run scripts/gpu/run.sh there.
set -euo pipefail
cd "$(dirname "$0")/../.."
dest=".whl"
rm -rf "$dest" && mkdir -p "$dest"
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$p")
done
# the project's own needs on the JAX side (pyproject.toml), resolved under the GPU constraints
python3 -m pip download --quiet --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" \
    -c constraints/py312-gpu.txt -d "$dest" \
    "tfp-nightly" "dask[distributed]" "optax" "tqdm" "tabulate"
present="$(grep -v '^#' scripts/gpu/present.txt | tr ' ' '\n' | grep -v '^$' | sort -u)"
for wheel in "$dest"/*.whl; do
    # a wheel's distribution name, normalised as pip does (PEP 503)
    name="$(basename "$wheel" | cut -d- -f1 | tr '[:upper:]_.' '[:lower:]--')"
    if grep -qx "$name" <<<"$present"; then rm "$wheel"; fi
done
names="$(for w in "$dest"/*.whl; do basename "$w" | cut -d- -f1 | tr '[:upper:]_.' '[:lower:]--'; done)"
dupes="$(sort <<<"$names" | uniq -d)"
if [ -n "$dupes" ]; then echo "error: more than one wheel of: $dupes" >&2; exit 1; fi
echo "$(ls "$dest" | wc -l) wheels, $(du -sh "$dest" | cut -f1), in $dest: $(tr '\n' ' ' <<<"$names")"
