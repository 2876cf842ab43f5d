"""The live broker's rules without a venue (ledger, caps, lot steps) and `run --live`'s
safety switches on the command line."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from bot.execution.broker import Order
from bot.execution.live import Inflight, LiveBroker, LiveSettings
from bot.execution.reconcile import Ledger, position_diffs, wallet_differs
from bot.execution.venues import VENUES, venue_for
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
