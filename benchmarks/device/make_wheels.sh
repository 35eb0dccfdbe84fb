#!/usr/bin/env bash
# Fill .whl/ (git-ignored: add /.whl/ to .git/info/exclude) with what the GPU machine lacks for
# benchmarks/device/gpu_rows.sh: cp312 manylinux wheels (versions from requirements/lock.txt;
# no torch, numpy, scipy, pandas, ...: the machine has them) and the perov_5 val split.
# Usage (repo root): bash benchmarks/device/make_wheels.sh [DEST]   (DEST default .whl)
set -euo pipefail
DEST=${1:-.whl}
mkdir -p "$DEST/perov_5"
PKGS=(
    pymatgen==2026.10.24 pymatgen-core==2026.10.16 monty==2026.10.21 spglib==2.8.0
    ruamel.yaml==0.19.1 uncertainties==3.2.3 palettable==3.3.3 orjson==3.13.0
    ase==3.29.0 chgnet==0.4.2
    torch-sim-atomistic==0.3.0 vesin==0.6.2 vesin-torch==0.6.2
    tables==3.11.1 blosc2==4.14.1 numexpr==2.14.2 ndindex==1.10.1
    pydantic==2.14.3 pydantic_core==2.50.4 annotated-types==0.8.0 typing-inspection==0.4.5
    typing_extensions==4.16.0
)
for p in "${PKGS[@]}"; do
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$DEST" "$p"
done
# chgnet imports nvidia_smi (nvidia-ml-py3, published as an sdist only): build its wheel
python3 -m pip wheel -q --no-deps --no-binary :all: -w "$DEST" nvidia-ml-py3==7.352.0
cp ../shared/data/perov_5/val.csv ../shared/data/perov_5/README.upstream.md "$DEST/perov_5/"
# the commit the device results record (restamp before each call: README)
git rev-parse --short HEAD >"$DEST/COMMIT"
du -sh "$DEST"
