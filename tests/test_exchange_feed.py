"""ExchangeFeed through real ccxt / ccxt.pro against tests/fake_binance.py on 127.0.0.1.

Expected values are recomputed by hand from the scripted `Scenario` functions (prices,
liquidation sides and sizes, funding settlements, open-interest periods)."""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import time
import warnings
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pytest

from bot.runtime.exchange_feed import ExchangeFeed
from bot.runtime.feed import BarEvent
from tests.fake_binance import MIN, FakeBinance, Scenario

DAY0 = 1759881600000                      # 2025-10-08T00:00Z
LIVE0 = DAY0 + 7 * 3_600_000 + 30 * MIN   # 07:30Z: minute 30 is the 08:00 settlement
W = 25                                    # first live minute


class Collector:
    """Drains `feed.events()` in a task so the test can wait for bars."""

    def __init__(self, feed: ExchangeFeed) -> None:
        self.events: list[BarEvent] = []
        self.task = asyncio.get_running_loop().create_task(self._run(feed))

    async def _run(self, feed: ExchangeFeed) -> None:
        async for ev in feed.events():
            self.events.append(ev)

    def bars(self, symbol: str) -> dict[int, dict[str, float]]:
        return {int(e.bar["ts"]): e.bar for e in self.events if e.symbol == symbol}

    async def until(self, cond: Callable[[], bool], timeout_s: float = 10.0) -> None:
        end = time.monotonic() + timeout_s
        while not cond():
            if self.task.done():
                self.task.result()
                raise AssertionError("events() ended early")
            if time.monotonic() > end:
                have = [(e.symbol, e.bar["ts"]) for e in self.events]
                raise TimeoutError(f"condition not met; have {have}")
            await asyncio.sleep(0.005)

    async def has(self, sc: Scenario, m: int) -> None:
        await self.until(lambda: all(sc.ts(m) in self.bars(s) for s in sc.symbols))


@asynccontextmanager
async def session(sc: Scenario, clock_ms: int, **kw: Any) -> AsyncIterator[tuple[FakeBinance,
                                                                               ExchangeFeed]]:
    server = FakeBinance(sc, clock_ms)
    await server.start()
    opts: dict[str, Any] = {"requests_per_second": 1000, "grace_ms": 3000, "tick_s": 0.02,
                            "reconnect_s": (0.05, 0.2)}
    opts.update(kw)
    feed = ExchangeFeed(sc.symbols, rest_base_url=server.url, ws_base_url=server.ws_url,
                        clock=server.now_ms, **opts)
    try:
        yield server, feed
    finally:
        await feed.close()
        await server.stop()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def liq_sums(sc: Scenario, si: int, m: int) -> tuple[float, float]:
    """Hand rule: a SELL forceOrder liquidates a long; notional = ap * z."""
    long = sum(ap * z for _, side, ap, z in sc.liquidations(si, m) if side == "SELL")
    short = sum(ap * z for _, side, ap, z in sc.liquidations(si, m) if side == "BUY")
    return long, short


def rest_count(server: FakeBinance, path: str) -> int:
    return server.calls.count(path)


