"""`trend`: leveraged trend following on an EMA crossover of closes.

Long `leverage` when the fast EMA is above the slow one, short when below (or flat with
`allow_short=0`). EMAs at bar t use closes up to t only, seeded with the first close; flat
until `slow` bars are seen (the warm-up: until 2026-12-06 it traded from the second bar on
two EMAs that had both just left the first close). The batch `targets` and the stream step
the same kernel (`trend_step`) over state [seeded, fast EMA, slow EMA, bars seen].
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from numba import njit

from bot.data.bars import Bars
from bot.signals import stream as ss
from bot.signals.pipeline import Signals
from strategies.base import Param, StepForm, Strategy, leverage, window

N_STATE = 4   # seeded flag, fast EMA, slow EMA, bars seen


@njit(cache=True)
def ema(x: np.ndarray, span: int) -> np.ndarray:
    """Exponential moving average with alpha = 2 / (span + 1), seeded with x[0]."""
    out = np.empty(len(x))
    a = 2.0 / (span + 1.0)
    m = x[0]
    for t in range(len(x)):
        m += a * (x[t] - m)
        out[t] = m
    return out


@njit(cache=True)
def trend_step(st: np.ndarray, close: float, fast: int, slow: int, lev: float,
               short: float) -> float:
    """One bar: update both EMAs with `close`, return the target leverage (0 until `slow`
    bars are seen)."""
    if st[0] == 0.0:
        st[0] = 1.0
        st[1] = close
        st[2] = close
    st[1] += 2.0 / (fast + 1.0) * (close - st[1])
    st[2] += 2.0 / (slow + 1.0) * (close - st[2])
    st[3] += 1.0
    if st[3] < slow:
        return 0.0
    if st[1] > st[2]:
        return lev
    if st[1] < st[2]:
        return short
    return 0.0


@njit(cache=True)
def trend_steps(close: np.ndarray, fast: int, slow: int, lev: float,
                short: float) -> np.ndarray:
    st = np.zeros(N_STATE)
    out = np.empty(len(close))
    for t in range(len(close)):
        out[t] = trend_step(st, close[t], fast, slow, lev, short)
    return out


class Trend(Strategy):
    name = "trend"
    PARAMS: ClassVar[dict[str, Param]] = {
        "fast": window(60, "fast EMA span (bars)"),
        "slow": window(240, "slow EMA span (bars)"),
        "leverage": leverage(5.0, "notional / equity when in a trend"),
        "allow_short": Param(int, 1, "1 to go short in down-trends, 0 to stay flat", lo=0, hi=1),
    }

    def check(self) -> None:
        self.require(self.params["fast"] < self.params["slow"], "fast",
                     f"fast < slow ({self.params['slow']})")

    def _args(self) -> tuple[int, int, float, float]:
        lev = self.params["leverage"]
        return (self.params["fast"], self.params["slow"], lev,
                -lev if self.params["allow_short"] else 0.0)

    def targets(self, bars: Bars, signals: Signals) -> np.ndarray:
        return trend_steps(np.ascontiguousarray(bars.close, dtype=np.float64), *self._args())

    def step_form(self) -> StepForm:
        args = self._args()

        def step(st: np.ndarray, x: np.ndarray, out: np.ndarray) -> float:
            return trend_step(st, x[ss.X_CLOSE], *args)

        return StepForm(np.zeros(N_STATE), step)
