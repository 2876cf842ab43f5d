"""The daemon's HTTP side: REST status API, Prometheus `/metrics`, the offline dashboard.

Runs on the daemon's own event loop (aiohttp). Handlers that read the daemon's memory
(`/metrics`, `/api/positions`, the heatmap's arrays) run in the loop thread and take
microseconds; handlers that query the store or draw a PNG run in one worker thread with its
own read-only `Store`, so a slow query never holds up a bar.

Access: `liqbot run --http HOST:PORT` binds to 127.0.0.1 unless told otherwise. A
non-local bind needs a token in LIQBOT_HTTP_TOKEN; when a token is set every request must
carry it (`Authorization: Bearer TOKEN` or `?token=TOKEN`; the dashboard forwards its
`?token=` to the API). Endpoints: docs/operations.md.
"""

from __future__ import annotations

import asyncio
import hmac
import io
import ipaddress
import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any

import numpy as np
from aiohttp import web

from bot.errors import LiqbotError
from bot.mechanics import account as ac
from bot.runtime import metrics as mt
from bot.runtime.status import decision_row, liq_distance, status_data

TOKEN_ENV = "LIQBOT_HTTP_TOKEN"
MAX_ROWS = 20_000                      # cap of one /api/decisions or /api/equity answer


def parse_bind(spec: str) -> tuple[str, int]:
    """'HOST:PORT', ':PORT' or 'PORT' -> (host, port); the host defaults to 127.0.0.1."""
    host, _, port = spec.rpartition(":") if ":" in spec else ("", "", spec)
    host = host.strip("[]") or "127.0.0.1"
    try:
        p = int(port)
    except ValueError:
        raise LiqbotError(f"--http {spec!r}: expected HOST:PORT, e.g. 127.0.0.1:8080") from None
    if not 0 <= p <= 65535:
        raise LiqbotError(f"--http {spec!r}: port {p} is out of range 0..65535")
    return host, p


def is_local(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_token(host: str, env: dict[str, str] | None = None) -> str | None:
    """The access token for a bind: required (LiqbotError) for a non-local host."""
    token = (os.environ if env is None else env).get(TOKEN_ENV) or None
    if token is None and not is_local(host):
        raise LiqbotError(f"--http {host}: binding beyond localhost needs an access token in "
                          f"the environment ({TOKEN_ENV}); clients send it as a bearer token "
                          "or ?token=")
    return token


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(_finite(data), separators=(",", ":")), status=status,
                        content_type="application/json")


def _finite(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_finite(x) for x in v]
    return v


QUERY_INT_MAX = 2**62                # query integers are clamped here (SQL int64 headroom)
#: what each integer query parameter means, for its 400 message
QUERY_INTS: dict[str, str] = {"since": "a time in ms UTC (an integer)",
                              "limit": f"a number of rows (an integer, 1 or more; at most "
                                       f"{MAX_ROWS:,} are returned)"}


def _int_arg(req: web.Request, name: str, default: int) -> int:
    """Query parameter `name` as an int (`default` when absent or empty), clamped to
    +-QUERY_INT_MAX; a 400 saying what the parameter means (`QUERY_INTS`) when it is not
    an integer."""
    raw = req.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        v = int(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f"?{name}= expects {QUERY_INTS[name]}, got {raw[:20]!r}"
                                 ) from None
    return max(-QUERY_INT_MAX, min(v, QUERY_INT_MAX))


