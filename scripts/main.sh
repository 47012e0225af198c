#!/usr/bin/env bash
# The main job: install (Horovod included), then a real 2-worker horovodrun training of a CNN
# on scikit-learn's digits, exchanging horovod_huffcomp payloads; prints test accuracy and
# the bytes sent per step against float32. Extra arguments go to the training script.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test
bash scripts/build_horovod.sh
PY="$("${PYTHON:-python3}" -c "import sys; print(sys.executable)")"
# horovodrun is installed beside the interpreter (a pyenv shim may not exist yet)
exec "$(dirname "$PY")/horovodrun" -np 2 -H localhost:2 --gloo "$PY" examples/train_torch_digits.py "$@"
