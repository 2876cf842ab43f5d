"""`liqbot backtest DATASET DATASET ... --portfolio`: several symbols on one cross account.

The body of the `--portfolio` form of `liqbot backtest` (registered there, not a command of
its own): load one dataset per symbol, check they share a bar grid, run the portfolio loop
(`backtests.portfolio`) with risk off, on or both, print portfolio and per-symbol figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from backtests.metrics import short_span_note
from backtests.portfolio import (
    PortfolioResult,
    portfolio_decisions,
    prepare_portfolio,
    run_portfolio,
)
from backtests.runner import RunSettings
from bot.cli.backtest import _fees, _span, warm_note
from bot.cli.paths import cell, check_output, check_wallet, console, dumps, shown, write_output
from bot.cli.tiers import brackets_for
from bot.data import dataset as ds_io
from bot.data.bars import Bars
from bot.data.dataset import iso
from bot.errors import LiqbotError
from bot.mechanics import brackets as br
from bot.mechanics.brackets import Brackets
from bot.risk.policy import load_policy, off_policy
from strategies import find

ROWS = [("return", "total_return", "{:+.2%}"), ("max drawdown", "max_drawdown", "{:.2%}"),
        ("Sharpe", "sharpe", "{:.2f}"), ("Sortino", "sortino", "{:.2f}"),
        ("liquidations", "liquidations", "{}"), ("fees", "fees", "{:,.2f}"),
        ("  of which liquidation", "liquidation_fees", "{:,.2f}"),
        ("funding paid (- = received)", "funding", "{:,.2f}"),
        ("slippage", "slippage", "{:,.2f}"),
        ("trades", "n_trades", "{}"), ("binding risk interventions", "n_risk_actions", "{}"),
        ("max leverage used", "max_leverage_used", "{:.2f}x")]


def _load(paths: list[str], start: int | None, end: int | None, tiers: Path | None = None,
          leverage: float | None = None
          ) -> tuple[list[Bars], list[Brackets]]:
    """One dataset directory per symbol, cut at `end` (the bars before `start` stay: they
    warm the signals), each with 10 bars or more in [start, end); its brackets."""
    bars, brackets = [], []
    for p in paths:
        if not Path(p).is_dir():
            raise LiqbotError(f"{p}: not a dataset directory (--portfolio takes dataset "
                              "directories, one per symbol)")
        b = ds_io.load(Path(p)).bars
        if end is not None:
            b = b.between(None, end)
        n = len(b.between(start, None)) if start is not None else len(b)
        if n < 10:
            raise LiqbotError(f"{p}: the selected span has fewer than 10 bars ({n})")
        brackets.append(brackets_for(b.symbol, tiers, leverage=leverage, clamp=True))
        bars.append(b)
    return bars, brackets


def _table(con: Console, res: PortfolioResult) -> None:
    m = res.metrics
    t = Table(title=f"risk {res.name}")
    t.add_column("")
    t.add_column("portfolio", justify="right")
    for sym in res.symbols:
        t.add_column(sym, justify="right")
    for label, key, fmt in ROWS:         # a figure a symbol does not have (its Sharpe): '-'
        t.add_row(label, cell(fmt, m["portfolio"][key]),
                  *(cell(fmt, m["symbols"][s].get(key)) for s in res.symbols))
    t.add_row("final equity / PnL", cell("{:,.2f}", m["portfolio"]["final_equity"]),
              *(cell("{:+,.2f}", m["symbols"][s]["pnl"]) for s in res.symbols))
    con.print(t)
    for ev in m["portfolio"]["liquidation_events"]:
        side = "short" if ev["qty"] > 0 else "long"    # the fill that closed it buys a short
        con.print(f"  liquidated: {ev['symbol']} {side} {abs(ev['qty']):,.6g} ({ev['slot']} "
                  f"slot) at {ev['ts']} @ {ev['price']:,.2f}")


def portfolio_command(ctx: typer.Context, paths: list[str], *, strategy: str,
                      params: dict[str, str], risk: str, preset: str, start: str | None,
                      end: str | None, wallet: float, json_path: Path | None,
                      tiers: Path | None, bad_options: list[str]) -> None:
    """Run the portfolio backtest (module docstring)."""
    if bad_options:
        raise LiqbotError(f"{', '.join(bad_options)}: not available with --portfolio")
    if risk not in ("on", "off", "compare"):
        raise LiqbotError(f"--risk: expected on, off or compare, got {risk!r}")
    if not paths:
        raise LiqbotError("--portfolio: give one dataset directory per symbol")
    check_wallet(wallet)
    json_out = check_output(json_path, "--json")
    to_stdout = json_path is not None and json_out is None
    strat = find(strategy).from_strings(params)
    policy = load_policy(preset) if risk != "off" else None
    fees, cfg = _fees((ctx.obj or {}).get("config") if ctx.obj else None)
    span = _span(start, end)
    bars, brackets = _load(paths, *span, tiers, cfg.live.leverage)
    settings = RunSettings(wallet=wallet, fills=cfg.fills, fees=fees)
    names = ["off", "on"] if risk == "compare" else [risk]
    err = Console(stderr=True)
    with err.status(f"signals for {len(bars)} symbols ..."):
        pin = prepare_portfolio(bars, brackets, settings, paths)
    # the account opens at --from; the grid's bars before it warm the signals only
    first = int(np.searchsorted(pin.ts, span[0], "left")) if span[0] is not None else 0
    n_t = len(pin.ts) - first
    results: dict[str, PortfolioResult] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=err, transient=True) as prog:
        task = prog.add_task("portfolio", total=n_t * len(names))
        for name in names:
            prog.update(task, description=f"risk {name}")
            pol = off_policy() if name == "off" else policy
            results[name] = run_portfolio(pin, strat, pol, settings, name,  # type: ignore[arg-type]
                                          progress=lambda k: prog.advance(task, k),
                                          start=first)
    con = console(stderr=to_stdout)
    con.print(f"[bold]portfolio[/] {', '.join(pin.symbols)} {iso(int(pin.ts[first]))} .. "
              f"{iso(int(pin.ts[-1]) + pin.interval_ms)} ({n_t:,} bars on one cross account), "
              f"{strat.describe()}, preset {preset if risk != 'off' else '-'}, wallet "
              f"{wallet:,.0f}")
    if first:
        con.print(warm_note(first, int(pin.ts[0])))
    for name in names:
        _table(con, results[name])
    note = short_span_note(n_t * pin.interval_ms / 86_400_000)
    if note is not None:
        con.print(note)
    if json_path is not None:
        meta: dict[str, Any] = {
            "symbols": pin.symbols, "sources": list(paths), "from": iso(int(pin.ts[first])),
            "to": iso(int(pin.ts[-1]) + pin.interval_ms), "bars": n_t, "warm_up_bars": first,
            "strategy": strat.describe(), "preset": preset if risk != "off" else None,
            "brackets": {b.symbol: br.describe(b.symbol, t)
                         for b, t in zip(bars, brackets, strict=True)}}
        out: dict[str, Any] = {"meta": meta,
                               "runs": {n: r.metrics for n, r in results.items()}}
        if "on" in results:
            out["decisions"] = portfolio_decisions(results["on"], pin)
        write_output(json_out, dumps(out) + "\n", "--json")
        if json_out is not None:
            con.print(f"wrote {shown(json_path)}")
