"""`sma_cross`: long/flat on a simple-moving-average crossover of closes.

The reference strategy of the vectorbt parity test and the benchmark: no leverage by
default (`leverage` 0.95 keeps the entry payable from cash with fees). SMAs at bar t use
closes up to t; before `slow` bars there is no signal.

The SMA is the difference of two prefix sums, c[t+1] - c[t+1-n], over n, with c the
sequential running sum of closes from the first bar (exactly `np.cumsum`). The step kernel
(`sma_step`) keeps the running sum and a ring of the last slow + 1 prefix sums, so the
batch `targets` (a loop over it) and the stream agree to the bit with the vectorised `sma`.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from numba import njit

from bot.data.bars import Bars
from bot.signals import stream as ss
from bot.signals.pipeline import Signals
from strategies.base import Param, StepForm, Strategy, leverage, window

S_T, S_SUM = 0, 1   # bars seen, running sum of closes
S_RING = 2          # ring of prefix sums c[k], k = t+1-slow .. t+1, at index k % (slow + 1)


def sma(x: np.ndarray, n: int) -> np.ndarray:
    """Trailing mean of the last n values (NaN for the first n-1)."""
    c = np.cumsum(np.r_[0.0, x])
    out = np.full(len(x), np.nan)
    out[n - 1:] = (c[n:] - c[:-n]) / n
    return out


def n_state(slow: int) -> int:
    return S_RING + slow + 1


@njit(cache=True)
def sma_step(st: np.ndarray, close: float, fast: int, slow: int, lev: float) -> float:
    """One bar: lev when SMA(fast) > SMA(slow) at this close, else 0; mutates `st`."""
    size = slow + 1
    t = int(st[S_T])
    if t == 0:
        st[S_RING] = 0.0                      # c[0]
    st[S_SUM] += close                        # c[t + 1]
    st[S_RING + (t + 1) % size] = st[S_SUM]
    st[S_T] = t + 1
    if t + 1 < slow:
        return 0.0
    f = (st[S_SUM] - st[S_RING + (t + 1 - fast) % size]) / fast
    s = (st[S_SUM] - st[S_RING + (t + 1 - slow) % size]) / slow
    return lev if f > s else 0.0


@njit(cache=True)
def sma_steps(close: np.ndarray, fast: int, slow: int, lev: float) -> np.ndarray:
    st = np.zeros(S_RING + slow + 1)
    out = np.empty(len(close))
    for t in range(len(close)):
        out[t] = sma_step(st, close[t], fast, slow, lev)
    return out


class SmaCross(Strategy):
    name = "sma_cross"
    PARAMS: ClassVar[dict[str, Param]] = {
        "fast": window(20, "fast SMA length (bars)"),
        "slow": window(80, "slow SMA length (bars)"),
        "leverage": leverage(0.95, "notional / equity while long"),
    }

    def check(self) -> None:
        self.require(self.params["fast"] < self.params["slow"], "fast",
                     f"fast < slow ({self.params['slow']})")

    def _args(self) -> tuple[int, int, float]:
        return self.params["fast"], self.params["slow"], self.params["leverage"]

    def targets(self, bars: Bars, signals: Signals) -> np.ndarray:
        return sma_steps(np.ascontiguousarray(bars.close, dtype=np.float64), *self._args())

    def step_form(self) -> StepForm:
        args = self._args()

        def step(st: np.ndarray, x: np.ndarray, out: np.ndarray) -> float:
            return sma_step(st, x[ss.X_CLOSE], *args)

        return StepForm(np.zeros(n_state(self.params["slow"])), step)
