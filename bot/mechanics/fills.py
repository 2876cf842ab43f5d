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


# State of `window_step`: scalars (FS_* slots) and a (3, window) ring of the last `window`
# bars' quote volume, liquidation notional and 1-bar log return.
FS_T, FS_SV, FS_SL, FS_S1, FS_S2, FS_PREV_CLOSE = range(6)
N_FS = 6
FR_VOL, FR_LIQ, FR_RET = range(3)


@njit(cache=True)
def new_window_state(window: int) -> tuple[np.ndarray, np.ndarray]:
    """Empty (scalars, ring) state of `window_step` for a trailing window of `window` >= 1
    bars."""
    return np.zeros(N_FS), np.zeros((3, max(1, window)))


@njit(cache=True)
def window_step(st: np.ndarray, ring: np.ndarray, close: float, quote_volume: float,
                liq_notional: float, window: int) -> tuple[float, float, float]:
    """One bar: (V_w quote, sigma_w, L_w quote) over the trailing `window` bars including
    this one. sigma_w is the std of 1-bar log returns over the window times sqrt(window)."""
    t = int(st[FS_T])
    slot = t % ring.shape[1]
    old_v = ring[FR_VOL, slot]
    old_l = ring[FR_LIQ, slot]
    old_r = ring[FR_RET, slot]
    r = np.log(close / st[FS_PREV_CLOSE]) if t > 0 else 0.0
    ring[FR_VOL, slot] = quote_volume
    ring[FR_LIQ, slot] = liq_notional
    ring[FR_RET, slot] = r
    sv = st[FS_SV] + quote_volume
    sl = st[FS_SL] + liq_notional
    s1 = st[FS_S1] + r
    s2 = st[FS_S2] + r * r
    if t >= window:
        sv -= old_v
        sl -= old_l
        s1 -= old_r
        s2 -= old_r * old_r
    st[FS_SV] = sv
    st[FS_SL] = sl
    st[FS_S1] = s1
    st[FS_S2] = s2
    st[FS_PREV_CLOSE] = close
    st[FS_T] = t + 1
    m = min(t + 1, window)
    var = s2 / m - (s1 / m) ** 2
    return sv, np.sqrt(var * window) if var > 0.0 else 0.0, sl


@njit(cache=True)
def window_inputs(close: np.ndarray, quote_volume: np.ndarray, liq_notional: np.ndarray,
                  window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Trailing-window (V_w, sigma_w, L_w) known at each bar's close (includes that bar):
    `window_step` over every bar."""
    n = len(close)
    vol = np.zeros(n)
    sig = np.zeros(n)
    liq = np.zeros(n)
    st, ring = new_window_state(window)
    for t in range(n):
        vol[t], sig[t], liq[t] = window_step(st, ring, close[t], quote_volume[t],
                                             liq_notional[t], window)
    return vol, sig, liq
