"""Cascade and leverage-exhaustion detectors (numba), each a state with a strength.

Cascade in progress, per bar, from four signs each scored in [0, 1]:
- price velocity: the larger of |5-bar| and |15-bar log return| / (sigma x sqrt(bars)), with
  sigma the trailing 1-bar sigma over a DAY (EWMA, 1440 bars: a baseline the cascade's first
  minutes cannot inflate, unlike a 4h one); 6 sigmas score 1;
- volume spike: quote volume / its trailing EWMA (2h), x10 scores 1;
- realised liquidation flow: liquidation notional / trailing EWMA quote volume, 0.2 scores 1
  (absent without a liquidation feed: the weights renormalise);
- heatmap consumption: notional consumed this bar / heatmap mass, 2% scores 1.
strength = mean of the available scores; state = +1 (a LONG cascade: price falling, longs
liquidated) or -1 (a short squeeze) when strength >= `fire` AND the move itself is fast
(velocity >= `min_velocity` sigmas: volume and liquidations alone are not a cascade), held
for `hold` bars. Warm-up: no cascade before `warmup` bars (the estimators start from the
first bars' own values, with weights 1/(t+1) until the EWMA weight takes over, so no
estimator starts from zero).

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
    warmup: int = 60               # bars before any cascade can be called


@njit(cache=True)
def _c01(x: float) -> float:
    if x != x or x < 0.0:
        return 0.0
    return 1.0 if x > 1.0 else x


# Scalar state of `detector_step` (DS_* slots), then a 16-slot ring of closes (t-15 .. t).
(DS_T, DS_EW_QV, DS_VAR_SLOW, DS_VAR_FAST, DS_HELD, DS_STATE, DS_LAST_CASCADE, DS_DIR,
 DS_OI_PEAK, DS_LAST_RATE, DS_VAR_DAY, DS_CLOSE) = range(12)
RING = 16
N_DS = DS_CLOSE + RING


@njit(cache=True)
def new_detector_state() -> np.ndarray:
    """Empty state of `detector_step` (slots DS_*)."""
    st = np.zeros(N_DS)
    st[DS_LAST_CASCADE] = -10.0**9
    st[DS_OI_PEAK] = np.nan
    st[DS_LAST_RATE] = np.nan
    return st


@njit(cache=True)
def detector_step(st: np.ndarray, close: float, quote_volume: float, liq_total: float,
                  consumed: float, heat_total: float, oi: float, funding: float,
                  p: DetectorParams, out: np.ndarray) -> None:
    """One bar: write its detector states and evidence (columns D_*) into `out`, then
    update the trailing statistics. Units: prices quote/base, notionals quote, `oi` base,
    `funding` the rate settled in this bar (NaN otherwise)."""
    t = int(st[DS_T])
    # EWMA weights, 1/(t+1) at the start: the estimators begin at the first bars' values
    w0 = 1.0 / (t + 1.0)
    a_vol = max(1.0 - np.exp(-1.0 / 120.0), w0)
    a_s = max(1.0 - np.exp(-1.0 / 240.0), w0)
    a_f = max(1.0 - np.exp(-1.0 / 30.0), w0)
    a_d = max(1.0 - np.exp(-1.0 / 1440.0), 1.0 / max(t, 1))   # 1/(returns seen)
    if t == 0:
        st[DS_EW_QV] = quote_volume if quote_volume > 0.0 else 1.0
    st[DS_CLOSE + t % RING] = close
    ew_qv = st[DS_EW_QV]
    var_slow = st[DS_VAR_SLOW]
    var_fast = st[DS_VAR_FAST]
    var_day = st[DS_VAR_DAY]
    out[:] = 0.0
    r1 = np.log(close / st[DS_CLOSE + (t - 1) % RING]) if t > 0 else 0.0
    sig = np.sqrt(var_day) if var_day > 0.0 else 1e-4
    r5 = np.log(close / st[DS_CLOSE + (t - 5) % RING]) if t >= 5 else r1
    r15 = np.log(close / st[DS_CLOSE + (t - 15) % RING]) if t >= 15 else r5
    vel = abs(r5) / (sig * np.sqrt(5.0))
    vel15 = abs(r15) / (sig * np.sqrt(15.0))
    if vel15 > vel:
        vel = vel15
        r5 = r15                           # the direction of the horizon that counts
    spike = quote_volume / ew_qv if ew_qv > 0.0 else 0.0
    scores = 0.0
    k = 0.0
    out[D_VELOCITY] = vel
    out[D_VOLUME_SPIKE] = spike
    scores += _c01(vel / p.velocity_scale) + _c01(spike / p.spike_scale)
    k += 2.0
    if liq_total == liq_total:
        flow = liq_total / ew_qv if ew_qv > 0.0 else 0.0
        out[D_LIQ_FLOW] = flow
        scores += _c01(flow / p.liq_scale)
        k += 1.0
    else:
        out[D_LIQ_FLOW] = np.nan
    if heat_total > 0.0:
        cons = consumed / (heat_total + consumed)
        out[D_CONSUMPTION] = cons
        scores += _c01(cons / p.consumption_scale)
        k += 1.0
    strength = scores / k
    out[D_CASCADE_STRENGTH] = strength
    if t >= p.warmup and strength >= p.fire and vel >= p.min_velocity and r5 != 0.0:
        st[DS_STATE] = 1.0 if r5 < 0.0 else -1.0
        st[DS_HELD] = p.hold
        st[DS_LAST_CASCADE] = t
        st[DS_DIR] = st[DS_STATE]
        st[DS_OI_PEAK] = np.nan
    elif st[DS_HELD] > 0.0:
        st[DS_HELD] -= 1.0
    else:
        st[DS_STATE] = 0.0
    state = st[DS_STATE]
    out[D_CASCADE_STATE] = state
    # exhaustion evidence
    if funding == funding:
        st[DS_LAST_RATE] = funding
    last_rate = st[DS_LAST_RATE]
    since = t - st[DS_LAST_CASCADE]
    oi_peak = st[DS_OI_PEAK]
    if oi == oi and (since <= p.hold or oi_peak != oi_peak):
        oi_peak = oi if oi_peak != oi_peak else max(oi_peak, oi)
        st[DS_OI_PEAK] = oi_peak
    e_sum = 0.0
    e_k = 0.0
    if oi == oi and oi_peak == oi_peak and oi_peak > 0.0:
        dd = 1.0 - oi / oi_peak
        out[D_OI_DRAWDOWN] = dd
        e_sum += _c01(dd / p.oi_drawdown_scale)
        e_k += 1.0
    else:
        out[D_OI_DRAWDOWN] = np.nan
    if last_rate == last_rate:
        neutral = _c01(1.0 - abs(last_rate - DEFAULT_INTEREST) / 0.0003)
        out[D_FUNDING_NEUTRAL] = neutral
        e_sum += neutral
        e_k += 1.0
    else:
        out[D_FUNDING_NEUTRAL] = np.nan
    decay = _c01(2.0 * (1.0 - np.sqrt(var_fast / var_slow))) if var_slow > 0.0 else 0.0
    out[D_VOL_DECAY] = decay
    e_sum += decay
    e_k += 1.0
    ex = e_sum / e_k
    out[D_EXHAUSTION_STRENGTH] = ex
    recent = 0 < since <= p.lookback
    if recent and state == 0.0 and ex >= p.exhaustion_fire:
        out[D_EXHAUSTION_STATE] = st[DS_DIR]
    # update trailing statistics AFTER using them (bar t is not its own baseline)
    st[DS_EW_QV] = ew_qv + a_vol * (quote_volume - ew_qv)
    st[DS_VAR_SLOW] = var_slow + a_s * (r1 * r1 - var_slow)
    st[DS_VAR_FAST] = var_fast + a_f * (r1 * r1 - var_fast)
    if t > 0:                              # r1 of the first bar is not a return
        st[DS_VAR_DAY] = var_day + a_d * (r1 * r1 - var_day)
    st[DS_T] = t + 1


@njit(cache=True)
def detector_kernel(close: np.ndarray, quote_volume: np.ndarray, liq_total: np.ndarray,
                    consumed: np.ndarray, heat_total: np.ndarray, oi: np.ndarray,
                    funding: np.ndarray, p: DetectorParams) -> np.ndarray:
    """Detector states and their evidence, one row per bar (columns D_*): `detector_step`
    over every bar."""
    n = len(close)
    out = np.zeros((n, N_DETECTOR))
    st = new_detector_state()
    for t in range(n):
        detector_step(st, close[t], quote_volume[t], liq_total[t], consumed[t], heat_total[t],
                      oi[t], funding[t], p, out[t])
    return out