# ---- backfill ------------------------------------------------------------------------------
def test_history_backfills_closed_bars_with_all_series() -> None:
    sc = Scenario(DAY0)

    async def go() -> None:
        async with session(sc, sc.ts(1600) + 30_000) as (server, feed):
            bars = await feed.history("BTCUSDT")
            assert bars is not None and len(bars) == 1500
            # never the in-progress minute 1600 (which REST does return, partially)
            assert bars.ts[0] == sc.ts(100) and bars.ts[-1] == sc.ts(1599)
            assert np.all(np.diff(bars.ts) == MIN)
            i = 1234 - 100
            k = sc.kline(0, 1234)
            assert (bars["open"][i], bars["high"][i], bars["low"][i], bars["close"][i],
                    bars["volume"][i]) == (100_000 + 12_340, 112_347, 112_336, 112_343, 4.0)
            assert bars["close"][i] == k["close"]
            assert (bars["mark_open"][i], bars["mark_high"][i], bars["mark_low"][i],
                    bars["mark_close"][i]) == (112_341, 112_345, 112_338, 112_338)
            fr = bars["funding_rate"]
            # settlements 08:00, 16:00, 24:00 = minutes 480, 960, 1440
            assert np.flatnonzero(np.isfinite(fr)).tolist() == [380, 860, 1340]
            assert fr[380] == pytest.approx(0.0001 + 1e-6 * (479 % 50))
            # OI period k (stamp start + 5k min) is visible from the bar closing after it
            assert bars["open_interest"][i] == 80_000 + 1234 // 5
            assert bars["open_interest"][0] == 80_000 + 20      # bar 100 sees stamp 100
            assert bars["long_short_ratio"][i] == pytest.approx(1.5 + 0.01 * ((1234 // 5) % 20))
            # 1,500 minutes in ccxt pages of 1,000: two klines requests, two mark requests
            assert rest_count(server, "/fapi/v1/klines") == 2
            assert rest_count(server, "/fapi/v1/markPriceKlines") == 2
            assert server.calls[0] == "/fapi/v1/exchangeInfo"
            # until_ms bounds the warm-up (exclusive)
            short = await feed.history("BTCUSDT", until_ms=sc.ts(1000))
            assert short is not None and short.ts[-1] == sc.ts(999) and len(short) == 1000  # data starts at 0

    run(go())


@pytest.mark.parametrize("status,retry_after", [(429, "1"), (418, "0.3")])
def test_rate_limit_honours_retry_after(status: int, retry_after: str,
                                        caplog: pytest.LogCaptureFixture) -> None:
    sc = Scenario(DAY0)
    caplog.set_level(logging.WARNING, "liqbot.feed")

    async def go() -> float:
        async with session(sc, sc.ts(300) + 5_000, warmup_bars=200) as (server, feed):
            server.fail_next["/fapi/v1/klines"] = (status, retry_after)
            t0 = time.monotonic()
            bars = await feed.history("BTCUSDT")
            elapsed = time.monotonic() - t0
            assert bars is not None and len(bars) == 200 and bars.ts[-1] == sc.ts(299)
            assert bars["close"][-1] == sc.kline(0, 299)["close"]
            assert rest_count(server, "/fapi/v1/klines") == 2   # refused once, then served
            return elapsed

    elapsed = run(go())
    assert elapsed >= float(retry_after) - 0.05
    assert any("rate-limited" in r.getMessage() for r in caplog.records)


# ---- live stream ---------------------------------------------------------------------------
def test_live_stream_emits_each_closed_bar_once() -> None:
    sc = Scenario(LIVE0, ("BTCUSDT", "ETHUSDT"))

    async def go() -> tuple[Collector, FakeBinance, list[str]]:
        async with session(sc, sc.ts(W) + 1_000, warmup_bars=10) as (server, feed):
            warm = await feed.history("BTCUSDT")
            await feed.history("ETHUSDT")
            assert warm is not None and warm.ts[0] == sc.ts(15) and warm.ts[-1] == sc.ts(24)
            n_hist = len(server.calls)
            col = Collector(feed)
            await server.wait_subscribed(6)
            for m in range(W, 34):
                await server.play_minute(m)
                if m == 27:   # poll at 27:59.999, before bar 27 closes
                    await feed.poll_positioning()
                if m > W:
                    await col.has(sc, m - 1)
            after = server.calls[n_hist:]
        await col.task   # close() ended the iterator
        return col, server, after

    col, server, after = run(go())
    # only bar 25 (the mark stream connected mid-bar) needed REST: one fill per symbol
    assert after.count("/fapi/v1/markPriceKlines") == 2 and after.count("/fapi/v1/klines") == 2
    assert after.count("/fapi/v1/openInterest") == 2
    for si, s in enumerate(sc.symbols):
        got = [int(e.bar["ts"]) for e in col.events if e.symbol == s]
        assert got == [sc.ts(m) for m in range(W, 33)]          # once each, in order
        bars = col.bars(s)
        for m in range(W, 33):
            b, k = bars[sc.ts(m)], sc.kline(si, m)
            for name, value in k.items():                        # final kline, not partial
                assert b[name] == pytest.approx(value, rel=1e-12), (m, name)
            o, h, lo, c = sc.mark_ohlc(si, m)
            assert (b["mark_open"], b["mark_high"], b["mark_low"], b["mark_close"]) == (o, h, lo, c)
            if m == W:
                assert math.isnan(b["index_close"])              # mark came from REST
            else:
                assert b["index_close"] == c - 3
            long, short = liq_sums(sc, si, m)
            assert b["liq_long_notional"] == pytest.approx(long)
            assert b["liq_short_notional"] == pytest.approx(short)
            if m == 30:
                assert b["funding_rate"] == pytest.approx(sc.rate_estimate(29))
            else:
                assert math.isnan(b["funding_rate"]), m
            if m < 27:
                assert math.isnan(b["open_interest"])
            else:   # polled at 27:59.999: visible from bar 27 on, as-of
                assert b["open_interest"] == 81_000 + 27 * 0.5
                assert b["long_short_ratio"] == pytest.approx(1.5 + 0.01 * (27 // 5))
        # hand check of one liquidation bar: minute 26 (26 % 3 == 2): two SELLs
        o26 = 100_000 + 1000 * si + 260
        assert bars[sc.ts(26)]["liq_long_notional"] == pytest.approx((o26 - 20) * 1.0 +
                                                                     (o26 - 30) * 0.25)
        assert bars[sc.ts(26)]["liq_short_notional"] == 0.0
        assert all(e.received_ms >= e.bar["ts"] + MIN for e in col.events)


def test_disconnect_backfills_the_gap_through_rest(caplog: pytest.LogCaptureFixture) -> None:
    sc = Scenario(LIVE0)
    caplog.set_level(logging.INFO, "liqbot.feed")

    async def go() -> Collector:
        async with session(sc, sc.ts(W) + 1_000, warmup_bars=10) as (server, feed):
            await feed.history("BTCUSDT")
            col = Collector(feed)
            await server.wait_subscribed(3)
            for m in range(W, 28):
                await server.play_minute(m)
            await col.has(sc, 26)
            await server.drop()
            for m in range(28, 31):          # minutes 28-30 pass with nobody connected
                await server.play_minute(m)
            await col.has(sc, 29)            # filled by REST while still disconnected
            server.allow()
            await server.wait_subscribed(3)
            for m in range(31, 34):
                await server.play_minute(m)
            await col.has(sc, 32)
        await col.task
        return col

    col = run(go())
    got = [int(e.bar["ts"]) for e in col.events]
    assert got == [sc.ts(m) for m in range(W, 33)]              # nothing lost, nothing twice
    bars = col.bars("BTCUSDT")
    for m in range(W, 33):
        b, k = bars[sc.ts(m)], sc.kline(0, m)
        assert (b["open"], b["high"], b["low"], b["close"], b["volume"]) == (
            k["open"], k["high"], k["low"], k["close"], k["volume"]), m
        assert b["mark_close"] == sc.mark_ohlc(0, m)[3]
    for m in (28, 29, 30):                                      # REST bars: 6-field OHLCV
        b = bars[sc.ts(m)]
        assert math.isnan(b["taker_buy_volume"]) and math.isnan(b["trades"])
        assert math.isnan(b["liq_long_notional"])               # stream was down: unknown
    assert bars[sc.ts(30)]["funding_rate"] == pytest.approx(sc.settled_rate(sc.ts(30)))
    assert bars[sc.ts(31)]["taker_buy_volume"] == sc.kline(0, 31)["taker_buy_volume"]
    assert bars[sc.ts(31)]["liq_long_notional"] == pytest.approx(liq_sums(sc, 0, 31)[0])
    msgs = [r.getMessage() for r in caplog.records]
    assert any("reconnecting" in m for m in msgs)
    assert any("REST filled" in m for m in msgs)


def test_malformed_messages_are_logged_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    sc = Scenario(LIVE0)
    caplog.set_level(logging.WARNING, "liqbot.feed")
    garbage = {
        "btcusdt@kline_1m": ['{"e": "kline", "s": ', "hello",
                             '{"e":"kline","E":1,"s":"BTCUSDT","k":{"t":' + str(sc.ts(26)) +
                             ',"s":"BTCUSDT","i":"1m","o":"abc","h":"1","l":"1","c":"1",'
                             '"v":"1","x":true}}'],
        "btcusdt@markPrice@1s": ['{"e":"markPriceUpdate","E":' + str(sc.ts(26) + 100) +
                                 ',"s":"BTCUSDT","p":"NaN"}'],
        "btcusdt@forceOrder": ['{"e":"forceOrder","E":5}',
                               '{"e":"forceOrder","E":5,"o":{"s":"BTCUSDT","S":"HOLD",'
                               '"ap":"1","z":"1","T":' + str(sc.ts(26) + 100) + '}}'],
    }

    async def go() -> Collector:
        async with session(sc, sc.ts(W) + 1_000, warmup_bars=10) as (server, feed):
            await feed.history("BTCUSDT")
            col = Collector(feed)
            await server.wait_subscribed(3)
            await server.play_minute(W)
            for stream, texts in garbage.items():
                for text in texts:
                    await server.inject(stream, text)
            for m in range(26, 29):
                await server.play_minute(m)
            await col.has(sc, 27)
        await col.task
        return col

    col = run(go())
    assert [int(e.bar["ts"]) for e in col.events] == [sc.ts(m) for m in range(W, 28)]
    b = col.bars("BTCUSDT")[sc.ts(26)]
    assert b["open"] == sc.kline(0, 26)["open"] and b["mark_low"] == sc.mark_ohlc(0, 26)[2]
    assert b["liq_long_notional"] == pytest.approx(liq_sums(sc, 0, 26)[0])
    for m in (26, 27):   # the kline connection survived the bad frame: stream, not REST, bars
        assert col.bars("BTCUSDT")[sc.ts(m)]["taker_buy_volume"] == \
            sc.kline(0, m)["taker_buy_volume"]
    skipped = [r for r in caplog.records if r.name == "liqbot.feed" and "malformed" in
               r.getMessage()]
    assert len(skipped) == 6


def test_close_is_clean(caplog: pytest.LogCaptureFixture) -> None:
    sc = Scenario(LIVE0)
    caplog.set_level(logging.DEBUG)

    async def go() -> tuple[ExchangeFeed, Collector]:
        async with session(sc, sc.ts(W) + 1_000) as (server, feed):
            col = Collector(feed)
            await server.wait_subscribed(3)
            await server.play_minute(W)
        await asyncio.wait_for(col.task, 2)                     # events() ended
        return feed, col

    gc.collect()          # earlier tests' garbage must not be blamed on this feed
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        feed, col = run(go())
        gc.collect()
    assert col.task.done() and not feed._tasks
    assert not feed._ws.clients
    assert not [r for r in caplog.records if "Unclosed" in r.getMessage()]
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaks, leaks


def test_an_unreachable_or_far_off_venue_is_a_clear_error() -> None:
    """With no network `liqbot run` exited 1 ('This is a bug') on ccxt's
    ExchangeNotAvailable; against an emulator replaying 2025 on its own clock it logged a
    skew of -29,307,035,989 ms and waited for a bar that could never close."""
    from bot.errors import LiqbotError
    from bot.runtime.exchange_feed import wall_clock_ms

    async def unreachable() -> None:
        feed = ExchangeFeed(("BTCUSDT",), rest_base_url="http://127.0.0.1:9", timeout_s=2.0)
        try:
            with pytest.raises(LiqbotError, match=r"cannot reach binanceusdm at "
                                                  r"http://127.0.0.1:9 \(\w+\)"):
                await feed.history("BTCUSDT")
        finally:
            await feed.close()

    async def skewed() -> None:
        sc = Scenario(DAY0)
        server = FakeBinance(sc, sc.ts(1600))              # 2025-10-09 on the server's clock
        await server.start()
        feed = ExchangeFeed(sc.symbols, rest_base_url=server.url, ws_base_url=server.ws_url,
                            clock=wall_clock_ms)
        try:
            with pytest.raises(LiqbotError, match=r"reports a server time -\d+\.\d\d days from "
                                                  r"this machine's clock"):
                await feed.history("BTCUSDT")
        finally:
            await feed.close()
            await server.stop()

    run(unreachable())
    run(skewed())


def test_an_open_interest_poll_against_a_venue_that_is_down_warns_and_returns() -> None:
    """The poll runs as a background task: its exception printed asyncio's "Task exception
    was never retrieved" traceback when the venue went down. It warns per symbol now, and
    the task wrapper logs anything else (`daemon._background`)."""
    import ccxt

    from bot.runtime.daemon import _background

    feed = ExchangeFeed(["BTCUSDT", "ETHUSDT"])

    async def loaded() -> None:
        return None

    async def down(symbol: str) -> Any:
        raise ccxt.ExchangeNotAvailable("binanceusdm GET http://127.0.0.1:1/fapi/v1/openInterest")

    async def broken() -> None:
        raise RuntimeError("a bug")

    async def main() -> None:
        feed._load = loaded                          # type: ignore[method-assign]
        feed.rest.positioning = down                 # type: ignore[method-assign]
        await feed.poll_positioning()
        t = _background(broken(), "open-interest poll")
        await asyncio.gather(t, return_exceptions=True)
        await feed.rest.close()

    # a handler on the two loggers themselves: an earlier test's `liqbot` logging set-up
    # (its level, propagate off) can hide their records from caplog in a full run
    said: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            said.append(record.getMessage())

    keep = Keep(logging.WARNING)
    loggers = [logging.getLogger(n) for n in ("liqbot.feed", "liqbot.daemon")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(keep)
        lg.setLevel(logging.WARNING)
    try:
        asyncio.run(main())
    finally:
        for lg, lv in zip(loggers, levels, strict=True):
            lg.removeHandler(keep)
            lg.setLevel(lv)
    assert sum("open-interest poll failed (ExchangeNotAvailable" in m for m in said) == 2
    assert any(m.startswith("open-interest poll failed: ") and "a bug" in m for m in said)
