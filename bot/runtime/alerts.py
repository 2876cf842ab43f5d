"""Alerts of a running daemon: a JSON webhook and/or Telegram, never blocking the loop.

The daemon calls `Alerts.listener(kind, data)` synchronously in its loop thread (state
changes, fills, rejects, stale feeds, a replayed symbol's end of data or gap in it, daily
summaries, every decision); the listener turns the few that matter into `Alert`s, applies
the rate limits and puts them on a bounded asyncio queue (`put_nowait`: a full queue drops
the alert and counts it). One worker task
delivers each alert to every target with retries and exponential backoff (Telegram's 429
`retry_after` is honoured). At stop it gets `drain_s` seconds to deliver what is queued;
what is left then (the alert in delivery included) is logged in one warning with its kinds
and counted as failed. Configuration: `[alerts]` (`bot.config.AlertsConfig`).

Secrets: the Telegram bot token comes only from LIQBOT_TELEGRAM_TOKEN; it appears in the
request URL and nowhere else: not in the config, the payload, the log (failures log the
exception type and HTTP status only, and every text is passed through `_mask`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bot.config import AlertsConfig
from bot.data.dataset import iso
from bot.errors import LiqbotError
from bot.risk import engine as en
from bot.risk.reasons import reason_names
from bot.text import count

log = logging.getLogger("liqbot.alerts")
TELEGRAM_TOKEN_ENV = "LIQBOT_TELEGRAM_TOKEN"
REARM = 1.2          # a liquidation-distance alert re-arms above REARM x the threshold


@dataclass
class Alert:
    """One message: `kind` (an `AlertsConfig.on` name), a rate-limit `key`, the text and
    the numbers behind it (JSON-ready)."""

    kind: str
    key: str
    text: str
    data: dict[str, Any] = field(default_factory=dict)
    ts_ms: int = 0


class Alerts:
    """Turns daemon events into rate-limited alerts and delivers them in a worker task."""

    def __init__(self, cfg: AlertsConfig, run_id: str, token: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if cfg.telegram_chat_id is not None and not token:
            raise LiqbotError(f"[alerts] telegram_chat_id is set but {TELEGRAM_TOKEN_ENV} is not "
                              "in the environment (the bot token is never read from the config)")
        self.cfg = cfg
        self.run_id = run_id
        self._token = token or ""
        self.clock = clock
        self.enabled = cfg.webhook_url is not None or cfg.telegram_chat_id is not None
        self.queue: asyncio.Queue[Alert] = asyncio.Queue(cfg.queue_size)
        self.counts = {"queued": 0, "sent": 0, "failed": 0, "dropped": 0, "rate_limited": 0}
        self._last: dict[str, float] = {}
        self._recent: deque[float] = deque()
        self._liq_armed: dict[str, bool] = {}
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._inflight: Alert | None = None     # the alert the worker is delivering
        self._left: list[str] = []              # its targets not yet done

    @classmethod
    def from_env(cls, cfg: AlertsConfig, run_id: str) -> Alerts:
        return cls(cfg, run_id, os.environ.get(TELEGRAM_TOKEN_ENV) or None)

    # ------------------------------------------------------------------ the daemon's side
    def listener(self, kind: str, data: dict[str, Any]) -> None:
        """`Daemon.listeners` entry: never blocks, never raises into the loop."""
        alert = self._alert(kind, data)
        if alert is not None:
            self.push(alert)

    def _alert(self, kind: str, d: dict[str, Any]) -> Alert | None:
        on = self.cfg.on
        ts = int(d.get("ts", 0))
        if kind == "decision":
            return self._liq_distance(d) if "liquidation_distance" in on else None
        if kind == "state" and "state" in on:
            new = en.STATE_NAMES[d["state"]]
            old = en.STATE_NAMES[d["prev_state"]] if d["prev_state"] >= 0 else "start"
            why = ", ".join(reason_names(d["reasons"])) or "no rule binding"
            return Alert("state", f"state:{d['symbol']}:{new}",
                         f"{d['symbol']} risk state {old} -> {new} at {iso(ts)} ({why})"
                         + (f": {d['text']}" if d.get("text") else ""),
                         {"symbol": d["symbol"], "from": old, "to": new,
                          "reasons": reason_names(d["reasons"]), "mark": d.get("mark")}, ts)
        if kind == "stale" and "stale_feed" in on:
            return Alert("stale_feed", f"stale:{d['symbol']}",
                         f"{d['symbol']} feed stale: no bar for {d['bars']} intervals",
                         {"symbol": d["symbol"], "bars": d["bars"]}, ts)
        if kind == "data_ended" and "stale_feed" in on:
            # a replayed symbol's data ended: said once, where a dead feed alerts each check
            return Alert("stale_feed", f"data_ended:{d['symbol']}",
                         f"{d['symbol']} replayed data ended at {iso(ts)}: "
                         + (f"position {d['qty']:+.6f}"
                            + (f" (hedge {d['hedge_qty']:+.6f})" if d.get("hedge_qty") else "")
                            + f" held at its last close {d['mark']:,.6g}"
                            if d["qty"] or d.get("hedge_qty") else "flat")
                         + (f", {d['cancelled']} order(s) decided at its last close "
                            "cancelled" if d.get("cancelled") else "")
                         + (f", {d['pending']} order(s) left at the venue"
                            if d.get("pending") else ""),
                         {"symbol": d["symbol"], "ended": True, "qty": d["qty"],
                          "hedge_qty": d.get("hedge_qty", 0.0), "mark": d["mark"],
                          "cancelled": d.get("cancelled", 0), "pending": d.get("pending", 0)},
                         ts)
        if kind == "data_gap" and "stale_feed" in on:
            # a gap in a replayed symbol's data: said once per gap, and no stale decision
            n = int(d["bars"])
            return Alert("stale_feed", f"data_gap:{d['symbol']}",
                         f"{d['symbol']} replayed data has a gap: no bar from "
                         f"{iso(int(d['from']))} to {iso(int(d['to']))} ({count(n, 'bar')})",
                         {"symbol": d["symbol"], "gap": True, "from": int(d["from"]),
                          "to": int(d["to"]), "bars": n}, ts)
        if kind == "reject" and "reject" in on:
            return Alert("reject", f"reject:{d['symbol']}",
                         f"{d['symbol']} order {d['client_id']} ({d['qty']:+.6f}) rejected",
                         {"symbol": d["symbol"], "client_id": d["client_id"], "qty": d["qty"]},
                         ts)
        if kind == "liquidation" and "liquidation" in on:
            return Alert("liquidation", f"liquidation:{d['symbol']}",
                         f"{d['symbol']} LIQUIDATED {d['qty']:+.6f} at {d['price']:,.2f} "
                         f"({iso(ts)})", {"symbol": d["symbol"], "qty": d["qty"],
                                          "price": d["price"]}, ts)
        if kind == "strategy_error" and "strategy_error" in on:
            closing = bool(d.get("closing"))
            return Alert("strategy_error",
                         f"strategy_error:{d['symbol']}" + (":close" if closing else ""),
                         f"{d['symbol']} {d['message']} at {iso(ts)}; "
                         f"{d.get('action', 'holding its previous target')}",
                         {"symbol": d["symbol"], "message": d["message"], "closing": closing},
                         ts)
        if kind == "daily_summary" and "daily_summary" in on:
            # the day's figures (bars per symbol too), not running totals
            per = d.get("bars_by_symbol") or {}
            return Alert("daily_summary", "daily_summary",
                         f"daily summary {iso(ts)}: equity {d['equity']:,.2f} (unrealised "
                         f"{d['upnl']:,.2f}), {count(d['bars'], 'bar')}"
                         + (" (" + ", ".join(f"{s} {n:,}" for s, n in per.items()) + ")"
                            if len(per) > 1 else "")
                         + f", {count(d['orders'], 'order')}, {count(d['fills'], 'fill')}, "
                         f"{count(d['liquidations'], 'liquidation')} that day",
                         {k: d[k] for k in ("equity", "upnl", "bars", "bars_by_symbol",
                                            "orders", "fills", "liquidations") if k in d}, ts)
        return None

    def _liq_distance(self, d: dict[str, Any]) -> Alert | None:
        """Alert when the own liquidation price comes closer than the threshold; re-arm
        once it is REARM x the threshold away again (or the position is gone)."""
        sym, mark, lp = d["symbol"], d["mark"], d["liq_price"]
        if d["qty"] == 0.0 or not (mark > 0.0 and lp > 0.0):   # NaN compares False
            self._liq_armed[sym] = True
            return None
        pct = abs(mark - lp) / mark * 100.0
        limit = self.cfg.liq_distance_pct
        if pct >= limit * REARM:
            self._liq_armed[sym] = True
        if pct >= limit or not self._liq_armed.get(sym, True):
            return None
        self._liq_armed[sym] = False
        atr = d.get("atr") or float("nan")
        return Alert("liquidation_distance", f"liq:{sym}",
                     f"{sym} liquidation {pct:.2f}% away (at {lp:,.2f}, mark {mark:,.2f}, "
                     f"{abs(mark - lp) / atr:.1f} ATR) below the {limit:g}% threshold",
                     {"symbol": sym, "distance_pct": pct, "liq_price": lp, "mark": mark},
                     int(d["ts"]))

    def push(self, alert: Alert) -> bool:
        """Rate-limit and enqueue without waiting; False when dropped or rate-limited."""
        if not self.enabled:
            return False
        now = self.clock()
        last = self._last.get(alert.key)
        if last is not None and now - last < self.cfg.min_interval_s:
            self.counts["rate_limited"] += 1
            return False
        while self._recent and now - self._recent[0] >= 60.0:
            self._recent.popleft()
        if len(self._recent) >= self.cfg.max_per_minute:
            self.counts["rate_limited"] += 1
            log.warning("alert %s not sent: more than %d alerts a minute", alert.kind,
                        self.cfg.max_per_minute)
            return False
        try:
            self.queue.put_nowait(alert)
        except asyncio.QueueFull:
            self.counts["dropped"] += 1
            log.warning("alert %s dropped: the queue is full", alert.kind)
            return False
        self._last[alert.key] = now
        self._recent.append(now)
        self.counts["queued"] += 1
        return True

    # ------------------------------------------------------------------ delivery
    async def start(self) -> None:
        if self.enabled and self._task is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.cfg.timeout_s))
            self._task = asyncio.create_task(self._worker(), name="liqbot-alerts")

    async def stop(self, drain_s: float = 5.0) -> None:
        """Deliver what is queued (at most `drain_s` seconds), then stop the worker; what
        is left undelivered is logged (one warning) and counted as failed."""
        if self._task is None:
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.queue.join(), drain_s)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        self._report_undelivered(drain_s)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _report_undelivered(self, drain_s: float) -> None:
        """After the worker stopped: the alert it was delivering and those still queued are
        lost; say so once, with their kinds, and count each target as failed."""
        left: list[tuple[Alert, int]] = []
        if self._inflight is not None and self._left:
            left.append((self._inflight, len(self._left)))
        self._inflight, self._left = None, []
        targets = len(self._targets())
        while True:
            try:
                left.append((self.queue.get_nowait(), targets))
            except asyncio.QueueEmpty:
                break
            self.queue.task_done()
        if not left:
            return
        self.counts["failed"] += sum(n for _, n in left)
        kinds = Counter(a.kind for a, _ in left)
        log.warning("%d alert(s) not delivered at shutdown (%s): the %g s to deliver them "
                    "ran out", len(left), ", ".join(f"{n} {k}" for k, n in kinds.items()),
                    drain_s)

    async def _worker(self) -> None:
        while True:
            alert = await self.queue.get()
            self._inflight, self._left = alert, self._targets()
            try:
                while self._left:
                    ok = await self._deliver(self._left[0], alert)
                    self.counts["sent" if ok else "failed"] += 1
                    self._left.pop(0)
            except Exception as exc:                     # never let the worker die
                log.error("alert worker: %s", self._mask(f"{type(exc).__name__}"))
            finally:
                self.queue.task_done()
            # not reached when cancelled at stop: `_report_undelivered` counts it then
            self._inflight, self._left = None, []

    def _targets(self) -> list[str]:
        out = []
        if self.cfg.webhook_url is not None:
            out.append("webhook")
        if self.cfg.telegram_chat_id is not None:
            out.append("telegram")
        return out

    def alert_id(self, alert: Alert) -> str:
        """What a receiver dedupes on: run, key and the bar time, no counter or clock, so
        the alert a resumed run sends again for a bar it decides again (after a kill -9,
        the bars since the last checkpoint) carries the id it had."""
        return f"{self.run_id}/{alert.key}/{alert.ts_ms}"

    def _request(self, target: str, alert: Alert) -> tuple[str, dict[str, Any]]:
        if target == "webhook":
            return str(self.cfg.webhook_url), {
                "source": "liqbot", "id": self.alert_id(alert), "run_id": self.run_id,
                "kind": alert.kind,
                "text": alert.text, "ts": iso(alert.ts_ms) if alert.ts_ms else None,
                "ts_ms": alert.ts_ms, "data": alert.data}
        base = self.cfg.telegram_api_url.rstrip("/")
        return f"{base}/bot{self._token}/sendMessage", {
            "chat_id": self.cfg.telegram_chat_id, "text": f"liqbot {self.run_id}: {alert.text}",
            "disable_web_page_preview": True}

    async def _deliver(self, target: str, alert: Alert) -> bool:
        """POST with retries; True once the target accepted it."""
        assert self._session is not None
        url, body = self._request(target, alert)
        for attempt in range(self.cfg.retries + 1):
            wait = self.cfg.retry_backoff_s * (2 ** attempt)
            final = attempt >= self.cfg.retries
            try:
                async with self._session.post(url, json=body) as resp:
                    if 200 <= resp.status < 300:
                        return True
                    problem = f"HTTP {resp.status}"
                    if resp.status == 429:
                        with contextlib.suppress(Exception):
                            info = await resp.json(content_type=None)
                            wait = max(wait, float(info["parameters"]["retry_after"]))
                    elif 400 <= resp.status < 500:
                        final = True                           # not worth retrying
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                problem = type(exc).__name__
            if final:
                log.error("alert %s to %s failed after %d attempt(s): %s", alert.kind, target,
                          attempt + 1, self._mask(problem))
                return False
            log.warning("alert %s to %s failed (%s); retry in %.1f s", alert.kind, target,
                        self._mask(problem), wait)
            await asyncio.sleep(wait)
        return False

    def _mask(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token else text
