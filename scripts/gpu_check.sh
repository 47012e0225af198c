#!/usr/bin/env bash
# What a lent GPU machine runs (docs/gpu.md, "Checking on a GPU"): the environment, the kernels'
# build, the GPU tests against the CPU backend, and `bench gpu`. Logs go under $OUT (the device
# tool's folder that comes back) or /tmp/gpu_check.
#   bash scripts/gpu_check.sh [env|tests|suite|bench|baselines|quantizers|profile|paths|sanitize|
#                              all] ...
#     tests: the GPU backend's tests (and the torch adapter's CUDA ones); suite: every test;
#     bench: python -m horovod_huffcomp.bench gpu (extra arguments go to it); baselines: the
#     same for huffman, sh, shs, rlh and the Elias codes side by side at 16 and 256 MB; quantizers: CO3's
#     float formats (fp8, fp4 with its GenNorm scale), QSGD's buckets (L2, 512) and quantized
#     top-k (1%, s = 8) at 16 and 256 MB; profile: where
#     the host time goes; paths: the two decode-and-sum ways side by side; sanitize: corrupted
#     payloads decoded under compute-sanitizer's memcheck.
# Wheels of missing packages (zstandard, for the suite) may travel in .whl/ (docs/gpu.md).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 NUMBA_CACHE_DIR=${NUMBA_CACHE_DIR:-/tmp/numba_cache}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
# numba's compiled kernels from an earlier call (scripts/gpu_check.sh saves them when
# NUMBA_SAVE=1; carry .devcache): numba checks each source file's time stamp and the CPU
if [ -f .devcache/numba.tgz ]; then
  mkdir -p "$NUMBA_CACHE_DIR" && tar -xzf .devcache/numba.tgz -C "$NUMBA_CACHE_DIR"
fi
save_numba() {
  if [ "${NUMBA_SAVE:-0}" = 1 ]; then
    tar -czf "$OUT/numba.tgz" -C "$NUMBA_CACHE_DIR" . && ls -la "$OUT/numba.tgz"
  fi
}
trap save_numba EXIT
what=${1:-all}
shift || true
GPU_TESTS="tests/test_gpu_backend.py tests/test_torch_adapter_local.py tests/test_cuda_sources.py
tests/test_gpu_orchestration.py"

env_report() {
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv
  python3 - <<'EOF'
import sys, time
import cupy, numba, numpy
print("python", sys.version.split()[0], "numpy", numpy.__version__, "numba", numba.__version__,
      "cupy", cupy.__version__, "cuda runtime", cupy.cuda.runtime.runtimeGetVersion())
try:
    import torch
    print("torch", torch.__version__, "cuda", torch.cuda.is_available())
except ImportError:
    print("no torch")
from horovod_huffcomp import gpu_backend
t = time.perf_counter()
for stage in gpu_backend.STAGES:
    gpu_backend._module(str(gpu_backend.cuda_dir()), stage).compile()
print(f"cuda/*.cu compiled by NVRTC in {time.perf_counter() - t:.1f} s")
EOF
}

run_tests() {  # $1: seconds, then pytest arguments
  local limit=$1
  shift
  timeout "$limit" python3 -m pytest "$@" -q -rfEs --tb=short --timeout 240 \
    -p no:cacheprovider 2>&1 | tee -a "$OUT/tests.log"
}

report() { env_report 2>&1 | tee "$OUT/env.log"; }

run_bench() {  # $1: seconds, then bench gpu arguments
  local limit=$1
  shift
  timeout "$limit" python3 -m horovod_huffcomp.bench gpu "$@" 2>&1 | tee -a "$OUT/bench.log"
}

case $what in
  env) report ;;
  tests) report; run_tests "${TESTS_S:-330}" $GPU_TESTS "$@" ;;
  profile) for c in huffman auto; do python3 scripts/gpu_profile.py $c; done 2>&1 \
             | tee -a "$OUT/profile.log" ;;
  paths) python3 scripts/gpu_profile.py paths 2>&1 | tee -a "$OUT/paths.log" ;;
  sanitize) timeout "${SANITIZE_S:-300}" compute-sanitizer --tool memcheck --error-exitcode 3 \
              python3 scripts/gpu_sanitize.py "$@" 2>&1 | tail -40 | tee -a "$OUT/sanitize.log" ;;
  suite) run_tests "${TESTS_S:-540}" tests "$@" ;;
  bench) run_bench "${BENCH_S:-300}" "$@" ;;
  baselines) run_bench "${BENCH_S:-400}" --coders huffman sh shs rlh elias-gamma elias-delta elias-omega \
               --sizes-mb 16 256 --huffman-writer one "$@" ;;
  quantizers) for q in "--quantizer fp8" "--quantizer fp4" "--norm l2 --bucket 512" \
                  "--quantizer topk --levels 8" "--quantizer topk --levels 0"; do
                # shellcheck disable=SC2086
                run_bench "${BENCH_S:-200}" $q --coders huffman auto --sizes-mb 16 256 \
                  --huffman-writer one "$@"
              done ;;
  all) report; run_tests "${TESTS_S:-300}" $GPU_TESTS; run_bench "${BENCH_S:-220}" "$@" ;;
  *) echo "usage: $0 [env|tests|suite|bench|baselines|quantizers|profile|paths|sanitize|all]" >&2
     exit 2 ;;
esac
