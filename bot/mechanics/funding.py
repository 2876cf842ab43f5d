"""Funding-rate rules (numba kernels). Rates are per funding interval (0.0001 = 0.01%)."""

from __future__ import annotations

from numba import njit

#: Binance USD-M defaults: interest 0.03%/day = 0.01% per 8h, clamp +-0.05%.
DEFAULT_INTEREST = 0.0001
DEFAULT_CLAMP = 0.0005


@njit(cache=True)
def funding_rate_from_premium(
    avg_premium: float, interest: float = DEFAULT_INTEREST, clamp: float = DEFAULT_CLAMP,
    cap: float = 0.0075, floor: float = -0.0075,
) -> float:
    """F = P + clamp(I - P, -clamp, +clamp), then bounded to [floor, cap].

    Binance and Bybit publish this formula ("Introduction to Binance Futures Funding Rates";
    Bybit "Funding Fee Calculation"): P is the time-weighted average premium index over the
    interval, I the interest rate per interval.
    """
    d = interest - avg_premium
    if d > clamp:
        d = clamp
    elif d < -clamp:
        d = -clamp
    f = avg_premium + d
    if f > cap:
        return cap
    if f < floor:
        return floor
    return f
