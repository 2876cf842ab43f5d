"""`liqbot data fetch`: history through ccxt (async), paginated, throttled and resumable.

Series: OHLCV (`fetch_ohlcv`), mark OHLCV (`fetch_ohlcv(params={"price": "mark"})`),
funding history (`fetch_funding_rate_history`), open-interest history
(`fetch_open_interest_history`), long/short account ratio
(`fetch_long_short_ratio_history`). Each page is appended to `{out}/raw/{series}.jsonl`
as soon as it arrives; a rerun continues after the last stored timestamp. ccxt's own rate
limiter is replaced by asyncio-throttle so one budget covers every series.
ccxt's OHLCV has 6 fields, so a fetched dataset lacks quote volume, trade counts and taker
volumes; `liqbot data download` (Binance Vision) has them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import ccxt
from asyncio_throttle import Throttler

from bot.data import ccxt_history as ch
from bot.data.binance_vision import interval_ms
from bot.data.dataset import Dataset, iso
from bot.errors import DataError, LiqbotError, exc_text

SERIES = ("ohlcv", "mark", "funding", "open_interest", "long_short")
#: ccxt caps Binance OHLCV pages at 1,000 rows (its own note: wider ranges misbehave).
PAGE_LIMIT = {"ohlcv": 1000, "mark": 1000, "funding": 1000, "open_interest": 500,
              "long_short": 500}


def _row_ts(series: str, row: Any) -> int:
    return int(row[0]) if series in ("ohlcv", "mark") else int(row["timestamp"])


def _load_raw(path: Path) -> list[Any]:
    rows: list[Any] = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                rows.extend(json.loads(line))
    return rows


def make_exchange(exchange_id: str, base_url: str | None, timeout_s: float) -> Any:
    """An async ccxt exchange with its REST hosts optionally pointed elsewhere (tests)."""
    import ccxt.async_support as ccxt_async

    ids = {"binance": "binanceusdm", "bybit": "bybit", "okx": "okx"}
    if exchange_id not in ids:
        raise LiqbotError(f"--exchange: unknown exchange {exchange_id[:40]!r}; expected one of "
                          f"{', '.join(ids)}")
    ex = getattr(ccxt_async, ids[exchange_id])({"enableRateLimit": False,
                                                 "timeout": int(timeout_s * 1000)})
    if base_url:
        base = base_url.rstrip("/")
        for key, url in list(ex.urls["api"].items()):
            if isinstance(url, str) and url.startswith("https://"):
                host_end = url.index("/", len("https://")) if "/" in url[8:] else len(url)
                ex.urls["api"][key] = base + url[host_end:]
    return ex


async def fetch_history(
    exchange: Any, symbol: str, timeframe: str, start_ms: int, end_ms: int, out: Path,
    series: tuple[str, ...] = SERIES, *, requests_per_second: float = 5.0,
    on_page: Callable[[str, int], None] | None = None,
) -> Dataset:
    """Fetch every series over [start_ms, end_ms) into `out/raw`, then build a Dataset.

    A span reaching the present ends at the last CLOSED bar: the bar still forming is never
    stored (its OHLCV would be kept as final, and a rerun continues after it)."""
    bar_ms = interval_ms(timeframe)
    closed = closed_until(bar_ms)
    if closed <= start_ms:
        raise DataError("--from", f"no {timeframe} bar has closed since {iso(start_ms)} yet "
                                  f"(the one forming now opened at {iso(closed)})")
    end_ms = min(end_ms, closed)
    raw_dir = out / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)
    throttler = Throttler(rate_limit=max(1, int(requests_per_second)), period=1.0)
    try:
        await exchange.load_markets()
        unified = _unified_symbol(exchange, symbol)
        calls: dict[str, Callable[[int, int], Awaitable[list[Any]]]] = {
            "ohlcv": lambda s, n: exchange.fetch_ohlcv(unified, timeframe, s, n),
            "mark": lambda s, n: exchange.fetch_ohlcv(unified, timeframe, s, n,
                                                      {"price": "mark"}),
            "funding": lambda s, n: exchange.fetch_funding_rate_history(unified, s, n),
            "open_interest": lambda s, n: exchange.fetch_open_interest_history(
                unified, "5m", s, n),
            "long_short": lambda s, n: exchange.fetch_long_short_ratio_history(
                unified, "5m", s, n),
        }
        for name in series:
            # after the last stored row, the next one cannot start before row + step
            step = bar_ms if name in ("ohlcv", "mark") else 1
            await _paginate(name, calls[name], start_ms, end_ms, step,
                            raw_dir / f"{name}.jsonl", throttler, on_page)
    except ccxt.BaseError as exc:
        # ccxt messages can echo request URLs and parameters but never our credentials:
        # fetch runs unauthenticated.
        raise DataError(exchange.id, f"exchange request failed ({exc_text(exc, 300)})") \
            from None
    finally:
        await exchange.close()
    for name in ("ohlcv", "mark", "funding"):     # OI and ratios: the venue keeps 30 days
        if name in series:
            _check_complete(raw_dir / f"{name}.jsonl", name, start_ms, end_ms, bar_ms)
    return build(symbol, timeframe, raw_dir, start_ms, end_ms, exchange_name=exchange.id)


def now_ms() -> int:
    """Wall-clock time, ms UTC (one place, so tests can move it)."""
    return int(time.time() * 1000)


def closed_until(bar_ms: int) -> int:
    """The open time of the bar forming now: every bar before it has closed."""
    return (now_ms() // bar_ms) * bar_ms


#: Funding settles at least every 8 hours (some symbols every 4 or 1): a funding series
#: whose last row is older than this before the span's end stopped short.
FUNDING_EVERY_MS = 8 * 3_600_000


def _check_complete(path: Path, series: str, start_ms: int, end_ms: int, bar_ms: int) -> None:
    """The pages of `series` must reach the span's end: pagination stops at the first empty
    page, and an answer ccxt could not read (an HTML error page served with status 200) is
    one, so a dataset silently ended hours before --to (exit 0, "gaps: none"); a short mark
    series fell back to trade prices and a short funding series charged no funding. OHLCV
    and mark prices must reach the last bar, funding the last 8 hours. `end_ms` is the
    span's end as fetched (`fetch_history` ends it at the last closed bar)."""
    rows = _load_raw(path)
    if not rows and series == "ohlcv":
        return                                # build() says no rows were fetched
    if series == "funding":
        if end_ms - start_ms < FUNDING_EVERY_MS:
            return
        last_needed = end_ms - FUNDING_EVERY_MS
        what, unit = "funding", "settlements"
    else:
        last_needed = (end_ms // bar_ms) * bar_ms - bar_ms    # the span's last bar
        what, unit = ("OHLCV" if series == "ohlcv" else "mark-price"), "bars"
    last = _row_ts(series, rows[-1]) if rows else start_ms - 1
    if last < last_needed:
        got = len({_row_ts(series, r) for r in rows})
        span = "" if series == "funding" else \
            f" of {max(1, (last_needed - start_ms) // bar_ms + 1):,}"
        after = f"after {iso(last)}" if rows else f"from {iso(start_ms)} on"
        raise DataError(str(path), f"the exchange returned no {what} rows {after} "
                                   f"({got:,}{span} {unit} of the span): its "
                                   "answer was empty or unreadable. The pages fetched are "
                                   "kept: the same command continues from them; if the "
                                   "symbol stopped trading, pass an earlier --to")


def _unified_symbol(exchange: Any, symbol: str) -> str:
    for market in exchange.markets.values():
        if market.get("id") == symbol.upper() and market.get("swap"):
            return str(market["symbol"])
    if symbol in exchange.markets:
        return symbol
    raise DataError("(argument)", f"symbol {symbol!r} is not listed by {exchange.id}")


async def _paginate(name: str, call: Callable[[int, int], Awaitable[list[Any]]], start_ms: int,
                    end_ms: int, step: int, path: Path, throttler: Throttler,
                    on_page: Callable[[str, int], None] | None) -> None:
    stored = _load_raw(path)
    since = max(start_ms, _row_ts(name, stored[-1]) + step) if stored else start_ms
    while since < end_ms:
        async with throttler:
            page = await call(since, PAGE_LIMIT[name])
        page = [r for r in page if since <= _row_ts(name, r) < end_ms]
        if not page:
            break
        with path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(page) + "\n")
        since = _row_ts(name, page[-1]) + step
        if on_page:
            on_page(name, len(page))


