#!/usr/bin/env bash
# On a machine with a GPU: gpu-marked tests, a short training of each architecture and
# bench step, figures in $1 (default gpu-check.json). No GPU: one line, exit 2.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(realpath -m "${1:-gpu-check.json}")
PYTHON=${PYTHON:-python3}
cd "$ROOT"
if ! "$PYTHON" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null \
    && [ "${GPU_CHECK_ALLOW_CPU:-}" != 1 ]; then
    echo "gpu-check: no GPU visible to torch (torch.cuda.is_available() is False)" >&2
    exit 2
fi
# Wheels from `make gpu-wheels`, only for distributions not installed: a newer one the
# machine has (typing_extensions, say) stays in front.
SITE=${GPU_CHECK_SITE:-/tmp/site}
if compgen -G ".whl/*.whl" >/dev/null; then
    mapfile -t missing < <("$PYTHON" - .whl/*.whl <<'PY'
import importlib.metadata, sys
for wheel in sys.argv[1:]:
    name = wheel.rsplit("/", 1)[-1].split("-")[0]
    try:
        importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        print(wheel)
PY
)
    if [ "${#missing[@]}" -gt 0 ]; then
        "$PYTHON" -m pip install -q --upgrade --no-index --no-deps --target "$SITE" "${missing[@]}"
    fi
fi
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
# Under 8 minutes on an H100 or H200; the limit stops a hung part (a slow CPU run with
# GPU_CHECK_ALLOW_CPU=1 may need GPU_CHECK_TIMEOUT raised).
extra=()
[ "${GPU_CHECK_ALLOW_CPU:-}" = 1 ] && extra=(--allow-cpu)
exec timeout "${GPU_CHECK_TIMEOUT:-480}" "$PYTHON" scripts/gpu_check.py "$OUT" "${extra[@]}"
