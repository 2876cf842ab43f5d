"""Fill model: what a market order really pays, and when a limit order fills.

Market orders: slippage fraction (of the reference price)
    s = half_spread + coef x sigma_w x sqrt(notional / V_w) x (1 + liq_mult x L_w / V_w)
capped at `max_impact`, where over the last `window` bars: V_w is the quote volume,
sigma_w the volatility of log returns scaled to the window (per-bar std x sqrt(window)),
L_w the realised liquidation notional. The square-root law (impact ~ sigma x sqrt(Q/V))
is the standard empirical form for meta-order impact; the liquidation term thins the book
in a cascade, when forced orders eat the depth a normal order would meet.
Buys fill at ref x (1 + s), sells at ref x (1 - s).

Limit orders fill only when the price trades THROUGH them (a buy when the bar's low is
strictly below the limit, a sell when the high is strictly above), at the limit price, as
maker. Touching the level is not enough: the queue ahead of us is unknown.
All inputs are known at the decision bar's close (no lookahead).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def market_slippage(notional: float, window_quote_volume: float, window_sigma: float,
                    window_liq_notional: float, coef: float, half_spread: float,
                    liq_mult: float, max_impact: float) -> float:
    """Slippage fraction for a market order of `notional` quote (formula in module doc)."""
    if notional <= 0.0:
        return 0.0
    v = window_quote_volume if window_quote_volume > 1.0 else 1.0
    thin = 1.0 + liq_mult * window_liq_notional / v
    s = half_spread + coef * window_sigma * np.sqrt(notional / v) * thin
    if s > max_impact:
        return max_impact
    return s


@njit(cache=True)
def market_fill_price(side: float, ref_price: float, slippage: float) -> float:
    """Buy (side +1) above the reference, sell (-1) below it."""
    return ref_price * (1.0 + side * slippage)


@njit(cache=True)
def limit_fills(side: float, limit: float, bar_low: float, bar_high: float) -> bool:
    """True when the bar traded through the limit (buy: low < limit; sell: high > limit)."""
    if side > 0.0:
        return bar_low < limit
    return bar_high > limit


@njit(cache=True)
def window_inputs(close: np.ndarray, quote_volume: np.ndarray, liq_notional: np.ndarray,
                  window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Trailing-window (V_w, sigma_w, L_w) known at each bar's close (includes that bar).

    sigma_w is the std of 1-bar log returns over the window times sqrt(window).
    """
    n = len(close)
    vol = np.zeros(n)
    sig = np.zeros(n)
    liq = np.zeros(n)
    sv = 0.0
    sl = 0.0
    s1 = 0.0
    s2 = 0.0
    for t in range(n):
        sv += quote_volume[t]
        sl += liq_notional[t]
        r = np.log(close[t] / close[t - 1]) if t > 0 else 0.0
        s1 += r
        s2 += r * r
        if t >= window:
            sv -= quote_volume[t - window]
            sl -= liq_notional[t - window]
            r0 = np.log(close[t - window] / close[t - window - 1]) if t - window > 0 else 0.0
            s1 -= r0
            s2 -= r0 * r0
        m = min(t + 1, window)
        var = s2 / m - (s1 / m) ** 2
        vol[t] = sv
        liq[t] = sl
        sig[t] = np.sqrt(var * window) if var > 0.0 else 0.0
    return vol, sig, liq
