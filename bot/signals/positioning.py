"""Positioning: how one-sided the crowd is, per bar, with the reasons kept.

Components (column index constants C_*), all known at the bar's close:
- funding: last settled rate (per interval) or, when the dataset has it, the vendor's
  all-exchange OI-weighted rate `funding_rate_avg` (per 8h, a 4h state: fresher and wider than
  one venue's settlements; it then drives the funding-excess score), its z-score over the trailing `z_window`
  settlements, annualised carry (rate x settlements per year), and the estimate of the
  coming rate from the premium samples since the last settlement (`bot.mechanics.funding`);
- open interest: fractional change over 1h, 4h and 24h; OI/price divergence (24h OI change
  signed by the 24h price change: + longs piling in, - shorts piling in);
- ratios: long/short account ratio and top-trader ratio when present;
- taker imbalance over 4h: (buy - sell) / (buy + sell) of base volume;
- heatmap asymmetry: long-liquidation notional within X% below the close over (that +
  short notional within X% above); 0.5 is balanced.
Crowding score per side in [0, 1]: a weighted mean of component scores, each clipped to
[0, 1] (weights in `CrowdingWeights`), over the components that exist for the data (a
dataset without open interest simply loses that component; the weights renormalise).
Scores are documented in docs/heatmap.md with their scales.

Windows are in hours of the data's time, whatever its bar (`bars_per_hour` is a float: 60 on
1m bars, 0.25 on 4h bars; `hour_bars` rounds to whole bars): a change over a window shorter
than one bar is unknown (NaN: the 1h OI change on 2h or 4h bars, the 4h change on 6h or 8h
bars; `change_bars`), a rolling sum covers at least the bar itself (the 4h taker imbalance on
8h bars reads that bar).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from bot.mechanics.funding import DEFAULT_INTEREST, funding_rate_from_premium

(C_FUNDING, C_FUNDING_Z, C_CARRY, C_NEXT_FUNDING, C_OI_1H, C_OI_4H, C_OI_24H, C_DIVERGENCE,
 C_LS_RATIO, C_TOP_RATIO, C_TAKER_IMB, C_HEAT_ASYM, C_LONG_SCORE, C_SHORT_SCORE) = range(14)
N_COMPONENTS = 14
COMPONENT_NAMES = ("funding", "funding_z", "carry_annual", "next_funding", "oi_change_1h",
                   "oi_change_4h", "oi_change_24h", "oi_price_divergence", "long_short_ratio",
                   "top_long_short_ratio", "taker_imbalance_4h", "heatmap_asymmetry",
                   "crowding_long", "crowding_short")


class CrowdingWeights(NamedTuple):
    """Weights and scales of the crowding score (scale = value that scores 1.0)."""

    funding: float = 0.35
    open_interest: float = 0.25
    heatmap: float = 0.2
    taker: float = 0.1
    ratio: float = 0.1
    funding_excess_scale: float = 0.0004   # rate above interest that scores 1
    funding_z_scale: float = 3.0
    oi_scale: float = 0.15                 # +15% OI in 24h with price scores 1
    heat_scale: float = 0.3                # asymmetry 0.8 (vs 0.5) scores 1
    taker_scale: float = 0.2
    ratio_scale: float = 1.5               # long/short ratio 2.5 scores 1
    z_window: int = 21                     # settlements (7 days of 8h)


@njit(cache=True)
def _clip01(x: float) -> float:
    if x != x:
        return 0.0
    if x < 0.0:
        return 0.0
    if x > 1.0:
        return 1.0
    return x


# --- state + step form -----------------------------------------------------------------------
# Scalar state of `positioning_step` (one float64 array, PS_* slots); ring buffers beside it.
(PS_T, PS_N_RATES, PS_LAST_RATE, PS_LAST_SETTLE, PS_INTERVAL, PS_PREV_SETTLE_TS, PS_TB_SUM,
 PS_V_SUM, PS_PW, PS_PNUM, PS_PDEN, PS_Z) = range(12)
N_PS = 12


@njit(cache=True)
def hour_bars(hours: float, bars_per_hour: float) -> int:
    """Whole bars in `hours` of data at `bars_per_hour` (rounded; 0 when the window is
    shorter than half a bar): 1440 for 24 h of 1m bars, 6 of 4h bars."""
    return int(np.floor(hours * bars_per_hour + 0.5))


@njit(cache=True)
def change_bars(hours: float, bars_per_hour: float) -> int:
    """The lag of a change over `hours`: `hour_bars`, or 0 (unknown: `_ring_change` gives
    NaN) when the window is shorter than one bar."""
    return hour_bars(hours, bars_per_hour) if hours * bars_per_hour >= 1.0 - 1e-9 else 0


@njit(cache=True)
def new_positioning_state(bars_per_hour: float, z_window: int) -> tuple[np.ndarray, np.ndarray,
                                                                        np.ndarray, np.ndarray]:
    """Empty (scalars, rates, day, h4) state of `positioning_step`.

    rates (2, max(1, z_window)): row 0 the ring of the last `z_window` settled rates, row 1 a
    scratch row where they are laid out in chronological order for the z-score; day
    (2, bars in 24 h + 1): rings of open interest and close over the last 24 hours; h4
    (2, bars in 4 h, at least 1): rings of taker-buy and total base volume over the last
    4 hours (`hour_bars`).
    """
    sc = np.zeros(N_PS)
    sc[PS_LAST_RATE] = np.nan
    sc[PS_LAST_SETTLE] = -1.0
    sc[PS_INTERVAL] = 8.0 * 3_600_000.0
    sc[PS_PREV_SETTLE_TS] = -1.0
    rates = np.zeros((2, max(1, z_window)))
    day = np.full((2, max(1, hour_bars(24.0, bars_per_hour)) + 1), np.nan)
    h4 = np.zeros((2, max(1, hour_bars(4.0, bars_per_hour))))
    return sc, rates, day, h4


@njit(cache=True)
def _ring_change(ring: np.ndarray, t: int, w: int, slot: int) -> float:
    """x[t] / x[t - w] - 1 over a ring holding x[t - len + 1 .. t] at slot t % len (`slot`,
    passed in: one integer division per bar for every lag), w < len (NaN when unknown, and
    for w < 1: a window shorter than a bar)."""
    if w < 1 or t - w < 0:
        return np.nan
    past = slot - w
    if past < 0:
        past += len(ring)
    now = ring[slot]
    then = ring[past]
    if now != now or then != then or then <= 0.0:
        return np.nan
    return now / then - 1.0


@njit(cache=True)
def positioning_step(sc: np.ndarray, rates: np.ndarray, day: np.ndarray, h4r: np.ndarray,
                     ts: float, close: float, funding: float, funding_avg: float,
                     premium: float, oi: float,
                     ls_ratio: float, top_ratio: float, taker_buy: float, volume: float,
                     near_long: float, near_short: float, w: CrowdingWeights,
                     bars_per_hour: float, out: np.ndarray) -> None:
    """One bar: update the state and write its components (columns C_*) into `out`.
    `ts` is the bar open (ms UTC as float64), volumes base, notionals quote, `funding_avg`
    the vendor's OI-weighted rate per 8h (NaN when absent)."""
    t = int(sc[PS_T])
    if funding == funding:
        k = int(sc[PS_N_RATES])
        cap = rates.shape[1]
        rates[0, k % cap] = funding
        k += 1
        sc[PS_N_RATES] = k
        sc[PS_LAST_RATE] = funding
        if sc[PS_PREV_SETTLE_TS] >= 0.0:
            sc[PS_INTERVAL] = ts - sc[PS_PREV_SETTLE_TS]
        sc[PS_PREV_SETTLE_TS] = ts
        sc[PS_LAST_SETTLE] = t
        if k >= 3:
            # the trailing `z_window` rates in chronological order, their mean and std
            # in numpy's order of operations (`seg.mean()`, `seg.std()`; written out: the
            # array methods cost seconds of compilation)
            m = max(0, min(k, w.z_window))
            total = 0.0
            for i in range(m):
                rates[1, i] = rates[0, (k - m + i) % cap]
                total += rates[1, i]
            mean = total / m
            ssd = 0.0
            for i in range(m):
                dev = rates[1, i] - mean
                ssd += dev * dev
            sd = (ssd / m) ** 0.5
            sc[PS_Z] = (funding - mean) / sd if sd > 0.0 else 0.0
    last_rate = sc[PS_LAST_RATE]
    out[:] = np.nan
    out[C_FUNDING] = last_rate
    if sc[PS_N_RATES] >= 3.0:
        out[C_FUNDING_Z] = sc[PS_Z]
    interval_ms = sc[PS_INTERVAL]
    if last_rate == last_rate and interval_ms > 0.0:
        out[C_CARRY] = last_rate * (365.0 * 86_400_000.0 / interval_ms)
    # running form of estimate_funding_rate(premium[last_settle + 1 : t + 1])
    if sc[PS_LAST_SETTLE] == t:
        sc[PS_PW] = 0.0
        sc[PS_PNUM] = 0.0
        sc[PS_PDEN] = 0.0
    else:
        sc[PS_PW] += 1.0
        if premium == premium:
            sc[PS_PNUM] += sc[PS_PW] * premium
            sc[PS_PDEN] += sc[PS_PW]
        if sc[PS_PDEN] > 0.0:
            out[C_NEXT_FUNDING] = funding_rate_from_premium(sc[PS_PNUM] / sc[PS_PDEN])
    now = t % day.shape[1]
    day[0, now] = oi
    day[1, now] = close
    w24 = day.shape[1] - 1 if 24.0 * bars_per_hour >= 1.0 - 1e-9 else 0
    out[C_OI_1H] = _ring_change(day[0], t, change_bars(1.0, bars_per_hour), now)
    out[C_OI_4H] = _ring_change(day[0], t, change_bars(4.0, bars_per_hour), now)
    oi24 = _ring_change(day[0], t, w24, now)
    out[C_OI_24H] = oi24
    pc = _ring_change(day[1], t, w24, now)
    if oi24 == oi24 and pc == pc:
        out[C_DIVERGENCE] = oi24 * (1.0 if pc >= 0.0 else -1.0)
    out[C_LS_RATIO] = ls_ratio
    out[C_TOP_RATIO] = top_ratio
    h4 = h4r.shape[1]
    slot = t % h4
    old_tb = h4r[0, slot]
    old_v = h4r[1, slot]
    h4r[0, slot] = taker_buy
    h4r[1, slot] = volume
    sc[PS_TB_SUM] += taker_buy
    sc[PS_V_SUM] += volume
    if t >= h4:
        sc[PS_TB_SUM] -= old_tb
        sc[PS_V_SUM] -= old_v
    v_sum = sc[PS_V_SUM]
    if v_sum > 0.0:
        out[C_TAKER_IMB] = (2.0 * sc[PS_TB_SUM] - v_sum) / v_sum
    near = near_long + near_short
    if near > 0.0:
        out[C_HEAT_ASYM] = near_long / near
    # crowding scores
    for side in range(2):
        sgn = 1.0 if side == 0 else -1.0
        num = 0.0
        den = 0.0
        rate = funding_avg if funding_avg == funding_avg else last_rate
        if rate == rate:
            excess = _clip01(sgn * (rate - DEFAULT_INTEREST) / w.funding_excess_scale)
            zs = _clip01(sgn * out[C_FUNDING_Z] / w.funding_z_scale)
            num += w.funding * 0.5 * (excess + zs)
            den += w.funding
        if oi24 == oi24 and pc == pc:
            piling = oi24 if sgn * pc > 0.0 else 0.0
            num += w.open_interest * _clip01(piling / w.oi_scale)
            den += w.open_interest
        if out[C_HEAT_ASYM] == out[C_HEAT_ASYM]:
            num += w.heatmap * _clip01(sgn * (out[C_HEAT_ASYM] - 0.5) / w.heat_scale)
            den += w.heatmap
        if out[C_TAKER_IMB] == out[C_TAKER_IMB]:
            num += w.taker * _clip01(sgn * out[C_TAKER_IMB] / w.taker_scale)
            den += w.taker
        if ls_ratio == ls_ratio and ls_ratio > 0.0:
            r = ls_ratio if side == 0 else 1.0 / ls_ratio
            num += w.ratio * _clip01((r - 1.0) / w.ratio_scale)
            den += w.ratio
        out[C_LONG_SCORE + side] = num / den if den > 0.0 else 0.0
    sc[PS_T] = t + 1


