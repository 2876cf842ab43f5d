"""`liqbot data ...`: import, info, synth, download, fetch."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bot.cli.paths import check_output_dir, check_symbol, console, dumps, shown
from bot.config import load_config
from bot.data import dataset as ds_io
from bot.data.binance_vision import interval_ms
from bot.data.download import download as vision_download
from bot.data.download import plan
from bot.data.importer import ALL_KINDS, DEFAULT_VENDOR_SYMBOL, build_dataset, parse_file_arg
from bot.data.summary import one_line_moves, summarize
from bot.data.synthetic import (
    CROWDING_BIAS,
    MAX_DAYS,
    MAX_SEED,
    SynthSpec,
    check_spec,
    generate,
    snapshot_minutes_for,
    spec_with,
)
from bot.errors import LiqbotError
from bot.text import count

#: `data fetch` takes exchange ids (BTCUSDT) or ccxt unified symbols (BTC/USDT:USDT).
CCXT_SYMBOL = re.compile(r"^[A-Za-z0-9]{2,20}(/[A-Za-z0-9]{2,10}(:[A-Za-z0-9]{2,10})?)?$")

app = typer.Typer(help="Market data: import, inspect, synthesise, download.",
                  no_args_is_help=True)
out_console = console()   # user paths print as typed (`shown`): no markup, no emoji


def _check_new_dataset(out: Path, force: bool) -> None:
    """--out of `import` and `synth`: writable, and holding no dataset unless --force."""
    check_output_dir(out, "--out")
    if (out / ds_io.MANIFEST).exists() and not force:
        raise LiqbotError(f"--out: {out} already holds a dataset ({ds_io.MANIFEST}); pass "
                          "--force to replace it, or choose another directory")


def _config(ctx: typer.Context):  # noqa: ANN202 (Config)
    return load_config((ctx.obj or {}).get("config") if ctx.obj else None)


def _parse_day(text: str, flag: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise LiqbotError(f"{flag}: expected a date like 2025-10-08, got {text!r}") from None


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=Console(stderr=True), transient=True)


_IMPORT_HELP = (
    "Binance Vision files (.csv/.zip/.gz) and vendor bucket exports (api_price_ohlc_history.csv, "
    "api_futures_..._{COIN}.csv: see docs/data.md). The kind comes from the file name; label "
    "other files FILE:KIND, KIND one of: " + ", ".join(ALL_KINDS) + "."
)


@app.command("import")
def import_(
    files: Annotated[list[str], typer.Argument(help=_IMPORT_HELP, metavar="FILE[:KIND]...")],
    out: Annotated[Path, typer.Option("--out", help="dataset directory to write")],
    fill_gaps: Annotated[bool, typer.Option("--fill-gaps", help="fill missing bars (flagged)")]
    = False,
    allow_gaps: Annotated[bool, typer.Option("--allow-gaps", help="keep gaps as they are")]
    = False,
    symbol: Annotated[str | None, typer.Option(
        "--symbol", help="symbol of the data, e.g. BTCUSDT: needed when a Binance file name "
                         "does not start with one (BTCUSDT-1m-...) and must match those that "
                         f"do; names a vendor price grid (default {DEFAULT_VENDOR_SYMBOL})")]
    = None,
    force: Annotated[bool, typer.Option(
        "--force", help="replace a dataset already in --out (its old tables are removed)")]
    = False,
) -> None:
    """Build a dataset (Parquet + manifest) from exchange and vendor files."""
    if fill_gaps and allow_gaps:
        raise LiqbotError("--fill-gaps and --allow-gaps contradict each other (fill the "
                          "missing bars, or keep the gaps)")
    _check_new_dataset(out, force)
    if symbol is not None:
        symbol = check_symbol(symbol, "--symbol")
    ds = build_dataset([parse_file_arg(f) for f in files], fill=fill_gaps,
                       allow_gaps=allow_gaps, symbol=symbol)
    path = ds_io.save(ds, out)
    s = summarize(ds)
    for note in ds.meta.get("import_notes", []):
        out_console.print(f"note: {shown(note)}")
    out_console.print(f"wrote {shown(out)} ({count(s['rows'], 'bar')} {s['timeframe']}, "
                      f"{s['span']['start']} .. {s['span']['end']}); manifest {shown(path)}")


@app.command("info")
def info(
    directory: Annotated[Path, typer.Argument(help="dataset directory")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    verify: Annotated[bool, typer.Option(
        "--verify", help="only check the sha256 of every Parquet file against the manifest")]
    = False,
) -> None:
    """Span, rows, columns present, gaps, and the largest moves of a dataset.

    Loading verifies the recorded sha256 of each file (datasets written before checksums
    were recorded load without; `--verify` says so)."""
    if verify:
        names = ds_io.verify(directory)
        msg = (f"OK: {directory}: sha256 of {', '.join(names)} match the manifest" if names else
               f"{directory}: the manifest records no checksums (written by an older liqbot); "
               "rebuild it to get them")
        print(dumps({"verified": names}) if as_json else msg)
        return
    s = summarize(ds_io.load(directory))
    if as_json:
        print(dumps(s))
        return
    print_summary(s, str(directory))


def print_summary(s: dict, title: str) -> None:
    """The human table shared by `data info`, `data synth` and `make demo`."""
    t = Table(title=shown(title), show_header=False, title_justify="left")
    t.add_row("symbol", f"{s['symbol']} ({s['exchange']}, {s['timeframe']})")
    t.add_row("span", f"{s['span']['start']} .. {s['span']['end']}")
    t.add_row("rows", f"{s['rows']:,}")
    t.add_row("columns", ", ".join(s["columns"]))
    gaps = s["gaps"]
    t.add_row("gaps", "none" if not gaps else
              f"{len(gaps)} ({sum(g['missing'] for g in gaps):,} bars missing; first at "
              f"{gaps[0]['start']})")
    if s.get("filled_bars"):
        t.add_row("filled bars", f"{s['filled_bars']:,}")
    t.add_row("moves", one_line_moves(s))
    if "liquidations_quote" in s:
        lq = s["liquidations_quote"]
        t.add_row("liquidations", f"longs {lq['long'] / 1e6:,.1f}M, shorts "
                                  f"{lq['short'] / 1e6:,.1f}M (quote)")
    if "generator" in s:
        g = s["generator"]
        t.add_row("generator", f"{g['model']} seed={g['seed']} days={g['days']} "
                               f"crowding={g['crowding']} shock at {g['shock']}")
    out_console.print(t)


@app.command("synth")
def synth(
    ctx: typer.Context,
    seed: Annotated[int | None, typer.Option(
        "--seed", help=f"RNG seed 0..{MAX_SEED} (default: config)")] = None,
    days: Annotated[int | None, typer.Option("--days", help=f"1..{MAX_DAYS}")] = None,
    crowding: Annotated[str | None, typer.Option("--crowding", help="long | short | none")]
    = None,
    out: Annotated[Path, typer.Option("--out", help="dataset directory to write")]
    = Path("var/synthetic"),
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
    ticks: Annotated[bool, typer.Option(
        "--ticks", help="tick mode: also the trades inside each minute and the forced "
                        "liquidations as ticks (tables trades, liquidations; docs/data.md)")]
    = False,
    force: Annotated[bool, typer.Option(
        "--force", help="replace a dataset already in --out (its old tables are removed)")]
    = False,
) -> None:
    """Synthesise cascade days (agent-based, seeded) with their ground truth."""
    cfg = _config(ctx).data.synthetic
    crowd = crowding or cfg.crowding
    if crowd not in CROWDING_BIAS:
        raise LiqbotError(f"--crowding: expected one of long, short, none, got {crowd!r}")
    n_days = cfg.days if days is None else days
    spec = spec_with(SynthSpec(seed=cfg.seed if seed is None else seed, days=n_days,
                               crowding=crowd, symbol=cfg.symbol,
                               snapshot_minutes=snapshot_minutes_for(n_days)),
                     start_price=cfg.start_price)
    check_spec(spec)
    _check_new_dataset(out, force)
    with Console(stderr=True).status(f"simulating {spec.days} day(s), seed {spec.seed} ..."):
        ds = generate(spec)
    if ticks:
        from bot.data.synthetic_ticks import add_ticks

        with Console(stderr=True).status(f"{int(ds.bars['trades'].sum()):,} ticks ..."):
            ds = add_ticks(ds)
    ds_io.save(ds, out)
    s = summarize(ds)
    if as_json:
        print(dumps(s))
    else:
        print_summary(s, f"synthetic cascade -> {out}")
        if ticks:
            t = ds.meta["ticks"]
            out_console.print(f"ticks: {t['trades']:,} trades, {t['liquidations']:,} "
                              "liquidation ticks (tables trades, liquidations)")


@app.command("download")
def download_cmd(
    ctx: typer.Context,
    symbol: Annotated[str, typer.Option("--symbol", help="e.g. BTCUSDT")],
    kind: Annotated[str, typer.Option("--kind", help="klines, markPriceKlines, "
                                                     "premiumIndexKlines, indexPriceKlines, "
                                                     "fundingRate, metrics, "
                                                     "liquidationSnapshot, aggTrades, trades")],
    start: Annotated[str, typer.Option("--from", help="first UTC date, 2025-10-08")],
    end: Annotated[str, typer.Option("--to", help="last UTC date (inclusive)")],
    interval: Annotated[str | None, typer.Option("--interval", help="1m, 5m, 1h ... (klines)")]
    = None,
    exchange: Annotated[str, typer.Option("--exchange")] = "binance",
    out: Annotated[Path, typer.Option("--out", help="where the zips go")] = Path("var/vision"),
    base_url: Annotated[str | None, typer.Option("--base-url", help="override the host")]
    = None,
) -> None:
    """Fetch Binance Vision daily/monthly zips and verify their published .CHECKSUM."""
    if exchange != "binance":
        raise LiqbotError(f"--exchange: expected binance (Binance Vision), got {exchange!r}; "
                          "use `liqbot data fetch` for other exchanges")
    cfg = _config(ctx).download
    symbol = check_symbol(symbol, "--symbol")
    check_output_dir(out, "--out")
    refs = plan(symbol, kind, interval, _parse_day(start, "--from"), _parse_day(end, "--to"))
    with _progress() as prog:
        task = prog.add_task(f"{symbol} {kind}", total=len(refs))
        paths = asyncio.run(vision_download(
            refs, out, base_url or cfg.vision_base_url,
            requests_per_second=cfg.requests_per_second, timeout_s=cfg.timeout_s,
            retries=cfg.retries, on_done=lambda _r, _s: prog.advance(task)))
    for p in paths:
        out_console.print(f"ok {shown(p)}")
    out_console.print(f"{len(paths)} file(s) verified; build a dataset with "
                      f"`liqbot data import {shown(out)}/{kind}/* --out DIR`")


def _ms(text: str, flag: str) -> int:
    d = _parse_day(text, flag)
    return int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp() * 1000)


@app.command("fetch")
def fetch_cmd(
    ctx: typer.Context,
    symbol: Annotated[str, typer.Option("--symbol", help="exchange id, e.g. BTCUSDT")],
    start: Annotated[str, typer.Option("--from", help="first UTC date")],
    end: Annotated[str, typer.Option("--to", help="last UTC date (inclusive)")],
    exchange: Annotated[str, typer.Option("--exchange")] = "binance",
    timeframe: Annotated[str, typer.Option("--timeframe")] = "1m",
    series: Annotated[str, typer.Option("--series", help="comma list of ohlcv, mark, funding, "
                                                          "open_interest, long_short")]
    = "ohlcv,mark,funding,open_interest,long_short",
    out: Annotated[Path, typer.Option("--out", help="dataset directory")] = Path("var/fetched"),
    base_url: Annotated[str | None, typer.Option("--base-url", help="override the REST host")]
    = None,
) -> None:
    """Pull history through ccxt (paginated, throttled, resumable) into a dataset."""
    from bot.data.fetch import SERIES, fetch_history, make_exchange

    cfg = _config(ctx).download
    check_output_dir(out, "--out")
    if not CCXT_SYMBOL.fullmatch(symbol):
        raise LiqbotError(f"--symbol: expected an exchange id like BTCUSDT or a ccxt symbol like "
                          f"BTC/USDT:USDT, got {symbol[:40]!r}")
    chosen = tuple(s.strip() for s in series.split(",") if s.strip())
    bad = [s for s in chosen if s not in SERIES]
    if bad or "ohlcv" not in chosen:
        raise LiqbotError(f"--series: expected a comma list including ohlcv from "
                          f"{', '.join(SERIES)}, got {series!r}")
    interval_ms(timeframe, "--timeframe")
    start_ms = _ms(start, "--from")
    end_ms = _ms(end, "--to") + 86_400_000
    if end_ms <= start_ms:
        raise LiqbotError(f"--to {end} is before --from {start}")
    ex = make_exchange(exchange, base_url or cfg.ccxt_base_url, cfg.timeout_s)
    with _progress() as prog:
        tasks = {s: prog.add_task(s, total=None) for s in chosen}
        ds = asyncio.run(fetch_history(
            ex, symbol, timeframe, start_ms, end_ms, out, chosen,
            requests_per_second=cfg.requests_per_second,
            on_page=lambda s, n: prog.advance(tasks[s], n)))
    ds_io.save(ds, out)
    print_summary(summarize(ds), f"fetched -> {out}")
