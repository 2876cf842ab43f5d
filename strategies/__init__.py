"""Strategy plug-ins: causal target leverage from bars and signals (`strategies.base`)."""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType

from bot.errors import LiqbotError
from strategies.base import Param, Strategy, user_code_error
from strategies.cascade_fade import CascadeFade
from strategies.funding_skew import FundingSkew
from strategies.hold import Hold
from strategies.sma_cross import SmaCross
from strategies.trend import Trend

BUILTIN: dict[str, type[Strategy]] = {
    s.name: s for s in (Hold, Trend, CascadeFade, FundingSkew, SmaCross)}


def _import(module: str, spec: str) -> ModuleType:
    """Import a user's strategy module: from `sys.path` (PYTHONPATH, installed packages) or
    else from the current directory, as `python -m` does. An error its code raises while
    it is imported (a SyntaxError, a failing top-level statement) is a UserCodeError naming
    its file and line (exit 2), not a bug in liqbot."""
    top = module.partition(".")[0]
    cwd = os.getcwd()
    for attempt in range(2):
        try:
            return importlib.import_module(module)
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            if attempt == 0 and missing == top and cwd not in sys.path:
                sys.path.append(cwd)         # last: it never shadows an installed package
                continue
            hint = (f"; run liqbot from the directory that holds {top}.py (or the {top}/ "
                    "package) or add that directory to PYTHONPATH") if missing == top else ""
            raise LiqbotError(f"--strategy: cannot load {spec!r} ({exc}{hint})") from None
        except ImportError as exc:
            raise LiqbotError(f"--strategy: cannot load {spec!r} ({exc})") from None
        except Exception as exc:         # noqa: BLE001 - LiqbotError too: a bad Param(...)
            err = user_code_error(exc, f"--strategy {spec}: importing {module}")
            if err is None:
                raise
            raise err from exc
    raise AssertionError("unreachable")


def find(name: str) -> type[Strategy]:
    """A strategy class by name (hold, trend, cascade_fade, funding_skew, and the reference
    sma_cross) or `module:Class`."""
    if name in BUILTIN:
        return BUILTIN[name]
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            cls = getattr(_import(module, name), attr)
        except AttributeError as exc:
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
