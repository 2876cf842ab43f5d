"""Live Binance USD-M market feed: ccxt.pro websockets for klines, mark price and
liquidations, ccxt async REST for warm-up, gap backfill and open-interest polls.

Every raw stream message is validated by our parsers (`exchange_bars`) BEFORE ccxt sees it;
a malformed one is logged on "liqbot.feed" and skipped, the stream continues. ccxt's 6-field
candle drops quote volume, trade count and taker-buy volume, so the feed reads them from the
raw kline payload (taker_buy_volume = kline `V`, exact); REST-filled bars leave them NaN.
A bar is emitted once, in order per symbol, when its final kline (`x: true`) has arrived and
the mark stream has moved past its close; a bar the stream missed (disconnect, later candle
started without a final one, close + grace passed) is fetched through REST instead.
Field-by-field sources: `bot.runtime.exchange_bars` module docstring.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import ccxt.pro

from bot.data.bars import Bars
from bot.data.binance_vision import interval_ms as parse_interval
from bot.data.binance_vision import interval_name
from bot.errors import LiqbotError, exc_text
from bot.runtime.exchange_bars import SymbolBook, parse_kline, parse_mark
from bot.runtime.exchange_rest import VenueRest
from bot.runtime.feed import BarEvent
from bot.signals.liquidations import MalformedMessage, from_binance_force_order

log = logging.getLogger("liqbot.feed")
KINDS = ("kline", "mark", "liq")
#: substrings of ccxt's subscription keys (raw stream names or its message hashes) per stream
_SUB_MARKERS = {"kline": ("@kline_", "ohlcv::"), "mark": ("markPrice",),
                "liq": ("@forceOrder", "liquidations")}


#: a server clock this far from ours (wall-clock feeds) cannot be a venue to trade live
MAX_SKEW_MS = 10 * 60_000


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class _BinanceStream(ccxt.pro.binanceusdm):  # type: ignore[misc, name-defined]
    """ccxt.pro binanceusdm with our raw-message hook and connection bookkeeping."""

    feed: ExchangeFeed

    def client(self, url: str) -> Any:
        c = super().client(url)
        if not getattr(c, "_liqbot_guarded", False):
            # ccxt parses JSON inside an asyncio done-callback: a bad frame raises there and
            # silently ends that connection's receive loop. Guard it: log and skip.
            parse = c.handle_text_or_binary_message

            def guarded(data: Any) -> None:
                try:
                    parse(data)
                except Exception as exc:  # noqa: BLE001 - any bad frame is skipped
                    self.feed._malformed("frame", exc, data)

            c.handle_text_or_binary_message = guarded
            c._liqbot_guarded = True
        return c

    def handle_message(self, client: Any, message: Any) -> None:
        try:
            if isinstance(message, dict):
                data = message.get("data", message)
                if isinstance(data, dict) and data.get("e") in ("kline", "markPriceUpdate",
                                                               "forceOrder"):
                    self.feed._on_raw(data)
            elif not isinstance(message, list):
                raise MalformedMessage("not a JSON object")
            super().handle_message(client, message)
        except Exception as exc:  # noqa: BLE001 - logged and skipped, the stream goes on
            self.feed._malformed("message", exc, message)

    def on_connected(self, client: Any, message: Any = None) -> None:
        super().on_connected(client, message)
        self.feed._connection(client, True)

    def on_error(self, client: Any, error: Any) -> None:
        self.feed._connection(client, False)
        super().on_error(client, error)

    def on_close(self, client: Any, error: Any) -> None:
        self.feed._connection(client, False)
        super().on_close(client, error)


class ExchangeFeed:
    """`bot.runtime.feed.Feed` over Binance USD-M (ccxt async REST + ccxt.pro websockets).

    `requests_per_second` is the venue's REST budget in request-weight units; `grace_ms` how
    long after a bar's close the stream may still deliver it before REST is asked; `clock`
    returns int ms UTC (tests pass a simulated one). `clock_rate` is the clock's ms per wall
    ms (1 for the wall clock; N for an exchange replayed at N x, e.g. the emulator):
    `grace_ms` and `give_up_ms` are network waits in wall ms, so they span `clock_rate` x as
    many clock ms. `stats` counts the bars emitted from the streams and by REST backfill.
    """

    def __init__(self, symbols: Sequence[str], *, exchange: str = "binance",
                 interval: str = "1m", rest_base_url: str | None = None,
                 ws_base_url: str | None = None, requests_per_second: float = 20.0,
                 timeout_s: float = 10.0, warmup_bars: int = 1500,
                 clock: Callable[[], int] = wall_clock_ms, grace_ms: int = 3000,
                 give_up_ms: int = 120_000, tick_s: float = 0.5,
                 reconnect_s: tuple[float, float] = (0.5, 30.0), clock_rate: float = 1.0
                 ) -> None:
        if exchange != "binance":
            raise LiqbotError(f"exchange feed: {exchange!r} is not supported yet (binance only)")
        if not symbols:
            raise LiqbotError("exchange feed: no symbols")
        self.symbols = tuple(s.upper() for s in symbols)
        self.interval_ms = parse_interval(interval)
        self.warmup_bars = warmup_bars
        if not clock_rate > 0.0:
            raise LiqbotError(f"exchange feed: clock_rate must be > 0, got {clock_rate}")
        # the waits below are in ms of the feed's clock
        self.grace_ms = int(grace_ms * clock_rate)
        self.give_up_ms = int(give_up_ms * clock_rate)
        self.tick_s = tick_s
        self.stats = {"stream": 0, "rest": 0, "skipped": 0}
        #: (symbol, bar open) of the latest bars REST filled in whole or in part
        self.rest_bars: deque[tuple[str, int]] = deque(maxlen=1000)
        self.reconnect_s = reconnect_s
        self._clock = clock
        self.rest = VenueRest(exchange, rest_base_url, requests_per_second, timeout_s)
        self._base_url = rest_base_url
        self._ws_base_url = ws_base_url
        self._ws: Any = None
        self._books = {s: SymbolBook(self.interval_ms) for s in self.symbols}
        self._next_ts: dict[str, int] = {}
        self._history_end: dict[str, int] = {}
        self._up_since: dict[str, int | None] = dict.fromkeys(KINDS)
        self._queue: asyncio.Queue[BarEvent | None] = asyncio.Queue()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._loaded = False
        self._closed = False

    # ---- Feed protocol ---------------------------------------------------------------
    def now_ms(self) -> int:
        return int(self._clock())

    async def history(self, symbol: str, until_ms: int | None = None) -> Bars | None:
        """The last `warmup_bars` closed bars before `until_ms` (default: the live edge)."""
        await self._load()
        edge = self._edge()
        end = edge if until_ms is None else min(int(until_ms), edge)
        bars = await self.rest.bars(symbol.upper(), self.interval_ms,
                                    end - self.warmup_bars * self.interval_ms, end,
                                    ("ohlcv", "mark", "funding", "open_interest", "long_short"))
        if until_ms is None:
            self._history_end[symbol.upper()] = end
        return bars if bars is not None and len(bars) else None

    async def start(self) -> None:
        """Load the markets and open the streams (`events` does it on first use; a caller
        that must know the subscriptions are on before time moves calls it first)."""
        await self._start_streaming()

    async def events(self) -> AsyncIterator[BarEvent]:
        """Closed bars from the end of `history` (or the current bar) on, until `close`."""
        await self._start_streaming()
        while True:
            ev = await self._queue.get()
            if ev is None:
                return
            yield ev

    async def poll_positioning(self) -> None:
        """REST poll of open interest and the long/short account ratio, every symbol. A
        venue that is down or answers malformed data costs this poll (one warning per
        symbol; the bars keep the last sample), never the daemon: the job runs as a
        background task, whose exception printed a traceback ("Task exception was never
        retrieved") when the venue went down."""
        try:
            await self._load()
        except (ccxt.BaseError, OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("open-interest poll skipped: markets not loaded (%s)", exc_text(exc))
            return
        for s in self.symbols:
            try:
                stamp, oi, oi_value, ratio = await self.rest.positioning(s)
            except (ccxt.BaseError, OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("%s: open-interest poll failed (%s); the next poll retries", s,
                            exc_text(exc))
                continue
            self._books[s].on_positioning(max(stamp, self.now_ms()), oi, oi_value, ratio)

    async def close(self) -> None:
        """Cancel the tasks, close both ccxt clients, end `events()`."""
        self._closed = True
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._ws is not None:
            await self._ws.close()
        await self.rest.close()
        self._queue.put_nowait(None)

    # ---- start-up --------------------------------------------------------------------
    def _edge(self) -> int:
        """Open time of the in-progress bar: everything before it is closed."""
        return self.now_ms() // self.interval_ms * self.interval_ms

    async def _load(self) -> None:
        if not self._loaded:
            ex = self.rest.exchange
            where = f"{ex.id} at {self._base_url or ex.urls['api'].get('fapiPublic', ex.id)}"
            try:
                await self.rest.load()
            except ccxt.NetworkError as exc:  # unreachable, timed out, down for maintenance
                raise LiqbotError(f"exchange feed: cannot reach {where} ({type(exc).__name__}); "
                                  "check the network, or download.ccxt_base_url for another "
                                  "host; `liqbot run --replay DATASET` trades a dataset "
                                  "offline") from None
            self._loaded = True
            skew = self.rest.server_time_ms - self.now_ms()
            if self._clock is wall_clock_ms and abs(skew) > MAX_SKEW_MS:
                raise LiqbotError(
                    f"exchange feed: {where} reports a server time {skew / 86_400_000:+.2f} "
                    "days from this machine's clock, so no bar would ever close: a local "
                    "emulator replaying a dataset runs on its own clock (trade it with `liqbot "
                    "drill`, or the dataset with `liqbot run --replay`); otherwise fix the "
                    "machine's clock (NTP)")
            if abs(skew) > 1000:
                log.warning("clock differs from %s server time by %d ms", ex.id, skew)

    async def _start_streaming(self) -> None:
        if self._tasks or self._closed:
            return
        await self._load()
        ws = _BinanceStream({"enableRateLimit": False})
        ws.options["fetchCurrencies"] = False
        ws.feed = self
        for key, url in self.rest.exchange.urls["api"].items():   # REST hosts, if ever used
            if isinstance(url, str):
                ws.urls["api"][key] = url
        if self._ws_base_url:
            ws.urls["api"]["ws"]["linear"] = self._ws_base_url.rstrip("/")
        ws.set_markets(self.rest.exchange.markets, self.rest.exchange.currencies)
        self._ws = ws
        edge = self._edge()
        for s in self.symbols:
            self._next_ts[s] = self._history_end.get(s, edge)
        unified = [self.rest.unified(s) for s in self.symbols]
        tf = interval_name(self.interval_ms)
        watches = {
            "kline": lambda: ws.watch_ohlcv_for_symbols([[u, tf] for u in unified]),
            "mark": lambda: ws.watch_mark_prices(unified),
            "liq": lambda: ws.watch_liquidations_for_symbols(unified),
        }
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._watch(k, fn)) for k, fn in watches.items()]
        self._tasks.append(loop.create_task(self._emit_loop()))

    async def _watch(self, kind: str, fn: Callable[[], Any]) -> None:
        """Keep one ccxt.pro subscription alive: on any error, back off and resubscribe."""
        delay = self.reconnect_s[0]
        while not self._closed:
            try:
                await fn()
                delay = self.reconnect_s[0]
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - ccxt raises many types on a drop
                self._up_since[kind] = None
                log.warning("%s stream: %s; reconnecting in %.2fs", kind,
                            exc_text(exc, 120), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.reconnect_s[1])

    # ---- stream input ----------------------------------------------------------------
    def _on_raw(self, data: dict[str, Any]) -> None:
        event = data["e"]
        if event == "kline":
            k = parse_kline(data)
            self._book(k.symbol).on_kline(k)
        elif event == "markPriceUpdate":
            u = parse_mark(data)
            self._book(u.symbol).on_mark(u)
        else:
            for ev in from_binance_force_order(data):
                self._book(ev.symbol).on_liquidation(ev)
        self._wake.set()

    def _book(self, symbol: str) -> SymbolBook:
        book = self._books.get(symbol.upper())
        if book is None:
            raise MalformedMessage(f"symbol {symbol!r} was not subscribed")
        return book

    def _malformed(self, where: str, exc: Exception, payload: Any) -> None:
        log.warning("skipping malformed %s (%s: %s): %.200r", where, type(exc).__name__, exc,
                    payload)

    def _connection(self, client: Any, up: bool) -> None:
        subs = " ".join(str(k) for k in getattr(client, "subscriptions", {}) or {})
        for kind, markers in _SUB_MARKERS.items():
            if any(m in subs for m in markers):
                self._up_since[kind] = self.now_ms() if up else None
        self._wake.set()

    def _covered(self, kind: str, ts: int) -> bool:
        """True when the `kind` stream was connected during the whole bar opening at ts."""
        up = self._up_since[kind]
        return up is not None and up <= ts

    # ---- emission --------------------------------------------------------------------
    async def _emit_loop(self) -> None:
        while not self._closed:
            self._wake.clear()
            for s in self.symbols:
                try:
                    await self._advance(s)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - a failed fill is retried next tick
                    log.warning("%s: bar assembly failed (%s); retrying", s, exc_text(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.tick_s)

    async def _advance(self, symbol: str) -> None:
        """Emit every bar of `symbol` that is complete; fill what the stream missed by REST."""
        book, step = self._books[symbol], self.interval_ms
        while True:
            ts, now = self._next_ts[symbol], self.now_ms()
            close = ts + step
            if now < close:
                return                        # not closed on our clock (REST would be partial)
            final = book.kline_final(ts)
            mark_cov = self._covered("mark", ts)
            overdue = now >= close + self.grace_ms
            if final and mark_cov and book.last_mark_ms < close and not overdue:
                return                        # the mark stream has not passed the close yet
            if not final and book.latest_kline_ts <= ts and not overdue:
                return                        # still open, or the stream may yet deliver it
            rest_rows: dict[int, dict[str, float]] = {}
            if not (final and mark_cov and book.marks.get(ts) is not None):
                rest_rows = await self._fill(symbol, ts, max(self._edge(), close))
            bar = book.assemble(ts, rest_rows.get(ts), mark_cov, self._covered("liq", ts))
            if bar is None:
                if now < close + self.give_up_ms:
                    return                    # REST does not have it yet: try next tick
                log.warning("%s: no data for bar %d from stream or REST; skipped", symbol, ts)
                self.stats["skipped"] += 1
            else:
                self._count(symbol, ts, ts in rest_rows)
                self._queue.put_nowait(BarEvent(symbol, bar, self.now_ms()))
            self._next_ts[symbol] = close
            book.prune(close)
            # bars of the same fill are emitted from it without another request
            while self._next_ts[symbol] in rest_rows:
                ts = self._next_ts[symbol]
                bar = book.assemble(ts, rest_rows[ts], self._covered("mark", ts),
                                    self._covered("liq", ts))
                if bar is None:
                    break
                self._count(symbol, ts, True)
                self._queue.put_nowait(BarEvent(symbol, bar, self.now_ms()))
                self._next_ts[symbol] = ts + step
                book.prune(ts + step)

    def _count(self, symbol: str, ts: int, rest: bool) -> None:
        self.stats["rest" if rest else "stream"] += 1
        if rest:
            self.rest_bars.append((symbol, ts))

    async def _fill(self, symbol: str, start: int, end: int) -> dict[int, dict[str, float]]:
        """REST OHLCV, mark OHLC and funding of bars opening in [start, end), by open time."""
        bars = await self.rest.bars(symbol, self.interval_ms, start, end,
                                    ("ohlcv", "mark", "funding"))
        log.info("%s: REST filled %d bar(s) from %d", symbol, 0 if bars is None else len(bars),
                 start)
        if bars is None:
            return {}
        book = self._books[symbol]
        rows: dict[int, dict[str, float]] = {}
        names = [n for n in bars.names if n != "ts"]
        for i, t in enumerate(bars.ts.tolist()):
            rows[t] = {n: float(bars[n][i]) for n in names}
            book.rest_funding[t] = rows[t].get("funding_rate", float("nan"))
        return rows
