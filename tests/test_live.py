"""The live broker's rules without a venue (ledger, caps, lot steps) and `run --live`'s
safety switches on the command line."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bot.execution.broker import Order
from bot.execution.live import Inflight, LiveBroker, LiveSettings
from bot.execution.reconcile import Ledger, position_diffs, wallet_differs
from bot.execution.venues import VENUES, venue_for
from bot.mechanics import account as ac
from bot.mechanics.brackets import shipped

BTC = "BTCUSDT"


class _NoExchange:
    """Only what the checks below touch: ccxt's decimal formatting of an amount."""

    def amount_to_precision(self, symbol: str, amount: float) -> str:
        return f"{amount:.3f}"


def _broker(**kw: float) -> LiveBroker:
    b = LiveBroker(_NoExchange(), VENUES["binanceusdm"], [BTC], [shipped("binance", BTC)],
                   60_000, LiveSettings(**kw))  # type: ignore[arg-type]
    b.step[BTC] = 0.001
    b.set_mark(BTC, 100_000.0)
    return b


def test_a_trade_seen_on_rest_and_stream_counts_once() -> None:
    led = Ledger()
    led.rest_from[BTC] = 5_000_010
    assert not led.take(BTC, 5_000_009)            # before the run: history, not ours
    assert led.take(BTC, 5_000_012)                # stream first, out of order
    assert not led.take(BTC, 5_000_012)            # the stream repeats it
    assert led.take(BTC, 5_000_010)                # REST finds the one the stream skipped
    assert led.take(BTC, 5_000_011)
    led.advance(BTC, 5_000_011)                    # REST read up to 11
    assert not led.take(BTC, 5_000_012)            # REST offers 12 later: already counted
    assert led.rest_from[BTC] == 5_000_012 and led.seen[BTC] == {5_000_012}
    assert led.duplicates == 3
    back = Ledger.from_json(led.to_json())          # through a checkpoint
    assert not back.take(BTC, 5_000_012) and back.take(BTC, 5_000_013)
    assert led.take_funding(9_000_000_001) and not led.take_funding(9_000_000_001)


def test_positions_and_wallet_differ_beyond_the_venue_rounding() -> None:
    ours = {BTC: (0.5, 100_000.0), "ETHUSDT": (0.0, 0.0)}
    same = {BTC: (0.5000000001, 100_000.00001)}
    assert position_diffs(ours, same, {BTC: 0.001}) == []
    d = position_diffs(ours, {BTC: (0.499, 100_000.0), "ETHUSDT": (2.0, 3_000.0)},
                       {BTC: 0.001, "ETHUSDT": 0.001})
    assert [(x.symbol, x.theirs_qty) for x in d] == [(BTC, 0.499), ("ETHUSDT", 2.0)]
    assert "adopted" in d[0].message()
    assert not wallet_differs(100_000.0, 100_000.00005)
    assert wallet_differs(100_000.0, 100_000.01)


def test_caps_bind_orders_that_grow_exposure_only() -> None:
    b = _broker(max_order_notional=50_000.0, max_day_notional=120_000.0)
    b.now_ms = 1_767_225_600_000                   # 2026-01-01
    w = (0.0, 0.0, 0.0)
    # 0.6 BTC at a 100,000 mark = 60,000 quote: over the per-order cap
    assert "per-order cap" in b._refuse(Order("lq1", BTC, 0, 0.6, False, w))
    assert b._refuse(Order("lq2", BTC, 0, 0.45, False, w)) == ""
    b.day_notional = 100_000.0                     # sent earlier today
    assert "per-day cap" in b._refuse(Order("lq3", BTC, 0, 0.25, False, w))
    assert b._refuse(Order("lq4", BTC, 0, -5.0, True, w)) == ""     # reduce-only: exempt
    b.now_ms += 86_400_000                         # the next UTC day starts from zero
    assert b._refuse(Order("lq5", BTC, 0, 0.25, False, w)) == ""
    assert "hedge" in b._refuse(Order("lq6", BTC, 1, 0.1, False, w))
    # a flip counts only what goes beyond flat (it was refused whole, leaving the long on):
    # long 0.4 -> short 0.45 is an order of 0.85 BTC, 85,000 quote, of which 45,000 grows
    # exposure; a reduction grows nothing
    b.pos[0, ac.P_QTY] = 0.4
    assert b._refuse(Order("lq7", BTC, 0, -0.85, False, w)) == ""
    assert b._growth(Order("lq7", BTC, 0, -0.85, False, w)) == pytest.approx(0.45)
    assert b._refuse(Order("lq8", BTC, 0, -0.3, False, w)) == ""        # a reduction
    assert "per-order cap" in b._refuse(Order("lq9", BTC, 0, -1.0, False, w))   # 60,000 beyond
    assert "per-order cap" in b._refuse(Order("lq10", BTC, 0, 0.6, False, w))   # growth


