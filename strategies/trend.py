"""`trend`: leveraged trend following on an EMA crossover of closes.

Long `leverage` when the fast EMA is above the slow one, short when below (or flat with
`allow_short=0`). EMAs at bar t use closes up to t only.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from numba import njit

from bot.data.bars import Bars
from bot.signals.pipeline import Signals
from strategies.base import Param, Strategy


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


class Trend(Strategy):
    name = "trend"
    PARAMS: ClassVar[dict[str, Param]] = {
        "fast": Param(int, 60, "fast EMA span (bars)"),
        "slow": Param(int, 240, "slow EMA span (bars)"),
        "leverage": Param(float, 5.0, "notional / equity when in a trend"),
        "allow_short": Param(int, 1, "1 to go short in down-trends, 0 to stay flat"),
    }

    def targets(self, bars: Bars, signals: Signals) -> np.ndarray:
        f = ema(bars.close, self.params["fast"])
        s = ema(bars.close, self.params["slow"])
        lev = self.params["leverage"]
        short = -lev if self.params["allow_short"] else 0.0
        return np.where(f > s, lev, np.where(f < s, short, 0.0))
