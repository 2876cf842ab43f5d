"""The live broker's rules without a venue (ledger, caps, lot steps) and `run --live`'s
safety switches on the command line."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from bot.execution.broker import Order
from bot.execution.live import LiveBroker, LiveSettings
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