def test_orders_go_out_in_whole_lot_steps() -> None:
    b = _broker()
    w = (0.0, 0.0, 0.0)
    assert b._lots(Order("a", BTC, 0, 1.23456, False, w)) == 1.234      # rounded down
    assert b._lots(Order("b", BTC, 0, -0.0009999999999998, True, w)) == 0.001   # float dust
    assert b._lots(Order("c", BTC, 0, 0.0004, False, w)) == 0.0
    assert math.isinf(LiveSettings().max_order_notional)


def test_only_binance_is_built() -> None:
    assert venue_for("binance").unified(BTC) == "BTC/USDT:USDT"
    assert VENUES["binanceusdm"].valid_client_id("lq0123456789ab-17")
    import pytest

    from bot.errors import ConfigError
    with pytest.raises(ConfigError, match="not built"):
        venue_for("okx")


def test_snapshot_restores_orders_as_unknown() -> None:
    b = _broker()
    b.submit(Order("lq9", BTC, 0, 0.5, False, (1.0, 2.0, 3.0)))
    b.submit(Order("lq9", BTC, 0, 0.5, False, (1.0, 2.0, 3.0)))   # a re-decided bar: once
    snap = b.snapshot()
    c = _broker()
    c.restore(snap)
    assert c.restored and c.queue == [] and list(c.inflight) == ["lq9"]
    assert c.inflight["lq9"].state == "unknown"     # looked up by client id before any resend
    np.testing.assert_array_equal(c.pos, b.pos)


def _live_config(tmp_path: Path, caps: bool) -> Path:
    p = tmp_path / "live.toml"
    p.write_text('mode = "live"\n[live]\n' + ("max_order_notional = 1000.0\n"
                                              "max_day_notional = 5000.0\n" if caps else ""))
    return p


