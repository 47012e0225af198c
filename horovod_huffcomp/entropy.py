"""Order-0 entropy of quantized states: the bound the coders are measured against."""
from __future__ import annotations

import numpy as np


def entropy_bits(states: np.ndarray) -> float:
    """n * H0 in bits, H0 the empirical order-0 entropy of the states (0 for n <= 1)."""
    states = np.asarray(states).reshape(-1)
    if states.size == 0:
        return 0.0
    counts = np.bincount(states.astype(np.int64) - int(states.min()))
    p = counts[counts > 0] / states.size
    return float(-(counts[counts > 0] * np.log2(p)).sum())
