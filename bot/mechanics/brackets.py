"""Leverage brackets (margin tiers): notional floor/cap, maintenance margin rate, maintenance
amount `cum`, max leverage.

A position sits in the tier with floor < notional <= cap, where notional = |qty| x price in
quote. Maintenance margin = notional x mmr - cum. The maintenance amounts are not free
parameters: Binance publishes the recurrence
    cum_i = cum_{i-1} + floor_i x (mmr_i - mmr_{i-1}),  cum_0 = 0
which makes the maintenance margin continuous across tier boundaries. Tables missing `cum`
get it computed; tables carrying it are checked and the first tier that breaks it is named.

Sources: the shipped tables (bot/mechanics/brackets/*.json, with their provenance), or
ccxt's `fetch_leverage_tiers` / `fetch_market_leverage_tiers` output (Binance tiers carry
`info.cum`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from numba import njit

from bot.errors import DataError
from bot.jsonfile import read_json

SHIPPED_DIR = Path(__file__).with_name("brackets")
CUM_TOLERANCE = 1e-6  # relative, plus 0.01 quote absolute (exchanges round cum to cents)


@dataclass(frozen=True)
class Brackets:
    """Tiers of one symbol as parallel float64 arrays (ready for numba kernels)."""

    symbol: str
    floor: np.ndarray         # quote notional, exclusive lower bound
    cap: np.ndarray           # quote notional, inclusive upper bound
    mmr: np.ndarray           # maintenance margin rate (fraction)
    cum: np.ndarray           # maintenance amount (quote)
    max_leverage: np.ndarray
    source: str = ""

    def __len__(self) -> int:
        return len(self.floor)

    def tier(self, notional: float) -> int:
        return int(tier_of(float(notional), self.floor, self.cap))

    def rows(self) -> list[dict[str, float]]:
        return [{"tier": i + 1, "floor": float(self.floor[i]), "cap": float(self.cap[i]),
                 "mmr": float(self.mmr[i]), "cum": float(self.cum[i]),
                 "max_leverage": float(self.max_leverage[i])} for i in range(len(self))]


@njit(cache=True)
def tier_of(notional: float, floor: np.ndarray, cap: np.ndarray) -> int:
    """Index of the tier with floor < notional <= cap (0 for notional <= 0; the last tier for
    notional above every cap, which callers treat as over the exchange's position limit)."""
    n = len(cap)
    for i in range(n):
        if notional <= cap[i]:
            return i
    return n - 1


@njit(cache=True)
def maintenance_margin(notional: float, mmr: float, cum: float) -> float:
    """Binance maintenance margin: notional x mmr - cum (quote)."""
    return notional * mmr - cum


@njit(cache=True)
def max_notional_for_equity(equity: float, cap: np.ndarray, max_lev: np.ndarray) -> float:
    """Largest position notional the exchange lets `equity` margin: in each tier, up to
    min(equity x the tier's max leverage, the tier's cap), if that reaches into the tier."""
    best = 0.0
    for k in range(len(cap)):
        lim = min(equity * max_lev[k], cap[k])
        floor = cap[k - 1] if k > 0 else 0.0
        if lim > floor and lim > best:
            best = lim
    return best


@njit(cache=True)
def order_limit(n: float, held: float, equity: float, cap: np.ndarray,
                max_lev: np.ndarray) -> float:
    """Signed target notional `n` clamped to what the exchange lets an order ADD at this
    equity (`max_notional_for_equity`), with `held` the signed notional held now. A position
    held above the limit (its equity shrank under it) is kept, not cut: Binance checks the
    bracket when an order opens or grows a position and otherwise acts only at maintenance
    margin (liquidation). A reduction always goes through; a flip is capped on its new side;
    a NaN `held` counts as nothing held."""
    # the limit is at least the first tier's (`max_notional_for_equity` takes the largest
    # over the tiers), so it cannot bind below it: skip the scan over the tiers then
    lim0 = min(equity * max_lev[0], cap[0])
    if lim0 > 0.0 and abs(n) <= lim0:
        return n
    lim = max_notional_for_equity(equity, cap, max_lev)
    h = held if held == held else 0.0
    if n > lim:
        return max(lim, min(n, h))         # no growth past the limit; what is held stays
    if n < -lim:
        return min(-lim, max(n, h))
    return n


def from_tiers(symbol: str, tiers: Sequence[Mapping[str, Any]], source: str = "",
               label: str = "(tiers)") -> Brackets:
    """Build and validate brackets from rows with floor, cap, mmr, max_leverage[, cum]."""
    if not tiers:
        raise DataError(label, "no tiers")
    for i, t in enumerate(tiers):
        flags = [k for k in ("floor", "cap", "mmr", "max_leverage", "cum")
                 if isinstance(t.get(k), bool)]
        if flags:
            raise DataError(label, f"tier {i + 1}: {flags[0]} is true/false, expected a number")
    try:
        floor = np.array([float(t["floor"]) for t in tiers])
        cap = np.array([float(t["cap"]) for t in tiers])
        mmr = np.array([float(t["mmr"]) for t in tiers])
        lev = np.array([float(t.get("max_leverage", np.nan)) for t in tiers])
        cums = [None if t.get("cum") is None else float(t["cum"]) for t in tiers]
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(label, "every tier needs numeric floor, cap, mmr (and cum when given) "
                               f"({exc})") from None
    for i in range(len(tiers)):
        bad = [k for k, v in (("floor", floor[i]), ("mmr", mmr[i]), ("cum", cums[i]))
               if v is not None and not np.isfinite(v)]
        if bad or np.isnan(cap[i]):
            raise DataError(label, f"tier {i + 1}: {(bad or ['cap'])[0]} is not a finite number")
    if floor[0] != 0:
        raise DataError(label, f"tier 1: floor {floor[0]:g} is not 0 (the first tier starts at "
                               "a notional of 0)")
    expected = np.zeros(len(tiers))
    for i in range(1, len(tiers)):
        expected[i] = expected[i - 1] + floor[i] * (mmr[i] - mmr[i - 1])
    expected = np.round(expected, 6)   # exchanges publish cents; drop binary-float dust
    for i in range(len(tiers)):
        where = f"tier {i + 1}"
        if cap[i] <= floor[i]:
            raise DataError(label, f"{where}: cap {cap[i]:g} is not above floor {floor[i]:g}")
        if i and abs(floor[i] - cap[i - 1]) > 1e-9 * max(1.0, cap[i - 1]):
            raise DataError(label, f"{where}: floor {floor[i]:g} does not continue the previous "
                                   f"cap {cap[i - 1]:g}")
        if not 0 < mmr[i] < 1:
            raise DataError(label, f"{where}: maintenance margin rate {mmr[i]:g} not in (0, 1)")
        if not np.isnan(lev[i]) and not 1.0 <= lev[i] <= 1000.0:   # absent: NaN, allowed
            raise DataError(label, f"{where}: max leverage {lev[i]:g} not in [1, 1000]")
    if all(c is not None for c in cums):
        cum = np.array(cums, dtype=np.float64)
        for i in range(len(tiers)):
            if abs(cum[i] - expected[i]) > 0.01 + CUM_TOLERANCE * abs(expected[i]):
                prev = f"cum_{i} {cum[i - 1]:g} + floor {floor[i]:g} x (mmr {mmr[i]:g} - " \
                       f"{mmr[i - 1]:g})" if i else "0 for the first tier"
                raise DataError(label, f"tier {i + 1}: maintenance amount {cum[i]:g} breaks "
                                       f"cum_i = cum_(i-1) + floor_i x (mmr_i - mmr_(i-1)); "
                                       f"expected {expected[i]:g} ({prev})")
    else:
        cum = expected
    return Brackets(symbol, floor, cap, mmr, cum, lev, source)


def one_tier(symbol: str, mmr: float, amount: float, source: str = "") -> Brackets:
    """The one tier a position sits in, as a user states it (`calc --mmr --maint-amount`):
    its rate and maintenance amount over every notional. Not a whole table, so the
    amount is not checked against the tiers below it (`from_tiers` would require 0 for a
    first tier, and Binance's tier 2 is 0.5% and 50)."""
    return Brackets(symbol, np.array([0.0]), np.array([np.inf]), np.array([float(mmr)]),
                    np.array([float(amount)]), np.array([np.nan]), source)


def plain_symbol(name: str) -> str:
    """BTCUSDT for BTCUSDT, BTC/USDT:USDT or btcusdt; a dated contract keeps its expiry
    (BTC/USDT:USDT-250328 -> BTCUSDT-250328), so it never stands for the perpetual."""
    head, _, settle = name.replace("/", "").partition(":")
    expiry = settle.partition("-")[2]
    return head.upper() + (f"-{expiry}" if expiry else "")


#: the keys of a ccxt leverage tier
TIER_KEYS = frozenset({"minNotional", "maxNotional", "maintenanceMarginRate", "maxLeverage"})


def from_ccxt(payload: Any, symbol: str | None = None, label: str = "(ccxt tiers)") -> Brackets:
    """Brackets from ccxt's leverage-tier structures.

    Accepts `fetch_leverage_tiers` output ({unified symbol: [tier, ...]}, `symbol` picks one;
    matched on the unified symbol or the exchange id such as BTCUSDT) or a plain list of tiers
    (`fetch_market_leverage_tiers`). Each tier has minNotional, maxNotional,
    maintenanceMarginRate, maxLeverage and, on Binance, info.cum.
    """
    if isinstance(payload, Mapping) and "tiers" in payload:   # our own shipped format
        name = str(payload.get("symbol", symbol or ""))
        if symbol and plain_symbol(name) != plain_symbol(symbol):
            raise DataError(label, f"the table is {name}'s, not {symbol}'s")
        return from_tiers(name, payload["tiers"], str(payload.get("source", "")), label)
    if isinstance(payload, Mapping):
        if symbol is None and len(payload) == 1:
            symbol = next(iter(payload))
        match = [k for k in payload if symbol and (k == symbol or plain_symbol(k)
                                                   == plain_symbol(symbol))]
        exact = [k for k in match if k == symbol]
        if len(match) > 1 and not exact:
            raise DataError(label, f"several tables match {symbol!r}: {', '.join(match)}")
        if not match:
            raise DataError(label, f"no tiers for symbol {symbol!r}; " + (
                f"present: {', '.join(list(payload)[:10])}" if payload else "the file holds none"))
        name = (exact or match)[0]
        tiers = payload[name]
    elif isinstance(payload, list):
        keys = set().union(*(t for t in payload if isinstance(t, Mapping)))
        if payload and not keys & TIER_KEYS:        # a positions list, say: not tiers at all
            raise DataError(label, "expected ccxt leverage tiers (objects with "
                                   f"{', '.join(sorted(TIER_KEYS))}); these objects have none "
                                   f"of them (keys: {', '.join(sorted(map(str, keys))[:8])})")
        named = {str(t["symbol"]) for t in payload if isinstance(t, Mapping) and t.get("symbol")}
        if symbol and named and {plain_symbol(n) for n in named} != {plain_symbol(symbol)}:
            raise DataError(label, f"the tiers are {', '.join(sorted(named))}'s, not "
                                   f"{symbol}'s")
        tiers, name = payload, symbol or (named.pop() if len(named) == 1 else "")
    else:
        raise DataError(label, "expected ccxt leverage tiers (a dict by symbol or a list)")
    rows = []
    for i, t in enumerate(tiers):
        if not isinstance(t, Mapping):
            raise DataError(label, f"tier {i + 1}: expected an object")
        info = t.get("info") or {}
        cum = info.get("cum") if isinstance(info, Mapping) else None
        rows.append({"floor": t.get("minNotional"), "cap": t.get("maxNotional"),
                     "mmr": t.get("maintenanceMarginRate"), "max_leverage": t.get("maxLeverage"),
                     "cum": cum})
    if any(r["cum"] is None for r in rows):
        for r in rows:
            r.pop("cum")
    return from_tiers(name, rows, "ccxt leverage tiers", label)


def load_file(path: Path, symbol: str | None = None) -> Brackets:
    """Brackets from a JSON file (ccxt output or the shipped format)."""
    return from_ccxt(read_json(path, "tiers file"), symbol, str(path))


def at_leverage(b: Brackets, leverage: float, clamp: bool = False) -> Brackets:
    """The table as an account whose leverage is SET to `leverage` may use it: Binance caps
    the position at the largest cap among the tiers allowing that leverage (-2027 beyond
    it) and margins it at that leverage. The tiers above are closed (max leverage 0) and
    the others capped at `leverage`, so `order_limit` sizes within what the venue accepts;
    the maintenance figures are unchanged (they do not depend on the setting). A setting
    above the table's largest leverage is an error (the venue refuses it), or with `clamp`
    (backtests, where the setting is a default more often than a choice) that largest."""
    top = float(b.max_leverage.max())
    if clamp and leverage > top:
        leverage = top
    if not top >= leverage >= 1.0:
        raise DataError("live.leverage", f"{leverage:g}x: {plain_symbol(b.symbol)}'s brackets "
                                         f"allow 1x to {top:g}x (lower live.leverage)")
    return replace(b, max_leverage=np.where(b.max_leverage >= leverage, float(leverage), 0.0),
                   source=f"{b.source}{SET_TO.format(leverage)}")


SET_TO = " (leverage set to {:g}x)"        # what `at_leverage` appends to a table's source
_SET_TO = re.compile(r" \(leverage set to ([0-9.e+]+)x\)$")


def leverage_setting(b: Brackets) -> float | None:
    """The account leverage setting `at_leverage` applied to `b`, None for a table as
    published."""
    m = _SET_TO.search(b.source)
    return float(m.group(1)) if m else None


def position_limit(b: Brackets, leverage: float) -> float:
    """The largest position notional an account with its leverage SET to `leverage` may
    hold (Binance's maxNotionalValue: the largest cap among the tiers allowing it; 0 when
    none does)."""
    return float(max((c for c, m in zip(b.cap, b.max_leverage, strict=True) if m >= leverage),
                     default=0.0))


STAND_IN = "BTCUSDT"   # whose shipped table stands in for a symbol without one


def for_symbol(symbol: str, tiers: Path | None = None, exchange: str = "binance") -> Brackets:
    """The brackets liqbot trades `symbol` on: from `tiers` (a ccxt leverage-tier JSON file,
    which may hold many symbols) when given, else the shipped table, else the shipped
    BTCUSDT table as a STAND-IN (an alt's real tiers are tighter: lower leverage caps and
    higher maintenance rates, so the same position is liquidated sooner, and a large one
    may not open at all).
    `stand_in_note` says when the last case happened; every command prints it."""
    if tiers is not None:
        b = load_file(tiers, symbol)
        return replace(b, source=f"--tiers {tiers} ({b.source or 'no source given'})")
    try:
        return shipped(exchange, symbol)
    except DataError:                        # no table of its own (or not a symbol name)
        b = shipped(exchange, STAND_IN)
        return replace(b, source=f"stand-in for {symbol}: {b.source}")


def stand_in_note(symbol: str, b: Brackets, hint: bool = True) -> str | None:
    """A warning when `b` is not `symbol`'s own table (`for_symbol`'s stand-in), else None;
    `hint` adds how to give its own (for commands that take `--tiers`)."""
    if plain_symbol(b.symbol) == plain_symbol(symbol):
        return None
    have = ", ".join(p.stem.split("_", 1)[1] for p in sorted(SHIPPED_DIR.glob("*.json")))
    return (f"{symbol}: no leverage-bracket table (shipped: {have}); its margin tiers are "
            f"{b.symbol}'s here, so its liquidation prices are estimates." + (
                " Pass --tiers FILE (ccxt fetch_leverage_tiers output as JSON) for its own."
                if hint else ""))


def limit_leverage(b: Brackets, equity: float) -> float:
    """The largest leverage an order may open on `equity` (quote) under `b`: the bracket
    limit (`max_notional_for_equity`) over the equity."""
    return float(max_notional_for_equity(equity, b.cap, b.max_leverage)) / equity


def capped_note(symbol: str, b: Brackets, wallet: float, target: float) -> str | None:
    """A note when a strategy's largest target leverage `target` on `wallet` (quote) is more
    than `b` lets an order open (`max_notional_for_equity`): the run's orders stop at that
    limit, as the exchange's would, so a 125x target trades as the brackets' 20x does (with
    no word of it until 2026-12-06). None when the target fits."""
    if not (target > 0.0 and wallet > 0.0):
        return None
    lev = limit_leverage(b, wallet)
    if target <= lev * (1.0 + 1e-9):
        return None
    setting = leverage_setting(b)
    at = f" at the account's leverage setting (live.leverage = {setting:g})" if setting else ""
    return (f"brackets: the target {target:g}x ({target * wallet:,.0f} quote on the "
            f"{wallet:,.0f} wallet) is more than {symbol}'s brackets let an order open{at}: "
            f"{lev:.4g}x ({lev * wallet:,.0f}); orders stop at that limit, as on the exchange "
            "(it moves with equity)")


def describe(symbol: str, b: Brackets) -> str:
    """One line for reports: which table `symbol` ran on, and at which account leverage
    setting when one closed its upper tiers (`at_leverage`)."""
    setting = leverage_setting(b)
    at = f", leverage set to {setting:g}x (live.leverage)" if setting else ""
    source = _SET_TO.sub("", b.source)
    if stand_in_note(symbol, b) is not None:
        return f"{b.symbol} shipped table, a stand-in for {symbol} (no table of its own){at}"
    if source.startswith(("ccxt", "--tiers")):
        return f"{b.symbol} from {source}{at}"
    # the shipped tables are Binance's tiers of 2021 (their source says so): today's differ
    year = re.search(r"\b(20\d\d)\b", source)
    return f"{b.symbol} shipped table" + (
        f" (Binance's tiers of {year.group(1)}; today's differ: --tiers)" if year else "") + at


def shipped(exchange: str, symbol: str) -> Brackets:
    """The bracket table shipped with liqbot (binance BTCUSDT and ETHUSDT)."""
    if not (exchange.isalnum() and symbol.isalnum()):
        raise DataError("(argument)", f"not an exchange/symbol name: {exchange!r} {symbol!r} "
                                      "(letters and digits only)")
    path = SHIPPED_DIR / f"{exchange}_{symbol.upper()}.json"
    if not path.is_file():
        have = ", ".join(p.stem for p in sorted(SHIPPED_DIR.glob("*.json")))
        raise DataError(str(path), f"no shipped bracket table for {exchange} {symbol}; "
                                   f"shipped: {have}; pass --tiers FILE (ccxt leverage tiers)")
    return load_file(path)