class StatusServer:
    """HTTP endpoints over one running `Daemon` (and its `Alerts`, for their counters)."""

    def __init__(self, daemon: Any, store_url: str, host: str = "127.0.0.1", port: int = 0,
                 token: str | None = None, alerts: Any = None,
                 errors: mt.ErrorCounter | None = None) -> None:
        self.d = daemon
        self.store_url = store_url
        self.host, self.port = host, port
        self.token = token
        self.registry = mt.registry(daemon, alerts, errors)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="liqbot-http")
        self._store: Any = None          # the reader's own Store, created in its thread
        self._runner: web.AppRunner | None = None
        self.url = ""

    # ------------------------------------------------------------------ lifecycle
    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/", self.dashboard)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/api/status", self.status)
        app.router.add_get("/api/positions", self.positions)
        app.router.add_get("/api/decisions", self.decisions)
        app.router.add_get("/api/equity", self.equity)
        app.router.add_get("/api/fills", self.fills)
        app.router.add_get("/api/heatmap", self.heatmap_json)
        app.router.add_get("/api/heatmap.png", self.heatmap_png)
        return app

    async def start(self) -> str:
        """Listen; returns the base URL (the real port when 0 was asked)."""
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise LiqbotError(f"--http {self.host}:{self.port}: cannot listen "
                              f"({exc.strerror or exc})") from None
        port = self._runner.addresses[0][1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{host}:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await asyncio.get_running_loop().run_in_executor(self._pool, self._close_store)
        self._pool.shutdown(wait=False)

    def _close_store(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    async def _read(self, fn: Any, *args: Any) -> Any:
        """Run `fn(store, *args)` in the reader thread with its own Store."""
        def call() -> Any:
            if self._store is None:
                from bot.store import Store
                self._store = Store(self.store_url, create=False)   # the daemon's, read only
            return fn(self._store, *args)
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    @web.middleware
    async def _auth(self, req: web.Request, handler: Any) -> web.StreamResponse:
        if self.token is not None:
            got = req.query.get("token", "")
            auth = req.headers.get("Authorization", "")
            if auth.startswith("Bearer "):
                got = auth[7:].strip()
            if not hmac.compare_digest(got.encode(), self.token.encode()):
                return web.Response(status=401, text="401: a valid token is required "
                                    "(Authorization: Bearer TOKEN or ?token=TOKEN)",
                                    headers={"WWW-Authenticate": "Bearer"})
        return await handler(req)

    # ------------------------------------------------------------------ handlers
    async def dashboard(self, req: web.Request) -> web.Response:
        page = resources.files("bot.runtime").joinpath("dashboard.html").read_text("utf-8")
        return web.Response(text=page, content_type="text/html",
                            headers={"Cache-Control": "no-store"})

    async def metrics(self, req: web.Request) -> web.Response:
        return web.Response(body=mt.scrape(self.registry),
                            headers={"Content-Type": mt.CONTENT_TYPE})

    async def status(self, req: web.Request) -> web.Response:
        run_id, interval = self.d.run_id, self.d.feed.interval_ms
        now = int(self.d.feed.now_ms())      # the feed clock (simulated on a replay)

        def read(store: Any) -> dict[str, Any]:
            run = store.get_run(run_id)
            return status_data(store, run, interval, now)
        data = await self._read(read)
        data["live"] = self.live()
        if any(x.last_ts >= 0 for x in self.d.state.values()):
            # the bars the daemon processed, not the last commit's (commits are batched: a
            # fast replay read 120-1,500 s here while `live` and /metrics read 0)
            data["feed_lag_s"] = data["live"]["feed_lag_s"]
        return _json(data)

    def live(self) -> dict[str, Any]:
        """The running daemon's own numbers (ahead of the store by at most one commit)."""
        d = self.d
        eq, upnl = d.equity()
        from bot.data.dataset import iso
        from bot.risk import engine as en
        from bot.risk.reasons import reason_names
        return {"equity": eq, "upnl": upnl, "halted": d.halted, "flatten": d.flatten,
                "bars_processed": d.bars_processed, "orders": d.seq, "skipped": d.skipped,
                "counters": dict(d.counters), "clock": iso(d.feed.now_ms()),
                "feed_lag_s": max([(d.feed.now_ms() - x.last_ts - d.feed.interval_ms) / 1000.0
                                   for x in d.state.values() if x.last_ts >= 0] or [0.0]),
                "symbols": {s: {"state": en.STATE_NAMES[x.last_state] if x.last_state >= 0
                                else None, "reasons": reason_names(x.last_reasons),
                                "last_bar": iso(x.last_ts) if x.last_ts >= 0 else None,
                                "close": x.last_close}
                            for s, x in d.state.items()}}

    async def positions(self, req: web.Request) -> web.Response:
        d, b = self.d, self.d.broker
        out = []
        for s, x in d.state.items():
            for slot in (2 * x.index, 2 * x.index + 1):
                qty = float(b.pos[slot, ac.P_QTY])
                if qty == 0.0:
                    continue
                mark = float(b.marks[slot])
                lp = float(ac.liquidation_price(b.acct, b.pos, slot, b.marks, b.floor, b.cap,
                                                b.mmr, b.cum))
                out.append({"symbol": s, "slot": slot, "side": "long" if qty > 0 else "short",
                            "hedge": slot % 2 == 1, "qty": qty,
                            "entry": float(b.pos[slot, ac.P_ENTRY]), "notional": qty * mark,
                            "liq_price": lp if np.isfinite(lp) and lp > 0 else None,
                            **liq_distance(mark, lp if np.isfinite(lp) and lp > 0 else None,
                                           x.atr if np.isfinite(x.atr) else None)})
        return _json({"positions": out})

    async def decisions(self, req: web.Request) -> web.Response:
        since = _int_arg(req, "since", -1)
        limit = _int_arg(req, "limit", MAX_ROWS)
        if limit < 1:                       # 0 and -5 were served as 1 row
            raise web.HTTPBadRequest(text=f"?limit= expects {QUERY_INTS['limit']}, got {limit}")
        limit = min(limit, MAX_ROWS)
        symbol = req.query.get("symbol") or None
        changes = req.query.get("changes") in ("1", "true")
        run_id = self.d.run_id

        def read(store: Any) -> dict[str, Any]:
            rows = [x for x in store.decisions(run_id, since_ts=since + 1)
                    if (symbol is None or x.symbol == symbol) and (not changes or x.text)]
            more = len(rows) > limit
            return {"decisions": [decision_row(x) for x in rows[:limit]], "more": more}
        return _json(await self._read(read))

    async def equity(self, req: web.Request) -> web.Response:
        since = _int_arg(req, "since", -1)
        run_id = self.d.run_id

        def read(store: Any) -> dict[str, Any]:
            pts = [p for p in store.equity(run_id) if p.ts > since][:MAX_ROWS]
            return {"equity": [{"ts": int(p.ts), "equity": p.equity, "wallet": p.wallet,
                                "upnl": p.upnl} for p in pts]}
        return _json(await self._read(read))

    async def fills(self, req: web.Request) -> web.Response:
        since = _int_arg(req, "since", -1)
        run_id = self.d.run_id

        def read(store: Any) -> dict[str, Any]:
            return {"fills": [{"ts": int(f.ts), "symbol": f.symbol, "qty": f.qty,
                               "price": f.price, "fee": f.fee, "liquidation": f.liquidation}
                              for f in store.fills(run_id) if f.ts > since][:MAX_ROWS]}
        return _json(await self._read(read))

    def _heat(self, req: web.Request) -> dict[str, Any]:
        """Liquidation density near the mark for ?symbol= (default: the first), quote
        notional per price bin, both sides; `span` = fraction of the mark shown."""
        symbol = req.query.get("symbol") or self.d.symbols[0]
        x = self.d.state.get(symbol)
        if x is None:
            raise web.HTTPNotFound(text=f"unknown symbol {symbol[:20]!r}")
        if x.stream is None or not np.isfinite(x.last_close):
            return {"symbol": symbol, "mark": None, "price": [], "long": [], "short": []}
        from bot.signals import heatmap as hm
        mass, meta = x.stream.mass(), x.stream.meta
        lo, width = float(meta[hm.M_LO]), float(meta[hm.M_WIDTH])
        centers = np.exp(lo + (np.arange(mass.shape[1]) + 0.5) * width)
        span = 0.15
        ok = np.abs(centers / x.last_close - 1.0) <= span
        return {"symbol": symbol, "mark": x.last_close, "price": centers[ok].tolist(),
                "long": mass[hm.LONG][ok].tolist(), "short": mass[hm.SHORT][ok].tolist()}

    async def heatmap_json(self, req: web.Request) -> web.Response:
        return _json(self._heat(req))

    async def heatmap_png(self, req: web.Request) -> web.Response:
        heat = self._heat(req)                    # copied in the loop thread, drawn outside
        try:
            png = await asyncio.get_running_loop().run_in_executor(self._pool, _draw_heat, heat)
        except ImportError:
            raise web.HTTPNotImplemented(text="/api/heatmap.png needs matplotlib "
                                         "(pip install 'liqbot[plot]'); /api/heatmap gives "
                                         "the numbers") from None
        return web.Response(body=png, content_type="image/png",
                            headers={"Cache-Control": "no-store"})


def _draw_heat(heat: dict[str, Any]) -> bytes:
    """Horizontal density profile: price on y, long (red) and short (green) liquidation
    notional on x, the mark as a line. Small (about 20 KB)."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 5), dpi=80)
    ax = fig.add_subplot()
    price = np.asarray(heat["price"])
    if len(price):
        h = np.diff(price).mean() if len(price) > 1 else price[0] * 0.001
        ax.barh(price, -np.asarray(heat["long"]), height=h, color="#e74c3c", label="long liq.")
        ax.barh(price, heat["short"], height=h, color="#27ae60", label="short liq.")
        ax.axhline(heat["mark"], color="#2e86de", lw=1, label=f"mark {heat['mark']:,.0f}")
        ax.legend(loc="upper right", fontsize=7)
    else:
        ax.text(0.5, 0.5, "no heatmap yet", ha="center", transform=ax.transAxes)
    ax.set_title(f"{heat['symbol']} liquidation map (quote)", fontsize=9)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