def positioning_kernel(ts: np.ndarray, close: np.ndarray, funding: np.ndarray,
                       premium: np.ndarray, oi: np.ndarray, ls_ratio: np.ndarray,
                       top_ratio: np.ndarray, taker_buy: np.ndarray, volume: np.ndarray,
                       near_long: np.ndarray, near_short: np.ndarray,
                       w: CrowdingWeights, bars_per_hour: float,
                       funding_avg: np.ndarray | None = None) -> np.ndarray:
    """Components and crowding scores, one row per bar (columns C_*): `positioning_step`
    over every bar. `funding_avg` (vendor OI-weighted rate per 8h) is optional."""
    fa = np.full(len(close), np.nan) if funding_avg is None else \
        np.ascontiguousarray(funding_avg, dtype=np.float64)
    return _positioning_loop(ts, close, funding, fa, premium, oi, ls_ratio, top_ratio,
                             taker_buy, volume, near_long, near_short, w,
                             float(bars_per_hour))


@njit(cache=True)
def _positioning_loop(ts: np.ndarray, close: np.ndarray, funding: np.ndarray,
                      funding_avg: np.ndarray, premium: np.ndarray, oi: np.ndarray,
                      ls_ratio: np.ndarray, top_ratio: np.ndarray, taker_buy: np.ndarray,
                      volume: np.ndarray, near_long: np.ndarray, near_short: np.ndarray,
                      w: CrowdingWeights, bars_per_hour: float) -> np.ndarray:
    n = len(close)
    out = np.full((n, N_COMPONENTS), np.nan)
    sc, rates, day, h4 = new_positioning_state(bars_per_hour, w.z_window)
    for t in range(n):
        positioning_step(sc, rates, day, h4, np.float64(ts[t]), close[t], funding[t],
                         funding_avg[t], premium[t], oi[t], ls_ratio[t], top_ratio[t],
                         taker_buy[t], volume[t],
                         near_long[t], near_short[t], w, bars_per_hour, out[t])
    return out


