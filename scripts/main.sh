#!/usr/bin/env bash
# The main job: install, then the codec benchmark on real gradients (digits: MLP, CNN,
# transformer block), printing bits/entry against the entropy bound, Elias and zstd.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh bench
exec "${PYTHON:-python3}" -m horovod_huffcomp.bench codec --plot bench_codec.png "$@"
