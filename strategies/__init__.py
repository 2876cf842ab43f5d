"""Strategy plug-ins: causal target leverage from bars and signals (`strategies.base`)."""

from __future__ import annotations

import importlib

from bot.errors import LiqbotError
from strategies.base import Param, Strategy
from strategies.cascade_fade import CascadeFade
from strategies.funding_skew import FundingSkew
from strategies.hold import Hold
from strategies.sma_cross import SmaCross
from strategies.trend import Trend

BUILTIN: dict[str, type[Strategy]] = {
    s.name: s for s in (Hold, Trend, CascadeFade, FundingSkew, SmaCross)}


def find(name: str) -> type[Strategy]:
    """A strategy class by name (hold, trend, cascade_fade, funding_skew, and the reference
    sma_cross) or `module:Class`."""
    if name in BUILTIN:
        return BUILTIN[name]
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise LiqbotError(f"--strategy: cannot load {name!r} ({exc})") from None
        if not (isinstance(cls, type) and issubclass(cls, Strategy)):
            raise LiqbotError(f"--strategy: {name!r} is not a strategies.base.Strategy")
        if cls.targets is Strategy.targets:
            raise LiqbotError(f"--strategy: {name!r} does not implement targets(bars, signals) "
                              "(see strategies/base.py)")
        return cls
    raise LiqbotError(f"--strategy: expected one of {', '.join(BUILTIN)} or module:Class, "
                      f"got {name!r}")


__all__ = ["BUILTIN", "Param", "Strategy", "find"]
