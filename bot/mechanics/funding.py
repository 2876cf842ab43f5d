"""Funding rules (numba kernels). Rates are per funding interval (0.0001 = 0.01%).

Payment at a settlement = position size (signed base) x mark price x rate: with a positive
rate longs pay and shorts receive. Settlements happen at whole multiples of the interval
since the epoch (8h: 00:00, 08:00, 16:00 UTC; 4h and 1h likewise).
"""

from __future__ import annotations

import numpy as np
from numba import njit

HOUR_MS = 3_600_000
#: Binance and Bybit: interest 0.03% per day, i.e. 0.01% per 8h; clamp +-0.05%.
DAILY_INTEREST = 0.0003
DEFAULT_INTEREST = 0.0001
DEFAULT_CLAMP = 0.0005
#: Binance caps the rate at +-0.75 x the first tier's maintenance rate: +-0.3% for BTCUSDT
#: (the -0.00300 of 2020-03-13 in the real history is that floor).
DEFAULT_CAP = 0.003


@njit(cache=True)
def funding_payment(qty: float, mark: float, rate: float) -> float:
    """Quote amount the position PAYS (negative: receives). `qty` is signed base."""
    return qty * mark * rate


@njit(cache=True)
def clamp_rate(rate: float, floor: float, cap: float) -> float:
    if rate > cap:
        return cap
    if rate < floor:
        return floor
    return rate


@njit(cache=True)
def funding_rate_from_premium(
    avg_premium: float, interest: float = DEFAULT_INTEREST, clamp: float = DEFAULT_CLAMP,
    cap: float = DEFAULT_CAP, floor: float = -DEFAULT_CAP,
) -> float:
    """F = P + clamp(I - P, -clamp, +clamp), then bounded to [floor, cap].

    Binance ("Introduction to Binance Futures Funding Rates") and Bybit ("Funding Fee
    Calculation") publish this formula: P is the average premium index over the interval,
    I the interest rate per interval.
    """
    d = interest - avg_premium
    if d > clamp:
        d = clamp
    elif d < -clamp:
        d = -clamp
    return clamp_rate(avg_premium + d, floor, cap)


@njit(cache=True)
def weighted_average_premium(samples: np.ndarray) -> float:
    """Binance's time-weighted average: (1*P1 + 2*P2 + ... + n*Pn) / (1 + 2 + ... + n),
    so later samples weigh more. NaN samples are skipped."""
    num = 0.0
    den = 0.0
    w = 0.0
    for x in samples:
        w += 1.0
        if np.isfinite(x):
            num += w * x
            den += w
    if den == 0.0:
        return np.nan
    return num / den


@njit(cache=True)
def estimate_funding_rate(premium_samples: np.ndarray, interest: float = DEFAULT_INTEREST,
                          clamp: float = DEFAULT_CLAMP, cap: float = DEFAULT_CAP,
                          floor: float = -DEFAULT_CAP) -> float:
    """The coming rate from the premium-index samples seen so far in the interval."""
    return funding_rate_from_premium(weighted_average_premium(premium_samples), interest, clamp,
                                     cap, floor)


def interest_per_interval(interval_hours: int) -> float:
    """0.03%/day spread over the interval: 8h -> 0.0001, 4h -> 0.00005, 1h -> 0.0000125."""
    return DAILY_INTEREST * interval_hours / 24.0


def settlement_times(start_ms: int, end_ms: int, interval_hours: int) -> np.ndarray:
    """Settlement instants in [start_ms, end_ms): whole multiples of the interval (UTC)."""
    if interval_hours not in (1, 2, 4, 8):
        raise ValueError(f"funding interval must be 1, 2, 4 or 8 hours, got {interval_hours}")
    step = interval_hours * HOUR_MS
    first = -(-start_ms // step) * step
    return np.arange(first, end_ms, step, dtype=np.int64)
