#!/usr/bin/env bash
# Installs what the tests need, compiles the CUDA sources if nvcc is present, runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test
exec "${PYTHON:-python3}" -m pytest -q "$@"