def build(symbol: str, timeframe: str, raw_dir: Path, start_ms: int, end_ms: int,
          exchange_name: str = "binance") -> Dataset:
    """Turn the stored raw pages into a Dataset (OHLCV grid plus attached series)."""
    ohlcv = _load_raw(raw_dir / "ohlcv.jsonl")
    if not ohlcv:
        raise DataError(str(raw_dir / "ohlcv.jsonl"), "no OHLCV rows were fetched for the span")
    bars = ch.bars_from_ohlcv(symbol.upper(), timeframe, ohlcv, str(raw_dir / "ohlcv.jsonl"))
    extra = {}
    mark = _load_raw(raw_dir / "mark.jsonl")
    if mark:
        extra.update(ch.mark_columns(bars, mark))
    funding = _load_raw(raw_dir / "funding.jsonl")
    if funding:
        extra["funding_rate"] = ch.funding_column(bars, funding)
    oi = _load_raw(raw_dir / "open_interest.jsonl")
    if oi:
        extra.update(ch.open_interest_columns(bars, oi))
    ls = _load_raw(raw_dir / "long_short.jsonl")
    if ls:
        extra["long_short_ratio"] = ch.long_short_column(bars, ls)
    sources = [{"file": p.name, "kind": p.stem, "rows": len(_load_raw(p))}
               for p in sorted(raw_dir.glob("*.jsonl"))]
    name = "binance" if exchange_name == "binanceusdm" else exchange_name
    return Dataset(bars.with_columns(**extra), name, sources)