def explain(row: np.ndarray, side: str, within_pct: float = 3.0) -> str:
    """One line a decision can quote: 'longs crowded 0.82: funding z 2.9, OI +14% in 24h,
    61% of liq mass within 3% below'."""
    s = 0 if side == "long" else 1
    score = row[C_LONG_SCORE + s]
    parts = []
    if np.isfinite(row[C_FUNDING]):
        parts.append(f"funding {row[C_FUNDING] * 100:+.4f}%")
    if np.isfinite(row[C_FUNDING_Z]):
        parts.append(f"funding z {row[C_FUNDING_Z]:.1f}")
    if np.isfinite(row[C_OI_24H]):
        parts.append(f"OI {row[C_OI_24H] * 100:+.0f}% in 24h")
    if np.isfinite(row[C_HEAT_ASYM]):
        share = row[C_HEAT_ASYM] if s == 0 else 1.0 - row[C_HEAT_ASYM]
        where = "below" if s == 0 else "above"
        parts.append(f"{share * 100:.0f}% of near liq mass within {within_pct:g}% {where}")
    if np.isfinite(row[C_TAKER_IMB]):
        parts.append(f"taker imbalance {row[C_TAKER_IMB]:+.2f}")
    return f"{side}s crowded {score:.2f}: " + ", ".join(parts)
