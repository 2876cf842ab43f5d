"""Positioning: how one-sided the crowd is, per bar, with the reasons kept.

Components (column index constants C_*), all known at the bar's close:
- funding: last settled rate (per interval), its z-score over the trailing `z_window`
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


@njit(cache=True)
def _change(x: np.ndarray, t: int, w: int) -> float:
    if t - w < 0 or x[t] != x[t] or x[t - w] != x[t - w] or x[t - w] <= 0.0:
        return np.nan
    return x[t] / x[t - w] - 1.0


@njit(cache=True)
def positioning_kernel(ts: np.ndarray, close: np.ndarray, funding: np.ndarray,
                       premium: np.ndarray, oi: np.ndarray, ls_ratio: np.ndarray,
                       top_ratio: np.ndarray, taker_buy: np.ndarray, volume: np.ndarray,
                       near_long: np.ndarray, near_short: np.ndarray,
                       w: CrowdingWeights, bars_per_hour: int) -> np.ndarray:
    """Components and crowding scores, one row per bar (columns C_*)."""
    n = len(close)
    out = np.full((n, N_COMPONENTS), np.nan)
    rates = np.empty(n)
    n_rates = 0
    last_rate = np.nan
    last_settle = -1
    interval_ms = 8 * 3_600_000
    prev_settle_ts = -1
    tb_sum = 0.0
    v_sum = 0.0
    pw = 0.0
    pnum = 0.0
    pden = 0.0
    h4 = 4 * bars_per_hour
    for t in range(n):
        if funding[t] == funding[t]:
            last_rate = funding[t]
            rates[n_rates] = last_rate
            n_rates += 1
            if prev_settle_ts >= 0:
                interval_ms = ts[t] - prev_settle_ts
            prev_settle_ts = ts[t]
            last_settle = t
        out[t, C_FUNDING] = last_rate
        if n_rates >= 3:
            a = max(0, n_rates - w.z_window)
            seg = rates[a:n_rates]
            sd = seg.std()
            out[t, C_FUNDING_Z] = (last_rate - seg.mean()) / sd if sd > 0.0 else 0.0
        if last_rate == last_rate and interval_ms > 0:
            out[t, C_CARRY] = last_rate * (365.0 * 86_400_000.0 / interval_ms)
        # running form of estimate_funding_rate(premium[last_settle + 1 : t + 1])
        if last_settle == t:
            pw = 0.0
            pnum = 0.0
            pden = 0.0
        else:
            pw += 1.0
            if premium[t] == premium[t]:
                pnum += pw * premium[t]
                pden += pw
            if pden > 0.0:
                out[t, C_NEXT_FUNDING] = funding_rate_from_premium(pnum / pden)
        out[t, C_OI_1H] = _change(oi, t, bars_per_hour)
        out[t, C_OI_4H] = _change(oi, t, h4)
        out[t, C_OI_24H] = _change(oi, t, 24 * bars_per_hour)
        pc = _change(close, t, 24 * bars_per_hour)
        if out[t, C_OI_24H] == out[t, C_OI_24H] and pc == pc:
            out[t, C_DIVERGENCE] = out[t, C_OI_24H] * (1.0 if pc >= 0.0 else -1.0)
        out[t, C_LS_RATIO] = ls_ratio[t]
        out[t, C_TOP_RATIO] = top_ratio[t]
        tb_sum += taker_buy[t]
        v_sum += volume[t]
        if t >= h4:
            tb_sum -= taker_buy[t - h4]
            v_sum -= volume[t - h4]
        if v_sum > 0.0:
            out[t, C_TAKER_IMB] = (2.0 * tb_sum - v_sum) / v_sum
        near = near_long[t] + near_short[t]
        if near > 0.0:
            out[t, C_HEAT_ASYM] = near_long[t] / near
        # crowding scores
        for side in range(2):
            sgn = 1.0 if side == 0 else -1.0
            num = 0.0
            den = 0.0
            if last_rate == last_rate:
                excess = _clip01(sgn * (last_rate - DEFAULT_INTEREST) / w.funding_excess_scale)
                zs = _clip01(sgn * out[t, C_FUNDING_Z] / w.funding_z_scale)
                num += w.funding * 0.5 * (excess + zs)
                den += w.funding
            if out[t, C_OI_24H] == out[t, C_OI_24H] and pc == pc:
                piling = out[t, C_OI_24H] if sgn * pc > 0.0 else 0.0
                num += w.open_interest * _clip01(piling / w.oi_scale)
                den += w.open_interest
            if out[t, C_HEAT_ASYM] == out[t, C_HEAT_ASYM]:
                num += w.heatmap * _clip01(sgn * (out[t, C_HEAT_ASYM] - 0.5) / w.heat_scale)
                den += w.heatmap
            if out[t, C_TAKER_IMB] == out[t, C_TAKER_IMB]:
                num += w.taker * _clip01(sgn * out[t, C_TAKER_IMB] / w.taker_scale)
                den += w.taker
            if ls_ratio[t] == ls_ratio[t] and ls_ratio[t] > 0.0:
                r = ls_ratio[t] if side == 0 else 1.0 / ls_ratio[t]
                num += w.ratio * _clip01((r - 1.0) / w.ratio_scale)
                den += w.ratio
            out[t, C_LONG_SCORE + side] = num / den if den > 0.0 else 0.0
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
