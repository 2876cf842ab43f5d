"""Cascade and leverage-exhaustion detectors (numba), each a state with a strength.

Cascade in progress, per bar, from four signs each scored in [0, 1]:
- price velocity: |5-bar log return| / (trailing 1-bar sigma x sqrt 5), 6 sigmas score 1;
- volume spike: quote volume / its trailing EWMA (2h), x10 scores 1;
- realised liquidation flow: liquidation notional / trailing EWMA quote volume, 0.2 scores 1
  (absent without a liquidation feed: the weights renormalise);
- heatmap consumption: notional consumed this bar / heatmap mass, 2% scores 1.
strength = mean of the available scores; state = +1 (a LONG cascade: price falling, longs
liquidated) or -1 (a short squeeze) when strength >= `fire` AND the move itself is fast
(velocity >= `min_velocity` sigmas: volume and liquidations alone are not a cascade), held
for `hold` bars.

Leverage exhaustion, once a cascade fired within `lookback` bars and none is in progress:
- open interest down from its peak since before the cascade (5% scores 1);
- funding back near neutral: 1 - |rate - interest| / 0.0003;
- volatility decaying: 1 - sigma(30 bars) / sigma(240 bars), floored at 0, doubled.
strength = mean of the available scores; state = the direction of the cascade it follows
when strength >= `fire`. Trailing statistics use bars before t only (the current bar's
own move must not hide in its own baseline).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from bot.mechanics.funding import DEFAULT_INTEREST

(D_CASCADE_STATE, D_CASCADE_STRENGTH, D_VELOCITY, D_VOLUME_SPIKE, D_LIQ_FLOW, D_CONSUMPTION,
 D_EXHAUSTION_STATE, D_EXHAUSTION_STRENGTH, D_OI_DRAWDOWN, D_FUNDING_NEUTRAL,
 D_VOL_DECAY) = range(11)
N_DETECTOR = 11
DETECTOR_NAMES = ("cascade_state", "cascade_strength", "velocity", "volume_spike",
                  "liquidation_flow", "heatmap_consumption", "exhaustion_state",
                  "exhaustion_strength", "oi_drawdown", "funding_neutral", "volatility_decay")


class DetectorParams(NamedTuple):
    fire: float = 0.5
    min_velocity: float = 4.0      # sigmas over 5 bars required to call a cascade
    hold: int = 30                 # bars a fired cascade stays "in progress"
    lookback: int = 1440           # bars after a cascade in which exhaustion is looked for
    velocity_scale: float = 6.0
    spike_scale: float = 10.0
    liq_scale: float = 0.2
    consumption_scale: float = 0.02
    oi_drawdown_scale: float = 0.05
    exhaustion_fire: float = 0.6


@njit(cache=True)
def _c01(x: float) -> float:
    if x != x or x < 0.0:
        return 0.0
    return 1.0 if x > 1.0 else x


@njit(cache=True)
def detector_kernel(close: np.ndarray, quote_volume: np.ndarray, liq_total: np.ndarray,
                    consumed: np.ndarray, heat_total: np.ndarray, oi: np.ndarray,
                    funding: np.ndarray, p: DetectorParams) -> np.ndarray:
    """Detector states and their evidence, one row per bar (columns D_*)."""
    n = len(close)
    out = np.zeros((n, N_DETECTOR))
    a_vol = 1.0 - np.exp(-1.0 / 120.0)
    a_s = 1.0 - np.exp(-1.0 / 240.0)
    a_f = 1.0 - np.exp(-1.0 / 30.0)
    ew_qv = quote_volume[0] if quote_volume[0] > 0.0 else 1.0
    var_slow = 0.0
    var_fast = 0.0
    held = 0
    state = 0.0
    last_cascade = -10**9
    cascade_dir = 0.0
    oi_peak = np.nan
    last_rate = np.nan
    for t in range(n):
        r1 = np.log(close[t] / close[t - 1]) if t > 0 else 0.0
        sig = np.sqrt(var_slow) if var_slow > 0.0 else 1e-4
        r5 = np.log(close[t] / close[t - 5]) if t >= 5 else r1
        vel = abs(r5) / (sig * np.sqrt(5.0))
        spike = quote_volume[t] / ew_qv if ew_qv > 0.0 else 0.0
        scores = 0.0
        k = 0.0
        out[t, D_VELOCITY] = vel
        out[t, D_VOLUME_SPIKE] = spike
        scores += _c01(vel / p.velocity_scale) + _c01(spike / p.spike_scale)
        k += 2.0
        if liq_total[t] == liq_total[t]:
            flow = liq_total[t] / ew_qv if ew_qv > 0.0 else 0.0
            out[t, D_LIQ_FLOW] = flow
            scores += _c01(flow / p.liq_scale)
            k += 1.0
        else:
            out[t, D_LIQ_FLOW] = np.nan
        if heat_total[t] > 0.0:
            cons = consumed[t] / (heat_total[t] + consumed[t])
            out[t, D_CONSUMPTION] = cons
            scores += _c01(cons / p.consumption_scale)
            k += 1.0
        strength = scores / k
        out[t, D_CASCADE_STRENGTH] = strength
        if strength >= p.fire and vel >= p.min_velocity and r5 != 0.0:
            state = 1.0 if r5 < 0.0 else -1.0
            held = p.hold
            last_cascade = t
            cascade_dir = state
            oi_peak = np.nan
        elif held > 0:
            held -= 1
        else:
            state = 0.0
        out[t, D_CASCADE_STATE] = state
        # exhaustion evidence
        if funding[t] == funding[t]:
            last_rate = funding[t]
        if oi[t] == oi[t] and (t - last_cascade <= p.hold or oi_peak != oi_peak):
            oi_peak = oi[t] if oi_peak != oi_peak else max(oi_peak, oi[t])
        e_sum = 0.0
        e_k = 0.0
        if oi[t] == oi[t] and oi_peak == oi_peak and oi_peak > 0.0:
            dd = 1.0 - oi[t] / oi_peak
            out[t, D_OI_DRAWDOWN] = dd
            e_sum += _c01(dd / p.oi_drawdown_scale)
            e_k += 1.0
        else:
            out[t, D_OI_DRAWDOWN] = np.nan
        if last_rate == last_rate:
            neutral = _c01(1.0 - abs(last_rate - DEFAULT_INTEREST) / 0.0003)
            out[t, D_FUNDING_NEUTRAL] = neutral
            e_sum += neutral
            e_k += 1.0
        else:
            out[t, D_FUNDING_NEUTRAL] = np.nan
        decay = _c01(2.0 * (1.0 - np.sqrt(var_fast / var_slow))) if var_slow > 0.0 else 0.0
        out[t, D_VOL_DECAY] = decay
        e_sum += decay
        e_k += 1.0
        ex = e_sum / e_k
        out[t, D_EXHAUSTION_STRENGTH] = ex
        recent = 0 < t - last_cascade <= p.lookback
        if recent and state == 0.0 and ex >= p.exhaustion_fire:
            out[t, D_EXHAUSTION_STATE] = cascade_dir
        # update trailing statistics AFTER using them (bar t is not its own baseline)
        ew_qv += a_vol * (quote_volume[t] - ew_qv)
        var_slow += a_s * (r1 * r1 - var_slow)
        var_fast += a_f * (r1 * r1 - var_fast)
    return out
