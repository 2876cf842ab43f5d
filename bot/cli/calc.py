"""`liqbot calc liquidation`: liquidation and bankruptcy price calculator.

All arithmetic is in `bot.mechanics`; this module only parses arguments and prints.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.table import Table

from bot.cli.paths import SYMBOL, check_symbol, console
from bot.data.validate import PRICE_MIN
from bot.errors import DataError, LiqbotError
from bot.jsonfile import read_json
from bot.mechanics import brackets as br
from bot.mechanics import liquidation as lq
from bot.mechanics.fees import venue_fees

app = typer.Typer(help="Calculators: liquidation price.", no_args_is_help=True)


@dataclass(frozen=True)
class Result:
    liquidation_price: float
    bankruptcy_price: float
    maintenance_margin: float
    maintenance_rate: float
    maintenance_amount: float
    bracket: str


def _side(text: str) -> float:
    if text not in ("long", "short"):
        raise LiqbotError(f"--side: expected long or short, got {text!r}")
    return 1.0 if text == "long" else -1.0


#: Largest accepted leverage: no venue offers more than 200x (Binance BTCUSDT 125x).
MAX_LEVERAGE = 200.0
#: Largest accepted price, quantity or wallet: beyond it float64 notionals lose meaning.
MAX_AMOUNT = 1e15


#: Smallest accepted entry price (quote per base), as for market data (PRICE_MIN).
MIN_PRICE = PRICE_MIN
#: Smallest accepted leverage: no venue sets one below 1x (more margin than that is --wallet).
MIN_LEVERAGE = 1.0


def _positive(name: str, value: float | None, hi: float = MAX_AMOUNT, lo: float = 0.0) -> None:
    if value is not None and not (np.isfinite(value) and value > 0):
        raise LiqbotError(f"{name}: expected a positive number, got {value}")
    if value is not None and value > hi:
        raise LiqbotError(f"{name}: expected at most {hi:g}, got {value:g}")
    if value is not None and value < lo:
        raise LiqbotError(f"{name}: expected at least {lo:g}, got {value:g}")


def price_text(v: float) -> str:
    """A price with thousands separators and at least 6 significant digits (an alt at
    0.00001234 is not '0.00')."""
    if v == 0 or abs(v) >= 1000:
        return f"{v:,.2f}"
    return f"{v:,.{max(2, 5 - math.floor(math.log10(abs(v))))}f}"


def _json_number(v: float) -> float:
    """10 decimals, or 10 significant digits for a value below 1e-3 (not rounded to 0)."""
    return round(v, 10) if v == 0 or abs(v) >= 1e-3 else float(f"{v:.10g}")


def _number(row: dict, key: str, where: str, path: Path, lo: float, hi: float,
            lo_open: bool = True, default: float | None = None) -> float:
    """A finite number from a positions-file row, in (lo, hi] (or [lo, hi])."""
    if key not in row and default is not None:
        return default
    raw = row[key]
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise DataError(str(path), f"{where}: {key} must be a number, got a "
                                   f"{type(raw).__name__}")
    try:
        value = float(raw)
    except ValueError:
        raise DataError(str(path), f"{where}: {key} must be a number, got {str(raw)[:20]!r}") \
            from None
    ok = np.isfinite(value) and (value > lo if lo_open else value >= lo) and value <= hi
    if not ok:
        rng = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"
        raise DataError(str(path), f"{where}: {key} must be a finite number in {rng}, "
                                   f"got {value}")
    return value


def _brackets(mmr: float | None, amount: float | None, tiers: Path | None,
              exchange: str, symbol: str) -> br.Brackets:
    if mmr is not None:
        if tiers is not None:
            raise LiqbotError("--mmr and --tiers: give one of them, not both")
        if not 0 < mmr < 1:
            raise LiqbotError(f"--mmr: expected a rate in (0, 1) such as 0.004, got {mmr}")
        if amount is not None and not (np.isfinite(amount) and 0 <= amount <= MAX_AMOUNT):
            raise LiqbotError(f"--maint-amount: expected a finite amount >= 0 (quote), got "
                              f"{amount}")
        return br.one_tier(symbol, mmr, amount or 0.0, "--mmr/--maint-amount")
    if amount is not None:
        raise LiqbotError("--maint-amount needs --mmr")
    if tiers is not None:
        return br.load_file(tiers, symbol)
    if exchange != "binance":
        raise LiqbotError(f"--mmr: required for {exchange} (its maintenance rate for your risk "
                          "limit tier, e.g. 0.005)")
    return br.shipped(exchange, symbol)


def _check_amount(where: str, amount: float, rate: float, notional: float) -> None:
    """A tier's maintenance amount is at most its rate x its floor (cum_i = sum of floor_j x
    (mmr_j - mmr_(j-1))), so at most rate x the notional of any position in it: a larger one
    gives a negative maintenance margin (a liquidation price past bankruptcy)."""
    if amount > rate * notional:
        raise LiqbotError(f"{where}: maintenance amount {amount:g} is above the rate x the "
                          f"position's notional ({rate:g} x {notional:,.2f} = "
                          f"{rate * notional:,.2f}): no tier this position is in has it (a "
                          f"tier with that amount starts at {amount / rate:,.0f} or more)")


#: the keys of a position in a --positions file (a typo such as maint_amt was dropped)
POSITION_KEYS = frozenset({"side", "qty", "entry", "mark", "mmr", "maint_amount", "symbol"})


def _others(path: Path, exchange: str) -> tuple[float, float]:
    """(maintenance margin, unrealised PnL) of the other cross positions in a JSON file.

    The file is a list of {"side": "long"|"short", "qty": base, "entry": price,
    "mark": price, and either "mmr" [+ "maint_amount"] or "symbol" (shipped tiers)}.
    """
    rows = read_json(path, "positions file")
    if not isinstance(rows, list):
        raise DataError(str(path), "expected a JSON list of positions")
    maint = upnl = 0.0
    for k, row in enumerate(rows, start=1):
        where = f"position {k}"
        if not isinstance(row, dict):
            raise DataError(str(path), f"{where}: expected an object")
        unknown = sorted(set(row) - POSITION_KEYS)
        if unknown:
            raise DataError(str(path), f"{where}: unknown key {unknown[0]!r} (known: "
                                       f"{', '.join(sorted(POSITION_KEYS))})")
        try:
            side = _side(str(row["side"]))
            qty, entry, mark = (_number(row, key, where, path, 0.0, MAX_AMOUNT)
                                for key in ("qty", "entry", "mark"))
        except KeyError as exc:
            raise DataError(str(path), f"{where}: missing key {exc.args[0]!r} (need side, qty, "
                                       "entry, mark)") from None
        except DataError:
            raise
        except LiqbotError as exc:
            raise DataError(str(path), f"{where}: {exc}") from None
        if "mmr" in row:
            rate = _number(row, "mmr", where, path, 0.0, 0.999)
            amount = _number(row, "maint_amount", where, path, 0.0, MAX_AMOUNT, lo_open=False,
                             default=0.0)
            _check_amount(f"{path}: {where}", amount, rate, qty * mark)
            b = br.one_tier("", rate, amount, str(path))
        elif "symbol" in row:
            sym = row["symbol"]
            if not isinstance(sym, str) or not SYMBOL.fullmatch(sym.upper()):
                raise DataError(str(path), f"{where}: symbol must be like BTCUSDT")
            b = br.shipped(exchange, sym)
        else:
            raise DataError(str(path), f"{where}: needs mmr (and maint_amount) or symbol")
        maint += lq.position_maintenance(qty, mark, b.floor, b.cap, b.mmr, b.cum)
        upnl += side * qty * (mark - entry)
    return maint, upnl


def compute(exchange: str, side: str, entry: float, qty: float, leverage: float | None,
            wallet: float | None, mmr: float | None, maint_amount: float | None,
            tiers: Path | None, margin_mode: str, positions: Path | None,
            taker_fee: float | None, symbol: str) -> Result:
    """Validate the arguments and compute; raises LiqbotError with a clear message."""
    if exchange not in ("binance", "bybit", "okx"):
        raise LiqbotError(f"--exchange: expected binance, bybit or okx, got {exchange!r}")
    s = _side(side)
    for name, value in (("--entry", entry), ("--qty", qty), ("--wallet", wallet)):
        _positive(name, value)
    _positive("--entry", entry, lo=MIN_PRICE)
    _positive("--leverage", leverage, MAX_LEVERAGE, MIN_LEVERAGE)
    _positive("--entry x --qty", entry * qty)
    if taker_fee is not None and exchange != "okx":
        raise LiqbotError(f"--taker-fee: only OKX's liquidation price includes the taker fee; "
                          f"{exchange}'s does not")
    if taker_fee is not None and not (np.isfinite(taker_fee) and 0 <= taker_fee <= 0.01):
        raise LiqbotError(f"--taker-fee: expected a fee rate in [0, 0.01] such as 0.0005, got "
                          f"{taker_fee}")
    check_symbol(symbol, "--symbol")
    if (leverage is None) == (wallet is None):
        raise LiqbotError("give exactly one of --leverage L (isolated margin = entry x qty / L) "
                          "or --wallet W")
    if margin_mode not in ("isolated", "cross"):
        raise LiqbotError(f"--margin-mode: expected isolated or cross, got {margin_mode!r}")
    if margin_mode == "cross":
        if exchange != "binance":
            raise LiqbotError(f"--margin-mode cross: only binance is supported, got {exchange}")
        if wallet is None:
            raise LiqbotError("--margin-mode cross needs --wallet (the cross wallet balance)")
    elif positions is not None:
        raise LiqbotError("--positions only applies with --margin-mode cross")
    b = _brackets(mmr, maint_amount, tiers, exchange, symbol)
    notional = entry * qty
    if mmr is not None and maint_amount:
        _check_amount("--maint-amount", maint_amount, mmr, notional)
    if notional > float(b.cap[-1]):
        raise LiqbotError(f"--qty: notional {notional:,.0f} (entry x qty) exceeds the top bracket "
                          f"of {b.symbol or symbol} (cap {float(b.cap[-1]):,.0f}); the exchange "
                          "would not accept this position")
    top = float(b.max_leverage[b.tier(notional)])
    if leverage is not None and np.isfinite(top) and leverage > top:
        raise LiqbotError(f"--leverage: {leverage:g}x is above the {top:g}x that "
                          f"{b.symbol or symbol}'s bracket allows at a notional of "
                          f"{notional:,.0f} (tier {b.tier(notional) + 1}); the exchange would "
                          "refuse it")
    margin = wallet if wallet is not None else entry * qty / float(leverage)  # type: ignore[arg-type]
    other_maint, other_upnl = _others(positions, exchange) if positions else (0.0, 0.0)
    if exchange == "binance":
        price, tier = lq.binance_liquidation_price_bracketed(s, qty, entry, margin, b.floor, b.cap,
                                                             b.mmr, b.cum, other_maint, other_upnl)
    else:
        # the risk-limit tier of the position's value (until 2026-12-06 always the first:
        # a --tiers table priced a 500k position at its 5k tier's rate)
        tier = b.tier(notional)
        if exchange == "bybit":
            price = lq.bybit_liquidation_price_isolated(s, qty, entry, entry * qty / margin,
                                                        b.mmr[tier], b.cum[tier])
        else:
            fee = venue_fees("okx").taker if taker_fee is None else taker_fee
            price = lq.okx_liquidation_price_isolated(s, qty, entry, margin, b.mmr[tier], fee)
    # OKX's maintenance margin is the tier's rate x the notional, with no amount deducted
    rate, amount = float(b.mmr[tier]), float(b.cum[tier]) if exchange != "okx" else 0.0
    bankrupt = lq.bankruptcy_price(s, qty, entry, margin, other_upnl)
    if not (np.isfinite(price) and np.isfinite(bankrupt)):
        raise LiqbotError("these inputs give no finite liquidation price (check --mmr, "
                          "--maint-amount, --taker-fee and the positions file)")
    if s * (float(price) - entry) >= 0:
        what, fix = ("the margin is", "lower --leverage or add margin") \
            if margin_mode == "isolated" else \
            ("the cross account's margin balance (--wallet + the unrealised PnL of --positions) "
             "is", "add to --wallet or lower --qty")
        raise LiqbotError(f"{what} below the maintenance requirement at entry: the position "
                          f"would be liquidated immediately (liquidation price "
                          f"{float(price):,.2f} is {'above' if s > 0 else 'below'} the entry "
                          f"{entry:,.2f}); {fix}")
    if mmr is not None and maint_amount and s * (float(price) - float(bankrupt)) < 0 \
            and float(price) > 0:
        # the stated amount gives a negative maintenance at the liquidation notional
        raise LiqbotError(f"--maint-amount: maintenance amount {maint_amount:g} puts the "
                          f"liquidation price {float(price):,.2f} past the bankruptcy price "
                          f"{float(bankrupt):,.2f} (a negative maintenance margin at "
                          f"{mmr:g} x {qty * float(price):,.2f}): no tier of this position "
                          "has it")
    # a long whose margin covers a fall to 0 has no liquidation price: 0 (never -0.00)
    price = max(float(price), 0.0) + 0.0
    span = f"{b.floor[tier]:,.0f} < notional <= {b.cap[tier]:,.0f}" \
        if np.isfinite(b.cap[tier]) else f"notional > {b.floor[tier]:,.0f}"
    label = f"tier {tier + 1}: {span}, mmr {rate:g}, maintenance amount {amount:,.2f}"
    return Result(price, max(float(bankrupt), 0.0) + 0.0,
                  max(br.maintenance_margin(qty * price, rate, amount), 0.0) + 0.0, rate,
                  amount, label)


@app.command("liquidation")
def liquidation(
    exchange: Annotated[str, typer.Option("--exchange", help="binance | bybit | okx")],
    side: Annotated[str, typer.Option("--side", help="long | short")],
    entry: Annotated[float, typer.Option("--entry", help="entry price (quote per base)")],
    qty: Annotated[float, typer.Option("--qty", help="position size (base)")],
    leverage: Annotated[float | None, typer.Option(
        "--leverage", help="isolated margin = entry x qty / L")] = None,
    wallet: Annotated[float | None, typer.Option(
        "--wallet", help="isolated margin, or the cross wallet balance (quote)")] = None,
    mmr: Annotated[float | None, typer.Option("--mmr", help="maintenance margin rate")] = None,
    maint_amount: Annotated[float | None, typer.Option(
        "--maint-amount", help="maintenance amount (cum / MM deduction), quote")] = None,
    tiers: Annotated[Path | None, typer.Option(
        "--tiers", help="JSON leverage tiers (ccxt fetch_leverage_tiers output)")] = None,
    symbol: Annotated[str, typer.Option(
        "--symbol", help="shipped Binance tiers when neither --mmr nor --tiers")] = "BTCUSDT",
    margin_mode: Annotated[str, typer.Option("--margin-mode", help="isolated | cross")]
    = "isolated",
    positions: Annotated[Path | None, typer.Option(
        "--positions", help="JSON list of the other cross positions")] = None,
    taker_fee: Annotated[float | None, typer.Option("--taker-fee", help="OKX taker fee")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Liquidation price, bankruptcy price, bracket used and maintenance margin.

    The maintenance margin shown is the requirement at the liquidation price (with the
    bracket used there): the margin left when the position is liquidated.
    """
    r = compute(exchange, side, entry, qty, leverage, wallet, mmr, maint_amount, tiers,
                margin_mode, positions, taker_fee, symbol)
    if as_json:
        out: dict[str, Any] = {k: _json_number(v) for k, v in r.__dict__.items()
                               if k != "bracket"}
        print(json.dumps(out))
        return
    t = Table(show_header=False, title=f"{exchange} {side} {qty:g} @ {price_text(entry)} "
                                       f"({margin_mode})", title_justify="left")
    t.add_row("liquidation price", price_text(r.liquidation_price) if r.liquidation_price > 0
              else "none (the margin covers a fall to 0)")
    t.add_row("bankruptcy price", price_text(r.bankruptcy_price))
    t.add_row("bracket", r.bracket)
    t.add_row("maintenance margin", f"{r.maintenance_margin:,.2f} (at the liquidation price)")
    console().print(t)
