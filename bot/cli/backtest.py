"""`liqbot backtest`: run a strategy over a dataset or scenario with risk off, on or both."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from backtests import lookahead
from backtests.engine import N_REC_CORE
from backtests.metrics import short_span_note
from backtests.report import write as write_report
from backtests.runner import (
    RunResult,
    RunSettings,
    decision_rows,
    from_bar,
    prepare,
    run,
    trim_columns,
)
from backtests.scenarios import load_scenario
from backtests.tick_runner import prepare_ticks, run_ticks, tick_source
from bot import lean_process, warmup
from bot.cli.heatmap import parse_time
from bot.cli.paths import cell, check_output, check_wallet, console, dumps, shown, write_output, writing
from bot.cli.tiers import TiersOption, brackets_for
from bot.config import load_config
from bot.data.bars import funding_note, mark_coverage, mark_prices
from bot.data.dataset import gap_note, iso
from bot.errors import LiqbotError
from bot.mechanics import brackets as br
from bot.mechanics.fees import VenueFees, venue_fees
from bot.risk.policy import load_policy, off_policy
from bot.signals.pipeline import LazySignals, heatmap_clusters
from bot.signals.stream import bar_length_note
from strategies import find

ROWS = [("total return", "total_return", "{:+.2%}"), ("max drawdown", "max_drawdown", "{:.2%}"),
        ("Sharpe", "sharpe", "{:.2f}"), ("Sortino", "sortino", "{:.2f}"),
        ("liquidations", "liquidations", "{}"),
        ("funding paid (- = received)", "funding", "{:,.2f}"),
        ("fees", "fees", "{:,.2f}"), ("  of which liquidation", "liquidation_fees", "{:,.2f}"),
        ("slippage", "slippage", "{:,.2f}"),
        ("time in market", "time_in_market", "{:.1%}"), ("trades", "n_trades", "{}"),
        ("binding risk interventions", "n_risk_actions", "{}"),
        ("max leverage used", "max_leverage_used", "{:.1f}x"),
        ("final equity", "final_equity", "{:,.2f}")]


def warm_note(first: int, start_ms: int) -> str:
    """What `--from` did: the bars before it warmed the signals (backtest, portfolio)."""
    return (f"signals and strategy warm on the {first:,} bars before --from "
            f"({iso(start_ms)} ..); the account opens at --from")


def _liquidation(m: dict[str, Any]) -> str:
    if m.get("liquidated_at") is None:
        return "-"
    return f"{m['liquidated_at']} @ {m['liquidation_price']:,.2f}"


def _span(start: str | None, end: str | None) -> tuple[int | None, int | None]:
    """(--from, --to) in ms, either None when not given; --from must come before --to."""
    span = (_time(start, "--from") if start else None, _time(end, "--to") if end else None)
    if span[0] is not None and span[1] is not None and span[0] >= span[1]:
        raise LiqbotError(f"--from {start} is not before --to {end}")
    return span


def _time(text: str, flag: str) -> int:
    """parse_time plus a range check (a 20-digit number is a usage error, not an overflow)."""
    t = parse_time(text, flag)
    if not 0 <= t < 2**62:
        raise LiqbotError(f"{flag}: expected a UTC time or ms since the epoch, got {text!r}")
    return t



def _params(pairs: list[str]) -> dict[str, str]:
    out = {}
    for p in pairs:
        key, sep, value = p.partition("=")
        if not sep or not key:
            raise LiqbotError(f"--param: expected key=value, got {p!r}")
        if key.strip() in out:              # the last one silently won
            raise LiqbotError(f"--param {key.strip()}: given twice ({out[key.strip()]!r} and "
                              f"{value.strip()!r})")
        out[key.strip()] = value.strip()
    return out


def _fees(ctx_config: Path | None) -> tuple[VenueFees, Any]:
    cfg = load_config(ctx_config)
    base = venue_fees(cfg.exchange.name)
    f = cfg.fees
    return VenueFees(f.maker if f.maker is not None else base.maker,
                     f.taker if f.taker is not None else base.taker,
                     f.liquidation if f.liquidation is not None else base.liquidation), cfg


def backtest_command(
    ctx: typer.Context,
    datasets: Annotated[list[str] | None, typer.Argument(
        metavar="DATASET", help="dataset directory (default: the config's data.source); "
        "several with --portfolio")] = None,
    scenario: Annotated[str | None, typer.Option(
        "--scenario", help="cascade-long, cascade-short, calm, synthetic:SEED[:CROWDING[:DAYS]]"
    )] = None,
    strategy: Annotated[str, typer.Option("--strategy", help="hold, trend, cascade_fade, "
                                                             "funding_skew, sma_cross or "
                                                             "module:Class")]
    = "hold",
    param: Annotated[list[str] | None, typer.Option("--param", help="k=v (repeatable)")] = None,
    risk: Annotated[str, typer.Option("--risk", help="on | off | compare")] = "compare",
    preset: Annotated[str, typer.Option("--preset", help="conservative | balanced | "
                                                         "aggressive | FILE.toml")]
    = "balanced",
    start: Annotated[str | None, typer.Option(
        "--from", help="the account opens at this bar (UTC); the bars before it warm the "
        "signals, the fill window and the strategy (with --ticks: their ticks' bars)")] = None,
    end: Annotated[str | None, typer.Option("--to", help="end time (UTC, exclusive)")] = None,
    wallet: Annotated[float, typer.Option("--wallet", help="initial equity (quote)")]
    = 100_000.0,
    json_path: Annotated[Path | None, typer.Option("--json", help="write results as JSON")]
    = None,
    report: Annotated[Path | None, typer.Option("--report", help="write an HTML report")]
    = None,
    check_lookahead: Annotated[bool, typer.Option(
        "--check-lookahead", help="recompute targets on data prefixes (5 even, up to 32 ending "
                                   "where the target changes); fail on any difference")]
    = False,
    ticks: Annotated[bool, typer.Option(
        "--ticks", help="replay trade ticks: the dataset's trades table, one Vision trades or "
                        "aggTrades file, or a synthetic scenario's tick mode")] = False,
    risk_every: Annotated[int, typer.Option(
        "--risk-every", help="with --ticks: decide every N ticks (0: at bar closes)")] = 0,
    portfolio: Annotated[bool, typer.Option(
        "--portfolio", help="every DATASET (one symbol each) on ONE cross-margin account "
                            "(docs/portfolio.md)")] = False,
    tiers: TiersOption = None,
) -> None:
    """Replay a dataset or scenario bar by bar through the mechanics, risk engine and a
    strategy; print the figures of each run side by side."""
    lean_process.skip_scipy_linalg()    # before numba's first cache load
    lean_process.return_freed_memory()
    lean_process.arrow_system_allocator()
    if portfolio:
        from bot.cli.portfolio import portfolio_command
        portfolio_command(ctx, datasets or [], strategy=strategy, params=_params(param or []),
                          risk=risk, preset=preset, start=start, end=end, wallet=wallet,
                          json_path=json_path, tiers=tiers, bad_options=[o for o, v in (
                              ("--scenario", scenario), ("--report", report),
                              ("--check-lookahead", check_lookahead), ("--ticks", ticks),
                              ("--risk-every", risk_every)) if v])
        return
    if datasets and len(datasets) > 1:
        raise LiqbotError(f"{len(datasets)} datasets given ({', '.join(datasets)}); several "
                          "datasets run on one account with --portfolio")
    dataset = datasets[0] if datasets else None
    if risk not in ("on", "off", "compare"):
        raise LiqbotError(f"--risk: expected on, off or compare, got {risk!r}")
    if dataset is not None and scenario is not None:
        raise LiqbotError("give a DATASET directory or --scenario NAME, not both")
    check_wallet(wallet)
    json_out = check_output(json_path, "--json")
    to_stdout = json_path is not None and json_out is None
    check_output(report, "--report", stdout_ok=False)
    if json_out is not None and report is not None and \
            Path(json_out).resolve() == Path(report).resolve():
        raise LiqbotError(f"--json and --report: both name {shown(str(report))}; the report "
                          "would overwrite the JSON (give two files)")
    strat = find(strategy).from_strings(_params(param or []))
    policy = load_policy(preset) if risk != "off" else None
    fees, cfg = _fees((ctx.obj or {}).get("config") if ctx.obj else None)
    if risk_every < 0 or risk_every > 2**53 or (risk_every and not ticks):
        raise LiqbotError(f"--risk-every: expected a number of ticks in 0..2**53 with --ticks, got "
                          f"{risk_every}{'' if ticks else ' without --ticks'}")
    if dataset is None and scenario is None:
        ds = configured_data(cfg)
        source = f"config data.source = {cfg.data.source!r}"
    elif ticks and dataset is not None and Path(dataset).is_file():
        ds, source = None, dataset                     # a Vision trades / aggTrades file
    else:
        ds = load_scenario(scenario or dataset or "", "--scenario" if scenario else "DATASET")
        source = scenario or dataset
    span = _span(start, end)
    # ticks before --from are read too: their bars warm the signals, as a bar replay's do
    tick_data = tick_source(ds, str(source), None, span[1]) if ticks else None
    first = 0                               # the account opens at bar `first` (--from)
    if tick_data is None:
        bars = ds.bars  # type: ignore[union-attr]
        whole = bars
        if end:
            bars = bars.between(None, span[1])
        if start:                           # the bars before --from warm the signals only
            first = len(bars.between(None, span[0]))
        if len(bars) - first < 10:
            chosen = " ".join(f"{flag} {v}" for flag, v in (("--from", start), ("--to", end)) if v)
            has = (f"its bars run {iso(whole.start_ms)} .. {iso(whole.end_ms)}" if len(whole)
                   else "it has no bars")
            raise LiqbotError(f"{shown(str(source))}: {max(len(bars) - first, 0)} bar(s)"
                              f"{' with ' + chosen if chosen else ''} ({has}): fewer than 10 bars, "
                              "the least a backtest runs on")
        bars = trim_columns(bars, strat)    # the columns no one reads are freed with `ds`
        ds = None
    symbol = tick_data[0].symbol if tick_data else bars.symbol
    brackets = brackets_for(symbol, tiers, leverage=cfg.live.leverage, clamp=True)
    settings = RunSettings(wallet=wallet, fills=cfg.fills, fees=fees)
    names = ["off", "on"] if risk == "compare" else [risk]
    err = Console(stderr=True)
    tick_in = None
    if tick_data is not None:
        with err.status(f"aggregating {len(tick_data[0]):,} ticks, signals ..."):
            tick_in = prepare_ticks(tick_data[0], tick_data[1], brackets, settings)
        bars = tick_in.bars
        if start:                           # the same count as a bar replay's, on the ticks' bars
            first = len(bars.between(None, span[0]))
            if len(bars) - first < 10:
                raise LiqbotError(f"{shown(source)}: the ticks from --from {start} make "
                                  f"{len(bars) - first} bar(s); a backtest needs at least 10")
    per_run = len(tick_in.ticks) - int(tick_in.starts[first]) if tick_in else len(bars)
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=err, transient=True) as prog:
        task = prog.add_task("signals", total=len(bars) + per_run * len(names))
        if tick_in is None:     # a cold cache: both kernel trees compiled at once (bot.warmup)
            warmup.parallel_compile(bars, brackets, settings, strat, policy)
        # one signal run: the same stream the trading loop reads (no second batch copy);
        # a single run keeps no signal column (the loop steps the signal kernel beside
        # it); the strategy's signals are computed when it first reads them
        inputs = tick_in.inputs if tick_in else prepare(
            bars, brackets, settings, keep_signals=check_lookahead,
            risk_rows=check_lookahead or len(names) > 1)
        signals = inputs.signals
        prog.advance(task, len(bars))
        if check_lookahead:
            prog.update(task, description="lookahead check")
            causal = lookahead.check(bars, signals, strat, brackets)
            if causal.violation is not None:
                k, t = causal.violation
                raise LiqbotError(f"--check-lookahead: {strat.describe()} is NOT causal: on the "
                                  f"first {k} bars its target at bar {t} "
                                  f"({iso(int(bars.ts[t]))}) differs from the full-data run")
            prog.update(task, description="stream check")
            streamed = lookahead.stream_check(bars, strat, brackets, causal.targets,
                                              fill_window=settings.fills.window_bars)
            if streamed.violation is not None:
                t, got, want = streamed.violation
                fix = (f"targets() reads more than its last {streamed.form.split()[1]} bars: "
                       "raise WINDOW to cover the longest history it reads"
                       if streamed.form.startswith("window") else
                       "its step_form() / stream() does not reproduce targets()")
                raise LiqbotError(f"--check-lookahead: {strat.describe()}'s stream (what paper "
                                  f"and live trading run, {streamed.form}) trades {got:g} at bar "
                                  f"{t} ({iso(int(bars.ts[t]))}) where the backtest's target is "
                                  f"{want:g}: {fix}")
        results: dict[str, RunResult] = {}
        for name in names:
            prog.update(task, description=f"risk {name}")
            pol = off_policy() if name == "off" else policy
            if tick_in is not None:
                results[name] = run_ticks(tick_in, strat, pol, brackets, settings,  # type: ignore[arg-type]
                                          name, risk_every, lambda k: prog.advance(task, k),
                                          start=first)
                continue
            # the record columns the table, --json and --report read (4 of 13)
            results[name] = run(inputs, strat, pol, brackets, settings, name,  # type: ignore[arg-type]
                                progress=lambda k: prog.advance(task, k), start=first,
                                record_columns=N_REC_CORE)
    con = console(stderr=to_stdout)  # `--json -`: stdout holds only JSON
    if check_lookahead:
        con.print(f"lookahead check: {shown(strat.describe())} is causal on "
                  f"{causal.prefixes} prefixes (5 even, the rest ending where its target "
                  "changes)")
        con.print("stream check: " + (
            "no streaming form (set WINDOW or step_form() to paper-trade it)"
            if streamed.form == "none" else
            f"the paper/live stream ({streamed.form}) trades the backtest's targets on "
            f"{streamed.bars:,} bar(s) compared"))
    con.print(f"[bold]{shown(bars.symbol)}[/] {iso(int(bars.ts[first]))} .. {iso(bars.end_ms)} "
              f"({len(bars) - first:,} bars), {shown(strat.describe())}, preset "
              f"{shown(preset) if risk != 'off' else '-'}, wallet {wallet:,.0f}")
    if first:
        con.print(warm_note(first, bars.start_ms))
    if mark_coverage(bars) < 1.0:
        con.print(f"mark prices: {mark_prices(bars)}")
    for extra in (funding_note(bars), gap_note(bars.take(slice(first, None))),
                  bar_length_note(bars.interval_ms) if risk != "off" else None):
        if extra is not None:
            con.print(extra)
    top = max(float(abs(r.targets[first:]).max(initial=0.0)) for r in results.values())
    capped = br.capped_note(bars.symbol, brackets, wallet, top)
    if capped is not None:
        con.print(capped)
    if tick_in is not None:
        con.print(f"tick replay: {per_run:,} ticks, decisions "
                  f"{f'every {risk_every:,} ticks' if risk_every else 'at bar closes'}")
    t = Table()
    t.add_column("")
    for name in names:
        t.add_column(f"risk {name}", justify="right")
    for label, key, fmt in ROWS:
        t.add_row(label, *(cell(fmt, results[n].metrics[key]) for n in names))
    t.add_row("first liquidation", *(_liquidation(results[n].metrics) for n in names))
    con.print(t)
    note = short_span_note((len(bars) - first) * bars.interval_ms / 86_400_000)
    if note is not None:
        con.print(note)
    meta = {"symbol": bars.symbol, "from": iso(int(bars.ts[first])), "to": iso(bars.end_ms),
            "bars": len(bars) - first, "warm_up_bars": first, "strategy": strat.describe(),
            "preset": preset if risk != "off" else None,     # null: no preset ran
            "source": source, "brackets": br.describe(bars.symbol, brackets),
            "mark_prices": mark_prices(bars), "max_target_leverage": top,
            "bracket_limit_leverage": br.limit_leverage(brackets, wallet)}
    if tick_in is not None:
        meta.update(ticks=per_run, risk_every=risk_every)
    if json_path is not None:
        out = {"meta": meta, "runs": {n: r.metrics for n, r in results.items()}}
        if "on" in results:
            out["decisions"] = decision_rows(results["on"], bars)
        write_output(json_out, dumps(out) + "\n", "--json")
        if json_out is not None:
            con.print(f"wrote {shown(json_path)}")
    if report is not None:
        unread = isinstance(signals, LazySignals) and "heatmap" not in signals.computed
        clusters = heatmap_clusters(bars, brackets, settings.fills.window_bars) if unread \
            else signals.heatmap.clusters              # unread: the one column it needs
        with writing(report, "--report"):
            write_report(report, bars.take(slice(first, None)),
                         {n: from_bar(r, first) for n, r in results.items()}, clusters[first:],
                         meta, brackets)
        con.print(f"report: {shown(report)}")


def configured_data(cfg: Any) -> Any:
    """The dataset named by the config: the embedded synthetic scenario or a directory."""
    from bot.data.synthetic import SynthSpec, generate, spec_with

    if cfg.data.source != "synthetic":
        return load_scenario(cfg.data.source, "data.source")
    s = cfg.data.synthetic
    return generate(spec_with(SynthSpec(seed=s.seed, days=s.days, crowding=s.crowding,
                                        symbol=s.symbol), start_price=s.start_price))


def register(app: typer.Typer) -> None:
    app.command("backtest", short_help="Replay a dataset or scenario through a strategy, the "
                "risk engine and the mechanics.")(backtest_command)
