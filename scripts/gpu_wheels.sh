#!/usr/bin/env bash
# Wheels a bare GPU machine (CPython 3.12 with torch, timm, pandas, pyarrow, seaborn; no
# network) lacks for the trial path and the GPU tests, into .whl/ at constraints.txt's pins.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
DEST=.whl
# DeepSpeed's and pydantic's Requires-Dist that such a machine lacks, and pytest's.
PACKAGES=(
    pydantic pydantic_core annotated-types typing_extensions typing-inspection
    hjson py-cpuinfo ninja msgpack psutil einops
    pytest pluggy iniconfig Pygments
)
mkdir -p "$DEST"
pin() {  # NAME==VERSION from constraints.txt, names compared as PEP 503 normalises them
    local want
    want=$(echo "$1" | tr 'A-Z_.' 'a-z--')
    awk -F'==' -v want="$want" \
        '{ n = tolower($1); gsub(/[_.]/, "-", n); if (n == want) { print $1 "==" $2; exit } }' \
        constraints.txt
}
for name in "${PACKAGES[@]}"; do
    spec=$(pin "$name")
    [ -n "$spec" ] || { echo "gpu-wheels: $name has no pin in constraints.txt" >&2; exit 1; }
    "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: \
        --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform any -d "$DEST" "$spec"
done
# PyPI has DeepSpeed as an sdist only; it is pure Python, so a wheel built here serves 3.12.
deepspeed=$(pin deepspeed)
if ! ls "$DEST"/deepspeed-"${deepspeed#*==}"-*.whl >/dev/null 2>&1; then
    DS_BUILD_OPS=0 "$PYTHON" -m pip wheel --quiet --no-deps --no-build-isolation \
        "$deepspeed" -w "$DEST"
fi
du -ch "$DEST"/*.whl | tail -1
