"""Per-bar inputs of the risk engine, assembled from market data and signals (numba).

Row t of the matrix (columns S_* of `bot.risk.engine`) holds what is known at the close of
bar t: mark, an hourly ATR estimate, crowding per side, the cascade state, the cascade block
(+1 while longs may not be added after a long cascade; -1 mirrored), the nearest dense
liquidation cluster on each side (price, far edge, share), and how many bars the market has
been without trades (stale data). The block lasts until exhaustion fires or `block_bars`
pass (the backtester uses 4 hours).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from bot.risk import engine as en


@njit(cache=True)
def risk_inputs(close: np.ndarray, high: np.ndarray, low: np.ndarray, volume: np.ndarray,
                filled: np.ndarray, mark: np.ndarray, crowd_long: np.ndarray,
                crowd_short: np.ndarray, cascade: np.ndarray, exhaustion: np.ndarray,
                clusters: np.ndarray, bars_per_hour: int, block_bars: int) -> np.ndarray:
    """The (n, N_SIG) signal matrix. The ATR is an EWMA of 1-bar true range over an hour,
    scaled by sqrt(bars per hour) to hourly units (a random-walk approximation)."""
    n = len(close)
    out = np.full((n, en.N_SIG), np.nan)
    a = 1.0 - np.exp(-1.0 / bars_per_hour)
    tr_ewma = high[0] - low[0]
    stale = 0
    block = 0.0
    block_since = -1
    for t in range(n):
        prev = close[t - 1] if t > 0 else close[t]
        tr = max(high[t] - low[t], abs(high[t] - prev), abs(low[t] - prev))
        tr_ewma += a * (tr - tr_ewma)
        stale = stale + 1 if (volume[t] <= 0.0 or filled[t]) else 0
        if cascade[t] != 0.0:
            block = cascade[t]
            block_since = t
        elif block != 0.0 and (exhaustion[t] == block or t - block_since > block_bars):
            block = 0.0
        out[t, en.S_MARK] = mark[t]
        out[t, en.S_ATR] = tr_ewma * np.sqrt(bars_per_hour)
        out[t, en.S_CROWD_LONG] = crowd_long[t]
        out[t, en.S_CROWD_SHORT] = crowd_short[t]
        out[t, en.S_CASCADE] = cascade[t]
        out[t, en.S_CASCADE_BLOCK] = block
        out[t, en.S_CLUSTER_BELOW] = clusters[t, 0]
        out[t, en.S_CLUSTER_BELOW_EDGE] = clusters[t, 1]
        out[t, en.S_CLUSTER_BELOW_SHARE] = clusters[t, 2]
        out[t, en.S_CLUSTER_ABOVE] = clusters[t, 3]
        out[t, en.S_CLUSTER_ABOVE_EDGE] = clusters[t, 4]
        out[t, en.S_CLUSTER_ABOVE_SHARE] = clusters[t, 5]
        out[t, en.S_STALE_BARS] = stale
    return out
