#!/usr/bin/env bash
# Builds and installs Horovod 0.28.1 (PyTorch + TensorFlow, Gloo, no MPI) against the pinned
# frameworks. Idempotent: returns at once when this Horovod already imports with both.
# Horovod 0.28.1 is source-only and does not build as published against torch 2.13 / TF 2.21:
# C++17 for the core and the torch extension, xla_mpi_ops.cc dropped (it needs TF's XLA
# headers), and Debian's cmake 3.25 (PyPI's cmake 4 rejects gloo's CMake file).
set -euo pipefail
PY="$("${PYTHON:-python3}" -c "import sys; print(sys.executable)")"
HVD_VERSION=0.28.1
if "$PY" - <<PYEOF >/dev/null 2>&1
import horovod, horovod.torch, horovod.tensorflow
assert horovod.__version__ == "$HVD_VERSION"
PYEOF
then
  exit 0
fi
"$PY" -m pip install -q "torch==2.13.0" "tensorflow-cpu==2.21.0" "tf-keras==2.21.0" \
  "cloudpickle" "psutil" "pyyaml" "packaging"
if ! command -v /usr/bin/cmake >/dev/null; then
  apt-get update -q && apt-get install -y -q cmake
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$PY" -m pip download -q --no-deps --no-binary :all: "horovod==$HVD_VERSION" -d "$work"
tar xzf "$work/horovod-$HVD_VERSION.tar.gz" -C "$work"
src="$work/horovod-$HVD_VERSION"
sed -i 's/set(CMAKE_CXX_STANDARD 14)/set(CMAKE_CXX_STANDARD 17)/' \
  "$src/CMakeLists.txt" "$src/horovod/torch/CMakeLists.txt"
sed -i '/xla_mpi_ops.cc/d' "$src/horovod/tensorflow/CMakeLists.txt"
echo "building Horovod $HVD_VERSION (about 5 minutes on 2 cores)..."
HOROVOD_CMAKE=/usr/bin/cmake HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 \
  HOROVOD_WITHOUT_MPI=1 HOROVOD_WITHOUT_MXNET=1 MAKEFLAGS="-j$(nproc)" \
  "$PY" -m pip install -q --no-build-isolation --no-cache-dir "$src"
command -v pyenv >/dev/null && pyenv rehash || true  # make the horovodrun shim visible
"$PY" -c "import horovod.torch, horovod.tensorflow; print('horovod', horovod.__version__, 'ready')"
