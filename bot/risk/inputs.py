"""Per-bar inputs of the risk engine, assembled from market data and signals (numba).

Row t of the matrix (columns S_* of `bot.risk.engine`) holds what is known at the close of
bar t: mark, an hourly ATR estimate, crowding per side, the cascade state, the cascade block
(+1 while longs may not be added after a long cascade; -1 mirrored), the cascade's run (how
many ATRs the close has moved on in its direction since its first bar), the nearest dense
liquidation cluster on each side (price, far edge, share), and how many bars the market has
been without trades (stale data). The block lasts until exhaustion fires or `block_bars`
pass (the backtester uses 4 hours). Warm-up: the ATR is NaN (the risk engine takes no
action from it) until an hour of bars has been seen; its EWMA weight is 1/(t+1) until the
hourly weight takes over, so it starts from the first bars' true ranges, not from zero.
Crowding is NaN (no schedule, no hedge) until `CROWD_WARMUP_H` hours have been seen: its 24h
open-interest change and the funding z-score (three 8h settlements) need a day of history.
Every window is in hours of the data's time: `bars_per_hour` is a float (60 on 1m bars, 0.25
on 4h bars), so a day is 1440 1m bars or 6 4h bars. On bars longer than an hour the hourly
ATR is the bar's true range scaled down by sqrt(hours per bar), the same random-walk scaling.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from bot.risk import engine as en
from bot.signals.positioning import hour_bars

# State of `risk_step` (one float64 array, RS_* slots).
# RS_CASC_DIR / RS_CASC_REF / RS_CASC_ATR: direction, close and ATR at the first bar of the
# cascade being held (0 / - / - when none): the reference of S_CASCADE_RUN.
(RS_T, RS_TR_EWMA, RS_PREV_CLOSE, RS_STALE, RS_BLOCK, RS_BLOCK_SINCE, RS_ATR_ENV, RS_CASC_DIR,
 RS_CASC_REF, RS_CASC_ATR) = range(10)
N_RS = 10
CROWD_WARMUP_H = 24


@njit(cache=True)
def new_risk_state() -> np.ndarray:
    """Empty state of `risk_step` (slots RS_*)."""
    st = np.zeros(N_RS)
    st[RS_BLOCK_SINCE] = -1.0
    return st


@njit(cache=True)
def crowding_warm_bar(bars_per_hour: float) -> int:
    """Index of the first bar whose crowding the rules read (`CROWD_WARMUP_H` hours seen:
    bar 1439 of 1m bars, bar 5 of 4h bars); before it S_CROWD_* are NaN. The heatmap
    timeline blanks the same bars. Its 24h OI change needs one bar more (1440, 6): the
    first warm reading scores without it (the weights renormalise)."""
    return max(1, hour_bars(CROWD_WARMUP_H, bars_per_hour)) - 1


@njit(cache=True)
def block_bars_for(bars_per_hour: float, hours: float = 4.0) -> int:
    """Bars the cascade block lasts at most: `hours` of data, at least one bar."""
    return max(1, hour_bars(hours, bars_per_hour))


@njit(cache=True)
def risk_step(st: np.ndarray, close: float, high: float, low: float, volume: float,
              filled: float, mark: float, crowd_long: float, crowd_short: float,
              cascade: float, exhaustion: float, clusters: np.ndarray, bars_per_hour: float,
              block_bars: int, out: np.ndarray) -> None:
    """One bar: write the risk engine's signal row (columns S_*) into `out`. Prices
    quote/base, `volume` base, `filled` 1.0 for a gap-filled bar, `clusters` the six values
    of `heatmap.nearest_clusters`."""
    t = int(st[RS_T])
    a = max(1.0 - np.exp(-1.0 / bars_per_hour), 1.0 / (t + 1.0))
    prev = st[RS_PREV_CLOSE] if t > 0 else close
    tr = max(high - low, abs(high - prev), abs(low - prev))
    st[RS_TR_EWMA] += a * (tr - st[RS_TR_EWMA])
    st[RS_STALE] = st[RS_STALE] + 1.0 if (volume <= 0.0 or filled != 0.0) else 0.0
    if cascade != 0.0:
        st[RS_BLOCK] = cascade
        st[RS_BLOCK_SINCE] = t
    elif st[RS_BLOCK] != 0.0 and (exhaustion == st[RS_BLOCK]
                                  or t - st[RS_BLOCK_SINCE] > block_bars):
        st[RS_BLOCK] = 0.0
    out[en.S_MARK] = mark
    # the ATR the rules read: the hourly ATR's envelope, rising with it at once and decaying
    # with a one-day time constant, so a crash's volatility is remembered for a day
    atr = st[RS_TR_EWMA] * np.sqrt(bars_per_hour)
    st[RS_ATR_ENV] = max(atr, st[RS_ATR_ENV] * np.exp(-1.0 / (24.0 * bars_per_hour)))
    out[en.S_ATR] = st[RS_ATR_ENV] if t + 1 >= bars_per_hour else np.nan
    warm = t >= crowding_warm_bar(bars_per_hour)
    out[en.S_CROWD_LONG] = crowd_long if warm else np.nan
    out[en.S_CROWD_SHORT] = crowd_short if warm else np.nan
    out[en.S_CASCADE] = cascade
    # the cascade's run: measured from the close of its first bar (a re-fire in the same
    # direction extends the cascade, it does not move the reference)
    if cascade == 0.0:
        st[RS_CASC_DIR] = 0.0
    elif cascade != st[RS_CASC_DIR]:
        st[RS_CASC_DIR] = cascade
        st[RS_CASC_REF] = close
        st[RS_CASC_ATR] = out[en.S_ATR]
    ref_atr = st[RS_CASC_ATR]
    out[en.S_CASCADE_RUN] = (st[RS_CASC_REF] - close) * cascade / ref_atr \
        if cascade != 0.0 and ref_atr > 0.0 else np.nan
    out[en.S_CASCADE_BLOCK] = st[RS_BLOCK]
    out[en.S_CLUSTER_BELOW] = clusters[0]
    out[en.S_CLUSTER_BELOW_EDGE] = clusters[1]
    out[en.S_CLUSTER_BELOW_SHARE] = clusters[2]
    out[en.S_CLUSTER_ABOVE] = clusters[3]
    out[en.S_CLUSTER_ABOVE_EDGE] = clusters[4]
    out[en.S_CLUSTER_ABOVE_SHARE] = clusters[5]
    out[en.S_STALE_BARS] = st[RS_STALE]
    st[RS_PREV_CLOSE] = close
    st[RS_T] = t + 1


@njit(cache=True)
def risk_inputs(close: np.ndarray, high: np.ndarray, low: np.ndarray, volume: np.ndarray,
                filled: np.ndarray, mark: np.ndarray, crowd_long: np.ndarray,
                crowd_short: np.ndarray, cascade: np.ndarray, exhaustion: np.ndarray,
                clusters: np.ndarray, bars_per_hour: float, block_bars: int) -> np.ndarray:
    """The (n, N_SIG) signal matrix: `risk_step` over every bar. The ATR is an EWMA of
    1-bar true range over an hour, scaled by sqrt(bars per hour) to hourly units (a
    random-walk approximation), held as an envelope decaying over a day (`risk_step`)."""
    n = len(close)
    out = np.full((n, en.N_SIG), np.nan)
    st = new_risk_state()
    for t in range(n):
        risk_step(st, close[t], high[t], low[t], volume[t], 1.0 if filled[t] else 0.0, mark[t],
                  crowd_long[t], crowd_short[t], cascade[t], exhaustion[t], clusters[t],
                  bars_per_hour, block_bars, out[t])
    return out
