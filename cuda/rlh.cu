// RLH stage (coders/rlh.py layout, docs/format.md): its decoder. RLH's encode runs as CuPy
// array operations (horovod_huffcomp/gpu_rlh.py: its codebook lists the pairs a tensor uses,
// which the host must see to build the code). Chunks numbered globally (common.cuh
// hc_chunk); `coders` gives each tensor's coder: chunks of tensors coded otherwise are skipped.
//
//   hc_rlh_decode  one thread per chunk decodes its runs (common.cuh hc_rlh_decode_chunk:
//                  each codeword's pair by the code's canonical limits, then its run of
//                  states, exact top-k's raw magnitudes after a non-zero run's codeword) into
//                  a zeroed int8 state buffer (states.cu hc_add_states adds every state's
//                  value: decode-and-sum)
#include "common.cuh"

extern "C" __global__ void hc_rlh_decode(
    const unsigned char* __restrict__ buf, unsigned long long nbytes,
    const unsigned long long* __restrict__ chunk_byte,
    const unsigned long long* __restrict__ chunk_bits, const int* __restrict__ clog2,
    const long long* __restrict__ chunk_first, const long long* __restrict__ sizes, int count,
    int s, const unsigned char* __restrict__ coders, const int* __restrict__ dec,
    const long long* __restrict__ pair_at, const long long* __restrict__ pairs,
    const long long* __restrict__ state_at, signed char* __restrict__ out,
    unsigned int* __restrict__ raw_or_null, int* err) {
    hc_rlh_decode_thread(blockIdx.x * (long long)blockDim.x + threadIdx.x, buf, nbytes,
                         chunk_byte, chunk_bits, clog2, chunk_first, sizes, count, s, coders,
                         dec, pair_at, pairs, state_at, out, raw_or_null, err);
}
