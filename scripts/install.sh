#!/usr/bin/env bash
# Installs horovod_huffcomp (editable) with the extras named in $1 (default: test).
# Idempotent: pip skips what is already there. torch is pinned first to the CPU build
# this environment ships (a bare "torch" would pull a multi-GB CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-test}"
PY="${PYTHON:-python3}"
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  "$PY" -m pip install -q "torch==2.13.0"
fi
"$PY" -m pip install -q -e ".[${extras}]"
# compile the codec's numba kernels into their on-disk cache now (about a minute on 2 cores)
# rather than in the first training job
"$PY" -c "from horovod_huffcomp.exchange import compile_kernels; compile_kernels()"
