"""`cascade_fade`: buy leverage exhaustion after a long cascade.

Enters long `leverage` when the exhaustion detector fires after a LONG cascade (price fell,
longs were liquidated, open interest flushed, funding neutral, volatility decaying). Exits
on recovery (price regains `recover` of the cascade's drop), on failure (price `stop` below
the entry) or after `max_hold` bars. Path-dependent: the batch `targets` and the stream step
the same kernel (`fade_step`) over a state array holding the trade, the cascade and a ring
of the last LOOKBACK + 1 highs (the pre-cascade peak is their maximum).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from numba import njit

from bot.data.bars import Bars
from bot.signals import detectors as dt
from bot.signals import stream as ss
from bot.signals.pipeline import Signals
from strategies.base import Param, StepForm, Strategy, leverage

LOOKBACK = 60   # bars before the cascade's first bar searched for its peak
# state layout
(S_T, S_POS, S_ENTRY, S_HELD, S_TARGET, S_PEAK, S_LOW, S_IN_CASCADE) = range(8)
S_RING = 8
N_STATE = S_RING + LOOKBACK + 1


@njit(cache=True)
def fade_step(st: np.ndarray, close: float, high: float, cascade: float, exhaustion: float,
              lev: float, recover: float, stop: float, max_hold: int) -> float:
    """One bar: the target leverage (0 or lev) at this bar's close; mutates `st`."""
    t = int(st[S_T])
    size = LOOKBACK + 1
    st[S_RING + t % size] = high
    st[S_T] = t + 1
    if cascade == 1.0:
        if st[S_IN_CASCADE] == 0.0:
            # max of high[max(0, t - LOOKBACK) : t + 1], NaN if any is NaN (as ndarray.max)
            m = min(t + 1, size)
            peak = -np.inf
            for k in range(m):
                h = st[S_RING + (t - k) % size]
                if h != h:
                    peak = h
                    break
                if h > peak:
                    peak = h
            st[S_PEAK] = peak
            st[S_LOW] = close
            st[S_IN_CASCADE] = 1.0
        st[S_LOW] = min(st[S_LOW], close)
    if st[S_POS] > 0.0:
        st[S_HELD] += 1.0
        if (close >= st[S_TARGET] or close <= st[S_ENTRY] * (1.0 - stop)
                or st[S_HELD] >= max_hold):
            st[S_POS] = 0.0
            st[S_IN_CASCADE] = 0.0
    elif st[S_IN_CASCADE] == 1.0 and exhaustion == 1.0:
        st[S_POS] = lev
        st[S_ENTRY] = close
        st[S_HELD] = 0.0
        st[S_TARGET] = st[S_LOW] + recover * (st[S_PEAK] - st[S_LOW])
    return st[S_POS]


@njit(cache=True)
def fade_steps(close: np.ndarray, high: np.ndarray, cascade: np.ndarray,
               exhaustion: np.ndarray, lev: float, recover: float, stop: float,
               max_hold: int) -> np.ndarray:
    st = np.zeros(N_STATE)
    out = np.empty(len(close))
    for t in range(len(close)):
        out[t] = fade_step(st, close[t], high[t], cascade[t], exhaustion[t], lev, recover,
                           stop, max_hold)
    return out


class CascadeFade(Strategy):
    name = "cascade_fade"
    PARAMS: ClassVar[dict[str, Param]] = {
        "leverage": leverage(3.0, "notional / equity while in the trade"),
        "recover": Param(float, 0.5, "exit when price regains this share of the drop",
                         lo=0.0, hi=1.0, lo_open=True),
        "stop": Param(float, 0.03, "exit when price falls this far below the entry",
                      lo=0.0, hi=1.0, lo_open=True, hi_open=True),
        "max_hold": Param(int, 720, "exit after this many bars", lo=1),
    }

    def _args(self) -> tuple[float, float, float, int]:
        p = self.params
        return p["leverage"], p["recover"], p["stop"], p["max_hold"]

    def targets(self, bars: Bars, signals: Signals) -> np.ndarray:
        d = signals.detectors

        def f64(a: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(a, dtype=np.float64)

        return fade_steps(f64(bars.close), f64(bars["high"]), f64(d[:, dt.D_CASCADE_STATE]),
                          f64(d[:, dt.D_EXHAUSTION_STATE]), *self._args())

    def step_form(self) -> StepForm:
        args = self._args()
        c_state, e_state = ss.O_DET + dt.D_CASCADE_STATE, ss.O_DET + dt.D_EXHAUSTION_STATE

        def step(st: np.ndarray, x: np.ndarray, out: np.ndarray) -> float:
            return fade_step(st, x[ss.X_CLOSE], x[ss.X_HIGH], out[c_state], out[e_state],
                             *args)

        return StepForm(np.zeros(N_STATE), step)
