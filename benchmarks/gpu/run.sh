#!/usr/bin/env bash
# The GPU check, one entry point (benchmarks/gpu/README.md):
#   bash benchmarks/gpu/run.sh OUT_DIR            # on the GPU machine: install what is missing, run every stage
#   bash benchmarks/gpu/run.sh OUT_DIR --dry-run  # anywhere: same stages, tiny shapes, fp32/gloo on CPU, no install
# (SPIRIT_GPU_DRY_RUN=1 also selects the dry run.) Writes OUT_DIR/results.json, log.txt and tests.xml.
set -uo pipefail
OUT=${1:?usage: bash benchmarks/gpu/run.sh OUT_DIR [--dry-run]}
shift
DRY=""
if [ "${1:-}" = "--dry-run" ] || [ -n "${SPIRIT_GPU_DRY_RUN:-}" ]; then DRY=--dry-run; fi
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PY=${PYTHON:-python3}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/spirit-gpu.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
cd "$ROOT"
if [ -z "$DRY" ]; then
  SITE=${SPIRIT_GPU_SITE:-/tmp/site}
  # Carried wheels go on the path after the repo and before the image's site-packages.
  timeout 60 "$PY" benchmarks/gpu/install.py --wheels "$ROOT/.whl" --target "$SITE" --report "$WORK/install.json" \
    2>&1 | tee -a "$OUT/log.txt"
  export PYTHONPATH="$ROOT:$SITE${PYTHONPATH#"$ROOT"}"
  nvidia-smi 2>&1 | head -20 >> "$OUT/log.txt"
fi
"$PY" benchmarks/gpu/check.py --out "$OUT" --work "$WORK" --install-report "$WORK/install.json" $DRY "$@"
