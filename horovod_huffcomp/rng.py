"""Counter-based random numbers: a hash of (seed, stream, element index).

Stochastic rounding and Huffman sampling draw from this so the GPU backend reproduces every
draw bit for bit, in any order, with no generator state. The hash is SplitMix64's finaliser:

    key = mix64(seed * GOLDEN + stream)
    u(i) = (mix64(key + i * GOLDEN) >> 40) / 2**24          (24 bits, exact in float32/64)
"""
from __future__ import annotations

import numpy as np
from numba import njit

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
STREAM_SAMPLE = 0xFFFF_FFFF  # sample positions of SH/SHS; tensor streams are 0, 1, 2, ...


@njit(cache=True)
def mix64(z):
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(cache=True)
def stream_key(seed, stream):
    return mix64(np.uint64(seed) * GOLDEN + np.uint64(stream))


@njit(cache=True)
def draw24(key, i):
    """24 random bits for element i of the stream with this key."""
    return mix64(key + np.uint64(i) * GOLDEN) >> np.uint64(40)


def seed_to_u64(seed) -> int:
    seed = int(seed)
    if not 0 <= seed < 1 << 64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    return seed
