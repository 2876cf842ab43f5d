"""Websockets: Binance USD-M market streams and the user-data stream.

Routes: any path containing `ws` (`/ws`, `/ws/<n>`, `/market/ws/<n>`, `/public/ws/<n>`,
ccxt.pro's split hosts). A market connection takes `{"method": "SUBSCRIBE"|"UNSUBSCRIBE",
"params": [...], "id": n}` and answers `{"result": null, "id": n}`; `LIST_SUBSCRIPTIONS`
too. A user-data connection is `/private/ws?listenKey=K` or `/ws/K`; it receives
ORDER_TRADE_UPDATE and ACCOUNT_UPDATE of the key that owns K.

Market messages are synthesised from the replayed bars, at each bar close (simulated
times): `<s>@kline_<iv>` (the final kline, `x: true`), `<s>@markPrice` / `@markPrice@1s`
(not one update per second: the four that make the bar's mark kline, stamped E = open,
open+1, open+2, close-1 with its mark open, high, low, close, then the mark at the close
itself, E = close, the next bar's mark open, so a client bucketing updates by E rebuilds the
mark kline and sees the stream pass the close; `r` is the rate that settles at `T`, which a
replay knows: Binance's estimate of it), `<s>@aggTrade` (one
synthetic aggregate trade per bar: the bar's volume at its close, `m` true when takers
sold more than they bought), `<s>@forceOrder` (one message per side per bar with
liquidation notional: qty = notional / close, price = close; SELL = longs liquidated).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

from bot.data.binance_vision import interval_name
from bot.emulator import errors as er
from bot.emulator.account import Venue
from bot.emulator.faults import FaultInjector
from bot.emulator.market import _s

log = logging.getLogger("liqbot.emulator")


@dataclass
class Conn:
    ws: web.WebSocketResponse
    streams: set[str] = field(default_factory=set)
    api_key: str | None = None       # set on user-data connections


class StreamHub:
    """Connections, subscriptions and the outbox the venue's callbacks fill."""

    def __init__(self, venue: Venue, faults: FaultInjector,
                 listen_keys: dict[str, str]) -> None:
        self.venue, self.faults, self.listen_keys = venue, faults, listen_keys
        self.conns: list[Conn] = []
        self.outbox: list[tuple[str | None, str | None, dict[str, Any]]] = []
        self._held: tuple[Conn, str] | None = None     # out-of-order fault: a delayed message
        self.sent = 0
        self.iv_name = interval_name(venue.market.interval_ms)
        venue.listeners.append(self._on_user_event)
        venue.bar_listeners.append(self._on_bar_close)

    # --- producers (synchronous callbacks of the venue) -------------------------------------
    def _on_user_event(self, key: str, ev: dict[str, Any]) -> None:
        self.outbox.append((None, key, ev))

    def _on_bar_close(self, s: str, i: int) -> None:
        d = self.venue.market.symbols[s]
        iv = self.venue.market.interval_ms
        t0 = int(d.ts[i])
        close_ms = t0 + iv
        low = s.lower()
        row = self.venue.market.kline_row(d, i, close_ms, mark=False)
        self.outbox.append((f"{low}@kline_{self.iv_name}", None, {
            "e": "kline", "E": close_ms, "s": s, "k": {
                "t": t0, "T": close_ms - 1, "s": s, "i": self.iv_name, "f": 0, "L": 0,
                "o": row[1], "c": row[4], "h": row[2], "l": row[3], "v": row[5], "n": row[8],
                "x": True, "q": row[7], "V": row[9], "Q": row[10], "B": "0"}}))
        m = self.venue.market
        for e_ms, p in ((t0, d.mark_open[i]), (t0 + 1, d.mark_high[i]), (t0 + 2, d.mark_low[i]),
                        (close_ms - 1, d.mark_close[i]), (close_ms, m.mark(d, close_ms))):
            nxt = m.next_funding_ms(d, e_ms)
            j = int(np.searchsorted(d.ts, nxt))
            rate = float(d.funding[j]) if j < len(d.ts) and int(d.ts[j]) == nxt and \
                math.isfinite(d.funding[j]) else m.last_funding(d, e_ms)[0]
            mark = {"e": "markPriceUpdate", "E": e_ms, "s": s, "p": _s(p), "ap": _s(p),
                    "i": _s(d.close[i]), "P": _s(p), "r": _s(rate), "T": nxt}
            self.outbox.append((f"{low}@markPrice", None, mark))
            self.outbox.append((f"{low}@markPrice@1s", None, mark))
        b = d.bars
        tb = float(b["taker_buy_volume"][i]) if b.has("taker_buy_volume") else math.nan
        self.outbox.append((f"{low}@aggTrade", None, {
            "e": "aggTrade", "E": close_ms, "s": s, "a": i, "p": _s(d.close[i]),
            "q": _s(d.volume[i]), "nq": _s(d.volume[i]), "f": i, "l": i, "T": close_ms - 1,
            "m": bool(tb == tb and tb < 0.5 * d.volume[i])}))
        for side, notional in (("SELL", d.liq_long[i]), ("BUY", d.liq_short[i])):
            if notional > 0 and d.close[i] > 0:
                qty = notional / d.close[i]
                self.outbox.append((f"{low}@forceOrder", None, {
                    "e": "forceOrder", "E": close_ms, "o": {
                        "s": s, "S": side, "o": "LIMIT", "f": "IOC", "q": _s(qty),
                        "p": _s(d.close[i]), "ap": _s(d.close[i]), "X": "FILLED",
                        "l": _s(qty), "z": _s(qty), "T": close_ms - 1}}))

    # --- delivery ---------------------------------------------------------------------------
    async def flush(self) -> None:
        """Send what the venue produced, through the stream faults."""
        items, self.outbox = self.outbox, []
        stale = self.faults.stale_now()
        p = self.faults.profile
        now = self.venue.now
        for stream, key, payload in items:
            if stream is not None and stale:
                self.faults.record("stale_stream", now, stream)
                continue
            text = json.dumps(payload)
            for c in list(self.conns):
                if c.ws.closed:
                    continue
                if (stream is not None and stream in c.streams) or \
                        (key is not None and c.api_key == key):
                    await self._send(c, text, p.duplicate_rate, p.reorder_rate, now)

    async def _send(self, c: Conn, text: str, dup: float, reorder: float, now: int) -> None:
        if self._held is None and self.faults.roll(reorder):
            self.faults.record("out_of_order", now, text[:60])
            self._held = (c, text)
            return
        await self._raw(c, text)
        if self.faults.roll(dup):
            self.faults.record("duplicate", now, text[:60])
            await self._raw(c, text)
        if self._held is not None:
            hc, ht = self._held
            self._held = None
            await self._raw(hc, ht)

    async def _raw(self, c: Conn, text: str) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            if not c.ws.closed:
                await c.ws.send_str(text)
                self.sent += 1

    async def disconnect_all(self, reason: str) -> int:
        n = 0
        for c in list(self.conns):
            if not c.ws.closed:
                await c.ws.close(code=1001, message=reason.encode())
                n += 1
        return n

    async def close_key(self, api_key: str) -> None:
        for c in list(self.conns):
            if c.api_key == api_key:
                await c.ws.close(code=1000, message=b"listenKey expired")

    # --- the handler ----------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self.faults.in_maintenance(self.venue.clock.now_ms()):
            self.faults.record("maintenance", self.venue.clock.now_ms(), "ws refused")
            return web.Response(status=503, text="maintenance")
        lk = request.query.get("listenKey") or request.path.rstrip("/").rsplit("/", 1)[-1]
        api_key = self.listen_keys.get(lk)
        if request.query.get("listenKey") and api_key is None:
            missing = er.listen_key_missing()
            return web.json_response(missing.body(), status=missing.status)
        ws = web.WebSocketResponse(autoping=True, heartbeat=None)
        await ws.prepare(request)
        conn = Conn(ws, api_key=api_key)
        if "streams" in request.query:
            conn.streams.update(x for x in request.query["streams"].split("/") if x)
        self.conns.append(conn)
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    req = json.loads(msg.data)
                    method, rid = req.get("method"), req.get("id")
                except (ValueError, AttributeError):
                    await ws.send_str(json.dumps({"error": {"code": 3, "msg": "Invalid JSON"}}))
                    continue
                if method == "SUBSCRIBE":
                    conn.streams.update(str(x) for x in req.get("params", []))
                    await ws.send_str(json.dumps({"result": None, "id": rid}))
                elif method == "UNSUBSCRIBE":
                    conn.streams.difference_update(str(x) for x in req.get("params", []))
                    await ws.send_str(json.dumps({"result": None, "id": rid}))
                elif method == "LIST_SUBSCRIPTIONS":
                    await ws.send_str(json.dumps({"result": sorted(conn.streams), "id": rid}))
                else:
                    await ws.send_str(json.dumps({"error": {"code": 2, "msg": "Invalid request"},
                                                  "id": rid}))
        finally:
            self.conns.remove(conn)
        return ws


async def pump(hub: StreamHub, tick_s: float) -> None:
    """Background task: catch the venue up with the clock and deliver, every `tick_s`;
    also the periodic websocket-disconnect fault."""
    loop = asyncio.get_running_loop()
    last_drop = loop.time()
    while True:
        try:
            hub.venue.sync()
            await hub.flush()
            every = hub.faults.profile.ws_disconnect_every_s
            if every > 0 and loop.time() - last_drop >= every:
                last_drop = loop.time()
                n = await hub.disconnect_all("fault: disconnect")
                hub.faults.record("ws_disconnect", hub.venue.now, f"{n} sockets")
        except Exception:  # noqa: BLE001 - the pump must survive one bad tick; logged
            log.exception("emulator pump tick failed")
        await asyncio.sleep(tick_s)
