"""The exchange emulator against REAL ccxt (`binanceusdm` async + ccxt.pro) on 127.0.0.1:
every figure checked against the kernel's own arithmetic, done by hand here."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import ccxt
import ccxt.async_support as ccxt_async
import ccxt.pro as ccxt_pro
import numpy as np
import pytest

from bot.config import FillsConfig
from bot.data.bars import Bars
from bot.data.dataset import Dataset
from bot.emulator.account import SymbolRules
from bot.emulator.faults import FaultProfile, load_profile
from bot.emulator.server import Emulator, EmulatorConfig, point_ccxt
from bot.errors import ConfigError
from bot.mechanics import account as ac
from bot.mechanics.brackets import shipped

KEY, SECRET = "emuTESTKEY0123456789abcd", "s3cr3t" * 8
START = 1_767_225_600_000          # 2026-01-01T00:00Z
MIN = 60_000
N = 240
HALF_SPREAD = 1e-4                 # 1 bp, impact 0: buys fill at open x 1.0001
TAKER, MAKER = 0.0005, 0.0002


def toy_dataset() -> Dataset:
    """Open rises 10 USDT a bar from 100,000; high/low +-50; mark = trade prices + 1;
    funding 0.0001 settles at the open of bar 120."""
    i = np.arange(N)
    o = 100_000.0 + 10.0 * i
    c = o + 10.0
    fund = np.full(N, np.nan)
    fund[120] = 0.0001
    cols = {"ts": START + i * MIN, "open": o, "high": o + 50, "low": o - 50, "close": c,
            "volume": np.full(N, 100.0), "quote_volume": 100.0 * c,
            "mark_open": o + 1, "mark_high": o + 51, "mark_low": o - 49, "mark_close": c + 1,
            "funding_rate": fund, "open_interest": 80_000.0 + i,
            "open_interest_value": (80_000.0 + i) * c, "long_short_ratio": 1.5 + 0.001 * i}
    return Dataset(Bars("BTCUSDT", MIN, cols))


def cfg(**kw: Any) -> EmulatorConfig:
    base = dict(paused=True, fills=FillsConfig(impact_coef=0.0, half_spread_bps=1.0),
                start_ms=START + 10 * MIN + 1000)
    base.update(kw)
    return EmulatorConfig(**base)


def run(factory: Callable[[Emulator], Awaitable[None]], ds: Dataset | None = None,
        config: EmulatorConfig | None = None, rules: dict[str, SymbolRules] | None = None) -> None:
    async def main() -> None:
        emu = Emulator([ds or toy_dataset()], {KEY: SECRET}, config or cfg(), rules=rules)
        await emu.start()
        try:
            await factory(emu)
        finally:
            await emu.stop()
    asyncio.run(asyncio.wait_for(main(), 60))


def client(emu: Emulator, secret: str = SECRET, pro: bool = False, **opts: Any) -> Any:
    mod = ccxt_pro if pro else ccxt_async
    ex = mod.binanceusdm({"apiKey": KEY, "secret": secret, "enableRateLimit": False,
                          "timeout": opts.pop("timeout", 5000), **opts})
    return point_ccxt(ex, emu.rest_url, emu.ws_url)


async def admin(emu: Emulator, path: str, body: dict[str, Any] | None = None) -> Any:
    async with aiohttp.ClientSession() as s:
        url = emu.rest_url + path
        req = s.post(url, json=body) if body is not None else s.get(url)
        async with req as r:
            return await r.json()


def test_trading_roundtrip_matches_the_kernel() -> None:
    async def body(emu: Emulator) -> None:
        ex = client(emu)
        try:
            markets = await ex.load_markets()
            assert "BTC/USDT:USDT" in markets
            m = markets["BTC/USDT:USDT"]
            assert m["limits"]["cost"]["min"] == 100 and m["precision"]["amount"] == 0.001
            # 10 closed bars and the one in progress (only its open is known: flat)
            ohlcv = await ex.fetch_ohlcv("BTC/USDT:USDT", "1m", since=START, limit=100)
            assert len(ohlcv) == 11
            assert ohlcv[3] == [START + 3 * MIN, 100_030.0, 100_080.0, 99_980.0, 100_040.0,
                                100.0]
            assert ohlcv[10] == [START + 10 * MIN, 100_100.0, 100_100.0, 100_100.0, 100_100.0,
                                 0.0]
            bal = await ex.fetch_balance()
            assert bal["USDT"]["total"] == 10_000.0 and bal["USDT"]["free"] == 10_000.0
            r = await ex.set_leverage(10, "BTC/USDT:USDT")
            assert r["leverage"] == 10
            # market buy at bar 10's open plus the half spread, taker fee
            buy = await ex.create_order("BTC/USDT:USDT", "market", "buy", 0.01,
                                        params={"clientOrderId": "t-buy-1"})
            px = 100_100.0 * (1 + HALF_SPREAD)
            assert buy["status"] == "closed" and buy["clientOrderId"] == "t-buy-1"
            assert buy["average"] == pytest.approx(px, rel=1e-12)
            got = await ex.fetch_order(None, "BTC/USDT:USDT",
                                       params={"origClientOrderId": "t-buy-1"})
            assert got["id"] == buy["id"] and got["filled"] == 0.01
            pos = [p for p in await ex.fetch_positions(["BTC/USDT:USDT"]) if p["contracts"]]
            assert len(pos) == 1 and pos[0]["side"] == "long"
            assert pos[0]["contracts"] == 0.01
            assert pos[0]["entryPrice"] == pytest.approx(px, rel=1e-12)
            # 1,001 USDT of BTC on 10,000 cross: no liquidation price (Binance sends "0")
            assert pos[0]["info"]["liquidationPrice"] == "0"
            assert pos[0]["unrealizedPnl"] == pytest.approx(0.01 * (100_101.0 - px), abs=1e-9)
            # five bars later: reduce-only sell at bar 15's open minus the half spread
            await admin(emu, "/admin/clock", {"advance_ms": 5 * MIN})
            sell = await ex.create_order("BTC/USDT:USDT", "market", "sell", 0.01,
                                         params={"reduceOnly": True, "clientOrderId": "t-sell-1"})
            px2 = 100_150.0 * (1 - HALF_SPREAD)
            assert sell["average"] == pytest.approx(px2, rel=1e-12)
            fees = TAKER * 0.01 * (px + px2)
            bal = await ex.fetch_balance()
            assert bal["USDT"]["total"] == pytest.approx(10_000 + 0.01 * (px2 - px) - fees,
                                                         abs=1e-6)
            trades = await ex.fetch_my_trades("BTC/USDT:USDT")
            assert [t["side"] for t in trades] == ["buy", "sell"]
            assert trades[0]["fee"]["cost"] == pytest.approx(TAKER * 0.01 * px, rel=1e-7)
            assert trades[1]["info"]["realizedPnl"] == f"{0.01 * (px2 - px):.8f}".rstrip("0")
            # a resting limit: listed, then cancelled
            lim = await ex.create_order("BTC/USDT:USDT", "limit", "buy", 0.002, 90_000.0,
                                        params={"clientOrderId": "t-lim-1"})
            assert lim["status"] == "open"
            opened = await ex.fetch_open_orders("BTC/USDT:USDT")
            assert [o["clientOrderId"] for o in opened] == ["t-lim-1"]
            c = await ex.cancel_order(lim["id"], "BTC/USDT:USDT")
            assert c["status"] == "canceled"
            assert await ex.fetch_open_orders("BTC/USDT:USDT") == []
        finally:
            await ex.close()
    run(body)


def test_limit_fills_as_maker_only_when_a_later_bar_trades_through() -> None:
    async def body(emu: Emulator) -> None:
        ex = client(emu)
        try:
            await ex.load_markets()
            # at bar 10 (open 100,100) a buy at 100,080 rests: bar 10 (low 100,050) began
            # before it, so only bar 11 (low 100,060 < 100,080) can fill it, at the limit,
            # as maker
            o = await ex.create_order("BTC/USDT:USDT", "limit", "buy", 0.01, 100_080.0)
            assert o["status"] == "open"
            await admin(emu, "/admin/clock", {"advance_ms": MIN - 1000})   # bar 10 closes
            assert (await ex.fetch_order(o["id"], "BTC/USDT:USDT"))["status"] == "open"
            await admin(emu, "/admin/clock", {"advance_ms": MIN})          # bar 11 closes
            f = await ex.fetch_order(o["id"], "BTC/USDT:USDT")
            assert f["status"] == "closed" and f["average"] == 100_080.0
            t = (await ex.fetch_my_trades("BTC/USDT:USDT"))[-1]
            assert t["takerOrMaker"] == "maker"
            assert t["fee"]["cost"] == pytest.approx(MAKER * 0.01 * 100_080.0, rel=1e-9)
            # funding at bar 120's open: 0.0001 x qty x mark open (100,000 + 1,200 + 1)
            # (ccxt's `total` is the margin balance: wallet + unrealised PnL)
            wallet = float((await ex.fetch_balance())["info"]["totalWalletBalance"])
            await admin(emu, "/admin/clock", {"to_ms": START + 120 * MIN + 1})
            after = float((await ex.fetch_balance())["info"]["totalWalletBalance"])
            assert wallet - after == pytest.approx(0.0001 * 0.01 * 101_201.0, abs=1e-8)
            # a marketable limit (buy above the last price, bar 120's open) fills now, taker
            m = await ex.create_order("BTC/USDT:USDT", "limit", "buy", 0.01, 101_300.0)
            assert m["status"] == "closed"
            assert m["average"] == pytest.approx(101_200.0 * (1 + HALF_SPREAD), rel=1e-12)
        finally:
            await ex.close()
    run(body)


def test_errors_map_to_ccxt_exception_classes() -> None:
    async def body(emu: Emulator) -> None:
        ex = client(emu)
        try:
            await ex.load_markets()
            sym = "BTC/USDT:USDT"
            with pytest.raises(ccxt.InsufficientFunds, match="-2019"):
                await ex.create_order(sym, "market", "buy", 5.0)      # 500k at 20x > 10k
            with pytest.raises(ccxt.InvalidOrder, match="-2022"):
                await ex.create_order(sym, "market", "sell", 0.01, params={"reduceOnly": True})
            with pytest.raises(ccxt.InvalidOrder, match="-4164"):
                await ex.create_order(sym, "market", "buy", 0.001)    # 100 < 200
            await ex.create_order(sym, "limit", "buy", 0.003, 90_000.0,
                                  params={"clientOrderId": "dup-1"})
            with pytest.raises(ccxt.InvalidOrder, match="-4116"):
                await ex.create_order(sym, "limit", "buy", 0.003, 90_000.0,
                                      params={"clientOrderId": "dup-1"})
            with pytest.raises(ccxt.BadSymbol, match="-1121"):
                await ex.fapiPublicGetPremiumIndex({"symbol": "NOPEUSDT"})
            with pytest.raises(ccxt.OrderNotFound, match="-2013"):
                await ex.fetch_order("42", sym)
        finally:
            await ex.close()
        bad = client(emu, secret="wrong" * 8)
        try:
            await bad.load_markets()
            with pytest.raises(ccxt.AuthenticationError, match="-1022"):
                await bad.fetch_balance()
        finally:
            await bad.close()
        late = client(emu)
        late.options["timeDifference"] = 120_000           # nonce 2 min behind
        try:
            await late.load_markets()
            with pytest.raises(ccxt.InvalidNonce, match="-1021"):
                await late.fetch_balance()
        finally:
            await late.close()
        nokey = client(emu)
        nokey.apiKey = "unknownkey0123456789"
        try:
            await nokey.load_markets()
            with pytest.raises(ccxt.AuthenticationError, match="-2015"):
                await nokey.fetch_balance()
        finally:
            await nokey.close()
    run(body, rules={"BTCUSDT": SymbolRules(min_notional=200.0)})


def test_rate_limit_429_then_418_with_retry_after() -> None:
    async def body(emu: Emulator) -> None:
        ex = client(emu)
        try:
            for _ in range(4):
                await ex.fetch_time()
            # ccxt's binance raises DDoSProtection for both 429 and 418 (before reading the
            # body); RateLimitExceeded is its subclass and is not used for them
            with pytest.raises(ccxt.DDoSProtection, match=" 429 ") as limited:
                await ex.fetch_time()
            assert "-1003" in str(limited.value)
            with pytest.raises(ccxt.DDoSProtection, match=" 418 ") as ban:
                await ex.fetch_time()
            assert "banned" in str(ban.value)
        finally:
            await ex.close()
        async with aiohttp.ClientSession() as s, s.get(emu.rest_url + "/fapi/v1/time") as r:
            assert r.status == 418 and int(r.headers["Retry-After"]) == 30
            assert (await r.json())["code"] == -1003
    run(body, config=cfg(weight_limit=4, ban_after=1, ban_s=30.0))


def test_ccxt_pro_watch_ohlcv_and_orders() -> None:
    async def body(emu: Emulator) -> None:
        ex = client(emu, pro=True)
        try:
            await ex.load_markets()
            sym = "BTC/USDT:USDT"
            candles = asyncio.create_task(ex.watch_ohlcv(sym, "1m"))
            orders = asyncio.create_task(ex.watch_orders(sym))
            for _ in range(200):                       # both sockets connected
                if len(emu.hub.conns) >= 2 and any(c.streams for c in emu.hub.conns):
                    break
                await asyncio.sleep(0.01)
            await admin(emu, "/admin/clock", {"advance_ms": MIN - 1000})   # bar 10 closes
            got = await asyncio.wait_for(candles, 5)
            assert got[-1] == [START + 10 * MIN, 100_100.0, 100_150.0, 100_050.0, 100_110.0,
                               100.0]
            await ex.create_order(sym, "market", "buy", 0.01, params={"clientOrderId": "ws-1"})
            seen = await asyncio.wait_for(orders, 5)
            assert seen[-1]["clientOrderId"] == "ws-1"
            more = seen if seen[-1]["status"] == "closed" else \
                await asyncio.wait_for(ex.watch_orders(sym), 5)
            assert more[-1]["status"] == "closed"
            assert more[-1]["average"] == pytest.approx(100_110.0 * (1 + HALF_SPREAD), rel=1e-12)
        finally:
            await ex.close()
    run(body)


def test_timeout_after_accept_leaves_the_order_placed() -> None:
    async def body(emu: Emulator) -> None:
        ex = client(emu, timeout=700)
        try:
            await ex.load_markets()
            with pytest.raises(ccxt.RequestTimeout):
                await ex.create_order("BTC/USDT:USDT", "market", "buy", 0.01,
                                      params={"clientOrderId": "lost-1"})
            o = await ex.fetch_order(None, "BTC/USDT:USDT", params={"origClientOrderId": "lost-1"})
            assert o["status"] == "closed" and o["filled"] == 0.01
            counts = (await admin(emu, "/admin/faults"))["counts"]
            assert counts == {"timeout_after_accept": 1}
        finally:
            await ex.close()
    run(body, config=cfg(faults=FaultProfile(timeout_after_accept=1, hang_s=1.2)))


def test_fault_profiles_load_and_reject_unknown_keys(tmp_path: Any) -> None:
    f = tmp_path / "faults.toml"
    f.write_text("[faults]\nlatency_ms = 20\nmaintenance = [[1, 5]]\n")
    p = load_profile(str(f))
    assert p.latency_ms == 20.0 and p.maintenance == ((1, 5),)
    f.write_text("[faults]\nlatncy_ms = 20\n")
    with pytest.raises(ConfigError, match="latncy_ms"):
        load_profile(str(f))
    assert load_profile("lossy-orders").timeout_after_accept == 1


@pytest.mark.parametrize(("line", "key", "expected"), [
    ('latency_ms = "abc"', "faults.latency_ms", "a finite number of ms in [0, 60,000], got 'abc'"),
    ("latency_ms = 1e300", "faults.latency_ms", "got 1e+300"),
    ("latency_ms = nan", "faults.latency_ms", "got nan"),
    ("latency_ms = 60001", "faults.latency_ms", "in [0, 60,000], got 60001"),
    ("hang_s = inf", "faults.hang_s", "a finite number of seconds in [0, 60], got inf"),
    ("hang_s = true", "faults.hang_s", "got True"),
    ("ws_disconnect_every_s = 86401", "faults.ws_disconnect_every_s", "[0, 86,400], got 86401"),
    ("duplicate_rate = nan", "faults.duplicate_rate", "a fraction in [0, 1], got nan"),
    ("http_5xx_rate = 1.5", "faults.http_5xx_rate", "a fraction in [0, 1], got 1.5"),
    ("reorder_rate = -0.1", "faults.reorder_rate", "got -0.1"),
    ("burst_429 = 1.5", "faults.burst_429", "a whole number of requests in [0, 1,000,000,000], "
                                            "got 1.5"),
    ("timeout_after_accept = true", "faults.timeout_after_accept", "got True"),
    ("timeout_after_accept = -1", "faults.timeout_after_accept", "got -1"),
    ('seed = "x"', "faults.seed", "an integer in [0, 9,223,372,036,854,775,807], got 'x'"),
    ("maintenance = [[5, 1]]", "faults.maintenance", "0 <= start_ms < end_ms), got [5, 1]"),
    ("maintenance = [[1.5, 9]]", "faults.maintenance", "got [1.5, 9]"),
    ("maintenance = 3", "faults.maintenance", "got 3"),
])
def test_fault_profile_values_are_type_and_range_checked(tmp_path: Any, line: str, key: str,
                                                        expected: str) -> None:
    """Before, only negatives and fractions over 1 were refused: a string latency failed
    every request (TypeError in the middleware), 1e300 hung a drill, nan and 1.5 passed."""
    f = tmp_path / "bad.toml"
    f.write_text(f"[faults]\n{line}\n")
    with pytest.raises(ConfigError) as err:
        load_profile(str(f))
    assert err.value.source == str(f)
    assert err.value.problems == [next(p for p in err.value.problems if p.startswith(key))]
    assert err.value.problems[0].startswith(f"{key}: expected ")
    assert err.value.problems[0].endswith(expected)


def test_fault_profile_accepts_the_bounds_and_converts(tmp_path: Any) -> None:
    f = tmp_path / "ok.toml"                 # top level (no [faults] table): keys unprefixed
    f.write_text("latency_ms = 60000\nhang_s = 60\nhttp_5xx_rate = 1\nduplicate_rate = 0\n"
                 "burst_429 = 3\nseed = 0\nstale_every_s = 86400.0\nmaintenance = []\n")
    p = load_profile(str(f))
    assert (p.latency_ms, p.hang_s, p.http_5xx_rate, p.burst_429, p.stale_every_s) == \
        (60_000.0, 60.0, 1.0, 3, 86_400.0)
    assert isinstance(p.latency_ms, float) and isinstance(p.http_5xx_rate, float)
    assert p.maintenance == ()
    f.write_text('latency_ms = "abc"\nbogus = 1\n')
    with pytest.raises(ConfigError) as err:
        load_profile(str(f))
    assert err.value.problems[0].startswith("unknown fault key(s) bogus; known: latency_ms,")
    assert err.value.problems[1] == ("latency_ms: expected a finite number of ms in "
                                     "[0, 60,000], got 'abc'")
    f.write_text("faults = 3\n")
    with pytest.raises(ConfigError, match="faults: expected a table of fault keys, got int"):
        load_profile(str(f))


@pytest.mark.parametrize("command", [["drill", "calm"], ["emulator", "serve", "calm"]])
def test_a_bad_fault_file_exits_2_naming_file_and_key(cli, tmp_path: Any, monkeypatch: Any,
                                                      command: list[str]) -> None:
    """`latency_ms = "abc"` was exit 1 with aiohttp tracebacks (and `emulator serve` started,
    then failed every request): now exit 2 before the emulator starts."""
    import bot.cli.drill
    import bot.cli.emulator

    def started(*a: Any, **k: Any) -> Any:
        raise AssertionError("the emulator was started with a bad fault profile")
    monkeypatch.setattr(bot.cli.drill, "run_drill", started)
    monkeypatch.setattr(bot.cli.emulator, "serve", started)
    f = tmp_path / "faults.toml"
    f.write_text('[faults]\nlatency_ms = "abc"\n')
    r = cli(*command, "--faults", f)
    err = " ".join(r.err.split())
    assert r.code == 2 and "Traceback" not in r.err and r.out == ""
    assert f"{f}: 1 config problem(s): faults.latency_ms: expected a finite number of ms in " \
           "[0, 60,000], got 'abc'" in err


def test_admin_faults_refuses_a_bad_profile_and_keeps_the_old_one() -> None:
    async def body(emu: Emulator) -> None:
        bad = {"latency_ms": "abc", "burst_429": True}
        async with aiohttp.ClientSession() as s, \
                s.post(emu.rest_url + "/admin/faults", json=bad) as r:
            assert r.status == 400
            msg = (await r.json())["error"]
        assert "latency_ms: expected a finite number of ms" in msg
        assert "burst_429: expected a whole number of requests" in msg
        assert emu.faults.profile == FaultProfile()
        async with aiohttp.ClientSession() as s:          # a bare number, then not JSON (500s)
            for payload in ({"json": 3}, {"data": b"latency_ms=5"}):
                async with s.post(emu.rest_url + "/admin/faults", **payload) as r:
                    assert r.status == 400, await r.text()
                    assert "expected" in (await r.json())["error"]
        got = await admin(emu, "/admin/faults", {"latency_ms": 5, "burst_429": 2})
        assert got["profile"]["latency_ms"] == 5.0 and got["profile"]["burst_429"] == 2
    run(body)


def test_admin_clock_refuses_a_bad_body_and_keeps_the_clock() -> None:
    """`{"speed": NaN}` once broke the clock: every later request answered 500 and the
    pump logged a traceback a tick. A bad body is now refused whole (400), nothing applied."""
    async def body(emu: Emulator) -> None:
        before = await admin(emu, "/admin/state")
        async with aiohttp.ClientSession() as s:
            for payload, needle in (
                    ({"data": b'{"speed": NaN}', "headers": {"Content-Type":
                                                              "application/json"}},
                     "speed: expected a number in (0, 1e9], got nan"),
                    ({"json": {"speed": -1}}, "speed: expected a number in (0, 1e9], got -1"),
                    ({"json": {"to_ms": "x", "pause": 1}}, "to_ms: expected a whole number"),
                    ({"json": {"advance_ms": 5, "sped": 2}}, "unknown key 'sped'"),
                    ({"json": [1]}, "expected a JSON object"),
                    ({"data": b"speed=2"}, "expected a JSON object")):
                async with s.post(emu.rest_url + "/admin/clock", **payload) as r:
                    assert r.status == 400, await r.text()
                    msg = (await r.json())["error"]
                    assert msg.startswith("/admin/clock: ") and needle in msg, msg
            async with s.get(emu.rest_url + "/fapi/v1/time") as r:
                assert r.status == 200
        after = await admin(emu, "/admin/state")
        assert after["speed"] == before["speed"] and after["now_ms"] == before["now_ms"]
        assert after["paused"] is True                  # "pause": 1 was not applied either
        got = await admin(emu, "/admin/clock", {"advance_ms": MIN, "speed": 2})
        assert got["now_ms"] == before["now_ms"] + MIN and got["speed"] == 2.0
    run(body)


@pytest.mark.parametrize(("args", "message"), [
    (["--speed", "nan"], "--speed: expected a finite number in [0.001, 1e+07], got nan"),
    (["--speed", "inf"], "--speed: expected a finite number in [0.001, 1e+07], got inf"),
    (["--speed", "0"], "--speed: expected a finite number in [0.001, 1e+07], got 0.0"),
    (["--wallet", "inf"], "--wallet: expected a finite number in [0, 1e+15], got inf"),
    (["--wallet", "nan"], "--wallet: expected a finite number in [0, 1e+15], got nan"),
])
def test_emulator_serve_refuses_non_finite_numbers(cli, monkeypatch: Any, args: list[str],
                                                   message: str) -> None:
    """`--speed nan` said only "less than or equal to 10000000" (`--wallet inf` started)."""
    import bot.cli.emulator

    def started(*a: Any, **k: Any) -> Any:
        raise AssertionError("the emulator was started")
    monkeypatch.setattr(bot.cli.emulator, "serve", started)
    r = cli("emulator", "serve", "calm", "--port", "0", *args)
    assert r.code == 2 and message in " ".join(r.err.split())


def test_cascade_liquidates_at_the_kernel_liquidation_price() -> None:
    from backtests.scenarios import load_scenario

    ds = load_scenario("cascade-long")
    b = ds.bars
    ts, close, mlow = b.ts, b["close"], b["mark_low"]
    j = 4000 + int(np.argmax(close[4000:4056]))          # the top before the cascade
    entry_bar = j + 1
    qty = 3.0

    async def body(emu: Emulator) -> None:
        ex = client(emu)
        try:
            await ex.load_markets()
            await ex.set_leverage(50, "BTC/USDT:USDT")
            o = await ex.create_order("BTC/USDT:USDT", "market", "buy", qty)
            px = o["average"]
            assert px == pytest.approx(float(b["open"][entry_bar]) * (1 + HALF_SPREAD),
                                       rel=1e-12)
            pos = (await ex.fetch_positions(["BTC/USDT:USDT"]))[0]
            # by hand (Binance's cross formula, one position): LP = (WB + cum - q e) /
            # (q mmr - q), in the tier whose notional range holds q LP; tiers of the shipped
            # table with cum from the published recurrence (0, 50, 1300, ...)
            wb = 10_000.0 - TAKER * qty * px
            tiers = [(0, 5e4, 0.004, 0.0), (5e4, 2.5e5, 0.005, 50.0),
                     (2.5e5, 1e6, 0.01, 1_300.0), (1e6, 1e7, 0.025, 16_300.0)]
            lp = next(x for lo_n, hi_n, mmr, cum in tiers
                      for x in [(wb + cum - qty * px) / (qty * mmr - qty)]
                      if lo_n <= qty * x < hi_n)
            acct, p = ac.new_account(10_000.0, 1, leverage=50.0)
            ac.apply_fill(acct, p, 0, qty, px, TAKER)
            fl, cp, mm, cu, _ = ac.stack_brackets([shipped("binance", "BTCUSDT")])
            assert float(ac.liquidation_price(acct, p, 0, np.array([px]), fl, cp, mm, cu)) == \
                pytest.approx(lp, rel=1e-12)                  # the kernel agrees with the hand
            assert pos["liquidationPrice"] == pytest.approx(lp, rel=1e-7)
            hit = entry_bar + int(np.argmax(mlow[entry_bar:] <= lp))
            assert mlow[entry_bar:hit].min() > lp and mlow[hit] <= lp
            # replay at high speed until the position is gone
            await admin(emu, "/admin/clock", {"speed": 120_000.0, "resume": True})
            for _ in range(500):             # v3 positionRisk lists open positions only
                if not await ex.fetch_positions(["BTC/USDT:USDT"]):
                    break
                await asyncio.sleep(0.01)
            assert await ex.fetch_positions(["BTC/USDT:USDT"]) == []
            await admin(emu, "/admin/clock", {"pause": True})
            liq = (await ex.fetch_my_trades("BTC/USDT:USDT"))[-1]
            assert liq["price"] == pytest.approx(lp, rel=1e-9)
            assert liq["timestamp"] == int(ts[hit]) + MIN - 1
            orders = await ex.fetch_orders("BTC/USDT:USDT")
            assert orders[-1]["clientOrderId"].startswith("autoclose-")
            # cross: loss at lp plus the clearance fee (capped at the equity left)
            loss = qty * (px - lp)
            left = 10_000 - TAKER * qty * px - loss
            fee = min(0.0125 * qty * lp, max(left, 0.0))
            bal = (await ex.fetch_balance())["USDT"]["total"]
            assert bal == pytest.approx(left - fee, abs=1e-6)
        finally:
            await ex.close()
    run(body, ds=ds, config=cfg(start_ms=int(ts[entry_bar]) + 500))


def test_no_lookahead_in_served_market_data() -> None:
    async def body(emu: Emulator) -> None:
        async with aiohttp.ClientSession() as s:
            async with s.get(emu.rest_url + "/fapi/v1/klines",
                             params={"symbol": "BTCUSDT", "interval": "1m",
                                     "limit": "1000"}) as r:
                rows = await r.json()
            async with s.get(emu.rest_url + "/futures/data/openInterestHist",
                             params={"symbol": "BTCUSDT", "period": "5m"}) as r:
                oi = await r.json()
            async with s.get(emu.rest_url + "/fapi/v1/premiumIndex",
                             params={"symbol": "BTCUSDT"}) as r:
                prem = await r.json()
        now = START + 10 * MIN + 1000
        assert rows[-1][0] == START + 10 * MIN and len(rows) == 11
        assert all(r[6] < now for r in rows[:-1])
        assert [x["timestamp"] for x in oi] == [START + 5 * MIN, START + 10 * MIN]
        assert oi[-1]["sumOpenInterest"] == "80009"          # the bar closing at 00:10
        assert prem["markPrice"] == "100101" and math.isclose(float(prem["lastFundingRate"]), 0)
    run(body)


def test_stream_and_rest_faults_are_injected_and_counted() -> None:
    async def body(emu: Emulator) -> None:
        ex = client(emu, pro=True)
        try:
            await ex.load_markets()
            sym = "BTC/USDT:USDT"
            # the first watch_positions answers with ccxt's REST snapshot (flat)
            assert await asyncio.wait_for(ex.watch_positions([sym]), 5) == []
            trades = asyncio.create_task(ex.watch_my_trades(sym))
            positions = asyncio.create_task(ex.watch_positions([sym]))
            await asyncio.sleep(0.2)
            await ex.create_order(sym, "market", "buy", 0.01, params={"clientOrderId": "f-1"})
            t = (await asyncio.wait_for(trades, 5))[-1]
            assert t["price"] == pytest.approx(100_100.0 * (1 + HALF_SPREAD), rel=1e-12)
            got = (await asyncio.wait_for(positions, 5))[-1]
            assert got["contracts"] == 0.01 and got["side"] == "long"
            assert got["entryPrice"] == pytest.approx(100_100.0 * (1 + HALF_SPREAD), rel=1e-12)
            # every stream message now sent twice; REST in maintenance for bar 11
            await admin(emu, "/admin/faults", {"duplicate_rate": 1.0, "maintenance": [
                [START + 11 * MIN, START + 12 * MIN]]})
            candles = asyncio.create_task(ex.watch_ohlcv(sym, "1m"))
            for _ in range(300):
                if any(c.streams for c in emu.hub.conns):
                    break
                await asyncio.sleep(0.01)
            sent = emu.hub.sent
            await admin(emu, "/admin/clock", {"advance_ms": MIN - 1000})     # into bar 11
            assert (await asyncio.wait_for(candles, 5))[-1][0] == START + 10 * MIN
            assert emu.hub.sent - sent == 2                 # one kline, twice
            # ccxt maps -1001 to OperationFailed (a BaseError, not a NetworkError)
            with pytest.raises(ccxt.OperationFailed, match="-1001"):
                await ex.fetch_balance()
            counts = (await admin(emu, "/admin/faults"))["counts"]
            assert counts["maintenance"] == 1 and counts["duplicate"] >= 1
        finally:
            await ex.close()
    run(body)


def test_open_interest_is_not_made_up_when_the_dataset_has_none() -> None:
    """A klines-only dataset: /fapi/v1/openInterest carries no openInterest (ccxt reads
    None, the feed NaN), never a "0" that would read as a market nobody holds; with the
    column, the bar closing last: 80,009 at 00:10 (bar 9)."""
    full = toy_dataset().bars
    bare = Dataset(Bars("BTCUSDT", MIN, {k: full[k] if k != "ts" else full.ts
                                         for k in ("ts", "open", "high", "low", "close",
                                                   "volume", "quote_volume")}))

    def body_for(expect: float | None) -> Callable[[Emulator], Awaitable[None]]:
        async def body(emu: Emulator) -> None:
            ex = client(emu)
            try:
                oi = await ex.fetch_open_interest("BTC/USDT:USDT")
            finally:
                await ex.close()
            assert oi["openInterestAmount"] == expect
            assert "openInterest" in oi["info"] if expect is not None \
                else "openInterest" not in oi["info"]
        return body

    run(body_for(None), ds=bare)
    run(body_for(80_009.0))


def test_rules_for_a_symbol_without_exchange_info_scale_with_its_price() -> None:
    from bot.emulator.account import price_grid, rules_for

    assert rules_for("BTCUSDT", np.array([113_456.7])) == SymbolRules()   # Binance's own
    avax = rules_for("AVAXUSDT", np.array([10.128, 10.125, 10.113, 10.13]))
    assert (avax.tick, avax.step, avax.min_qty, avax.max_qty, avax.min_notional) == \
        (0.001, 1.0, 1.0, 1e6, 5.0)
    assert (avax.price_precision, avax.qty_precision) == (3, 0)
    assert rules_for("ETHUSDT", np.array([3_000.55])).step == 0.001       # Binance's
    sol = rules_for("SOLUSDT", np.array([150.55, 149.1]))
    assert (sol.tick, sol.step, sol.qty_precision) == (0.01, 0.1, 1)    # 100 / 150 -> 0.1
    # at 60k-100k the step rule gives BTC's 0.001 (the same granularity in quote)
    assert rules_for("XBTUSDT", np.array([60_000.0])).step == 0.001
    assert price_grid(np.array([0.00012345, 0.00012346])) == 1e-8
    assert price_grid(np.array([67_000.0, 67_001.0])) == 1.0


@pytest.mark.parametrize(("key", "got"), [
    ("short-key_1", "got 11 character(s), fewer than 16, 2 of them neither a letter nor a "
                    "digit (value not shown)"),
    ("abcdefghij-klmnopqrst", "got 21 character(s), 1 of them neither a letter nor a digit "
                              "(value not shown)"),
    ("k" * 129, "got 129 character(s), more than 128 (value not shown)"),
])
def test_emulator_serve_refuses_a_key_its_auth_would_refuse(cli, monkeypatch: Any, key: str,
                                                            got: str) -> None:
    """`LIQBOT_EMULATOR_KEY=short-key_1` started, printed the key as the one to use, and
    every signed request then got -2014 "API-key format invalid". Now exit 2 at start,
    naming the variable and the rule, and never echoing the key or the secret."""
    import bot.cli.emulator

    def started(*a: Any, **k: Any) -> Any:
        raise AssertionError("the emulator was started")
    monkeypatch.setattr(bot.cli.emulator, "serve", started)
    monkeypatch.setenv("LIQBOT_EMULATOR_KEY", key)
    monkeypatch.setenv("LIQBOT_EMULATOR_SECRET", "topsecretvalue")
    r = cli("emulator", "serve", "calm", "--port", "0")
    err = " ".join(r.err.split())
    assert r.code == 2 and "Traceback" not in r.err and r.out == ""
    assert err == ("error: LIQBOT_EMULATOR_KEY: expected an API key of 16 to 128 letters and "
                   "digits ([A-Za-z0-9]{16,128}, Binance's format: the emulator would refuse "
                   f"every request with -2014), {got}")
    assert key not in r.err and "topsecretvalue" not in r.err


def test_emulator_serve_does_not_print_credentials_it_was_given(cli, monkeypatch: Any) -> None:
    """The banner repeated $LIQBOT_EMULATOR_SECRET (and the key); a generated pair is still
    printed, as the client needs it."""
    import bot.cli.emulator

    printed: list[str] = []

    def serve(datasets: Any, keys: dict[str, str], port: int, cfg: Any, on_ready: Any,
              **kw: Any) -> Any:
        async def run() -> None:
            emu = Emulator(datasets, keys, cfg)
            on_ready(emu)
            printed.append(json.dumps(keys))
        return run()
    monkeypatch.setattr(bot.cli.emulator, "serve", serve)
    monkeypatch.setenv("LIQBOT_EMULATOR_KEY", KEY)
    monkeypatch.setenv("LIQBOT_EMULATOR_SECRET", SECRET)
    r = cli("emulator", "serve", "calm", "--port", "0")
    assert r.code == 0, r.err
    assert printed == [json.dumps({KEY: SECRET})]                  # the emulator has them
    # the span in UTC (it was raw ms only)
    assert "liqbot emulator: BTCUSDT from 2026-01-01T00:00:00Z to 2026-01-04T00:00:00Z " \
        "(1767225600000 to 1767484800000 ms)" in r.out, r.out
    assert "  apiKey    from $LIQBOT_EMULATOR_KEY\n  secret    from $LIQBOT_EMULATOR_SECRET\n" \
        in r.out
    assert KEY not in r.out + r.err and SECRET not in r.out + r.err
    monkeypatch.delenv("LIQBOT_EMULATOR_KEY")
    monkeypatch.delenv("LIQBOT_EMULATOR_SECRET")
    printed.clear()
    r = cli("emulator", "serve", "calm", "--port", "0")
    (key, secret), = json.loads(printed[0]).items()
    assert r.code == 0 and f"  apiKey    {key}\n  secret    {secret}\n" in r.out
