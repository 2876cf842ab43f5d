"""The strategy protocol: parameters plus a causal `targets(bars, signals)`.

`targets` returns, for every bar, the signed target LEVERAGE (position notional / equity;
+ long, - short) decided at that bar's close and executed at the next bar's open. It may
use bars[:t+1] and signals[:t+1] only; `liqbot backtest --check-lookahead` recomputes it on
prefixes and fails on any difference. Path-dependent strategies run a jitted step loop.
Every strategy takes `leverage`: target exposure x leverage = notional / equity.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from bot.data.bars import Bars
from bot.errors import LiqbotError
from bot.signals.pipeline import Signals


@dataclass(frozen=True)
class Param:
    """A strategy parameter: type (float, int, str), default, help, allowed values."""

    kind: type
    default: Any
    help: str
    choices: tuple[str, ...] = ()


class Strategy:
    """Base class: subclasses set `name`, `PARAMS` and implement `targets`."""

    name: ClassVar[str] = "base"
    PARAMS: ClassVar[dict[str, Param]] = {
        "leverage": Param(float, 3.0, "notional / equity at full exposure")}

    def __init__(self, **params: Any) -> None:
        unknown = set(params) - set(self.PARAMS)
        if unknown:
            raise LiqbotError(f"--param: {self.name} has no parameter {sorted(unknown)[0]!r}; "
                              f"known: {', '.join(self.PARAMS)}")
        self.params: dict[str, Any] = {}
        for key, spec in self.PARAMS.items():
            raw = params.get(key, spec.default)
            try:
                value = spec.kind(raw)
            except (TypeError, ValueError):
                raise LiqbotError(f"--param {key}: expected {spec.kind.__name__}, got "
                                  f"{raw!r}") from None
            if spec.choices and value not in spec.choices:
                raise LiqbotError(f"--param {key}: expected one of {', '.join(spec.choices)}, "
                                  f"got {value!r}")
            if key == "leverage" and not 0 < float(value) <= 125:
                raise LiqbotError(f"--param leverage: expected 0 < leverage <= 125, got {value}")
            self.params[key] = value

    @classmethod
    def from_strings(cls, pairs: Mapping[str, str]) -> Strategy:
        return cls(**dict(pairs))

    def targets(self, bars: Bars, signals: Signals) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.name}(" + ", ".join(f"{k}={v}" for k, v in self.params.items()) + ")"
