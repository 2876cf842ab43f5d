"""`hold`: a constant exposure, the baseline ("what would risk control have done to my
position?"). Stateless: the batch `targets` and the stream use the same step kernel."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from numba import njit

from bot.data.bars import Bars
from bot.signals.pipeline import Signals
from strategies.base import Param, StepForm, Strategy, leverage


@njit(cache=True)
def hold_step(st: np.ndarray, signed_lev: float) -> float:
    """One bar: the constant target (no state; `st` is empty)."""
    return signed_lev


@njit(cache=True)
def hold_steps(n: int, signed_lev: float) -> np.ndarray:
    st = np.zeros(0)
    out = np.empty(n)
    for t in range(n):
        out[t] = hold_step(st, signed_lev)
    return out


class Hold(Strategy):
    name = "hold"
    PARAMS: ClassVar[dict[str, Param]] = {
        "side": Param(str, "long", "long or short", ("long", "short")),
        "leverage": leverage(10.0, "notional / equity held throughout"),
    }

    def _signed(self) -> float:
        return (1.0 if self.params["side"] == "long" else -1.0) * self.params["leverage"]

    def targets(self, bars: Bars, signals: Signals) -> np.ndarray:
        return hold_steps(len(bars), self._signed())

    def step_form(self) -> StepForm:
        signed = self._signed()

        def step(st: np.ndarray, x: np.ndarray, out: np.ndarray) -> float:
            return hold_step(st, signed)

        return StepForm(np.zeros(0), step)
