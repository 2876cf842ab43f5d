"""The REST side of the live exchange feed: one ccxt async client per venue, one
asyncio-throttle budget (in Binance request-weight units) for every call, 429/418
Retry-After honoured for the whole venue, backfill through `bot.data.fetch`'s paginator.

Public endpoints only: the client is created without credentials and stays that way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import ccxt
from asyncio_throttle import Throttler

from bot.data import fetch
from bot.data.bars import Bars
from bot.data.binance_vision import interval_name
from bot.errors import DataError

log = logging.getLogger("liqbot.feed")

#: ccxt method -> Binance USD-M request weight (klines-type weights depend on `limit`).
WEIGHTS = {"load_markets": 1, "fetch_time": 1, "fetch_funding_rate_history": 1,
           "fetch_open_interest": 1, "fetch_open_interest_history": 1,
           "fetch_long_short_ratio_history": 1}
POSITIONING_PERIOD = "5m"


def kline_weight(limit: int) -> int:
    """Binance's published weight of /fapi/v1/klines and /markPriceKlines by `limit`."""
    return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10


class VenueRest:
    """REST calls for one venue. `requests_per_second` is a weight budget per second
    (a weight-1 request is one request); Binance allows 2,400 weight per minute per IP."""

    def __init__(self, exchange_id: str, base_url: str | None, requests_per_second: float,
                 timeout_s: float, max_retries: int = 5) -> None:
        self.exchange = fetch.make_exchange(exchange_id, base_url, timeout_s)
        self.exchange.options["fetchCurrencies"] = False   # spot/margin hosts not needed
        self.throttler = Throttler(rate_limit=max(1, int(requests_per_second)), period=1.0)
        self.max_retries = max_retries
        self._pause_until = 0.0      # event-loop time before which no request is sent
        self._retry_after_s: float | None = None
        original = self.exchange.on_rest_response

        def on_rest_response(code: Any, reason: Any, url: Any, method: Any, headers: Any,
                             body: Any, *rest: Any) -> Any:
            if int(code or 0) in (418, 429):
                self._retry_after_s = _retry_after(headers)
            return original(code, reason, url, method, headers, body, *rest)

        self.exchange.on_rest_response = on_rest_response

    async def call(self, weight: int, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """Await `fn(*args)` within the budget; on 429/418 wait Retry-After and retry."""
        loop = asyncio.get_running_loop()
        for attempt in range(self.max_retries + 1):
            wait = self._pause_until - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            for _ in range(weight):
                await self.throttler.acquire()
            try:
                return await fn(*args)
            except (ccxt.RateLimitExceeded, ccxt.DDoSProtection) as exc:
                pause = self._retry_after_s if self._retry_after_s is not None else 2.0 ** attempt
                self._retry_after_s = None
                self._pause_until = max(self._pause_until, loop.time() + pause)
                log.warning("%s rate-limited (%s); pausing REST %.1fs", self.exchange.id,
                            type(exc).__name__, pause)
                if attempt == self.max_retries:
                    raise
        raise AssertionError("unreachable")

    async def load(self) -> None:
        await self.call(WEIGHTS["load_markets"], self.exchange.load_markets)
        server_ms = await self.call(WEIGHTS["fetch_time"], self.exchange.fetch_time)
        self.server_time_ms = int(server_ms)

    def unified(self, symbol: str) -> str:
        return fetch._unified_symbol(self.exchange, symbol)

    async def bars(self, symbol: str, interval_ms: int, start_ms: int, end_ms: int,
                   series: tuple[str, ...]) -> Bars | None:
        """Closed bars opening in [start_ms, end_ms) with the requested series, through
        `bot.data.fetch`'s paginator (raw pages in a temporary directory)."""
        ex, u, tf = self.exchange, self.unified(symbol), interval_name(interval_ms)

        def kl(price: str | None) -> Callable[[int, int], Awaitable[list[Any]]]:
            params = {"price": price} if price else {}
            return lambda s, n: self.call(kline_weight(n), ex.fetch_ohlcv, u, tf, s, n, params)

        calls: dict[str, Callable[[int, int], Awaitable[list[Any]]]] = {
            "ohlcv": kl(None), "mark": kl("mark"),
            "funding": lambda s, n: self.call(WEIGHTS["fetch_funding_rate_history"],
                                              ex.fetch_funding_rate_history, u, s, n),
            "open_interest": lambda s, n: self.call(
                WEIGHTS["fetch_open_interest_history"], ex.fetch_open_interest_history, u,
                POSITIONING_PERIOD, s, n),
            "long_short": lambda s, n: self.call(
                WEIGHTS["fetch_long_short_ratio_history"], ex.fetch_long_short_ratio_history,
                u, POSITIONING_PERIOD, s, n),
        }
        # a snapshot published before the first bar is needed for its as-of value
        lead = {"open_interest": 3_600_000, "long_short": 3_600_000}
        with tempfile.TemporaryDirectory(prefix="liqbot-feed-") as tmp:
            raw = Path(tmp) / "raw"
            raw.mkdir()
            for name in series:
                step = interval_ms if name in ("ohlcv", "mark") else 1
                await fetch._paginate(name, calls[name], start_ms - lead.get(name, 0), end_ms,
                                      step, raw / f"{name}.jsonl",
                                      contextlib.nullcontext(), None)  # type: ignore[arg-type]
            if not (raw / "ohlcv.jsonl").is_file():
                return None
            try:
                ds = fetch.build(symbol, tf, raw, start_ms, end_ms, exchange_name="binance")
            except DataError as exc:
                log.warning("%s: REST bars unusable: %s", symbol, exc)
                return None
        return ds.bars.between(start_ms, end_ms)

    async def positioning(self, symbol: str) -> tuple[int, float, float, float]:
        """(exchange stamp ms, open interest base, open interest quote, long/short ratio)."""
        u = self.unified(symbol)
        oi = await self.call(WEIGHTS["fetch_open_interest"], self.exchange.fetch_open_interest, u)
        ratio = math.nan
        if self.exchange.has.get("fetchLongShortRatioHistory"):
            rows = await self.call(WEIGHTS["fetch_long_short_ratio_history"],
                                   self.exchange.fetch_long_short_ratio_history, u,
                                   POSITIONING_PERIOD, None, 1)
            if rows and rows[-1].get("longShortRatio") is not None:
                ratio = float(rows[-1]["longShortRatio"])
        amount, value = oi.get("openInterestAmount"), oi.get("openInterestValue")
        return (int(oi.get("timestamp") or 0), float(amount) if amount is not None else math.nan,
                float(value) if value is not None else math.nan, ratio)

    async def close(self) -> None:
        await self.exchange.close()


def _retry_after(headers: Any) -> float | None:
    if not isinstance(headers, dict):
        return None
    for key, value in headers.items():
        if str(key).lower() == "retry-after":
            try:
                return max(0.0, float(value))
            except (TypeError, ValueError):
                return None
    return None
