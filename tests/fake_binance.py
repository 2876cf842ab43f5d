"""A minimal Binance-USD-M-shaped market-data server for tests (aiohttp, 127.0.0.1, random
port): the public REST endpoints the exchange feed calls and a websocket that answers
SUBSCRIBE like Binance and pushes kline / markPriceUpdate / forceOrder messages from a
scripted minute-by-minute `Scenario`. Message shapes follow captured Binance payloads
(cryptofeed BINANCE_FUTURES.ws fixture, tardis forceOrder/markPrice samples). Hooks: a
simulated clock, `drop()`/`allow()` for websocket outages, `inject()` for garbage, and
`fail_next` for 429/418 answers with Retry-After. No order endpoints.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

MIN = 60_000
FUNDING_MS = 8 * 3_600_000
OI_PERIOD = 5 * MIN


def market(symbol: str, base: str) -> dict[str, Any]:
    """An exchangeInfo symbol entry (fields ccxt's binanceusdm parser reads)."""
    return {
        "symbol": symbol, "pair": symbol, "contractType": "PERPETUAL",
        "deliveryDate": 4133404800000, "onboardDate": 1569398400000, "status": "TRADING",
        "maintMarginPercent": "2.5000", "requiredMarginPercent": "5.0000", "baseAsset": base,
        "quoteAsset": "USDT", "marginAsset": "USDT", "pricePrecision": 2,
        "quantityPrecision": 3, "baseAssetPrecision": 8, "quotePrecision": 8,
        "underlyingType": "COIN", "underlyingSubType": [], "triggerProtect": "0.0500",
        "liquidationFee": "0.012500", "marketTakeBound": "0.05", "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": "0.10", "maxPrice": "4529764",
             "tickSize": "0.10"},
            {"filterType": "LOT_SIZE", "stepSize": "0.001", "maxQty": "1000", "minQty": "0.001"},
            {"filterType": "MIN_NOTIONAL", "notional": "100"}],
        "orderTypes": ["LIMIT", "MARKET"], "timeInForce": ["GTC", "IOC"]}