def test_run_live_needs_caps_and_credentials(cli, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("LIQBOT_API_KEY", raising=False)
    monkeypatch.delenv("LIQBOT_API_SECRET", raising=False)
    r = cli("--config", _live_config(tmp_path, True), "run", "--live")
    assert r.code == 2 and "no credentials" in r.err
    monkeypatch.setenv("LIQBOT_API_KEY", "k" * 24)
    monkeypatch.setenv("LIQBOT_API_SECRET", "s" * 48)
    r = cli("--config", _live_config(tmp_path, False), "run", "--live")
    assert r.code == 2 and "live.max_order_notional, live.max_day_notional must be set" in r.err
    assert "s" * 48 not in r.err + r.out
    r = cli("--config", _live_config(tmp_path, True), "run", "--live", "--replay", "calm")
    assert r.code == 2 and "liqbot drill" in r.err
    r = cli("run", "--preflight")
    assert r.code == 2 and "--preflight" in r.err


class _FakeVenue(_NoExchange):
    """An async exchange that has no order until one is created; records what it was sent."""

    def __init__(self) -> None:
        self.created: list[float] = []

    async def fetch_order(self, *args: object, **kw: object) -> dict[str, object]:
        import ccxt
        raise ccxt.OrderNotFound("binanceusdm Order does not exist.")

    async def create_order(self, symbol: str, kind: str, side: str, amount: float,
                           price: object, params: object) -> dict[str, object]:
        self.created.append(amount)
        return {"id": str(len(self.created)), "status": "open", "amount": amount}


def _venue_broker(**kw: float) -> tuple[LiveBroker, _FakeVenue]:
    ex = _FakeVenue()
    b = LiveBroker(ex, VENUES["binanceusdm"], [BTC], [shipped("binance", BTC)],  # type: ignore[arg-type]
                   60_000, LiveSettings(**kw))
    b.step[BTC] = 0.001
    b.set_mark(BTC, 100.0)
    b.unified[BTC] = "BTC/USDT:USDT"
    return b, ex


def test_a_restored_never_sent_order_meets_the_caps_and_the_lot_step() -> None:
    import asyncio
    a, _ = _venue_broker(max_order_notional=100.0, max_day_notional=1000.0)
    a.submit(Order("lq-big", BTC, 0, 12.3456789, False, (0.0, 0.0, 0.0)))     # 1,234.57 quote
    a.submit(Order("lq-ok", BTC, 0, 0.5678912, False, (0.0, 0.0, 0.0)))       # 56.79 quote
    snap = a.snapshot()                  # committed, then killed before `flush`
    b, ex = _venue_broker(max_order_notional=100.0, max_day_notional=1000.0)
    b.restore(snap)
    assert b.inflight["lq-big"].amount == -1.0          # never sent: nothing known yet
    asyncio.run(b._resolve_unknown())
    assert ex.created == [0.567]         # the capped one refused, the other in whole lots
    assert "lq-big" not in b.inflight and b.stats["capped"] == 1
    assert b.day_notional == pytest.approx(56.7)


def test_a_malformed_trade_is_skipped_without_spending_its_id() -> None:
    import asyncio
    b, _ = _venue_broker(max_order_notional=1e6, max_day_notional=1e7)
    b.inflight["lq-1"] = Inflight(Order("lq-1", BTC, 0, 0.5, False, (0.0, 0.0, 0.0)),
                                  "open", 0.5, "77")
    b.order_cid["77"] = "lq-1"
    bad = {"id": 501, "timestamp": None, "amount": 0.5, "price": 100.0, "side": "buy",
           "order": "77", "info": {"c": "lq-1"}}
    good = dict(bad, timestamp=1_700_000_000_000)
    assert asyncio.run(b._offer_trade(BTC, bad, "ws")) is False
    assert asyncio.run(b._offer_trade(BTC, good, "rest")) is True      # not lost
    assert asyncio.run(b._offer_trade(BTC, good, "ws")) is False       # counted once
    assert [e.data["dq"] for e in b.buffer[BTC]] == [0.5]


def test_an_order_answered_new_retires_once_its_trades_fill_it() -> None:
    b, _ = _venue_broker(max_order_notional=1e6, max_day_notional=1e7)
    f = Inflight(Order("lq-2", BTC, 0, 0.5, False, (0.0, 0.0, 0.0)), "open", 0.5, "78")
    b.inflight["lq-2"] = f               # executed unknown (-1): the venue said NEW
    f.booked = 0.4999999                 # float dust of partial fills, within half a lot
    b._retire()
    assert "lq-2" not in b.inflight


def test_no_order_leaves_without_a_valid_mark() -> None:
    b, _ = _venue_broker(max_order_notional=1e6, max_day_notional=1e7)
    b.marks[:] = np.nan
    assert "no valid mark" in b._refuse(Order("lq-3", BTC, 0, 0.5, False, (0.0, 0.0, 0.0)))


# ---------------------------------------------------------------- review of 2026-12-03
T0 = 1_767_225_600_000                  # 2026-01-01T00:00Z: the venue's time at the start
DAY = 86_400_000


def _row(tid: int, ts: int, qty: float, oid: str, fee: float = 0.0,
         fee_asset: str = "USDT") -> dict[str, object]:
    """A trade as ccxt parses a REST `userTrades` row (no client id in it)."""
    return {"id": str(tid), "timestamp": ts, "amount": abs(qty), "price": 100.0,
            "side": "buy" if qty > 0 else "sell", "order": oid,
            "fee": {"cost": fee, "currency": fee_asset}, "info": {"orderId": oid}}


class _Books(_NoExchange):
    """An async venue with a trade history, orders named by id, one BTC position and a
    wallet; `inject` runs once when the positions are read (a trade executing then)."""

    def __init__(self) -> None:
        self.trades: list[dict[str, object]] = []
        self.orders: dict[str, str] = {}              # order id -> client id
        self.qty, self.wallet = 0.0, 10_000.0
        self.reads: list[tuple[int | None, dict[str, object]]] = []
        self.inject: object = None

    async def load_markets(self) -> dict[str, object]:
        return {}

    def market(self, symbol: str) -> dict[str, object]:
        return {"precision": {"amount": 0.001}}

    async def fetch_time(self) -> int:
        return T0

    async def fetch_my_trades(self, symbol: str, since: int | None = None,
                              limit: int | None = None,
                              params: dict[str, object] | None = None) -> list[object]:
        p = dict(params or {})
        self.reads.append((since, p))
        rows = sorted(self.trades, key=lambda r: int(r["id"]))       # type: ignore[arg-type]
        if "fromId" in p:
            rows = [r for r in rows if int(r["id"]) >= int(p["fromId"])]  # type: ignore[arg-type]
        elif since is not None:
            end = int(p.get("endTime", since + 7 * DAY - 1))              # type: ignore[arg-type]
            assert end - since < 7 * DAY                  # Binance refuses a longer window
            rows = [r for r in rows if since <= int(r["timestamp"]) <= end]  # type: ignore[arg-type]
        else:                                             # no window: the last 7 days only
            rows = [r for r in rows if int(r["timestamp"]) > T0 - 7 * DAY][-(limit or 500):]  # type: ignore[arg-type]
        return rows[:limit] if limit else rows

    async def fetch_order(self, oid: object, symbol: str,
                          params: dict[str, object] | None = None) -> dict[str, object]:
        import ccxt
        if oid is not None and str(oid) in self.orders:
            return {"id": str(oid), "clientOrderId": self.orders[str(oid)], "status": "closed",
                    "filled": 0.5, "amount": 0.5}
        raise ccxt.OrderNotFound("binanceusdm Order does not exist.")

    async def fetch_balance(self) -> dict[str, object]:
        return {"info": {"totalWalletBalance": f"{self.wallet:.8f}"}}

    async def fetch_positions(self, symbols: list[str]) -> list[dict[str, object]]:
        if callable(self.inject):
            self.inject()
            self.inject = None
        if not self.qty:
            return []
        return [{"info": {"symbol": BTC}, "contracts": abs(self.qty),
                 "side": "long" if self.qty > 0 else "short", "entryPrice": 100.0}]

    async def fetch_open_orders(self, symbol: str) -> list[object]:
        return []


def _books_broker(symbols: tuple[str, ...] = (BTC,)) -> tuple[LiveBroker, _Books]:
    ex = _Books()
    b = LiveBroker(ex, VENUES["binanceusdm"], list(symbols),  # type: ignore[arg-type]
                   [shipped("binance", BTC) for _ in symbols], 60_000,
                   LiveSettings(max_order_notional=1e6, max_day_notional=1e7))
    for s in symbols:
        b.step[s] = 0.001
        b.set_mark(s, 100.0)
    b.acct[0] = 10_000.0
    b.now_ms = T0 + 120_000
    return b, ex


def _bar(b: LiveBroker, ts: int = T0) -> list[float]:
    fills, _ = b.on_bar_open(BTC, ts - ts % 60_000, 100.0, 100.0, 100.0, 100.0, 0.0)
    return [f.qty for f in fills]


def test_a_trade_executing_between_the_trade_read_and_the_snapshot_is_booked_once() -> None:
    import asyncio

    b, ex = _books_broker()
    b.acct[ac.A_WALLET] = 10_000.0
    b.inflight["lq-r1"] = Inflight(Order("lq-r1", BTC, 0, 0.5, False, (0.0, 0.0, 0.0)),
                                   "open", 0.5, "91")   # answered NEW: fills later
    b.order_cid["91"] = "lq-r1"
    b.ledger.ours.add("lq-r1")
    b.ledger.rest_from[BTC] = 100

    def fills_now() -> None:            # after our trade read, before the position snapshot
        ex.trades.append(_row(100, T0 + 60_000, 0.5, "91"))
        ex.qty = 0.5
    ex.inject = fills_now
    asyncio.run(b.reconcile())
    assert b.stats["adopted"] == 0 and b.stats["reconcile_deferred"] == 1
    assert b.pos[0, ac.P_QTY] == 0.0    # nothing adopted: the trade waits in the buffer
    asyncio.run(b._read_trades(BTC))   # the next sync's read: already counted
    assert _bar(b, T0 + 60_000) == [0.5]
    assert b.pos[0, ac.P_QTY] == 0.5   # = the venue's (the old order adopted it: 1.0)
    asyncio.run(b.reconcile())          # nothing moved this time: judged, equal
    assert b.stats["adopted"] == 0 and b.pos[0, ac.P_QTY] == 0.5
    assert b.stats["reconcile_deferred"] == 1


def test_trades_of_an_earlier_run_are_not_ours_and_the_first_read_starts_at_the_run_start(
        ) -> None:
    import asyncio
    b, ex = _books_broker()
    # an earlier run of this daemon (same "lq" prefix) traded 8 days before this start: the
    # venue's no-window read (last 7 days) does not list it
    ex.trades.append(_row(5, T0 - 8 * DAY, 0.3, "50"))
    ex.orders["50"] = "lq0123456789ab-3"
    asyncio.run(b.start(configure=False))
    assert BTC not in b.ledger.rest_from and b.ledger.since_ms[BTC] == T0
    # this run's order fills 15 days later (the broker read nothing in between)
    b.inflight["lq0123456789ab-9"] = Inflight(
        Order("lq0123456789ab-9", BTC, 0, 0.5, False, (0.0, 0.0, 0.0)), "open", 0.5, "60")
    b.ledger.ours.add("lq0123456789ab-9")
    ex.trades.append(_row(6, T0 + 15 * DAY, 0.5, "60"))
    ex.orders["60"] = "lq0123456789ab-9"
    b.now_ms = T0 + 20 * DAY
    asyncio.run(b._read_trades(BTC))
    assert [e.data["trade_id"] for e in b.buffer[BTC]] == [6]     # not trade 5
    windows = [(since, p["endTime"]) for since, p in ex.reads if since is not None
               and "endTime" in p]
    assert windows == [(T0, T0 + 7 * DAY - 1), (T0 + 7 * DAY, T0 + 14 * DAY - 1),
                       (T0 + 14 * DAY, T0 + 21 * DAY - 1)]
    assert all(p.get("fromId") != 0 for _, p in ex.reads)
    assert b.ledger.rest_from[BTC] == 7 and BTC not in b.ledger.since_ms
    # "ours" is what was sent, not a prefix: an unknown lq id is foreign, a checkpointed one
    # (sent by the run this one resumes) is ours
    b.ledger.ours.add("lq0123456789ab-7")
    ex.trades += [_row(7, T0 + 16 * DAY, 0.1, "70"), _row(8, T0 + 16 * DAY, 0.2, "80")]
    ex.orders.update({"70": "lq0123456789ab-4", "80": "lq0123456789ab-7"})
    asyncio.run(b._read_trades(BTC))
    assert [e.data["trade_id"] for e in b.buffer[BTC]] == [6, 8]
    assert [e["event_key"] for e in b.events if e["kind"] == "foreign_trade"] == \
        [f"foreign-{BTC}-7"]
    back = Ledger.from_json(b.ledger.to_json())
    assert "lq0123456789ab-7" in back.ours and back.rest_from[BTC] == 9


def test_a_fee_paid_in_bnb_is_not_taken_from_the_usdt_wallet() -> None:
    import asyncio

    b, ex = _books_broker((BTC, "BNBUSDT"))
    b.set_mark("BNBUSDT", 600.0)
    b.acct[ac.A_WALLET] = 10_000.0
    b.inflight["lq-b1"] = Inflight(Order("lq-b1", BTC, 0, 0.5, False, (0.0, 0.0, 0.0)),
                                   "open", 0.5, "91")
    b.order_cid["91"] = "lq-b1"
    b.ledger.rest_from[BTC] = 100
    ex.trades.append(_row(100, T0 + 60_000, 0.5, "91", 0.0123, "BNB"))
    ex.qty = 0.5
    asyncio.run(b._read_trades(BTC))
    assert _bar(b, T0 + 60_000) == [0.5]
    assert b.acct[ac.A_WALLET] == 10_000.0         # the old booking: 9,999.9877
    assert b.fees_other == {"BNB": 0.0123}
    ev = [e for e in b.events if e["kind"] == "fee_other_asset"]
    assert len(ev) == 1 and ev[0]["data"]["fee"] == 0.0123
    assert ev[0]["data"]["quote_value"] == pytest.approx(7.38)    # 0.0123 BNB x 600
    b.inflight.clear()
    asyncio.run(b.reconcile())                     # the venue's USDT wallet did not move
    assert b.stats["adopted"] == 0
    assert not [e for e in b.events if e["kind"] == "wallet_adopted"]
    # a USDT fee still moves the wallet: selling 0.5 at 100 with a 0.02 USDT fee
    b.inflight["lq-b2"] = Inflight(Order("lq-b2", BTC, 0, -0.5, True, (0.0, 0.0, 0.0)),
                                   "open", 0.5, "92")
    b.order_cid["92"] = "lq-b2"
    ex.trades.append(_row(101, T0 + 120_000, -0.5, "92", 0.02, "USDT"))
    asyncio.run(b._read_trades(BTC))
    assert _bar(b, T0 + 120_000) == [-0.5]
    assert b.acct[ac.A_WALLET] == pytest.approx(10_000.0 - 0.02, abs=1e-9)


def test_a_rest_url_with_user_and_password_is_refused_without_echoing_it(cli, tmp_path) -> None:
    p = tmp_path / "live.toml"
    p.write_text('mode = "live"\n[live]\nmax_order_notional = 1000.0\n'
                 'max_day_notional = 5000.0\n'
                 'rest_url = "http://alice:Pa55-w0rd-xyz@127.0.0.1:8081"\n')
    r = cli("--config", p, "run", "--live")
    assert r.code == 2 and "live.rest_url" in r.err and "user information" in r.err
    assert "Pa55-w0rd-xyz" not in r.err + r.out
    p.write_text('[live]\nws_url = "ws://t0kenSecret99@127.0.0.1:8082/ws"\n')
    r = cli("--config", p, "run", "--live")
    assert r.code == 2 and "live.ws_url" in r.err and "t0kenSecret99" not in r.err + r.out


# ------------------------------------------ a lost order the venue's look-up does not show
EKEY, ESECRET = "liveTESTkey0123456789abc", "live-test-secret-" + "w" * 24


async def _emulated(faults: object, **settings: Any) -> tuple[Any, Any, LiveBroker, Any]:
    """The calm scenario's first 50 bars in an emulator started at bar 10 with `faults`,
    and a LiveBroker (real ccxt.pro) on it: (bars, emulator, broker, exchange). The
    caller starts the broker and closes both."""
    import ccxt.pro as ccxt_pro

    from backtests.scenarios import load_scenario
    from bot.data.dataset import Dataset
    from bot.emulator.server import Emulator, EmulatorConfig, point_ccxt

    bars = load_scenario("calm").bars.take(slice(0, 50))
    emu = Emulator([Dataset(bars)], {EKEY: ESECRET},
                   EmulatorConfig(paused=True, start_ms=int(bars.ts[10]), wallet=10_000.0,
                                  weight_limit=10**9, faults=faults))  # type: ignore[arg-type]
    await emu.start()
    ex = point_ccxt(ccxt_pro.binanceusdm({"apiKey": EKEY, "secret": ESECRET,
                                          "enableRateLimit": False, "timeout": 10_000}),
                    emu.rest_url, emu.ws_url)
    b = LiveBroker(ex, VENUES["binanceusdm"], [bars.symbol], [shipped("binance", bars.symbol)],
                   bars.interval_ms, LiveSettings(leverage=5, backoff_s=0.05, **settings))
    return bars, emu, b, ex


async def _lost_order_hidden(hide_s: float, later_s: float, recv_window_ms: int
                             ) -> dict[str, Any]:
    """Real ccxt against the emulator: the first order's answer is lost and the venue's
    order look-up does not show it for `hide_s` (its trade is in the history at once).
    One clock, set by the test, ends the hiding and dates the broker's sends (the
    deadline `sent + recvWindow + tolerance`): the broker flushes at 0, syncs and flushes
    again at `later_s` (still hidden), then once it is visible. No wall-clock race: a
    stall of the machine cannot move the hiding past the test's steps (before 2026-12-06
    it could, and the order stayed pending)."""
    from bot.emulator.faults import FaultProfile

    clock_ms = [int(time.time() * 1000)]
    faults = FaultProfile(timeout_after_accept=1, hang_s=0.0, hide_lost_order_s=hide_s)
    bars, emu, b, _ = await _emulated(faults, attempts=3, recv_window_ms=recv_window_ms,
                                      use_ws=False)
    emu.routes.wall = lambda: clock_ms[0] / 1000.0
    b._request_ms = lambda: clock_ms[0]
    sym = bars.symbol
    now = int(bars.ts[10])

    def placed() -> int:
        a = emu.venue.accounts.get(EKEY)
        return 0 if a is None else sum(o.client_id == "lqrace-1" for o in a.orders.values())
    try:
        await b.start()
        await b.sync(now)
        b.set_mark(sym, float(bars.close[9]))
        b.submit(Order("lqrace-1", sym, 0, 0.01, False, (0.0, 0.0, 0.0)))
        await b.flush()
        out: dict[str, Any] = {"after_flush": placed(), "flush_stats": dict(b.stats),
                               "pending_after_flush": [o.client_id for o in b.pending()]}
        clock_ms[0] += int(later_s * 1000)
        await b.sync(now)
        await b.flush()
        out.update(after_later=placed(), later_stats=dict(b.stats))
        clock_ms[0] += int((hide_s - later_s) * 1000) + 100      # visible now
        await b.sync(now)
        await b.flush()
        px = float(bars["open"][10])
        fills, _ = b.on_bar_open(sym, now, px, px, px, px, 0.0)
        out.update(placed=placed(), trades=len(emu.venue.accounts[EKEY].trades),
                   booked=[f.qty for f in fills], pos=float(b.pos[0, 0]),
                   pending=[o.client_id for o in b.pending()], stats=dict(b.stats))
        return out
    finally:
        await b.close()
        await emu.stop()


def test_not_found_right_after_a_lost_answer_is_not_final_before_the_recv_window() -> None:
    import asyncio
    # hidden 2.5 s; the deadline is the send's timestamp + recvWindow (2 s) + the venue's
    # 1 s clock tolerance = 3 s: at 0 and at 2.4 s the look-up's -2013 is not final by the
    # recv window alone (the trade history is not read: no deferred trade), never resent
    r = asyncio.run(_lost_order_hidden(hide_s=2.5, later_s=2.4, recv_window_ms=2_000))
    assert r["after_flush"] == 1 and r["pending_after_flush"] == ["lqrace-1"]
    assert r["flush_stats"]["not_final"] >= 1 and r["flush_stats"]["deferred_trades"] == 0
    assert r["flush_stats"]["resent"] == 0
    assert r["after_later"] == 1 and r["later_stats"]["resent"] == 0
    assert r["placed"] == 1 and r["trades"] == 1
    assert r["booked"] == [0.01] and r["pos"] == pytest.approx(0.01) and r["pending"] == []
    assert r["stats"]["resent"] == 0


def test_not_found_after_the_recv_window_is_not_final_while_the_history_has_its_trade() -> None:
    import asyncio
    # hidden 3.5 s; past the 2 s deadline (1 s window + 1 s tolerance) at 2.4 s the look-up
    # still says -2013, but the trade history has a trade of an order the venue cannot name
    # yet: not resent
    r = asyncio.run(_lost_order_hidden(hide_s=3.5, later_s=2.4, recv_window_ms=1_000))
    assert r["after_flush"] == 1 and r["flush_stats"]["deferred_trades"] == 0
    assert r["after_later"] == 1
    assert r["later_stats"]["deferred_trades"] >= 1 and r["later_stats"]["resent"] == 0
    assert r["placed"] == 1 and r["trades"] == 1
    assert r["booked"] == [0.01] and r["pos"] == pytest.approx(0.01) and r["pending"] == []
    assert r["stats"]["resent"] == 0


# ------------------------------------------------------------- partial fills (real ccxt)
async def _partial_run(faults: object, qty: float, use_ws: bool) -> dict[str, object]:
    """Real ccxt (+ ccxt.pro user stream when `use_ws`) against the emulator with `faults`:
    one market buy of `qty` BTC, then the broker syncs (REST), books the bar, syncs and
    flushes twice more (a resend would show there). Returns the venue's and our figures."""
    import asyncio

    bars, emu, b, ex = await _emulated(faults, attempts=4, use_ws=use_ws)
    sym = bars.symbol
    now = int(bars.ts[10])
    loop = asyncio.get_running_loop()
    stream: list[dict[str, object]] = []
    emu.venue.listeners.append(lambda key, ev: stream.append(ev))
    try:
        await b.start()
        if use_ws:                               # the user stream is connected first
            t0 = loop.time()
            while not any(c.api_key == EKEY for c in emu.hub.conns) and loop.time() - t0 < 5:
                await asyncio.sleep(0.02)
        await b.sync(now)
        b.set_mark(sym, float(bars.close[9]))
        b.submit(Order("lqpart-1", sym, 0, qty, False, (0.0, 0.0, 0.0)))
        await b.flush()
        a = emu.venue.accounts[EKEY]
        if use_ws:                               # every trade through the stream first
            t0 = loop.time()
            while b.stats["ws_trades"] < len(a.trades) and loop.time() - t0 < 5:
                await asyncio.sleep(0.02)
        await b.sync(now)                        # REST offers the same trades again
        px = float(bars["open"][10])
        fills, _ = b.on_bar_open(sym, now, px, px, px, px, 0.0)
        for _ in range(2):                       # later bars: nothing may be resent
            await b.sync(now + 60_000)
            await b.flush()
        o = await ex.fetch_order(None, b.unified[sym], {"origClientOrderId": "lqpart-1"})
        slot = emu.venue.slot[sym]
        return {"fills": [(f.fill_id, f.qty) for f in fills],
                "trades": [(f"{sym}-{t.trade_id}", t.qty, t.fee) for t in a.trades],
                "placed": sum(x.client_id == "lqpart-1" for x in a.orders.values()),
                "order": o, "pos": float(b.pos[0, ac.P_QTY]),
                "venue_pos": float(a.pos[slot, ac.P_QTY]),
                "wallet": float(b.acct[ac.A_WALLET]), "venue_wallet": float(a.acct[ac.A_WALLET]),
                "pending": [x.client_id for x in b.pending()], "stats": dict(b.stats),
                "duplicates": b.ledger.duplicates, "events": b.drain_events(),
                "faults": dict(emu.faults.counts),
                "stream": [(e["o"]["x"], e["o"]["X"], e["o"]["l"], e["o"]["z"])  # type: ignore[index]
                           for e in stream if e["e"] == "ORDER_TRADE_UPDATE"]}
    finally:
        await b.close()
        await emu.stop()


def test_an_order_split_into_three_trades_is_booked_once_each_via_rest_and_stream() -> None:
    import asyncio

    from bot.emulator.faults import FaultProfile
    # seed 0 cuts the 10 lots into trades of 1, 4 and 5 lots
    r = asyncio.run(_partial_run(FaultProfile(split_fill_rate=1.0, seed=0), 0.010, True))
    assert r["faults"] == {"split_fill": 1} and r["placed"] == 1
    assert [q for _, q, _ in r["trades"]] == pytest.approx([0.001, 0.004, 0.005])  # type: ignore[union-attr]
    # the user stream: one update per trade, cumulative z, PARTIALLY_FILLED then FILLED
    assert r["stream"] == [("NEW", "NEW", "0", "0"),
                           ("TRADE", "PARTIALLY_FILLED", "0.001", "0.001"),
                           ("TRADE", "PARTIALLY_FILLED", "0.004", "0.005"),
                           ("TRADE", "FILLED", "0.005", "0.01")]
    # each trade booked once, under its own id, though the stream and REST both gave it
    assert r["fills"] == [(tid, pytest.approx(q)) for tid, q, _ in r["trades"]]  # type: ignore[union-attr]
    assert r["stats"]["ws_trades"] == 3 and r["stats"]["rest_trades"] == 0  # type: ignore[index]
    assert r["duplicates"] == 3
    assert r["pos"] == pytest.approx(0.010, abs=1e-12) == r["venue_pos"]
    assert abs(r["pos"] - r["venue_pos"]) < 1e-12            # type: ignore[operator]
    # the wallet paid three commissions: 10,000 - the venue's fees, as the venue's wallet
    fees = sum(f for _, _, f in r["trades"])                  # type: ignore[union-attr]
    assert fees == pytest.approx(0.0005 * 0.010 * float(r["order"]["average"]), rel=1e-9)  # type: ignore[index]
    assert r["venue_wallet"] == pytest.approx(10_000.0 - fees, abs=1e-9)
    assert r["wallet"] == pytest.approx(r["venue_wallet"], abs=1e-6)
    assert r["order"]["status"] == "closed" and r["order"]["filled"] == 0.010  # type: ignore[index]
    assert r["pending"] == [] and r["stats"]["resent"] == 0                    # type: ignore[index]


def test_a_partially_filled_expired_order_is_final_and_not_resent() -> None:
    import asyncio

    from bot.emulator.faults import FaultProfile
    # seed 5: 6 of the 10 lots fill (1, 4, 1), then EXPIRED; the answer is lost too, so
    # the broker learns the outcome from the look-up by client id; no stream (REST only)
    prof = FaultProfile(partial_expire_rate=1.0, seed=5, timeout_after_accept=1, hang_s=0.2)
    r = asyncio.run(_partial_run(prof, 0.010, False))
    assert r["faults"] == {"partial_expire": 1, "timeout_after_accept": 1}
    assert [q for _, q, _ in r["trades"]] == pytest.approx([0.001, 0.004, 0.001])  # type: ignore[union-attr]
    assert r["stream"][-2:] == [("TRADE", "PARTIALLY_FILLED", "0.001", "0.006"),
                                ("EXPIRED", "EXPIRED", "0", "0.006")]
    o = r["order"]
    assert o["status"] == "expired" and o["filled"] == 0.006 and o["amount"] == 0.010  # type: ignore[index]
    assert o["info"]["status"] == "EXPIRED" and o["info"]["executedQty"] == "0.006"  # type: ignore[index]
    assert r["placed"] == 1 and r["stats"]["resent"] == 0                      # type: ignore[index]
    assert r["stats"]["rest_trades"] == 3 and r["duplicates"] == 0             # type: ignore[index]
    assert [q for _, q in r["fills"]] == pytest.approx([0.001, 0.004, 0.001])  # type: ignore[union-attr]
    assert r["pos"] == pytest.approx(0.006, abs=1e-12)       # the executed part only
    assert abs(r["pos"] - r["venue_pos"]) < 1e-12              # type: ignore[operator]
    assert r["wallet"] == pytest.approx(r["venue_wallet"], abs=1e-6)
    assert r["pending"] == []                                  # retired: booked = executed
    ev = [e for e in r["events"] if e["kind"] == "order_partial"]  # type: ignore[union-attr]
    assert len(ev) == 1 and ev[0]["data"]["executed"] == 0.006 and ev[0]["data"]["amount"] == 0.01


@pytest.mark.parametrize(("answer", "wallet"), [
    ({"info": {"totalWalletBalance": "104672.83"}}, 104_672.83),
    ({"info": {"totalWalletBalance": "0"}}, 0.0),              # an empty account is real
    ({}, None), ({"info": None}, None), ({"info": {}}, None),
    ({"info": {"totalWalletBalance": None}}, None),
    ({"info": {"totalWalletBalance": "abc"}}, None),
    ({"info": {"totalWalletBalance": "NaN"}}, None),
    ({"info": {"totalWalletBalance": "-5"}}, None),
    ([], None),
])
def test_a_malformed_balance_is_refused_not_read_as_an_empty_wallet(answer: Any,
                                                                   wallet: float | None) -> None:
    # read as 0, an empty answer was adopted as the wallet and halted the run for drawdown
    from bot.execution.live import wallet_of
    if wallet is not None:
        assert wallet_of(answer) == wallet
    else:
        with pytest.raises(ValueError, match="totalWalletBalance"):
            wallet_of(answer)


def test_a_malformed_answer_at_live_start_exits_2_naming_it() -> None:
    import asyncio
    from types import SimpleNamespace

    from bot.errors import LiqbotError
    from bot.runtime.daemon import Daemon

    async def broken_start() -> None:     # `int(last[-1]["id"])` of a userTrades row
        int(None)                         # type: ignore[arg-type]

    stub = SimpleNamespace(broker=SimpleNamespace(start=broken_start), restored=True, state={})
    with pytest.raises(LiqbotError, match=r"live start: reading the exchange failed "
                                          r"\(TypeError: .*no order was sent"):
        asyncio.run(Daemon._live_start(stub))  # type: ignore[arg-type]
