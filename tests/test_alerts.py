"""Alerts: a webhook and a fake Telegram Bot API (aiohttp servers on 127.0.0.1) receive the
cascade's state changes, the liquidation-distance alert and the daily summaries of a
replaying daemon; rate limits, retries, 429 back-off, a full queue that never blocks, and
the Telegram token kept out of the config, the payloads and the log."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest
from aiohttp import web

from backtests.scenarios import load_scenario
from bot.config import AlertsConfig, parse_config
from bot.errors import ConfigError, LiqbotError
from bot.risk import engine as en
from bot.runtime.alerts import Alert, Alerts
from tests.local_http import serve
from tests.test_http import LiveDaemon

TOKEN = "123456:AAH-fake-telegram-token-for-tests"


class Recorder:
    """A webhook and a Telegram Bot API on one aiohttp app; `fail` scripts status codes."""

    def __init__(self) -> None:
        self.hook: list[dict] = []
        self.tg: list[dict] = []
        self.tg_paths: list[str] = []
        self.fail: list[int] = []          # status codes to answer first (then 200)
        self.attempts = 0
        self.times: list[float] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/hook", self.on_hook)
        app.router.add_post("/bot{token}/sendMessage", self.on_tg)
        return app

    async def on_hook(self, req: web.Request) -> web.Response:
        self.attempts += 1
        self.times.append(time.monotonic())
        if self.fail:
            code = self.fail.pop(0)
            if code == 429:
                return web.json_response({"ok": False, "parameters": {"retry_after": 0.3}},
                                         status=429)
            return web.Response(status=code)
        self.hook.append(await req.json())
        return web.json_response({"ok": True})

    async def on_tg(self, req: web.Request) -> web.Response:
        if req.match_info["token"] != TOKEN:
            return web.json_response({"ok": False, "description": "Unauthorized"}, status=401)
        self.tg_paths.append(req.path)
        self.tg.append(await req.json())
        return web.json_response({"ok": True, "result": {"message_id": len(self.tg)}})


def _cfg(base: str, **kw) -> AlertsConfig:
    args = {"webhook_url": f"{base}/hook", "telegram_chat_id": "-100777",
            "telegram_api_url": base, "min_interval_s": 0.0, "retry_backoff_s": 0.05,
            "timeout_s": 5.0, **kw}
    return AlertsConfig(**args)


def _wait(cond, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_cascade_alerts_reach_webhook_and_telegram(tmp_path, caplog):
    rec = Recorder()
    bars = load_scenario("cascade-long").bars
    with serve(rec.app()) as base, caplog.at_level(logging.INFO):
        rec.fail = [500]                                 # the first webhook POST fails: retried
        alerts = Alerts(_cfg(base, liq_distance_pct=12.0, max_per_minute=1000), "run-t", TOKEN)
        with LiveDaemon(tmp_path, {bars.symbol: bars}, [], alerts=alerts) as ld:
            ld.wait_finished()
            _wait(lambda: alerts.counts["sent"] + alerts.counts["failed"]
                  >= 2 * alerts.counts["queued"])
            decisions = ld.store.decisions(ld.daemon.run_id)
            fills = ld.store.fills(ld.daemon.run_id)
            intents = ld.store.intents(ld.daemon.run_id)
    assert alerts.counts["failed"] == 0 and alerts.counts["dropped"] == 0
    kinds = [a["kind"] for a in rec.hook]
    # the store picks the moments: every state change of the run is one alert, in order
    changes = [(d.bar_ts, en.STATE_NAMES[d.state]) for prev, d in zip(decisions, decisions[1:],
                                                                     strict=False)
               if d.state != prev.state]
    assert len(changes) >= 2 and changes[0][1] == "REDUCING"   # the cascade, then more
    states = [a for a in rec.hook if a["kind"] == "state"]
    assert [(a["ts_ms"], a["data"]["to"]) for a in states] == changes
    first = states[0]
    assert first["data"]["from"] == "ACTIVE" and "cascade" in first["data"]["reasons"]
    assert "BTCUSDT risk state ACTIVE -> REDUCING" in first["text"]
    assert first["source"] == "liqbot" and first["run_id"] == "run-t"
    # the dedupe id: run, key and bar time, one per alert of the run
    assert first["id"] == f"run-t/state:BTCUSDT:REDUCING/{first['ts_ms']}"
    assert len({a["id"] for a in rec.hook}) == len(rec.hook)
    # 10x long: its liquidation is ~9.6% away at entry, under the 12% threshold: one alert
    liq = [a for a in rec.hook if a["kind"] == "liquidation_distance"]
    assert len(liq) >= 1 and liq[0]["data"]["distance_pct"] < 12.0
    assert liq[0]["ts_ms"] == int(bars.ts[1])        # the first bar holding the position
    # daily summaries: the daemon's job, each simulated 00:00 UTC after the replay's start
    # (none at its very first instant: nothing had happened), the last when the final bar
    # closes at 01-04 00:00
    daily = [a for a in rec.hook if a["kind"] == "daily_summary"]
    assert [a["ts"] for a in daily] == ["2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z",
                                        "2026-01-04T00:00:00Z"]
    # each the day's figures (running totals before 2026-12-06): they add up to the run's
    assert [a["data"]["bars"] for a in daily] == [1440, 1440, 1440] == [len(bars) // 3] * 3
    assert sum(a["data"]["fills"] for a in daily) == len(fills) >= 2   # entry, cascade cuts
    assert sum(a["data"]["orders"] for a in daily) == len(intents)
    assert daily[0]["data"]["fills"] == 1 and "1,440 bars, 1 order, 1 fill" in daily[0]["text"]
    assert kinds.count("state") == len(changes)
    # Telegram got the same alerts, to the configured chat, token only in the URL path
    assert len(rec.tg) == len(rec.hook)
    assert all(m["chat_id"] == "-100777" for m in rec.tg)
    assert rec.tg[kinds.index("state")]["text"].startswith("liqbot run-t: BTCUSDT risk state")
    assert all(p == f"/bot{TOKEN}/sendMessage" for p in rec.tg_paths)
    for m in rec.hook + rec.tg:
        assert TOKEN not in json.dumps(m)
    assert rec.attempts == len(rec.hook) + 1         # one retry after the 500
    # our log (the fake API's own access log is not ours) never shows the token
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("liqbot"))
    assert "HTTP 500" in logged and TOKEN not in logged


async def _deliver_one(alerts: Alerts, alert: Alert) -> float:
    await alerts.start()
    t0 = time.monotonic()
    assert alerts.push(alert)
    await asyncio.wait_for(alerts.queue.join(), 20)
    dt = time.monotonic() - t0
    await alerts.stop()
    return dt


def test_retries_backoff_429_and_no_retry_on_400(caplog):
    rec = Recorder()
    with serve(rec.app()) as base:
        cfg = _cfg(base, telegram_chat_id=None, retries=3, retry_backoff_s=0.05)
        rec.fail = [503, 429]
        a = Alerts(cfg, "r", None)
        dt = asyncio.run(_deliver_one(a, Alert("state", "k", "hello", {"x": 1}, 0)))
        assert a.counts == {"queued": 1, "sent": 1, "failed": 0, "dropped": 0, "rate_limited": 0}
        assert rec.attempts == 3 and len(rec.hook) == 1
        assert rec.times[2] - rec.times[1] >= 0.3 - 0.02   # Telegram-style retry_after honoured
        assert dt < 5
        rec.fail, rec.attempts = [400], 0
        b = Alerts(cfg, "r", None)
        asyncio.run(_deliver_one(b, Alert("state", "k", "bad", {}, 0)))
        assert rec.attempts == 1 and b.counts["failed"] == 1      # a 4xx is not retried
    # nobody listening: every attempt fails, the error names the target, never the token
    dead = AlertsConfig(telegram_chat_id=1, telegram_api_url=base, retries=2,
                        retry_backoff_s=0.01, timeout_s=2.0)
    c = Alerts(dead, "r", TOKEN)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="liqbot.alerts"):
        asyncio.run(_deliver_one(c, Alert("stale_feed", "k", "stale", {}, 0)))
    assert c.counts["failed"] == 1
    msgs = [r.getMessage() for r in caplog.records]
    assert sum("retry in" in m for m in msgs) == 2
    assert any("to telegram failed after 3 attempt(s)" in m for m in msgs)
    assert not any(TOKEN in m for m in msgs)


def test_rate_limits_and_a_full_queue_never_block():
    now = [1000.0]
    cfg = AlertsConfig(webhook_url="http://127.0.0.1:9/x", min_interval_s=60.0,
                       max_per_minute=3, queue_size=2)
    a = Alerts(cfg, "r", None, clock=lambda: now[0])
    assert a.push(Alert("state", "s:A", "1"))
    assert not a.push(Alert("state", "s:A", "again"))              # same key within 60 s
    assert a.push(Alert("state", "s:B", "2"))
    assert not a.push(Alert("state", "s:C", "3"))                  # queue of 2 is full: dropped
    assert a.counts == {"queued": 2, "sent": 0, "failed": 0, "dropped": 1, "rate_limited": 1}
    a.queue.get_nowait()
    a.queue.get_nowait()
    assert a.push(Alert("state", "s:D", "4"))                      # 3rd within the minute
    assert not a.push(Alert("state", "s:E", "5"))                  # 4th: over max_per_minute
    now[0] += 61.0
    a.queue.get_nowait()
    assert a.push(Alert("state", "s:A", "later"))                  # both limits lapsed
    assert a.counts["rate_limited"] == 2


def test_listener_translation_and_liquidation_distance_hysteresis():
    cfg = AlertsConfig(webhook_url="http://127.0.0.1:9/x", min_interval_s=0.0,
                       liq_distance_pct=5.0, on=["liquidation_distance", "reject"])
    a = Alerts(cfg, "r", None)
    base = {"symbol": "BTCUSDT", "ts": 0, "state": 0, "prev_state": 0, "reasons": 0, "text": "",
            "atr": 100.0, "qty": 1.0, "equity": 1.0}

    def dist(pct: float) -> dict:
        return {**base, "mark": 100_000.0, "liq_price": 100_000.0 * (1 - pct / 100)}
    a.listener("decision", dist(8.0))
    assert a.queue.qsize() == 0
    a.listener("decision", dist(4.0))
    al = a.queue.get_nowait()
    assert al.kind == "liquidation_distance" and al.data["distance_pct"] == pytest.approx(4.0)
    assert "40.0 ATR" in al.text
    a.listener("decision", dist(3.0))                 # still inside: no repeat
    a.listener("decision", dist(5.5))                 # out, but under 1.2 x 5 = 6: not re-armed
    a.listener("decision", dist(4.5))
    assert a.queue.qsize() == 0
    a.listener("decision", dist(6.5))                 # re-armed
    a.listener("decision", dist(4.9))
    assert a.queue.qsize() == 1
    a.listener("state", {**base, "state": en.REDUCING, "mark": 1.0, "liq_price": 0.0})
    a.listener("reject", {"symbol": "BTCUSDT", "client_id": "r-1", "qty": 0.5, "ts": 0})
    assert a.queue.qsize() == 2                       # state is not in `on`, reject is
    a.queue.get_nowait()
    assert "order r-1 (+0.500000) rejected" in a.queue.get_nowait().text
    err = {"symbol": "BTCUSDT", "ts": 60_000, "message": "strategy x failed: KeyError: 'y'"}
    a.listener("strategy_error", err)
    assert a.queue.qsize() == 0                       # not in `on`
    b = Alerts(AlertsConfig(webhook_url="http://127.0.0.1:9/x"), "r", None)   # default: all
    b.listener("strategy_error", err)
    al = b.queue.get_nowait()
    assert al.kind == "strategy_error" and al.text == (
        "BTCUSDT strategy x failed: KeyError: 'y' at 1970-01-01T00:01:00Z; holding its "
        "previous target")
    # the streak's closing bar has its own rate-limit key: never swallowed by the first
    b.listener("strategy_error", {**err, "ts": 120_000, "closing": True,
                                  "action": "failing 2 bars in a row: closing the position"})
    al = b.queue.get_nowait()
    assert al.key == "strategy_error:BTCUSDT:close" and al.data["closing"] is True
    assert al.text.endswith("at 1970-01-01T00:02:00Z; failing 2 bars in a row: closing the "
                            "position")


def test_telegram_token_only_from_the_environment():
    with pytest.raises(LiqbotError, match="LIQBOT_TELEGRAM_TOKEN"):
        Alerts(AlertsConfig(telegram_chat_id=42), "r", None)
    with pytest.raises(ConfigError) as e:
        parse_config({"alerts": {"telegram_chat_id": 42, "telegram_token": TOKEN}}, "t.toml", env={})
    assert TOKEN not in str(e.value)
    with pytest.raises(ConfigError, match="alerts.webhook_url"):
        parse_config({"alerts": {"webhook_url": "ftp://x"}}, "t.toml", env={})
    assert not Alerts(AlertsConfig(), "r", None).enabled          # default: off


def test_daily_summary_and_data_ended_alerts_say_the_days_figures_and_the_end_once():
    """The daily summary alert gives the day's bars per symbol when there are several; a
    replayed symbol whose data ended is one alert (under `stale_feed`, the alert it used
    to raise at every check) naming the position held and the orders cancelled (a live
    broker's, which cannot be, as left at the venue)."""
    alerts = Alerts(AlertsConfig(webhook_url="http://127.0.0.1:9/hook"), "run-x")
    day = alerts._alert("daily_summary", {
        "ts": 1_772_323_200_000, "equity": 10_315.99, "upnl": 12.5, "bars": 2880,
        "bars_by_symbol": {"AVAXUSDT": 1440, "LINKUSDT": 1440}, "orders": 3, "fills": 2,
        "liquidations": 0})
    assert day is not None and day.data["bars_by_symbol"] == {"AVAXUSDT": 1440,
                                                              "LINKUSDT": 1440}
    assert "2,880 bars (AVAXUSDT 1,440, LINKUSDT 1,440), 3 orders, 2 fills, 0 liquidations " \
           "that day" in day.text
    end = {"symbol": "BTCUSDT", "ts": 1_770_348_960_000, "qty": 0.25, "mark": 71_234.5,
           "cancelled": 1, "pending": 0}
    got = alerts._alert("data_ended", end)
    assert got is not None and got.kind == "stale_feed" and got.key == "data_ended:BTCUSDT"
    assert got.text == ("BTCUSDT replayed data ended at 2026-02-06T03:36:00Z: position "
                        "+0.250000 held at its last close 71,234.5, 1 order(s) decided at its "
                        "last close cancelled")
    assert got.data["ended"] is True and got.data["cancelled"] == 1
    live = alerts._alert("data_ended", {**end, "cancelled": 0, "pending": 2})
    assert live is not None and live.text.endswith("71,234.5, 2 order(s) left at the venue")
    hedged = alerts._alert("data_ended", {**end, "qty": 0.0, "hedge_qty": -0.1})
    assert hedged is not None and "position +0.000000 (hedge -0.100000) held" in hedged.text
    quiet = Alerts(AlertsConfig(webhook_url="http://127.0.0.1:9/hook", on=["daily_summary"]),
                   "run-x")
    assert quiet._alert("data_ended", end) is None


def test_daily_summary_says_one_order_not_one_orders():
    """A count of one is singular in the daily summary: '1 bar, 1 order, 1 fill, 1
    liquidation', not '1 orders' (the wording the run's final summary already had)."""
    alerts = Alerts(AlertsConfig(webhook_url="http://127.0.0.1:9/hook"), "run-x")
    one = alerts._alert("daily_summary", {
        "ts": 1_772_323_200_000, "equity": 10_000.0, "upnl": 0.0, "bars": 1,
        "bars_by_symbol": {"BTCUSDT": 1}, "orders": 1, "fills": 1, "liquidations": 1})
    assert one is not None
    assert one.text.endswith("(unrealised 0.00), 1 bar, 1 order, 1 fill, 1 liquidation "
                             "that day"), one.text
    many = alerts._alert("daily_summary", {
        "ts": 1_772_323_200_000, "equity": 10_000.0, "upnl": 0.0, "bars": 1440,
        "orders": 2, "fills": 0, "liquidations": 3})
    assert many is not None
    assert many.text.endswith("1,440 bars, 2 orders, 0 fills, 3 liquidations that day")


class _Records(logging.Handler):
    """The records of one logger, whatever `propagate` another test left on `liqbot`."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_alerts_left_at_shutdown_are_logged_and_counted():
    """An unreachable webhook: 5 alerts queued, the first retried, then the stop's 5 s ran
    out and the other 4 (and the first's final failure) vanished without a word or a count.
    Now one warning says how many and of which kinds, and each counts as failed."""
    import socket

    with socket.socket() as s:                 # a port nobody listens on: refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = AlertsConfig(webhook_url=f"http://127.0.0.1:{port}/hook", min_interval_s=0.0,
                       retries=3, retry_backoff_s=1.0, timeout_s=2.0)
    a = Alerts(cfg, "r", None)
    rec = _Records()
    logger = logging.getLogger("liqbot.alerts")
    logger.addHandler(rec)
    level = logger.level
    logger.setLevel(logging.INFO)

    async def go() -> None:
        await a.start()
        for key, kind in (("d1", "daily_summary"), ("s:A", "state"), ("d2", "daily_summary"),
                          ("s:B", "state"), ("d3", "daily_summary")):
            assert a.push(Alert(kind, key, f"{kind} {key}"))
        await a.stop(drain_s=0.3)

    try:
        asyncio.run(go())
    finally:
        logger.removeHandler(rec)
        logger.setLevel(level)
    msgs = [r.getMessage() for r in rec.records]
    assert [m for m in msgs if "shutdown" in m] == [
        "5 alert(s) not delivered at shutdown (3 daily_summary, 2 state): the 0.3 s to "
        "deliver them ran out"]
    assert [r.levelname for r in rec.records if "shutdown" in r.getMessage()] == ["WARNING"]
    assert a.counts == {"queued": 5, "sent": 0, "failed": 5, "dropped": 0, "rate_limited": 0}
    assert a.queue.empty()
