"""`funding_skew`: fade crowded funding when the heatmap agrees.

Short `leverage` when longs are crowded (crowding >= `enter`), funding is rich (z >=
`funding_z`) and the near liquidation mass sits mostly below (asymmetry >= `asym`): the
crowd's stops are the fuel. Long in the mirror case. Exits when that side's crowding
falls below `exit`. A jitted step loop over the positioning components.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from numba import njit

from bot.data.bars import Bars
from bot.signals import positioning as ps
from bot.signals.pipeline import Signals
from strategies.base import Param, Strategy


@njit(cache=True)
def skew_steps(crowd_long: np.ndarray, crowd_short: np.ndarray, fz: np.ndarray,
               asym: np.ndarray, lev: float, enter: float, leave: float, zmin: float,
               amin: float) -> np.ndarray:
    n = len(crowd_long)
    out = np.zeros(n)
    pos = 0.0
    for t in range(n):
        z = fz[t] if fz[t] == fz[t] else 0.0
        a = asym[t] if asym[t] == asym[t] else 0.5
        if pos < 0.0 and crowd_long[t] < leave or pos > 0.0 and crowd_short[t] < leave:
            pos = 0.0
        if pos == 0.0:
            if crowd_long[t] >= enter and z >= zmin and a >= amin:
                pos = -lev
            elif crowd_short[t] >= enter and z <= -zmin and a <= 1.0 - amin:
                pos = lev
        out[t] = pos
    return out


class FundingSkew(Strategy):
    name = "funding_skew"
    PARAMS: ClassVar[dict[str, Param]] = {
        "leverage": Param(float, 3.0, "notional / equity while in the trade"),
        "enter": Param(float, 0.6, "crowding score that triggers the fade"),
        "exit": Param(float, 0.35, "crowding score below which the fade is closed"),
        "funding_z": Param(float, 1.0, "minimum funding z-score (sign of the crowded side)"),
        "asym": Param(float, 0.6, "minimum share of near liquidation mass on that side"),
    }

    def targets(self, bars: Bars, signals: Signals) -> np.ndarray:
        p = signals.positioning
        return skew_steps(p[:, ps.C_LONG_SCORE], p[:, ps.C_SHORT_SCORE], p[:, ps.C_FUNDING_Z],
                          p[:, ps.C_HEAT_ASYM], self.params["leverage"], self.params["enter"],
                          self.params["exit"], self.params["funding_z"], self.params["asym"])
