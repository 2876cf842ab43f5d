"""`sma_cross`: long/flat on a simple-moving-average crossover of closes.

The reference strategy of the vectorbt parity test and the benchmark: no leverage by
default (`leverage` 0.95 keeps the entry payable from cash with fees). SMAs at bar t use
closes up to t; before `slow` bars there is no signal.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from bot.data.bars import Bars
from bot.signals.pipeline import Signals
from strategies.base import Param, Strategy


def sma(x: np.ndarray, n: int) -> np.ndarray:
    """Trailing mean of the last n values (NaN for the first n-1)."""
    c = np.cumsum(np.r_[0.0, x])
    out = np.full(len(x), np.nan)
    out[n - 1:] = (c[n:] - c[:-n]) / n
    return out


class SmaCross(Strategy):
    name = "sma_cross"
    PARAMS: ClassVar[dict[str, Param]] = {
        "fast": Param(int, 20, "fast SMA length (bars)"),
        "slow": Param(int, 80, "slow SMA length (bars)"),
        "leverage": Param(float, 0.95, "notional / equity while long"),
    }

    def targets(self, bars: Bars, signals: Signals) -> np.ndarray:
        f = sma(bars.close, self.params["fast"])
        s = sma(bars.close, self.params["slow"])
        return np.where(f > s, self.params["leverage"], 0.0)
