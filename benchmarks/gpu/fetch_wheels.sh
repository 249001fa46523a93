#!/usr/bin/env bash
# Download, on a machine with the package index, the wheels the GPU check may need on a machine without one:
# megatron-core 0.16.1 for CPython 3.12 on x86-64 Linux and every other dependency of the project that a stock
# torch image may lack, pinned to the dev venv's versions (2026-12). Never torch. The GPU machine installs only
# those its python cannot import (benchmarks/gpu/install.py).
#
#   bash benchmarks/gpu/fetch_wheels.sh [DEST]        # DEST defaults to .whl/ at the repo root (git-ignored)
#
# Left out on purpose: tensorboard and matplotlib (the check runs with logging.tensorboard=false and
# logging.plot_loss=false; metrics.py tolerates a missing tensorboard), scipy (only amfm_decompy's pYAAPT needs it,
# and no GPU stage runs pYAAPT), pytest's pygments and huggingface-hub's HTTP stack (the device image has them).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DEST=${1:-$ROOT/.whl}
PY=${PYTHON:-python3}
WHEELS=(
  megatron-core==0.16.1
  # speech
  soundfile==0.14.0 cffi==2.1.1 pycparser==3.12 soxr==1.1.0 AMFM_decompy==1.0.12.2 faiss-cpu==1.15.1 joblib==1.6.0
  cloudpickle==3.1.3
  # tokenizer, conversion, Hugging Face
  sentencepiece==0.2.3 protobuf==7.36.2 safetensors==0.8.0 tokenizers==0.23.3 transformers==5.24.0
  huggingface_hub==2.4.0 hf-xet==1.8.0 regex==2026.11.19 filelock==4.3.1 fsspec==2026.9.0
  # core utilities
  PyYAML==6.0.4 tqdm==4.70.1 psutil==7.2.2 packaging==26.4 typing_extensions==4.16.0 xxhash==4.1.0
  # tests
  pytest==9.2.0 pluggy==1.7.0 iniconfig==2.3.1 pytest-timeout==2.4.0 hypothesis==6.170.17 sortedcontainers==2.4.0
)
PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
         manylinux_2_12_x86_64 manylinux2010_x86_64 manylinux1_x86_64; do
  PLATFORMS+=(--platform "$p")
done
mkdir -p "$DEST"
for w in "${WHEELS[@]}"; do
  "$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${PLATFORMS[@]}" -d "$DEST" "$w"
done
# One version of each distribution: two stop the whole install on the GPU machine.
dupes=$(ls "$DEST"/*.whl | xargs -n1 basename | cut -d- -f1 | tr 'A-Z-' 'a-z_' | sort | uniq -d)
if [ -n "$dupes" ]; then
  echo "fetch_wheels: more than one version of: $dupes (remove the stale ones from $DEST)" >&2
  exit 1
fi
echo "$(ls "$DEST"/*.whl | wc -l) wheels, $(du -sh "$DEST" | cut -f1) in $DEST"
