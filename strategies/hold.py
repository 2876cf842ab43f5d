"""`hold`: a constant exposure, the baseline ("what would risk control have done to my
position?")."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from bot.data.bars import Bars
from bot.signals.pipeline import Signals
from strategies.base import Param, Strategy


class Hold(Strategy):
    name = "hold"
    PARAMS: ClassVar[dict[str, Param]] = {
        "side": Param(str, "long", "long or short", ("long", "short")),
        "leverage": Param(float, 10.0, "notional / equity held throughout"),
    }

    def targets(self, bars: Bars, signals: Signals) -> np.ndarray:
        sign = 1.0 if self.params["side"] == "long" else -1.0
        return np.full(len(bars), sign * self.params["leverage"])
