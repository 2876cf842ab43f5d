"""The daemon's HTTP side: REST API, /metrics (parsed with prometheus_client's own parser),
auth rules, `liqbot status --http`, and a 3-symbol subprocess daemon with scrape timings.

`LiveDaemon` runs a replaying daemon and its HTTP server on an event loop in a background
thread; its feed can pause before a bar (the loop and the server keep running), so a test
can look at the API or a browser at a chosen moment of the replay."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from backtests.runner import RunSettings
from backtests.scenarios import load_scenario
from bot.data import dataset as ds_io
from bot.data.bars import Bars
from bot.errors import LiqbotError
from bot.execution import kernel as kn
from bot.mechanics.brackets import shipped
from bot.mechanics.fees import venue_fees
from bot.risk import engine as en
from bot.risk.policy import load_policy
from bot.runtime.daemon import Daemon
from bot.runtime.http import StatusServer, bind_token, is_local, parse_bind
from bot.runtime.replay import ReplayFeed
from bot.store import Store
from strategies import find

BR = shipped("binance", "BTCUSDT")
REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "var" / "artifacts"


# ---------------------------------------------------------------- harness
class GatedFeed:
    """A ReplayFeed whose event stream waits, before delivering a bar, while the next pause
    predicate holds: the daemon commits, `paused` is set, and it waits for `go()`."""

    def __init__(self, inner: ReplayFeed, pauses: list[Callable[[Daemon], bool]]) -> None:
        self.inner = inner
        self.pauses = list(pauses)
        self.daemon: Daemon | None = None
        self.paused = threading.Event()
        self._go = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def go(self) -> None:
        self.paused.clear()
        self._go.set()

    async def events(self):  # noqa: ANN201
        async for ev in self.inner.events():
            if self.pauses and self.daemon is not None and self.pauses[0](self.daemon):
                self.pauses.pop(0)
                self.daemon.commit()
                self._go.clear()
                self.paused.set()
                while not self._go.is_set():
                    await asyncio.sleep(0.02)
            yield ev


class LiveDaemon:
    """A daemon replaying `bars` with a StatusServer (and optional Alerts) in a thread."""

    def __init__(self, tmp_path: Path, bars: dict[str, Bars], pauses: list[Callable[[Daemon], bool]],
                 strategy: str = "hold", params: dict[str, str] | None = None,
                 preset: str = "balanced", token: str | None = None, alerts: Any = None,
                 speed: float = 0.0) -> None:
        self.url_db = f"sqlite:///{tmp_path}/live.db"
        self.store = Store(self.url_db)
        strat = find(strategy).from_strings(params or {"side": "long", "leverage": "10"})
        self.feed = GatedFeed(ReplayFeed(bars, speed), pauses)
        run_ = self.store.open_run("paper", "paper:binance", list(bars), strat.name, strat.params,
                                   preset, 100_000.0)
        s = RunSettings(wallet=100_000.0)
        fp = kn.fill_params(s.fills, venue_fees("binance"), s.band, strat.sizing)
        self.daemon = Daemon(run_id=run_.run_id, feed=self.feed, store=self.store,  # type: ignore[arg-type]
                             strategy=strat, policy=load_policy(preset).to_array(), fp=fp,
                             brackets={sym: BR for sym in bars}, wallet=100_000.0)
        self.feed.daemon = self.daemon
        self.alerts = alerts
        if alerts is not None:
            self.daemon.listeners.append(alerts.listener)
        self.server = StatusServer(self.daemon, self.url_db, token=token, alerts=alerts)
        self.url = ""
        self.finished = threading.Event()
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        async def main() -> None:
            self.url = await self.server.start()
            if self.alerts is not None:
                await self.alerts.start()
            self._started.set()
            try:
                await self.daemon.run(simulated=True)
            except BaseException as exc:        # surfaced by the test
                self.error = exc
            self.finished.set()
            while not self._stop.is_set():
                await asyncio.sleep(0.02)
            if self.alerts is not None:
                await self.alerts.stop()
            await self.server.stop()
        asyncio.run(main())

    def __enter__(self) -> LiveDaemon:
        self._thread.start()
        assert self._started.wait(30), "the HTTP server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self.feed.go()
        self.feed.pauses.clear()
        self._stop.set()
        self._thread.join(120)
        self.store.close()

    def wait_paused(self, timeout: float = 240.0) -> None:
        assert self.feed.paused.wait(timeout), "the replay never reached the pause"

    def wait_finished(self, timeout: float = 240.0) -> None:
        assert self.finished.wait(timeout), "the replay did not finish"
        assert self.error is None, self.error

    def get(self, path: str, token: str | None = None) -> tuple[int, bytes, dict[str, str]]:
        req = urllib.request.Request(self.url + path)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        return http_get(req)


def http_get(req: urllib.request.Request | str, timeout: float = 30.0
             ) -> tuple[int, bytes, dict[str, str]]:
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus exposition, keyed by (name, sorted labels)."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def reducing(d: Daemon) -> bool:
    return any(x.last_state == en.REDUCING for x in d.state.values())


def at_bar(n: int) -> Callable[[Daemon], bool]:
    return lambda d: d.bars_processed >= n


def free_port() -> int:
    """A port nothing listens on now (for a client that must find no server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def served_url(p: subprocess.Popen, timeout: float = 120.0) -> str:
    """The base URL a `liqbot run --http 127.0.0.1:0` subprocess prints (the OS picks the
    port when the server binds: no race with another process for a port chosen before);
    its output keeps being drained in a thread so the pipe never fills."""
    import re
    import threading

    found: list[str] = []
    ready = threading.Event()

    def drain() -> None:
        for line in p.stdout:                                  # type: ignore[union-attr]
            m = re.search(r"dashboard (http://[\d.]+:\d+)/", line)
            if m and not found:
                found.append(m.group(1))
                ready.set()
        ready.set()

    threading.Thread(target=drain, daemon=True).start()
    ready.wait(timeout)
    if not found:
        p.kill()
        raise AssertionError("the daemon printed no dashboard URL")
    return found[0]


def symbol_dataset(scenario: str, symbol: str, out: Path) -> Path:
    """Save a synthetic scenario under another symbol (Bars.symbol replaced)."""
    ds = load_scenario(scenario)
    b = ds.bars
    ds_io.save(dataclasses.replace(ds, bars=Bars(symbol, b.interval_ms, dict(b.columns))), out)
    return out


# ---------------------------------------------------------------- tests
def test_api_and_metrics_follow_a_cascade(tmp_path):
    bars = load_scenario("cascade-long").bars
    with LiveDaemon(tmp_path, {bars.symbol: bars}, [at_bar(600), reducing], token="s3cret-tok") as ld:
        ld.wait_paused()
        d = ld.daemon
        # auth: nothing without the token, the same answer with a bearer token or ?token=
        assert ld.get("/api/status")[0] == 401
        assert ld.get("/metrics")[0] == 401
        code, body, _ = ld.get("/api/status", token="s3cret-tok")
        assert code == 200
        st = json.loads(body)
        assert http_get(ld.url + "/api/status?token=s3cret-tok")[0] == 200
        assert st["state"] == "ACTIVE" and st["symbols"] == ["BTCUSDT"]
        assert st["live"]["bars_processed"] == 600 and st["decisions"] == 600
        assert st["last_bar"] == "2026-01-01T09:59:00Z"        # bar 600 opened at 09:59
        # positions: hold long 10x -> one long position, notional ~ 10x the wallet at entry
        pos = json.loads(ld.get("/api/positions", token="s3cret-tok")[1])["positions"]
        assert len(pos) == 1 and pos[0]["side"] == "long" and pos[0]["slot"] == 0
        p = pos[0]
        assert p["qty"] * p["entry"] == pytest.approx(1_000_000, rel=0.01)
        # by hand: Binance's cross formula for one long, LP = (WB + cum - q e) / (q mmr - q),
        # in the shipped BTCUSDT tier whose range holds q LP (cum by the recurrence)
        wb = float(d.broker.acct[0])
        tiers = [(5e4, 2.5e5, 0.005, 50.0), (2.5e5, 1e6, 0.01, 1_300.0),
                 (1e6, 1e7, 0.025, 16_300.0)]
        lp = next(x for lo_n, hi_n, mmr, cum in tiers
                  for x in [(wb + cum - p["qty"] * p["entry"]) / (p["qty"] * mmr - p["qty"])]
                  if lo_n <= p["qty"] * x < hi_n)
        assert p["liq_price"] == pytest.approx(lp, rel=1e-9)
        assert p["liq_distance_pct"] == pytest.approx((p["mark"] - lp) / p["mark"] * 100,
                                                      rel=1e-9)
        assert 5.0 < p["liq_distance_pct"] < 15.0          # 10x long: ~10% minus maintenance
        # metrics: parsed with prometheus_client; same numbers as the API and the daemon
        code, body, hdr = ld.get("/metrics", token="s3cret-tok")
        assert code == 200 and hdr["Content-Type"].startswith("text/plain")
        m = metrics(body.decode())
        eq, _ = d.equity()
        assert m[("liqbot_equity_quote", ())] == pytest.approx(eq, rel=1e-12)
        lab = (("slot", "0"), ("symbol", "BTCUSDT"))
        assert m[("liqbot_liquidation_distance_pct", lab)] == pytest.approx(p["liq_distance_pct"],
                                                                            rel=1e-9)
        assert m[("liqbot_liquidation_distance_atr", lab)] == pytest.approx(
            (p["mark"] - lp) / d.state["BTCUSDT"].atr, rel=1e-9)
        assert m[("liqbot_leverage", (("symbol", "BTCUSDT"),))] == pytest.approx(
            abs(p["notional"]) / eq, rel=1e-9)
        assert m[("liqbot_risk_state", (("symbol", "BTCUSDT"),))] == 0.0
        assert m[("liqbot_orders_total", ())] == 1.0 and m[("liqbot_fills_total", ())] == 1.0
        assert m[("liqbot_bars_total", (("symbol", "BTCUSDT"),))] == 600.0
        # paused with the next bar closed on the feed clock but not processed: one bar of lag
        assert m[("liqbot_feed_lag_seconds", (("symbol", "BTCUSDT"),))] == 60.0
        # decisions?since= returns only later bars, oldest first
        t_mid = int(bars.ts[499])
        dec = json.loads(ld.get(f"/api/decisions?since={t_mid}", token="s3cret-tok")[1])
        assert [x["bar_ts"] for x in dec["decisions"]] == bars.ts[500:600].tolist()
        assert ld.get("/api/decisions?since=abc", token="s3cret-tok")[0] == 400
        eqs = json.loads(ld.get("/api/equity", token="s3cret-tok")[1])["equity"]
        assert len(eqs) >= 590 and eqs[-1]["ts"] <= int(bars.ts[599]) + 60_000
        # the cascade: the engine leaves ACTIVE; API and metrics say so
        ld.feed.go()
        ld.wait_paused()
        k = d.bars_processed
        st = json.loads(ld.get("/api/status", token="s3cret-tok")[1])
        assert st["live"]["symbols"]["BTCUSDT"]["state"] == "REDUCING"
        assert st["state"] == "REDUCING" and "cascade" in st["last_decision"]["reasons"]
        m = metrics(ld.get("/metrics", token="s3cret-tok")[1].decode())
        assert m[("liqbot_risk_state", (("symbol", "BTCUSDT"),))] == 1.0
        assert m[("liqbot_risk_reason_active", (("reason", "cascade"), ("symbol", "BTCUSDT")))] == 1
        assert 3900 < k < 4200                       # the synthetic cascade is near the end
        png = ld.get("/api/heatmap.png", token="s3cret-tok")
        assert png[0] == 200 and png[1][:8] == b"\x89PNG\r\n\x1a\n"
        heat = json.loads(ld.get("/api/heatmap?symbol=BTCUSDT", token="s3cret-tok")[1])
        assert len(heat["price"]) > 10 and sum(heat["long"]) > 0
        assert all(abs(p / heat["mark"] - 1) <= 0.15 for p in heat["price"])
        assert ld.get("/api/heatmap?symbol=NOPE", token="s3cret-tok")[0] == 404
        ld.feed.go()
        ld.wait_finished()


def test_status_feed_lag_is_on_the_feed_clock_and_query_errors_name_the_parameter(tmp_path):
    """Top-level `feed_lag_s` of /api/status is the feed clock minus the last processed close,
    as `live.feed_lag_s` and /metrics (before: wall time minus the close, 29 million s on a
    replay of 2026 data that keeps up). A bad ?limit= is not "(ms UTC)"."""
    bars = load_scenario("calm").bars.take(slice(0, 300))
    with LiveDaemon(tmp_path, {bars.symbol: bars}, [at_bar(100), at_bar(200)]) as ld:
        ld.wait_paused()
        # paused with bar 101 closed on the feed clock, bar 100 processed: one bar (60 s)
        st = json.loads(ld.get("/api/status")[1])
        assert st["live"]["bars_processed"] == 100
        assert st["live"]["clock"] == "2026-01-01T01:41:00Z"
        assert st["feed_lag_s"] == 60.0 and st["live"]["feed_lag_s"] == 60.0
        m = metrics(ld.get("/metrics")[1].decode())
        assert m[("liqbot_feed_lag_seconds", (("symbol", bars.symbol),))] == 60.0
        # the daemon one bar past its last commit (commits are batched): the top-level lag
        # is the processed bars', as `live`, not the committed ones' (60 s)
        x = ld.daemon.state[bars.symbol]
        x.last_ts += 60_000
        try:
            st = json.loads(ld.get("/api/status")[1])
        finally:
            x.last_ts -= 60_000
        assert st["live"]["feed_lag_s"] == 0.0 and st["feed_lag_s"] == 0.0
        code, body, _ = ld.get("/api/decisions?limit=1e300")
        assert code == 400
        assert body.decode() == ("?limit= expects a number of rows (an integer, 1 or more; at "
                                 "most 20,000 are returned), got '1e300'")
        for bad in ("0", "-5"):                  # were served as one row
            code, body, _ = ld.get(f"/api/decisions?limit={bad}")
            assert code == 400 and body.decode().endswith(f"1 or more; at most 20,000 are "
                                                          f"returned), got {bad}")
        code, body, _ = ld.get("/api/equity?since=abc")
        assert code == 400
        assert body.decode() == "?since= expects a time in ms UTC (an integer), got 'abc'"
        # a huge but whole limit or since is clamped, not an error
        dec = json.loads(ld.get("/api/decisions?limit=" + "9" * 40)[1])
        assert len(dec["decisions"]) == 100 and dec["more"] is False
        assert json.loads(ld.get("/api/fills?since=" + "9" * 40)[1]) == {"fills": []}
        assert json.loads(ld.get("/api/decisions?since=" + "9" * 40)[1]) == {
            "decisions": [], "more": False}
        ld.feed.go()
        ld.wait_paused()
        st = json.loads(ld.get("/api/status")[1])
        assert st["live"]["bars_processed"] == 200
        assert st["feed_lag_s"] == st["live"]["feed_lag_s"] == 60.0
        ld.feed.go()
        ld.wait_finished()
        # the replay at its end: the feed clock is the last close, no lag
        st = json.loads(ld.get("/api/status")[1])
        assert st["feed_lag_s"] == 0.0 and st["live"]["feed_lag_s"] == 0.0


def test_bind_rules_and_cli_refusal(cli, monkeypatch):
    assert parse_bind("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_bind(":9") == ("127.0.0.1", 9) and parse_bind("9") == ("127.0.0.1", 9)
    assert parse_bind("[::1]:80") == ("::1", 80)
    with pytest.raises(LiqbotError, match="HOST:PORT"):
        parse_bind("localhost:http")
    assert is_local("localhost") and is_local("127.0.0.2") and is_local("::1")
    assert not is_local("0.0.0.0") and not is_local("192.0.2.1")
    assert bind_token("127.0.0.1", {}) is None
    assert bind_token("0.0.0.0", {"LIQBOT_HTTP_TOKEN": "abc"}) == "abc"
    with pytest.raises(LiqbotError, match="LIQBOT_HTTP_TOKEN"):
        bind_token("0.0.0.0", {})
    monkeypatch.delenv("LIQBOT_HTTP_TOKEN", raising=False)
    r = cli("run", "--replay", "calm", "--http", "0.0.0.0:0")
    assert r.code == 2 and "LIQBOT_HTTP_TOKEN" in r.err


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("LIQBOT_CONFIG", None)
    env.pop("LIQBOT_HTTP_TOKEN", None)
    env["COLUMNS"] = "200"
    return env


def three_symbol_daemon(tmp_path: Path, db: str, speed: int) -> tuple[subprocess.Popen, str]:
    """`liqbot run --replay A --replay B --replay C --http` on three synthetic long-crowded
    days (BTC, ETH, SOL) as a subprocess; returns it and the server's base URL."""
    dirs = [symbol_dataset(f"synthetic:{seed}:long:1", sym, tmp_path / sym)
            for seed, sym in ((3, "BTCUSDT"), (4, "ETHUSDT"), (5, "SOLUSDT"))]
    args = [sys.executable, "-m", "bot.cli", "run", "--store", f"sqlite:///{tmp_path}/{db}",
            "--speed", str(speed), "--param", "side=long", "--param", "leverage=5",
            "--http", "127.0.0.1:0"]
    for d in dirs:
        args += ["--replay", str(d)]
    p = subprocess.Popen(args, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, cwd=tmp_path)
    return p, served_url(p)


def test_three_symbols_subprocess_scrape_and_remote_status(tmp_path):
    """`liqbot run --replay A --replay B --replay C --http`: /metrics has all three symbols,
    scrape time measured; `liqbot status --http URL --json` reads the same run remotely."""
    p, url = three_symbol_daemon(tmp_path, "m.db", 1500)
    try:
        m: dict = {}
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                code, body, _ = http_get(url + "/metrics", timeout=5)
            except OSError:
                code = 0
            if code == 200:
                m = metrics(body.decode())
                if all(m.get(("liqbot_bars_total", (("symbol", s),)), 0) >= 120
                       for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT")):
                    break
            assert p.poll() is None, "the daemon exited early"
            time.sleep(0.3)
        for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
            assert m[("liqbot_leverage", (("symbol", s),))] > 0
            assert 0 <= m[("liqbot_risk_state", (("symbol", s),))] <= 2
            assert m[("liqbot_liquidation_distance_pct", (("slot", str(2 * ("BTCUSDT", "ETHUSDT",
                     "SOLUSDT").index(s))), ("symbol", s)))] > 5
        assert m[("liqbot_orders_total", ())] >= 3
        times = []
        for _ in range(30):
            t0 = time.perf_counter()
            code, body, _ = http_get(url + "/metrics")
            times.append((time.perf_counter() - t0) * 1000)
            assert code == 200
        t0 = time.perf_counter()
        http_get(url + "/api/status")
        status_ms = (time.perf_counter() - t0) * 1000
        remote = subprocess.run([sys.executable, "-m", "bot.cli", "status", "--http", url,
                                 "--json"], env=_env(), capture_output=True, text=True,
                                timeout=60)
        assert remote.returncode == 0, remote.stderr
        data = json.loads(remote.stdout)
        assert data["symbols"] == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
        assert set(data["by_symbol"]) == {"BTCUSDT", "ETHUSDT", "SOLUSDT"}
        assert len(data["positions"]) == 3 and data["orders"] >= 3
        text = subprocess.run([sys.executable, "-m", "bot.cli", "status", "--http", url],
                              env=_env(), capture_output=True, text=True, timeout=60)
        assert text.returncode == 0 and "SOLUSDT" in text.stdout
        bad = subprocess.run([sys.executable, "-m", "bot.cli", "status", "--http",
                              f"http://127.0.0.1:{free_port()}"], env=_env(),
                             capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2 and "cannot read the status" in bad.stderr
    finally:
        p.terminate()
        p.wait(60)
    fig = {"metrics_scrape_ms_median": statistics.median(times),
           "metrics_scrape_ms_p95": float(np.percentile(times, 95)),
           "status_ms": status_ms, "symbols": 3}
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "metrics_scrape.json").write_text(json.dumps(fig, indent=1))
    print("metrics scrape (3 symbols):", fig)      # a figure, not a test (house rule)
