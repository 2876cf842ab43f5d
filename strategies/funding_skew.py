"""`funding_skew`: fade crowded funding when the heatmap agrees.

Short `leverage` when longs are crowded (crowding >= `enter`), funding is rich (z >=
`funding_z`) and the near liquidation mass sits mostly below (asymmetry >= `asym`): the
crowd's stops are the fuel. Long in the mirror case. Exits when that side's crowding
falls below `exit`. The batch `targets` and the stream step the same kernel (`skew_step`)
over the positioning components; the state is the position.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from numba import njit

from bot.data.bars import Bars
from bot.signals import positioning as ps
from bot.signals import stream as ss
from bot.signals.pipeline import Signals
from strategies.base import Param, StepForm, Strategy, leverage

N_STATE = 1   # position


@njit(cache=True)
def skew_step(st: np.ndarray, crowd_long: float, crowd_short: float, fz: float, asym: float,
              lev: float, enter: float, leave: float, zmin: float, amin: float) -> float:
    """One bar: the target leverage (-lev, 0, +lev); mutates `st`."""
    z = fz if fz == fz else 0.0
    a = asym if asym == asym else 0.5
    pos = st[0]
    if pos < 0.0 and crowd_long < leave or pos > 0.0 and crowd_short < leave:
        pos = 0.0
    if pos == 0.0:
        if crowd_long >= enter and z >= zmin and a >= amin:
            pos = -lev
        elif crowd_short >= enter and z <= -zmin and a <= 1.0 - amin:
            pos = lev
    st[0] = pos
    return pos


@njit(cache=True)
def skew_steps(crowd_long: np.ndarray, crowd_short: np.ndarray, fz: np.ndarray,
               asym: np.ndarray, lev: float, enter: float, leave: float, zmin: float,
               amin: float) -> np.ndarray:
    st = np.zeros(N_STATE)
    out = np.empty(len(crowd_long))
    for t in range(len(crowd_long)):
        out[t] = skew_step(st, crowd_long[t], crowd_short[t], fz[t], asym[t], lev, enter,
                           leave, zmin, amin)
    return out


def _unit(default: float, help: str) -> Param:
    return Param(float, default, help, lo=0.0, hi=1.0)


class FundingSkew(Strategy):
    name = "funding_skew"
    PARAMS: ClassVar[dict[str, Param]] = {
        "leverage": leverage(3.0, "notional / equity while in the trade"),
        "enter": _unit(0.6, "crowding score that triggers the fade"),
        "exit": _unit(0.35, "crowding score below which the fade is closed"),
        "funding_z": Param(float, 1.0, "minimum funding z-score (sign of the crowded side)",
                           lo=0.0),
        "asym": _unit(0.6, "minimum share of near liquidation mass on that side"),
    }

    def check(self) -> None:
        self.require(self.params["exit"] < self.params["enter"], "exit",
                     f"exit < enter ({self.params['enter']})")

    def _args(self) -> tuple[float, float, float, float, float]:
        p = self.params
        return p["leverage"], p["enter"], p["exit"], p["funding_z"], p["asym"]

    def targets(self, bars: Bars, signals: Signals) -> np.ndarray:
        p = np.asarray(signals.positioning, dtype=np.float64)

        def col(i: int) -> np.ndarray:
            return np.ascontiguousarray(p[:, i])

        return skew_steps(col(ps.C_LONG_SCORE), col(ps.C_SHORT_SCORE), col(ps.C_FUNDING_Z),
                          col(ps.C_HEAT_ASYM), *self._args())

    def step_form(self) -> StepForm:
        args = self._args()
        cl, cs = ss.O_POS + ps.C_LONG_SCORE, ss.O_POS + ps.C_SHORT_SCORE
        fz, am = ss.O_POS + ps.C_FUNDING_Z, ss.O_POS + ps.C_HEAT_ASYM

        def step(st: np.ndarray, x: np.ndarray, out: np.ndarray) -> float:
            return skew_step(st, out[cl], out[cs], out[fz], out[am], *args)

        return StepForm(np.zeros(N_STATE), step)
