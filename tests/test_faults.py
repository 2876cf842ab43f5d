"""The fault acceptance of the live path, small: 500 orders through the LiveBroker (real
ccxt against the local emulator on 127.0.0.1) with a fault of every kind armed before ~20 %
of them (benchmarks/faults.py runs the 10,000-order version); and the booking order of a
funding payment and a fill at the same instant, which the 10,000-order bench exposed (a
payment on a position closed at that instant was left to the wallet reconciliation)."""

from __future__ import annotations

import asyncio

import pytest

from benchmarks.faults import KINDS, run_bench
from bot.execution.live import LiveBroker, LiveSettings, _Ev
from bot.execution.venues import VENUES
from bot.mechanics import account as ac
from bot.mechanics.brackets import shipped

BTC = "BTCUSDT"


def test_500_orders_with_every_fault_kind_place_once_and_lose_no_fill() -> None:
    r = asyncio.run(run_bench(orders=500, rate=0.2, seed=7))
    assert r["orders"] == 500
    # every kind was armed and injected, and each injection logged with its kind
    assert set(r["armed_by_kind"]) == set(KINDS)
    assert set(r["faults_injected"]) == set(KINDS)
    assert r["faults_logged"] == r["faults_injected"]
    assert r["armed_not_fired"] == {}
    assert 0.12 <= r["fault_share"] <= 0.28               # ~20 % of the orders
    # each lost answer was looked up by client id before anything else was sent
    assert r["broker"]["lookups"] >= r["faults_injected"]["timeout_after_accept"]
    # the acceptance invariants
    assert r["duplicate_orders"] == 0
    assert r["lost_orders"] == 0 and r["rejected"] == 0
    assert r["venue_orders"] == 500
    # a split order executes as 2-4 trades (1 to 3 more than orders), a partial expiry's
    # part as 1-3 trades (0 to 2 more)
    splits, parts = r["faults_injected"]["split_fill"], r["faults_injected"]["partial_expire"]
    assert 500 + splits <= r["venue_trades"] <= 500 + 3 * splits + 2 * parts
    assert r["fills_booked"] == r["venue_trades"]
    # every partial expiry was learnt as final (an event each); never resent (a resend
    # under the same client id would be a second venue order: a duplicate)
    assert r["partial_orders"] == r["faults_injected"]["partial_expire"] >= 1
    assert r["lost_fills"] == 0 and r["double_booked_fills"] == 0 and r["phantom_fills"] == 0
    assert r["position"]["equal"] is True
    assert r["position"]["ours"] == r["position"]["venue"]
    assert r["adopted"] == 0                          # nothing hidden by reconciliation
    assert r["wallet"]["rel_diff"] < 1e-9
    assert r["broker"]["duplicates_ignored"] > 0     # REST + stream + injected repeats
    assert r["ok"] is True


def _held_broker(qty: float) -> LiveBroker:
    """A broker at 10,000 USDT holding `qty` BTC bought at 100,000 (no venue needed)."""
    b = LiveBroker(None, VENUES["binanceusdm"], [BTC], [shipped("binance", BTC)], 60_000,
                   LiveSettings())
    b.step[BTC] = 0.001
    b.acct[ac.A_WALLET] = 10_000.0
    if qty:
        ac.apply_fill(b.acct, b.pos, 0, qty, 100_000.0, 0.0)
    return b


def _instant(b: LiveBroker, t: int, dq: float) -> None:
    """At one instant: our order's trade of `dq` at 100,000 (fee 20) and a funding
    payment of 5 USDT (paid)."""
    b.buffer[BTC] += [
        _Ev(t, 0, f"{BTC}-5000001", {"trade_id": 5_000_001, "dq": dq, "price": 100_000.0,
                                     "fee": 20.0, "client_id": "lq1", "liquidation": False,
                                     "source": "rest"}),
        _Ev(t, 1, "funding-9000000001", {"paid": 5.0})]


def test_funding_at_the_instant_of_a_closing_fill_is_booked_on_the_held_position() -> None:
    # the venue settles the 0.5 BTC held at 08:00 before the closing order of 08:00 fills
    t = 1_767_254_400_000                              # 2026-01-01T08:00Z
    b = _held_broker(0.5)
    _instant(b, t, -0.5)
    fills, pays = b.on_bar_open(BTC, t, 100_000.0, 100_000.0, 100_000.0, 100_000.0, 1e-4)
    assert [f.qty for f in fills] == [-0.5] and [p.payment for p in pays] == [5.0]
    assert pays[0].rate == pytest.approx(1e-4)         # 5 / (0.5 x 100,000)
    assert b.acct[ac.A_WALLET] == pytest.approx(10_000.0 - 5.0 - 20.0)
    assert b.pos[0, ac.P_QTY] == 0.0
    assert not [e for e in b.events if e["kind"] == "funding_unbooked"]


def test_funding_at_the_instant_of_an_opening_fill_is_booked_after_it() -> None:
    # flat before the instant: the venue can only have paid on the position the fill opened
    t = 1_767_254_400_000
    b = _held_broker(0.0)
    _instant(b, t, 0.5)
    fills, pays = b.on_bar_open(BTC, t, 100_000.0, 100_000.0, 100_000.0, 100_000.0, 1e-4)
    assert [f.qty for f in fills] == [0.5] and [p.payment for p in pays] == [5.0]
    assert b.acct[ac.A_WALLET] == pytest.approx(10_000.0 - 20.0 - 5.0)
    assert b.pos[0, ac.P_QTY] == 0.5
    assert not [e for e in b.events if e["kind"] == "funding_unbooked"]


def test_an_unknown_profile_is_named_as_the_option_value(cli) -> None:
    r = cli("drill", "cascade-long", "--faults", "bogus")
    assert r.code == 2 and "--faults 'bogus': neither a built-in profile (none, flaky" in r.err
    assert "config problem" not in r.err          # it read as a file named "bogus"
