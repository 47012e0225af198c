#!/usr/bin/env bash
# Installs what the tests need (Horovod included: built once, ~5 minutes, then skipped),
# then runs pytest: codec tests plus 2-worker horovodrun tests of the PyTorch adapter.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test
bash scripts/build_horovod.sh
exec "${PYTHON:-python3}" -m pytest -q "$@"
