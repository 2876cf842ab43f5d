"""Realised-liquidation events: real captured messages (../shared/data/fixtures) and the
venues' documented shapes."""

import json

import pytest

from bot.signals.liquidations import (
    MalformedMessage,
    from_binance_force_order,
    from_bybit_all_liquidation,
    from_ccxt,
    from_okx_liquidation_orders,
)
from tests.conftest import shared_file


def _fixture_messages(test_name: str) -> list[dict]:
    path = shared_file("fixtures", "tardis_node_mappers_derivative_messages.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r["message"] for r in rows if r["test"] == test_name]


def test_real_binance_usdm_force_order():
    msgs = [m for m in _fixture_messages("map binance futures messages")
            if isinstance(m, dict) and str(m.get("stream", "")).endswith("@forceOrder")]
    assert len(msgs) == 1
    (ev,) = from_binance_force_order(msgs[0])
    # 2020-03-13: a BUY liquidation order closes a SHORT; 0.014 filled at avg 4,706.04
    assert ev.side == "short" and ev.symbol == "BTCUSDT"
    assert ev.qty == 0.014 and ev.price == 4706.04
    assert ev.notional == pytest.approx(65.88456)
    assert ev.ts == 1584059031421


def test_real_non_liquidation_messages_are_rejected_not_crashing():
    msgs = _fixture_messages("map binance futures messages")
    others = [m for m in msgs if not str(m.get("stream", "")).endswith("@forceOrder")]
    assert others
    for m in others:
        with pytest.raises(MalformedMessage):
            from_binance_force_order(m)


def test_binance_sell_means_long_liquidated():
    msg = {"e": "forceOrder", "E": 1, "o": {"s": "ETHUSDT", "S": "SELL", "q": "2", "ap": "3000",
                                            "z": "1.5", "T": 1700000000000}}
    (ev,) = from_binance_force_order(msg)
    assert ev.side == "long" and ev.qty == 1.5 and ev.notional == 4500.0


def test_bybit_all_liquidation_position_side():
    # Bybit v5 docs, topic allLiquidation.{symbol}: S is the liquidated POSITION's side
    msg = {"topic": "allLiquidation.ROSEUSDT", "type": "snapshot", "ts": 1739502303204,
           "data": [{"T": 1739502302929, "s": "ROSEUSDT", "S": "Sell", "v": "20000",
                     "p": "0.04499"},
                    {"T": 1739502302930, "s": "ROSEUSDT", "S": "Buy", "v": "100",
                     "p": "0.045"}]}
    a, b = from_bybit_all_liquidation(msg)
    assert (a.side, a.qty, a.price) == ("short", 20000.0, 0.04499)
    assert a.notional == pytest.approx(899.8)
    assert b.side == "long"


def test_okx_every_detail_counts_and_contracts_convert_to_base():
    msg = {"arg": {"channel": "liquidation-orders", "instType": "SWAP"},
           "data": [{"instId": "BTC-USDT-SWAP", "instFamily": "BTC-USDT", "instType": "SWAP",
                     "uly": "BTC-USDT",
                     "details": [{"bkLoss": "0", "bkPx": "60000.5", "ccy": "", "posSide": "long",
                                  "side": "sell", "sz": "250", "ts": "1723892524781"},
                                 {"bkLoss": "0", "bkPx": "60100", "ccy": "", "posSide": "net",
                                  "side": "buy", "sz": "10", "ts": "1723892524790"}]}]}
    a, b = from_okx_liquidation_orders(msg, {"BTC-USDT-SWAP": 0.01})
    assert (a.side, a.qty, a.price) == ("long", 2.5, 60000.5)
    assert (b.side, b.qty) == ("short", pytest.approx(0.1))
    with pytest.raises(MalformedMessage, match="no contract value"):
        from_okx_liquidation_orders(msg, {})


def test_ccxt_side_depends_on_the_venue():
    liq = {"symbol": "BTC/USDT:USDT", "side": "sell", "price": 50000.0, "baseValue": 0.2,
           "contracts": 0.2, "contractSize": 1.0, "timestamp": 1700000000000}
    assert from_ccxt(liq, "binance").side == "long"     # order side: a SELL closes a long
    assert from_ccxt(liq, "bybit").side == "short"      # position side: a Sell position
    with pytest.raises(MalformedMessage, match="side semantics"):
        from_ccxt(liq, "kraken")


@pytest.mark.parametrize("msg", [
    {}, {"data": {"e": "forceOrder"}}, {"e": "forceOrder", "o": {"S": "HOLD"}},
    {"e": "forceOrder", "o": {"S": "BUY", "ap": "x", "z": "1", "T": 1}},
    {"e": "forceOrder", "o": {"S": "BUY", "ap": "1", "z": "-1", "T": 1}},
])
def test_malformed_binance_messages(msg):
    with pytest.raises(MalformedMessage):
        from_binance_force_order(msg)
