"""The emulator as one object (`Emulator`: market, clock, venue, auth, limits, faults,
streams on one aiohttp app) and `serve()` for the command line.

Admin endpoints (`/admin/...`, answered only to 127.0.0.1 / ::1; no weight, no faults):
- `GET /admin/state`: simulated now, paused, speed, span, fault counts;
- `POST /admin/clock` JSON `{"pause": true}` / `{"resume": true}` / `{"advance_ms": N}` /
  `{"to_ms": T}` / `{"speed": X}`: the venue then processes every bar up to the new now
  before answering (deterministic tests);
- `GET /admin/faults`: profile, counts per kind, recent events;
  `POST /admin/faults` JSON profile (keys of `FaultProfile`) or `{"profile": "NAME"}`;
- `POST /admin/limits/reset`: forget rate-limit state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bot.config import FillsConfig
from bot.data.dataset import Dataset
from bot.emulator import errors as er
from bot.emulator.account import EOrder, SymbolRules, Venue
from bot.emulator.auth import Authenticator
from bot.emulator.clock import SimClock
from bot.emulator.faults import BUILTIN, FaultInjector, FaultProfile, profile_from_mapping
from bot.emulator.limits import RateLimiter, weight
from bot.emulator.market import Market
from bot.emulator.rest import LostResponse, Routes
from bot.emulator.ws import StreamHub, pump
from bot.errors import ConfigError
from bot.execution import kernel as kn
from bot.mechanics.brackets import Brackets, for_symbol
from bot.mechanics.fees import VenueFees, venue_fees

log = logging.getLogger("liqbot.emulator")
LOCAL = ("127.0.0.1", "::1")


CLOCK_KEYS = ("pause", "resume", "speed", "advance_ms", "to_ms")


def clock_problems(body: object) -> list[str]:
    """What is wrong with a `POST /admin/clock` body (empty: nothing). Checked before any
    of it is applied: a NaN speed once made every later request answer 500."""
    if not isinstance(body, dict):
        return ['expected a JSON object with keys ' + ", ".join(CLOCK_KEYS)]
    out = [f"unknown key {k!r} (known: {', '.join(CLOCK_KEYS)})" for k in body
           if k not in CLOCK_KEYS]
    for k in ("pause", "resume"):
        if k in body and not isinstance(body[k], bool):
            out.append(f"{k}: expected true or false, got {body[k]!r}")
    v = body.get("speed")
    if "speed" in body and not (isinstance(v, int | float) and not isinstance(v, bool)
                                and math.isfinite(v) and 0 < v <= 1e9):
        out.append(f"speed: expected a number in (0, 1e9], got {v!r}")
    for k in ("advance_ms", "to_ms"):
        v = body.get(k)
        if k in body and not (isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**62):
            out.append(f"{k}: expected a whole number of ms >= 0, got {v!r}")
    return out


@dataclass(frozen=True)
class EmulatorConfig:
    """Everything but the data: speed, start paused, account, fees, fill model, limits."""

    speed: float = 1.0
    paused: bool = False
    start_ms: int | None = None          # default: the first bar's open
    wallet: float = 10_000.0             # USDT per API key
    fees: VenueFees = venue_fees("binance")
    fills: FillsConfig = field(default_factory=FillsConfig)
    weight_limit: int = 2400
    weight_window_s: float = 60.0
    ban_after: int = 3
    ban_s: float = 120.0
    tick_s: float = 0.05
    faults: FaultProfile = FaultProfile()


class Emulator:
    def __init__(self, datasets: list[Dataset], keys: dict[str, str],
                 cfg: EmulatorConfig = EmulatorConfig(),
                 brackets: dict[str, Brackets] | None = None,
                 rules: dict[str, SymbolRules] | None = None) -> None:
        self.cfg = cfg
        self.market = Market([d.bars for d in datasets], cfg.fills.window_bars)
        start = self.market.start_ms if cfg.start_ms is None else cfg.start_ms
        self.clock = SimClock(start, self.market.end_ms, cfg.speed, cfg.paused)
        br = dict(brackets or {})
        for s in self.market.symbols:
            if s not in br:
                br[s] = for_symbol(s)          # the shipped table or its stand-in
        fp = kn.fill_params(cfg.fills, cfg.fees, 0.0, "rebalance")
        self.venue = Venue(self.market, self.clock, br, cfg.fees, fp, rules, cfg.wallet)
        self.auth = Authenticator(keys, self.clock.now_ms)
        self.limiter = RateLimiter(cfg.weight_limit, cfg.weight_window_s, cfg.ban_after,
                                   cfg.ban_s)
        self.faults = FaultInjector(cfg.faults)
        self.venue.fill_plan = self._fill_plan
        self.listen_keys: dict[str, str] = {}
        self.hub = StreamHub(self.venue, self.faults, self.listen_keys)
        self.routes = Routes(self)
        self._runner: web.AppRunner | None = None
        self._pump: asyncio.Task[None] | None = None
        self.port = 0

    def _fill_plan(self, o: EOrder, lots: int) -> tuple[list[int], bool]:
        """The venue's question to the fault injector in place now (`emu.faults` may be
        replaced at run time): how a MARKET order of `lots` lots executes."""
        return self.faults.fill_plan(lots, self.venue.now,
                                     f"order {o.order_id} {o.client_id}")

    # --- app ------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        self.routes.register(app)
        app.router.add_get("/admin/state", self._admin_state)
        app.router.add_post("/admin/clock", self._admin_clock)
        app.router.add_get("/admin/faults", self._admin_faults_get)
        app.router.add_post("/admin/faults", self._admin_faults_post)
        app.router.add_post("/admin/limits/reset", self._admin_limits)
        app.router.add_get("/{tail:.*ws.*}", self.hub.handle)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request,
                          handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                          ) -> web.StreamResponse:
        path = request.path
        if path.startswith("/admin/"):
            if request.remote not in LOCAL:
                return web.json_response({"code": -2015, "msg": "admin is localhost only"},
                                         status=403)
            return await handler(request)
        if "ws" in path.split("/") or path.endswith("/ws"):
            return await handler(request)
        f, now = self.faults, self.clock.now_ms()
        used = 0
        try:
            if f.in_maintenance(now):
                f.record("maintenance", now, path)
                raise er.maintenance()
            if f.take_burst():
                f.record("burst_429", now, path)
                raise er.rate_limited(self.limiter.limit, 1)
            if f.roll(f.profile.http_5xx_rate):
                f.record("http_5xx", now, path)
                raise er.internal()
            if f.profile.latency_ms > 0:
                f.record("latency", now, f"{f.profile.latency_ms:g} ms {path}")
                await asyncio.sleep(f.profile.latency_ms / 1000)
            try:
                limit = int(request.query["limit"]) if "limit" in request.query else None
            except ValueError:
                limit = None
            used = self.limiter.charge(request.remote or "?", weight(path, limit))
            resp = await handler(request)
        except er.ApiError as exc:
            resp = web.json_response(exc.body(), status=exc.status, headers=exc.headers)
        except web.HTTPNotFound:
            resp = web.json_response(er.not_found().body(), status=404)
            log.warning("emulator: unserved path %s %s", request.method, path)
        except LostResponse as lost:
            await asyncio.sleep(lost.hang_s)
            if request.transport is not None:
                request.transport.close()      # the answer is never written
            return web.Response(status=504)
        resp.headers["X-MBX-USED-WEIGHT-1M"] = str(used)
        return resp

    # --- admin ----------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        self.venue.sync()
        return {"now_ms": self.clock.now_ms(), "paused": self.clock.paused,
                "speed": self.clock.speed, "start_ms": self.clock.start_ms,
                "end_ms": self.clock.end_ms, "symbols": self.venue.symbols,
                "faults": dict(self.faults.counts)}

    async def _admin_state(self, request: web.Request) -> web.Response:
        return web.json_response(self.state())

    async def _admin_clock(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        problems = clock_problems(body)
        if problems:                          # nothing applied: a NaN speed broke the clock
            return web.json_response({"error": "/admin/clock: " + "; ".join(problems)},
                                     status=400)
        if body.get("pause"):
            self.clock.pause()
        if body.get("resume"):
            self.clock.resume()
        if "speed" in body:
            self.clock.set_speed(float(body["speed"]))
        if "advance_ms" in body:
            self.clock.advance(int(body["advance_ms"]))
        if "to_ms" in body:
            self.clock.set(int(body["to_ms"]))
        self.venue.sync()
        await self.hub.flush()
        return web.json_response(self.state())

    async def _admin_faults_get(self, request: web.Request) -> web.Response:
        return web.json_response(self.faults.as_dict())

    async def _admin_faults_post(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:                    # not JSON at all
            return web.json_response({"error": "expected a JSON object: fault keys or "
                                               '{"profile": NAME}'}, status=400)
        try:
            if isinstance(body, dict) and "profile" in body:
                if body["profile"] not in BUILTIN:
                    raise ConfigError("/admin/faults", [f"unknown profile {body['profile']!r}"])
                prof = BUILTIN[body["profile"]]
            else:
                prof = profile_from_mapping(body, "/admin/faults")
        except ConfigError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        self.faults.set(prof)
        return web.json_response(self.faults.as_dict())

    async def _admin_limits(self, request: web.Request) -> web.Response:
        self.limiter.reset()
        return web.json_response({"ok": True})

    # --- lifecycle --------------------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        self.port = self._runner.addresses[0][1]
        self._pump = asyncio.create_task(pump(self.hub, self.cfg.tick_s))

    async def stop(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        await self.hub.disconnect_all("shutdown")
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"


def point_ccxt(exchange: Any, rest_url: str, ws_url: str | None = None) -> Any:
    """Point a ccxt (or ccxt.pro) binanceusdm at the emulator: every fapi / futures-data
    host, the linear websocket, no currency fetch.

    ccxt picks its USD-M error table (`exceptions['linear']`: -2019 InsufficientFunds,
    -2022 / -4116 / -4164 InvalidOrder, ...) by the URL prefix `https://fapi.binance.com/`;
    any other host gets only the shared table, so those codes would surface as a bare
    ExchangeError. This instance's shared tables are therefore extended with the linear ones
    (what the real host gets; nothing else changes)."""
    for key, url in list(exchange.urls["api"].items()):
        if isinstance(url, str) and url.startswith("https://fapi.binance.com"):
            exchange.urls["api"][key] = rest_url.rstrip("/") + url[len("https://fapi.binance.com"):]
    if ws_url is not None and isinstance(exchange.urls["api"].get("ws"), dict):
        exchange.urls["api"]["ws"]["linear"] = ws_url
    exchange.options["fetchCurrencies"] = False
    linear = exchange.exceptions.get("linear", {})
    exchange.exceptions = {**exchange.exceptions,
                           "exact": {**exchange.exceptions.get("exact", {}),
                                     **linear.get("exact", {})},
                           "broad": {**exchange.exceptions.get("broad", {}),
                                     **linear.get("broad", {})}}
    return exchange


async def serve(datasets: list[Dataset], keys: dict[str, str], port: int = 8765,
                cfg: EmulatorConfig = EmulatorConfig(),
                on_ready: Callable[[Emulator], None] | None = None,
                brackets: dict[str, Brackets] | None = None) -> None:
    """Run until cancelled (Ctrl-C)."""
    emu = Emulator(datasets, keys, cfg, brackets)
    await emu.start(port=port)
    if on_ready is not None:
        on_ready(emu)
    try:
        while True:
            await asyncio.sleep(3600)
    finally:
        await emu.stop()


__all__ = ["Emulator", "EmulatorConfig", "point_ccxt", "serve"]