@dataclass(frozen=True)
class Scenario:
    """Deterministic market data: every value is a function of (symbol index, minute)."""

    start_ms: int
    symbols: tuple[str, ...] = ("BTCUSDT",)

    def minute(self, t_ms: int) -> int:
        return (t_ms - self.start_ms) // MIN

    def ts(self, m: int) -> int:
        return self.start_ms + m * MIN

    def kline(self, si: int, m: int, partial: bool = False) -> dict[str, float]:
        """Final (or mid-minute partial) kline values of minute m, Bars units."""
        o = 100_000.0 + 1000 * si + 10 * m
        v = 2.0 + (m % 5) * 0.5
        if partial:
            return {"open": o, "high": o + 2, "low": o - 1, "close": o + 1, "volume": v / 2,
                    "quote_volume": v / 2 * o, "trades": 50.0 + m,
                    "taker_buy_volume": v / 4, "taker_buy_quote_volume": v / 4 * o}
        return {"open": o, "high": o + 7, "low": o - 4, "close": o + 3, "volume": v,
                "quote_volume": v * (o + 1), "trades": 100.0 + m,
                "taker_buy_volume": v * 0.625, "taker_buy_quote_volume": v * 0.625 * (o + 1)}

    def marks(self, si: int, m: int) -> list[tuple[int, float, float]]:
        """(event ms, mark, index) updates inside minute m: offsets 0.5 s, 20.5 s, 40.5 s."""
        o = self.kline(si, m)["open"]
        return [(self.ts(m) + off, o + d, o + d - 3) for off, d in
                ((500, 1.0), (20_500, 5.0), (40_500, -2.0))]

    def mark_ohlc(self, si: int, m: int) -> tuple[float, float, float, float]:
        p = [x[1] for x in self.marks(si, m)]
        return p[0], max(p), min(p), p[-1]

    def next_funding(self, t_ms: int) -> int:
        return (t_ms // FUNDING_MS + 1) * FUNDING_MS

    def rate_estimate(self, m: int) -> float:
        return 0.0001 + 1e-6 * (m % 50)

    def settled_rate(self, funding_ms: int) -> float:
        """The last estimate announced before the settlement (what the stream shows)."""
        return self.rate_estimate(self.minute(funding_ms) - 1)

    def liquidations(self, si: int, m: int) -> list[tuple[int, str, float, float]]:
        """(trade ms, order side, average price, filled qty): SELL liquidates a long."""
        o, t = self.kline(si, m)["open"], self.ts(m)
        if m % 3 == 1:
            return [(t + 10_000, "SELL", o - 10, 0.5), (t + 45_000, "BUY", o + 10, 0.2)]
        if m % 3 == 2:
            return [(t + 5_000, "SELL", o - 20, 1.0), (t + 50_000, "SELL", o - 30, 0.25)]
        return []

    def open_interest_hist(self, k: int) -> tuple[float, float]:
        """(sumOpenInterest base, sumOpenInterestValue quote) of the k-th 5-minute period."""
        return 80_000.0 + k, (80_000.0 + k) * 100_000.0

    def long_short(self, k: int) -> float:
        return 1.5 + 0.01 * (k % 20)

    def open_interest_now(self, t_ms: int) -> float:
        return 81_000.0 + self.minute(t_ms) * 0.5

    # ---- stream messages (Binance USD-M /ws shapes, unwrapped) -------------------------
    def messages(self, m: int) -> Iterator[tuple[int, str, dict[str, Any]]]:
        """(time ms, stream name, payload) of minute m, all symbols, in time order."""
        out: list[tuple[int, str, dict[str, Any]]] = []
        t0 = self.ts(m)
        for si, s in enumerate(self.symbols):
            low = s.lower()
            for e, partial in ((t0 + 30_000, True), (t0 + MIN - 1, False)):
                out.append((e, f"{low}@kline_1m", self.kline_msg(si, m, e, partial)))
            for e, p, i in self.marks(si, m):
                out.append((e, f"{low}@markPrice@1s", {
                    "e": "markPriceUpdate", "E": e, "s": s, "p": f"{p:.8f}", "i": f"{i:.8f}",
                    "P": f"{p:.8f}", "r": f"{self.rate_estimate(m):.8f}",
                    "T": self.next_funding(e)}))
            for t, side, ap, z in self.liquidations(si, m):
                out.append((t + 2, f"{low}@forceOrder", {
                    "e": "forceOrder", "E": t + 2, "o": {
                        "s": s, "S": side, "o": "LIMIT", "f": "IOC", "q": f"{z}",
                        "p": f"{ap - 50 if side == 'SELL' else ap + 50}", "ap": f"{ap}",
                        "X": "FILLED", "l": f"{z}", "z": f"{z}", "T": t}}))
        out.sort(key=lambda x: x[0])
        return iter(out)

    def kline_msg(self, si: int, m: int, event_ms: int, partial: bool) -> dict[str, Any]:
        k = self.kline(si, m, partial)
        s = self.symbols[si]
        return {"e": "kline", "E": event_ms, "s": s, "k": {
            "t": self.ts(m), "T": self.ts(m) + MIN - 1, "s": s, "i": "1m", "f": 1000 * m,
            "L": 1000 * m + int(k["trades"]) - 1, "o": f"{k['open']}", "c": f"{k['close']}",
            "h": f"{k['high']}", "l": f"{k['low']}", "v": f"{k['volume']}",
            "n": int(k["trades"]), "x": not partial, "q": f"{k['quote_volume']}",
            "V": f"{k['taker_buy_volume']}", "Q": f"{k['taker_buy_quote_volume']}", "B": "0"}}

    def rest_kline(self, si: int, m: int, now_ms: int, mark: bool = False) -> list[Any]:
        """A /fapi/v1/klines (or markPriceKlines) row; the in-progress minute is partial."""
        t = self.ts(m)
        if mark:
            o, h, lo, c = self.mark_ohlc(si, m)
            return [t, f"{o}", f"{h}", f"{lo}", f"{c}", "0", t + MIN - 1, "0", 0, "0", "0", "0"]
        k = self.kline(si, m, partial=now_ms < t + MIN)
        return [t, f"{k['open']}", f"{k['high']}", f"{k['low']}", f"{k['close']}",
                f"{k['volume']}", t + MIN - 1, f"{k['quote_volume']}", int(k["trades"]),
                f"{k['taker_buy_volume']}", f"{k['taker_buy_quote_volume']}", "0"]


@dataclass
class _Conn:
    ws: web.WebSocketResponse
    streams: set[str] = field(default_factory=set)


class FakeBinance:
    """The server. `now_ms` is the simulated exchange clock (pass it to the feed)."""

    def __init__(self, scenario: Scenario, now_ms: int, msg_delay_s: float = 0.003) -> None:
        self.sc = scenario
        self.clock = now_ms
        self.msg_delay_s = msg_delay_s
        self.calls: list[str] = []                       # REST paths, in order
        self.fail_next: dict[str, tuple[int, str]] = {}  # path -> (status, Retry-After)
        self.ws_enabled = True
        self.conns: list[_Conn] = []
        self.subscribe_count = 0
        self._runner: web.AppRunner | None = None
        self.url = ""

    def now_ms(self) -> int:
        return self.clock

    # ---- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        app = web.Application()
        r = app.router
        r.add_get("/fapi/v1/exchangeInfo", self._exchange_info)
        r.add_get("/fapi/v1/time", self._time)
        r.add_get("/fapi/v1/klines", self._klines)
        r.add_get("/fapi/v1/markPriceKlines", self._mark_klines)
        r.add_get("/fapi/v1/fundingRate", self._funding)
        r.add_get("/fapi/v1/openInterest", self._open_interest)
        r.add_get("/futures/data/openInterestHist", self._oi_hist)
        r.add_get("/futures/data/globalLongShortAccountRatio", self._long_short)
        r.add_get("/{tail:.*ws.*}", self._ws)    # /ws, /market/ws/0, /public/ws/1, ...
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}/ws"

    async def stop(self) -> None:
        for c in list(self.conns):
            await c.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # ---- scripted playback and fault hooks ---------------------------------------------
    def subscribed(self) -> set[str]:
        return set().union(*(c.streams for c in self.conns)) if self.conns else set()

    async def wait_subscribed(self, n_streams: int, timeout_s: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout_s
        while len(self.subscribed()) < n_streams:
            if loop.time() > end:
                raise TimeoutError(f"only {sorted(self.subscribed())} subscribed")
            await asyncio.sleep(0.01)

    async def play_minute(self, m: int) -> None:
        """Push minute m's messages to subscribers, advancing the clock to each message."""
        for t, stream, payload in self.sc.messages(m):
            self.clock = max(self.clock, t)
            await self.push(stream, json.dumps(payload))

    async def push(self, stream: str, text: str) -> None:
        for c in list(self.conns):
            if stream in c.streams and not c.ws.closed:
                await c.ws.send_str(text)
        await asyncio.sleep(self.msg_delay_s)

    async def inject(self, stream: str, text: str) -> None:
        """Send arbitrary text (garbage) to the subscribers of `stream`."""
        await self.push(stream, text)

    async def drop(self) -> None:
        """Close every websocket and refuse new ones until `allow()`."""
        self.ws_enabled = False
        for c in list(self.conns):
            await c.ws.close(code=1001, message=b"going away")

    def allow(self) -> None:
        self.ws_enabled = True

    # ---- websocket -----------------------------------------------------------------------
    async def _ws(self, request: web.Request) -> web.StreamResponse:
        if not self.ws_enabled:
            return web.Response(status=503, text="unavailable")
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        conn = _Conn(ws)
        self.conns.append(conn)
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                req = json.loads(msg.data)
                if req.get("method") == "SUBSCRIBE":
                    conn.streams.update(req.get("params", []))
                    self.subscribe_count += 1
                elif req.get("method") == "UNSUBSCRIBE":
                    conn.streams.difference_update(req.get("params", []))
                await ws.send_str(json.dumps({"result": None, "id": req.get("id")}))
        finally:
            self.conns.remove(conn)
        return ws

    # ---- REST ------------------------------------------------------------------------------
    def _guard(self, request: web.Request) -> web.Response | None:
        self.calls.append(request.path)
        fail = self.fail_next.pop(request.path, None)
        if fail is not None:
            status, retry_after = fail
            return web.json_response({"code": -1003, "msg": "Too many requests; banned"},
                                     status=status, headers={"Retry-After": retry_after})
        return None

    def _si(self, request: web.Request) -> int:
        return self.sc.symbols.index(request.query["symbol"])

    def _window(self, q: Any, step: int, default_limit: int, max_limit: int) -> list[int]:
        """Period start times in [startTime, endTime] that exist by now, at most `limit`."""
        limit = min(int(q.get("limit", default_limit)), max_limit)
        end = min(int(q.get("endTime", self.clock)), self.clock)
        if "startTime" in q:
            t = max(int(q["startTime"]), self.sc.start_ms)
            t += (self.sc.start_ms - t) % step
            out = []
            while t <= end and len(out) < limit:
                out.append(t)
                t += step
            return out
        last = (end - self.sc.start_ms) // step * step + self.sc.start_ms
        return [t for t in range(last - (limit - 1) * step, last + 1, step)
                if t >= self.sc.start_ms]

    async def _exchange_info(self, request: web.Request) -> web.Response:
        self.calls.append(request.path)
        symbols = [market(s, s.removesuffix("USDT")) for s in self.sc.symbols]
        return web.json_response({"timezone": "UTC", "serverTime": self.clock,
                                  "rateLimits": [], "exchangeFilters": [], "assets": [],
                                  "symbols": symbols})

    async def _time(self, request: web.Request) -> web.Response:
        return self._guard(request) or web.json_response({"serverTime": self.clock})

    async def _klines(self, request: web.Request, mark: bool = False) -> web.Response:
        if (bad := self._guard(request)) is not None:
            return bad
        si = self._si(request)
        rows = [self.sc.rest_kline(si, self.sc.minute(t), self.clock, mark)
                for t in self._window(request.query, MIN, 500, 1500)]
        return web.json_response(rows)

    async def _mark_klines(self, request: web.Request) -> web.Response:
        return await self._klines(request, mark=True)

    async def _funding(self, request: web.Request) -> web.Response:
        if (bad := self._guard(request)) is not None:
            return bad
        s = request.query["symbol"]
        q = dict(request.query)
        q.setdefault("startTime", str(self.sc.start_ms))
        first = self.sc.next_funding(int(q["startTime"]) - 1)
        q["startTime"] = str(max(first, self.sc.start_ms))
        out = []
        t = int(q["startTime"])
        end = min(int(q.get("endTime", self.clock)), self.clock)
        while t <= end and len(out) < min(int(q.get("limit", 100)), 1000):
            if t % FUNDING_MS == 0 and t > self.sc.start_ms:
                out.append({"symbol": s, "fundingTime": t + 1,   # Binance stamps T + a few ms
                            "fundingRate": f"{self.sc.settled_rate(t):.8f}",
                            "markPrice": "100000.0"})
            t = self.sc.next_funding(t)
        return web.json_response(out)

    async def _open_interest(self, request: web.Request) -> web.Response:
        if (bad := self._guard(request)) is not None:
            return bad
        return web.json_response({"symbol": request.query["symbol"], "time": self.clock,
                                  "openInterest": f"{self.sc.open_interest_now(self.clock)}"})

    async def _oi_hist(self, request: web.Request) -> web.Response:
        if (bad := self._guard(request)) is not None:
            return bad
        rows = []
        for t in self._window(request.query, OI_PERIOD, 30, 500):
            amount, value = self.sc.open_interest_hist((t - self.sc.start_ms) // OI_PERIOD)
            rows.append({"symbol": request.query["symbol"], "sumOpenInterest": f"{amount}",
                         "sumOpenInterestValue": f"{value}", "timestamp": t})
        return web.json_response(rows)

    async def _long_short(self, request: web.Request) -> web.Response:
        if (bad := self._guard(request)) is not None:
            return bad
        rows = []
        for t in self._window(request.query, OI_PERIOD, 30, 500):
            r = self.sc.long_short((t - self.sc.start_ms) // OI_PERIOD)
            rows.append({"symbol": request.query["symbol"], "longShortRatio": f"{r}",
                         "longAccount": f"{r / (1 + r):.4f}",
                         "shortAccount": f"{1 / (1 + r):.4f}", "timestamp": t})
        return web.json_response(rows)
