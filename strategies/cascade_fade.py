"""`cascade_fade`: buy leverage exhaustion after a long cascade.

Enters long `leverage` when the exhaustion detector fires after a LONG cascade (price fell,
longs were liquidated, open interest flushed, funding neutral, volatility decaying). Exits
on recovery (price regains `recover` of the cascade's drop), on failure (price `stop` below
the entry) or after `max_hold` bars. Path-dependent: a jitted step loop.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from numba import njit

from bot.data.bars import Bars
from bot.signals import detectors as dt
from bot.signals.pipeline import Signals
from strategies.base import Param, Strategy


@njit(cache=True)
def fade_steps(close: np.ndarray, high: np.ndarray, cascade: np.ndarray,
               exhaustion: np.ndarray, lev: float, recover: float, stop: float,
               max_hold: int) -> np.ndarray:
    n = len(close)
    out = np.zeros(n)
    peak = close[0]          # the high before the cascade
    low = close[0]
    in_cascade = False
    pos = 0.0
    entry = 0.0
    held = 0
    target_px = 0.0
    for t in range(n):
        if cascade[t] == 1.0:
            if not in_cascade:
                lookback = max(0, t - 60)
                peak = high[lookback:t + 1].max()
                low = close[t]
                in_cascade = True
            low = min(low, close[t])
        if pos > 0.0:
            held += 1
            if close[t] >= target_px or close[t] <= entry * (1.0 - stop) or held >= max_hold:
                pos = 0.0
                in_cascade = False
        elif in_cascade and exhaustion[t] == 1.0:
            pos = lev
            entry = close[t]
            held = 0
            target_px = low + recover * (peak - low)
        out[t] = pos
    return out


class CascadeFade(Strategy):
    name = "cascade_fade"
    PARAMS: ClassVar[dict[str, Param]] = {
        "leverage": Param(float, 3.0, "notional / equity while in the trade"),
        "recover": Param(float, 0.5, "exit when price regains this share of the drop"),
        "stop": Param(float, 0.03, "exit when price falls this far below the entry"),
        "max_hold": Param(int, 720, "exit after this many bars"),
    }

    def targets(self, bars: Bars, signals: Signals) -> np.ndarray:
        d = signals.detectors
        return fade_steps(bars.close, bars["high"], d[:, dt.D_CASCADE_STATE],
                          d[:, dt.D_EXHAUSTION_STATE], self.params["leverage"],
                          self.params["recover"], self.params["stop"], self.params["max_hold"])
