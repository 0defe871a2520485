#!/usr/bin/env bash
# The prepared GPU check (tests/gpu_check.py says what it runs): one call, under 8 minutes, on a
# lent GPU machine that is offline. Results: $OUT/gpu_check.jsonl (one JSON line per step) and
# $OUT/gpu_check.log (every command's output).
#
#   bash tests/gpu_check.sh              # on the GPU machine: install miniclip (no network), then check
#   bash tests/gpu_check.sh --dry-run    # anywhere: the same steps on the CuPy stand-in (CI runs this)
#
# $PYTHON picks the interpreter (default python3; in a dry run .venv/bin/python when there is one).
# Python packages the GPU machine lacks (open_clip for the OpenCLIP column of the step benchmark)
# can travel as wheels in .whl/ (see the device tool's README); they are installed when present.
set -uo pipefail
cd "$(dirname "$0")/.."
export OUT="${OUT:-/tmp/gpu_check}" PYTHONUNBUFFERED=1
mkdir -p "$OUT"
python=${PYTHON:-python3}
if [ "${1:-}" = "--dry-run" ]; then
    [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ] && python=.venv/bin/python   # the dry run: this checkout's venv
else
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || echo "nvidia-smi failed"
    "$python" -m pip install -q --no-deps --no-build-isolation -e . || { echo "pip install -e . failed"; exit 1; }
    if compgen -G ".whl/*.whl" >/dev/null; then
        "$python" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
            && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
    fi
fi
exec "$python" -m tests.gpu_check "$@"
