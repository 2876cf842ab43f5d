"""Realised-liquidation events from exchange feeds, normalised to one type.

Who was liquidated, venue by venue (the part that is easy to get wrong):
- Binance `forceOrder` (USD-M): `o.S` is the side of the liquidation ORDER. SELL closes a
  long, so SELL = a long was liquidated. qty = `o.z` (filled), price = `o.ap` (average).
- Bybit `allLiquidation.{symbol}`: `S` is the side of the liquidated POSITION: Buy = a long
  was liquidated. qty = `v`, price = `p` (bankruptcy price).
- OKX `liquidation-orders`: each data item has a list of `details`, every one an event;
  `posSide` long/short names the liquidated position (in net mode it is "net" and the order
  `side` sell means a long). qty = `sz` contracts x ctVal (base per contract), price = `bkPx`.
- ccxt's unified Liquidation: `side` is whatever the venue said, NOT normalised: it is the
  order side on Binance and the position side on Bybit. `from_ccxt` needs the exchange id.
A malformed message raises `MalformedMessage`; the daemon logs it and keeps running.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class MalformedMessage(ValueError):
    """A feed message that cannot be turned into liquidation events (log and skip it)."""


@dataclass(frozen=True)
class LiquidationEvent:
    """One forced close. `side` is the LIQUIDATED position: "long" or "short".
    ts int64 ms UTC; price quote/base; qty base; notional quote."""

    ts: int
    exchange: str
    symbol: str
    side: str
    price: float
    qty: float

    @property
    def notional(self) -> float:
        return self.price * self.qty


def _num(obj: Mapping[str, Any], key: str, what: str) -> float:
    try:
        value = float(obj[key])
    except (KeyError, TypeError, ValueError):
        raise MalformedMessage(f"{what}: field {key!r} missing or not a number") from None
    if not math.isfinite(value) or value < 0:
        raise MalformedMessage(f"{what}: field {key!r} is {obj.get(key)!r}")
    return value


def from_binance_force_order(msg: Mapping[str, Any]) -> list[LiquidationEvent]:
    """A Binance USD-M `forceOrder` message (raw, or wrapped in a combined-stream envelope)."""
    data = msg.get("data", msg) if isinstance(msg, Mapping) else None
    if not isinstance(data, Mapping) or data.get("e") != "forceOrder" or \
            not isinstance(data.get("o"), Mapping):
        raise MalformedMessage("binance: not a forceOrder event")
    o = data["o"]
    side = {"SELL": "long", "BUY": "short"}.get(str(o.get("S")))
    if side is None:
        raise MalformedMessage(f"binance forceOrder: order side {o.get('S')!r} is not BUY/SELL")
    ts = int(_num(o, "T", "binance forceOrder"))
    return [LiquidationEvent(ts, "binance", str(o.get("s", "")), side,
                             _num(o, "ap", "binance forceOrder"),
                             _num(o, "z", "binance forceOrder"))]


def from_bybit_all_liquidation(msg: Mapping[str, Any]) -> list[LiquidationEvent]:
    """A Bybit v5 `allLiquidation.{symbol}` message; every item of `data` is an event."""
    if not isinstance(msg, Mapping) or not str(msg.get("topic", "")).startswith(
            "allLiquidation") or not isinstance(msg.get("data"), list):
        raise MalformedMessage("bybit: not an allLiquidation message")
    out = []
    for item in msg["data"]:
        if not isinstance(item, Mapping):
            raise MalformedMessage("bybit allLiquidation: data item is not an object")
        side = {"Buy": "long", "Sell": "short"}.get(str(item.get("S")))
        if side is None:
            raise MalformedMessage(f"bybit allLiquidation: position side {item.get('S')!r}")
        out.append(LiquidationEvent(int(_num(item, "T", "bybit")), "bybit",
                                    str(item.get("s", "")), side, _num(item, "p", "bybit"),
                                    _num(item, "v", "bybit")))
    return out


def from_okx_liquidation_orders(msg: Mapping[str, Any],
                                ct_val: Mapping[str, float]) -> list[LiquidationEvent]:
    """An OKX `liquidation-orders` push. `ct_val` maps instId -> base per contract
    (e.g. {"BTC-USDT-SWAP": 0.01}); every item of every `details` list is an event."""
    if not isinstance(msg, Mapping) or not isinstance(msg.get("data"), list):
        raise MalformedMessage("okx: not a liquidation-orders push")
    out = []
    for item in msg["data"]:
        if not isinstance(item, Mapping) or not isinstance(item.get("details"), list):
            raise MalformedMessage("okx liquidation-orders: item without details")
        inst = str(item.get("instId", ""))
        if inst not in ct_val:
            raise MalformedMessage(f"okx liquidation-orders: no contract value for {inst!r}")
        for d in item["details"]:
            if not isinstance(d, Mapping):
                raise MalformedMessage("okx liquidation-orders: detail is not an object")
            pos_side = str(d.get("posSide", ""))
            if pos_side in ("long", "short"):
                side = pos_side
            elif pos_side == "net" and d.get("side") in ("buy", "sell"):
                side = "long" if d["side"] == "sell" else "short"
            else:
                raise MalformedMessage(f"okx liquidation-orders: posSide {pos_side!r}")
            out.append(LiquidationEvent(int(_num(d, "ts", "okx")), "okx", inst, side,
                                        _num(d, "bkPx", "okx"),
                                        _num(d, "sz", "okx") * float(ct_val[inst])))
    return out


#: How each venue's ccxt `side` relates to the liquidated position.
CCXT_SIDE_IS = {"binance": "order", "binanceusdm": "order", "bybit": "position",
                "okx": "position"}


def from_ccxt(liq: Mapping[str, Any], exchange: str) -> LiquidationEvent:
    """A ccxt unified Liquidation dict. `side` semantics differ by venue (module docstring)."""
    kind = CCXT_SIDE_IS.get(exchange)
    if kind is None:
        raise MalformedMessage(f"ccxt liquidation: side semantics of {exchange!r} unknown")
    raw = str(liq.get("side", "")).lower()
    if raw not in ("buy", "sell", "long", "short"):
        raise MalformedMessage(f"ccxt liquidation: side {liq.get('side')!r}")
    if raw in ("long", "short"):
        side = raw
    elif kind == "order":
        side = "long" if raw == "sell" else "short"
    else:
        side = "long" if raw == "buy" else "short"
    price = _num(liq, "price", "ccxt liquidation")
    if liq.get("baseValue") is not None:
        qty = _num(liq, "baseValue", "ccxt liquidation")
    else:
        qty = _num(liq, "contracts", "ccxt liquidation") * float(liq.get("contractSize") or 1.0)
    return LiquidationEvent(int(_num(liq, "timestamp", "ccxt liquidation")), exchange,
                            str(liq.get("symbol", "")), side, price, qty)
