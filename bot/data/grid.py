"""The log-spaced price grid shared by the synthetic book and the heatmap estimator."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def log_bin(log_price: float, lo: float, width: float, nb: int) -> int:
    """Index of the bin [lo + b w, lo + (b+1) w) holding `log_price`, clamped to [0, nb)."""
    b = int(np.floor((log_price - lo) / width))
    if b < 0:
        return 0
    if b >= nb:
        return nb - 1
    return b
