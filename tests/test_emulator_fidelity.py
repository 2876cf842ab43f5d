"""Emulator fidelity: every REST endpoint and websocket stream the emulator serves, and its
error answers, checked against the response examples of Binance's USD-M futures docs
(https://developers.binance.com/docs/derivatives/usds-margined-futures/...).

The expected shapes below are our own fixtures written from those examples: the set of keys,
recursively through nested objects and arrays, and each value's JSON type (str / num / bool;
Binance sends most decimals as strings). A key ending in "?" is one the example carries only
in some cases (trailing-stop fields, notionalCoef). Raw HTTP and websocket traffic on
127.0.0.1 (our own HMAC signing), not ccxt: ccxt would hide type differences.

A deviation the emulator keeps on purpose is listed in WAIVED with its reason and pinned by a
strict xfail (`test_waived_deviation_still_present`): fixing it turns that xfail into a
failure, so the waiver has to go. Everything else must match exactly."""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp
import numpy as np
import pytest

from bot.data.bars import Bars
from bot.data.dataset import Dataset
from bot.emulator.account import SymbolRules
from bot.emulator.auth import sign
from bot.emulator.server import Emulator
from tests.test_emulator import KEY, MIN, SECRET, START, cfg, toy_dataset

DOCS = "https://developers.binance.com/docs/derivatives/usds-margined-futures/"
S, N, B = "str", "num", "bool"
SN = "str|null"


@dataclass(frozen=True)
class MaybeEmpty:
    """An array the example shows with elements of `item` but which may legitimately be
    empty (underlyingSubType)."""
    item: Any


@dataclass(frozen=True)
class Tagged:
    """A heterogeneous array whose elements are told apart by `tag` (exchangeInfo filters):
    each element must match the shape of its tag; every documented tag must be present."""
    tag: str
    shapes: dict[str, Any]


def jtype(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return B
    if isinstance(v, int | float):
        return N
    if isinstance(v, str):
        return S
    if isinstance(v, list):
        return "array"
    return "object"


def deviations(shape: Any, value: Any, path: str = "$") -> list[str]:
    """Every way `value` differs from `shape`; array indices are written `[]` so one
    deviation repeated over the elements is reported once."""
    out: list[str] = []
    if isinstance(shape, str):
        if jtype(value) not in shape.split("|"):
            out.append(f"{path}: {jtype(value)} instead of {shape}")
    elif isinstance(shape, dict):
        if not isinstance(value, dict):
            return [f"{path}: {jtype(value)} instead of object"]
        for k, sub in shape.items():
            name, optional = k.removesuffix("?"), k.endswith("?")
            if name in value:
                out += deviations(sub, value[name], f"{path}.{name}")
            elif not optional:
                out.append(f"{path}.{name}: missing")
        out += [f"{path}.{k}: not documented" for k in value
                if k not in shape and f"{k}?" not in shape]
    elif isinstance(shape, tuple):
        if not isinstance(value, list):
            return [f"{path}: {jtype(value)} instead of array"]
        if len(value) != len(shape):
            return [f"{path}: {len(value)} items instead of {len(shape)}"]
        for i, (sub, v) in enumerate(zip(shape, value, strict=True)):
            out += deviations(sub, v, f"{path}[{i}]")
    elif isinstance(shape, Tagged):
        if not isinstance(value, list):
            return [f"{path}: {jtype(value)} instead of array"]
        seen = set()
        for v in value:
            tag = v.get(shape.tag) if isinstance(v, dict) else None
            seen.add(tag)
            if tag not in shape.shapes:
                out.append(f"{path}[{shape.tag}={tag}]: not documented")
            else:
                out += deviations(shape.shapes[tag], v, f"{path}[{shape.tag}={tag}]")
        out += [f"{path}[{shape.tag}={t}]: missing" for t in shape.shapes if t not in seen]
    elif isinstance(shape, MaybeEmpty | list):
        item = shape.item if isinstance(shape, MaybeEmpty) else (shape[0] if shape else None)
        if not isinstance(value, list):
            return [f"{path}: {jtype(value)} instead of array"]
        if isinstance(shape, list) and shape and not value:
            out.append(f"{path}: empty, nothing to check")
        for v in value if item is not None else []:
            out += deviations(item, v, f"{path}[]")
    return sorted(set(out))


# --- expected shapes, from the documented response examples ------------------------------------

# Order as the queries show it: GET order / openOrders / allOrders (pages Query-Order,
# Current-All-Open-Orders, All-Orders): `time`, no `cumQty`. The Query Order example predates
# priceMatch / selfTradePreventionMode / goodTillDate, which the allOrders and openOrders
# examples of the same object carry: optional there.
ORDER_QUERY = {
    "avgPrice": S, "clientOrderId": S, "cumQuote": S, "executedQty": S, "orderId": N,
    "origQty": S, "origType": S, "price": S, "reduceOnly": B, "side": S, "positionSide": S,
    "status": S, "stopPrice": S, "closePosition": B, "symbol": S, "time": N,
    "timeInForce": S, "type": S, "activatePrice?": S, "priceRate?": S, "updateTime": N,
    "workingType": S, "priceProtect": B, "priceMatch": S, "selfTradePreventionMode": S,
    "goodTillDate": N}
ORDER_GET = {**{k: v for k, v in ORDER_QUERY.items()
                if k not in ("priceMatch", "selfTradePreventionMode", "goodTillDate")},
             "priceMatch?": S, "selfTradePreventionMode?": S, "goodTillDate?": N}
# Order as POST and DELETE /fapi/v1/order answer it (Cancel-Order example; the New Order
# example lists the same fields): `cumQty`, no `time`.
ORDER_ANSWER = {
    "clientOrderId": S, "cumQty": S, "cumQuote": S, "executedQty": S, "orderId": N,
    "origQty": S, "origType": S, "price": S, "avgPrice": S, "reduceOnly": B, "side": S,
    "positionSide": S, "status": S, "stopPrice": S, "closePosition": B, "symbol": S,
    "timeInForce": S, "type": S, "activatePrice?": S, "priceRate?": S, "updateTime": N,
    "workingType": S, "priceProtect": B, "priceMatch": S, "selfTradePreventionMode": S,
    "goodTillDate": N}
PREMIUM = {"symbol": S, "markPrice": S, "indexPrice": S, "estimatedSettlePrice": S,
           "lastFundingRate": S, "interestRate": S, "nextFundingTime": N, "time": N}
KLINE = [(N, S, S, S, S, S, N, S, N, S, S, S)]
BRACKETS = {"symbol": S, "notionalCoef?": N, "brackets": [{
    "bracket": N, "initialLeverage": N, "notionalCap": N, "notionalFloor": N,
    "maintMarginRatio": N, "cum": N}]}
BALANCE = [{"accountAlias": S, "asset": S, "balance": S, "crossWalletBalance": S,
            "crossUnPnl": S, "availableBalance": S, "maxWithdrawAmount": S,
            "marginAvailable": B, "updateTime": N}]
ACCOUNT_TOTALS = {
    "totalInitialMargin": S, "totalMaintMargin": S, "totalWalletBalance": S,
    "totalUnrealizedProfit": S, "totalMarginBalance": S, "totalPositionInitialMargin": S,
    "totalOpenOrderInitialMargin": S, "totalCrossWalletBalance": S, "totalCrossUnPnl": S,
    "availableBalance": S, "maxWithdrawAmount": S}
ACCOUNT_ASSET_V3 = {
    "asset": S, "walletBalance": S, "unrealizedProfit": S, "marginBalance": S,
    "maintMargin": S, "initialMargin": S, "positionInitialMargin": S,
    "openOrderInitialMargin": S, "crossWalletBalance": S, "crossUnPnl": S,
    "availableBalance": S, "maxWithdrawAmount": S, "updateTime": N}
ACK = {"code": N, "msg": S}

SPECS: dict[str, tuple[str, Any]] = {
    # name: (documentation page, shape)
    "GET /fapi/v1/ping": ("market-data/rest-api/Test-Connectivity", {}),
    "GET /fapi/v1/time": ("market-data/rest-api/Check-Server-Time", {"serverTime": N}),
    "GET /fapi/v1/exchangeInfo": ("market-data/rest-api/Exchange-Information", {
        "exchangeFilters": [], "rateLimits": [{"interval": S, "intervalNum": N, "limit": N,
                                               "rateLimitType": S}],
        "serverTime": N, "assets": [{"asset": S, "marginAvailable": B,
                                     "autoAssetExchange": SN}],
        "symbols": [{
            "symbol": S, "pair": S, "contractType": S, "deliveryDate": N, "onboardDate": N,
            "status": S, "maintMarginPercent": S, "requiredMarginPercent": S,
            "baseAsset": S, "quoteAsset": S, "marginAsset": S, "pricePrecision": N,
            "quantityPrecision": N, "baseAssetPrecision": N, "quotePrecision": N,
            "underlyingType": S, "underlyingSubType": MaybeEmpty(S), "settlePlan": N,
            "triggerProtect": S,
            "filters": Tagged("filterType", {
                "PRICE_FILTER": {"filterType": S, "maxPrice": S, "minPrice": S,
                                 "tickSize": S},
                "LOT_SIZE": {"filterType": S, "maxQty": S, "minQty": S, "stepSize": S},
                "MARKET_LOT_SIZE": {"filterType": S, "maxQty": S, "minQty": S,
                                    "stepSize": S},
                "MAX_NUM_ORDERS": {"filterType": S, "limit": N},
                "MIN_NOTIONAL": {"filterType": S, "notional": S},
                "PERCENT_PRICE": {"filterType": S, "multiplierUp": S, "multiplierDown": S,
                                  "multiplierDecimal": S}}),
            "orderTypes": [S], "timeInForce": [S], "liquidationFee": S,
            "marketTakeBound": S}],
        "timezone": S}),
    "GET /fapi/v1/klines": ("market-data/rest-api/Kline-Candlestick-Data", KLINE),
    "GET /fapi/v1/markPriceKlines": ("market-data/rest-api/Mark-Price-Kline-Candlestick-Data",
                                     KLINE),
    "GET /fapi/v1/premiumIndex?symbol": ("market-data/rest-api/Mark-Price", PREMIUM),
    "GET /fapi/v1/premiumIndex": ("market-data/rest-api/Mark-Price", [PREMIUM]),
    "GET /fapi/v1/fundingRate": ("market-data/rest-api/Get-Funding-Rate-History", [{
        "symbol": S, "fundingRate": S, "fundingTime": N, "markPrice": S}]),
    "GET /fapi/v1/openInterest": ("market-data/rest-api/Open-Interest", {
        "openInterest": S, "symbol": S, "time": N}),
    "GET /futures/data/openInterestHist": ("market-data/rest-api/Open-Interest-Statistics", [{
        "symbol": S, "sumOpenInterest": S, "sumOpenInterestValue": S,
        "CMCCirculatingSupply": S, "timestamp": S}]),
    "GET /futures/data/globalLongShortAccountRatio": ("market-data/rest-api/Long-Short-Ratio", [{
        "symbol": S, "longShortRatio": S, "longAccount": S, "shortAccount": S,
        "timestamp": S}]),
    "GET /fapi/v1/leverageBracket?symbol": (
        "account/rest-api/Notional-and-Leverage-Brackets", BRACKETS),
    "GET /fapi/v1/leverageBracket": ("account/rest-api/Notional-and-Leverage-Brackets",
                                     [BRACKETS]),
    "GET /fapi/v1/commissionRate": ("account/rest-api/User-Commission-Rate", {
        "symbol": S, "makerCommissionRate": S, "takerCommissionRate": S,
        "rpiCommissionRate": S}),
    "GET /fapi/v1/positionSide/dual": ("account/rest-api/Get-Current-Position-Mode",
                                       {"dualSidePosition": B}),
    "POST /fapi/v1/leverage": ("trade/rest-api/Change-Initial-Leverage", {
        "leverage": N, "maxNotionalValue": S, "symbol": S}),
    "POST /fapi/v1/marginType": ("trade/rest-api/Change-Margin-Type", ACK),
    "POST /fapi/v1/order": ("trade/rest-api/New-Order", ORDER_ANSWER),
    "GET /fapi/v1/order": ("trade/rest-api/Query-Order", ORDER_GET),
    "DELETE /fapi/v1/order": ("trade/rest-api/Cancel-Order", ORDER_ANSWER),
    "GET /fapi/v1/openOrders": ("trade/rest-api/Current-All-Open-Orders", [ORDER_QUERY]),
    "GET /fapi/v1/allOrders": ("trade/rest-api/All-Orders", [ORDER_QUERY]),
    "DELETE /fapi/v1/allOpenOrders": ("trade/rest-api/Cancel-All-Open-Orders", ACK),
    "GET /fapi/v1/userTrades": ("trade/rest-api/Account-Trade-List", [{
        "buyer": B, "commission": S, "commissionAsset": S, "id": N, "maker": B,
        "orderId": N, "price": S, "qty": S, "quoteQty": S, "realizedPnl": S, "side": S,
        "positionSide": S, "symbol": S, "time": N}]),
    "GET /fapi/v2/positionRisk": ("trade/rest-api/Position-Information-V2", [{
        "entryPrice": S, "breakEvenPrice": S, "marginType": S, "isAutoAddMargin": S,
        "isolatedMargin": S, "leverage": S, "liquidationPrice": S, "markPrice": S,
        "maxNotionalValue": S, "positionAmt": S, "notional": S, "isolatedWallet": S,
        "symbol": S, "unRealizedProfit": S, "positionSide": S, "updateTime": N}]),
    "GET /fapi/v3/positionRisk": ("trade/rest-api/Position-Information-V3", [{
        "symbol": S, "positionSide": S, "positionAmt": S, "entryPrice": S,
        "breakEvenPrice": S, "markPrice": S, "unRealizedProfit": S, "liquidationPrice": S,
        "isolatedMargin": S, "notional": S, "marginAsset": S, "isolatedWallet": S,
        "initialMargin": S, "maintMargin": S, "positionInitialMargin": S,
        "openOrderInitialMargin": S, "adl": N, "bidNotional": S, "askNotional": S,
        "updateTime": N}]),
    "GET /fapi/v2/account": ("account/rest-api/Account-Information-V2", {
        "feeTier": N, "feeBurn": B, "canTrade": B, "canDeposit": B, "canWithdraw": B,
        "updateTime": N, "multiAssetsMargin": B, "tradeGroupId": N, **ACCOUNT_TOTALS,
        "assets": [{**ACCOUNT_ASSET_V3, "marginAvailable": B}],
        "positions": [{
            "symbol": S, "initialMargin": S, "maintMargin": S, "unrealizedProfit": S,
            "positionInitialMargin": S, "openOrderInitialMargin": S, "leverage": S,
            "isolated": B, "entryPrice": S, "maxNotional": S, "bidNotional": S,
            "askNotional": S, "positionSide": S, "positionAmt": S, "updateTime": N}]}),
    "GET /fapi/v3/account": ("account/rest-api/Account-Information-V3", {
        **ACCOUNT_TOTALS, "assets": [ACCOUNT_ASSET_V3],
        "positions": [{
            "symbol": S, "positionSide": S, "positionAmt": S, "unrealizedProfit": S,
            "isolatedMargin": S, "notional": S, "isolatedWallet": S, "initialMargin": S,
            "maintMargin": S, "updateTime": N}]}),
    "GET /fapi/v2/balance": ("account/rest-api/Futures-Account-Balance-V2", BALANCE),
    "GET /fapi/v3/balance": ("account/rest-api/Futures-Account-Balance-V3", BALANCE),
    "GET /fapi/v1/income": ("account/rest-api/Get-Income-History", [{
        "symbol": S, "incomeType": S, "income": S, "asset": S, "info": S, "time": N,
        "tranId": N, "tradeId": S}]),
    "POST /fapi/v1/listenKey": ("user-data-streams/Start-User-Data-Stream", {"listenKey": S}),
    "PUT /fapi/v1/listenKey": ("user-data-streams/Keepalive-User-Data-Stream",
                               {"listenKey": S}),
    "DELETE /fapi/v1/listenKey": ("user-data-streams/Close-User-Data-Stream", {}),
    # websocket streams
    "ws kline": ("websocket-market-streams/Kline-Candlestick-Streams", {
        "e": S, "E": N, "s": S, "k": {
            "t": N, "T": N, "s": S, "i": S, "f": N, "L": N, "o": S, "c": S, "h": S, "l": S,
            "v": S, "n": N, "x": B, "q": S, "V": S, "Q": S, "B": S}}),
    "ws markPriceUpdate": ("websocket-market-streams/Mark-Price-Stream", {
        "e": S, "E": N, "s": S, "p": S, "ap": S, "i": S, "P": S, "r": S, "T": N}),
    "ws forceOrder": ("websocket-market-streams/Liquidation-Order-Streams", {
        "e": S, "E": N, "o": {"s": S, "S": S, "o": S, "f": S, "q": S, "p": S, "ap": S, "X": S,
                              "l": S, "z": S, "T": N}}),
    "ws aggTrade": ("websocket-market-streams/Aggregate-Trade-Streams", {
        "e": S, "E": N, "s": S, "a": N, "p": S, "q": S, "nq": S, "f": N, "l": N, "T": N,
        "m": B}),
    "ws ORDER_TRADE_UPDATE": ("user-data-streams/Event-Order-Update", {
        "e": S, "E": N, "T": N, "o": {
            "s": S, "c": S, "S": S, "o": S, "f": S, "q": S, "p": S, "ap": S, "sp": S, "x": S,
            "X": S, "i": N, "l": S, "z": S, "L": S, "N": S, "n": S, "T": N, "t": N, "b": S,
            "a": S, "m": B, "R": B, "wt": S, "ot": S, "ps": S, "cp": B, "AP?": S, "cr?": S,
            "pP": B, "si": N, "ss": N, "rp": S, "V": S, "pm": S, "gtd": N, "er": S}}),
    "ws ACCOUNT_UPDATE": ("user-data-streams/Event-Balance-and-Position-Update", {
        "e": S, "E": N, "T": N, "a": {
            "m": S, "B": [{"a": S, "wb": S, "cw": S, "bc": S}],
            "P": [{"s": S, "pa": S, "ep": S, "bep": S, "cr": S, "up": S, "mt": S, "iw": S,
                   "ps": S}]}}),
}

# Deviations kept on purpose: (endpoint, deviation) -> why.
WAIVED: dict[tuple[str, str], str] = {
    ("GET /fapi/v1/exchangeInfo", "$.symbols[].filters[filterType=MAX_NUM_ORDERS]: missing"):
        "the emulator enforces no open-order count limit; it does not advertise one",
    ("GET /fapi/v1/exchangeInfo", "$.symbols[].filters[filterType=PERCENT_PRICE]: missing"):
        "the emulator enforces no price band around the mark; it does not advertise one",
    ("GET /fapi/v2/account", "$.positions[].notional: not documented"):
        "not in the v2 example, but in ccxt's recorded live payload of the same object; kept",
    ("GET /fapi/v2/account", "$.positions[].isolatedWallet: not documented"):
        "not in the v2 example, but in ccxt's recorded live payload of the same object; kept",
    ("GET /futures/data/openInterestHist", "$[].CMCCirculatingSupply: missing"):
        "datasets carry no circulating supply; no value is invented",
    ("GET /futures/data/openInterestHist", "$[].timestamp: num instead of str"):
        "the example quotes timestamp, but the live API sends a number (ccxt's recorded "
        "responses: \"timestamp\":1642179900000); kept a number",
    ("GET /futures/data/globalLongShortAccountRatio", "$[].timestamp: num instead of str"):
        "as openInterestHist: live responses carry a number (ccxt: \"timestamp\": "
        "1726790400000)",
}

# --- documented error codes and messages (error-code page; 503 texts: general-info page) -----
ERROR_DOC = DOCS + "error-code"
ERRORS: dict[int, list[str]] = {
    -1000: ["An unknown error occured while processing the request."],
    -1001: ["Internal error; unable to process your request. Please try again.",
            "Service Unavailable."],           # the 503 failure text of the general-info page
    -1003: ["Too many requests; current limit is %s requests per minute. Please use the "
            "websocket for live updates to avoid polling the API.",
            "Way too many requests; IP banned until %s. Please use the websocket for live "
            "updates to avoid bans."],
    -1021: ["Timestamp for this request is outside of the recvWindow.",
            "Timestamp for this request was 1000ms ahead of the server's time."],
    -1022: ["Signature for this request is not valid."],
    -1100: ["Illegal characters found in a parameter.",
            "Illegal characters found in parameter '%s'; legal range is '%s'."],
    -1102: ["A mandatory parameter was not sent, was empty/null, or malformed.",
            "Mandatory parameter '%s' was not sent, was empty/null, or malformed.",
            "Param '%s' or '%s' must be sent, but both were empty/null!"],
    -1111: ["Precision is over the maximum defined for this asset."],
    -1116: ["Invalid orderType."],
    -1120: ["Invalid interval."],
    -1121: ["Invalid symbol."],
    -1125: ["This listenKey does not exist. Please use POST /fapi/v1/listenKey to recreate "
            "listenKey"],
    -2011: ["CANCEL_REJECTED",
            'Cancel request failure as open order not found in the orderbook: "Unknown order '
            'sent".'],
    -2013: ["Order does not exist."],
    -2014: ["API-key format invalid."],
    -2015: ["Invalid API-key, IP, or permissions for action."],
    -2019: ["Margin is insufficient."],
    -2022: ["ReduceOnly Order is rejected."],
    -2027: ["Exceeded the maximum allowable position at current leverage."],
    -4003: ["Quantity less than zero."],
    -4005: ["Quantity greater than max quantity."],
    -4028: ["Invalid leverage", "Leverage %s is not valid", "Leverage %s already exist with %s"],
    -4046: ["No need to change margin type."],
    -4048: ["Margin type cannot be changed if there exists position."],
    -4059: ["No need to change position side."],
    -4116: ["clientOrderId is duplicated"],
    -4120: ["Order type not supported for this endpoint. Please use the Algo Order API "
            "endpoints instead."],
    -4164: ["Order's notional must be no smaller than 5.0 (unless you choose reduce only)",
            "Order's notional must be no smaller than %s (unless you choose reduce only)"],
}
# HTTP status by the general-info page: 4XX request errors, 429 rate limit, 418 IP ban,
# 503 service errors.
STATUS = {-1001: {503}}

# rejection name -> the code Binance documents for it
REJECTIONS: dict[str, int] = {
    "insufficient margin": -2019, "reduce-only rejected": -2022,
    "duplicate client id (open order)": -4116, "min notional": -4164,
    "unknown symbol (public)": -1121, "unknown symbol (signed)": -1121,
    "bad signature": -1022, "timestamp outside recvWindow": -1021,
    "too many requests": -1003, "IP banned": -1003,
    "unknown API key": -2015, "API key format": -2014,
    "query unknown order": -2013, "cancel unknown order": -2011,
    "missing parameter": -1102, "malformed parameter": -1100, "bad interval": -1120,
    "bad order type": -1116, "quantity precision": -1111, "quantity zero": -4003,
    "quantity above max": -4005,
    "bad leverage": -4028, "margin type unchanged": -4046, "margin type with position": -4048,
    "position side unchanged": -4059, "over max position at leverage": -2027,
    "listenKey gone (REST)": -1125, "listenKey unknown (websocket)": -1125,
    "5xx fault": -1001, "maintenance": -1001,
    "hedge mode": -1000, "recvWindow too large": -1131, "unserved path": -5000,
    "conditional order on /fapi/v1/order": -4120,
}
WAIVED_ERRORS: dict[str, str] = {
    "cancel unknown order":
        "sends \"Unknown order sent.\", the text the doc quotes inside its sentence (and what "
        "the live API answers); neither documented variant verbatim",
    "hedge mode": "hedge mode is not supported: -1000 with the emulator's own explanation",
    "recvWindow too large": "-1131 is not on the USD-M error page (the spot API's code)",
    "unserved path": "-5000 is the emulator's own answer for paths it does not serve",
    "conditional order on /fapi/v1/order":
        "Binance moved STOP / TAKE_PROFIT / TRAILING orders to the Algo Order API (-4120 "
        "STOP_ORDER_SWITCH_ALGO); the emulator still takes STOP_MARKET here and serves no "
        "/fapi/v1/algoOrder, where ccxt 4.5 sends conditional orders (404 -5000 here)",
}


def doc_message(code: int, msg: str) -> bool:
    for variant in ERRORS.get(code, []):
        pat = re.escape(variant).replace("%s", ".+?")
        if re.fullmatch(pat, msg):
            return True
    return False


# --- one scenario through the emulator, every answer captured ----------------------------------

def fidelity_dataset() -> Dataset:
    """The toy market of test_emulator plus the columns behind forceOrder / aggTrade / kline
    flow fields: liquidation notional each bar, taker-buy volume, trade counts."""
    cols = dict(toy_dataset().bars.columns)
    n = len(cols["ts"])
    cols.update({"liq_long_notional": np.full(n, 20_000.0),
                 "liq_short_notional": np.full(n, 5_000.0),
                 "taker_buy_volume": np.full(n, 40.0),
                 "taker_buy_quote_volume": 40.0 * cols["close"],
                 "trades": np.full(n, 1_000)})
    return Dataset(Bars("BTCUSDT", MIN, cols))


@dataclass
class Captured:
    shapes: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, tuple[int, Any]] = field(default_factory=dict)
    funding_update: dict[str, Any] | None = None
    doc_signature: dict[str, tuple[int, Any]] = field(default_factory=dict)


class Client:
    """Raw requests with Binance's HMAC signing (query string, or form body)."""

    def __init__(self, s: aiohttp.ClientSession, base: str, key: str = KEY,
                 secret: str = SECRET) -> None:
        self.s, self.base, self.key, self.secret = s, base, key, secret

    async def call(self, method: str, path: str, params: dict[str, Any] | None = None,
                   signed: bool = False, key: str | None = None, secret: str | None = None,
                   ts: int | None = None) -> tuple[int, Any]:
        q = {k: str(v) for k, v in (params or {}).items()}
        headers = {"X-MBX-APIKEY": key if key is not None else self.key}
        if signed:
            q["timestamp"] = str(ts if ts is not None else int(time.time() * 1000))
            qs = urlencode(q)
            qs += "&signature=" + sign(secret or self.secret, qs)
        else:
            qs = urlencode(q)
        url = f"{self.base}{path}" + (f"?{qs}" if qs else "")
        async with self.s.request(method, url, headers=headers) as r:
            return r.status, json.loads(await r.text())


async def _ws_collect(ws: aiohttp.ClientWebSocketResponse, want: set[str],
                      got: dict[str, list[dict[str, Any]]], deadline_s: float) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while not want <= set(got) and loop.time() < end:
        try:
            msg = await ws.receive(timeout=max(0.05, end - loop.time()))
        except TimeoutError:
            break
        if msg.type != aiohttp.WSMsgType.TEXT:
            break
        ev = json.loads(msg.data)
        if isinstance(ev, dict) and "e" in ev:
            got.setdefault(ev["e"], []).append(ev)
            if ev["e"] == "ACCOUNT_UPDATE":
                got.setdefault(f"ACCOUNT_UPDATE {ev['a']['m']}", []).append(ev)


async def _scenario() -> Captured:
    c = Captured()
    sym = {"symbol": "BTCUSDT"}
    emu = Emulator([fidelity_dataset()], {KEY: SECRET}, cfg(weight_limit=100_000),
                   rules={"BTCUSDT": SymbolRules(min_notional=200.0)})
    await emu.start()
    try:
        async with aiohttp.ClientSession() as s:
            api = Client(s, emu.rest_url)
            shapes, errors = c.shapes, c.errors

            async def keep(name: str, method: str, path: str, params: dict[str, Any] | None = None,
                           signed: bool = False) -> Any:
                status, body = await api.call(method, path, params, signed)
                assert status == 200, (name, status, body)
                shapes[name] = body
                return body

            async def reject(name: str, method: str, path: str,
                             params: dict[str, Any] | None = None, signed: bool = True,
                             **kw: Any) -> None:
                errors[name] = await api.call(method, path, params, signed, **kw)

            # public market data at bar 10 (+1 s)
            await keep("GET /fapi/v1/ping", "GET", "/fapi/v1/ping")
            await keep("GET /fapi/v1/time", "GET", "/fapi/v1/time")
            await keep("GET /fapi/v1/exchangeInfo", "GET", "/fapi/v1/exchangeInfo")
            await keep("GET /fapi/v1/klines", "GET", "/fapi/v1/klines",
                       {**sym, "interval": "1m", "limit": 5})
            await keep("GET /fapi/v1/markPriceKlines", "GET", "/fapi/v1/markPriceKlines",
                       {**sym, "interval": "1m", "limit": 5})
            await keep("GET /fapi/v1/premiumIndex?symbol", "GET", "/fapi/v1/premiumIndex", sym)
            await keep("GET /fapi/v1/premiumIndex", "GET", "/fapi/v1/premiumIndex")
            await keep("GET /fapi/v1/openInterest", "GET", "/fapi/v1/openInterest", sym)
            await keep("GET /futures/data/openInterestHist", "GET",
                       "/futures/data/openInterestHist", {**sym, "period": "5m"})
            await keep("GET /futures/data/globalLongShortAccountRatio", "GET",
                       "/futures/data/globalLongShortAccountRatio", {**sym, "period": "5m"})

            # streams: a user-data socket and a market socket before anything happens
            lk = (await keep("POST /fapi/v1/listenKey", "POST", "/fapi/v1/listenKey"))["listenKey"]
            await keep("PUT /fapi/v1/listenKey", "PUT", "/fapi/v1/listenKey")
            user_ws = await s.ws_connect(f"{emu.ws_url}/{lk}")
            market_ws = await s.ws_connect(emu.ws_url)
            await market_ws.send_json({"method": "SUBSCRIBE", "id": 1, "params": [
                "btcusdt@kline_1m", "btcusdt@markPrice", "btcusdt@aggTrade",
                "btcusdt@forceOrder"]})
            assert (await market_ws.receive_json(timeout=5)) == {"result": None, "id": 1}

            # account configuration
            await keep("GET /fapi/v1/leverageBracket?symbol", "GET", "/fapi/v1/leverageBracket",
                       sym, signed=True)
            await keep("GET /fapi/v1/leverageBracket", "GET", "/fapi/v1/leverageBracket",
                       signed=True)
            await keep("GET /fapi/v1/commissionRate", "GET", "/fapi/v1/commissionRate", sym,
                       signed=True)
            await keep("GET /fapi/v1/positionSide/dual", "GET", "/fapi/v1/positionSide/dual",
                       signed=True)
            await keep("POST /fapi/v1/marginType", "POST", "/fapi/v1/marginType",
                       {**sym, "marginType": "ISOLATED"}, signed=True)
            await api.call("POST", "/fapi/v1/marginType", {**sym, "marginType": "CROSSED"},
                           signed=True)
            await keep("POST /fapi/v1/leverage", "POST", "/fapi/v1/leverage",
                       {**sym, "leverage": 10}, signed=True)

            # orders: a market buy (filled), a resting limit cancelled, one left resting
            order = {**sym, "side": "BUY"}
            await keep("POST /fapi/v1/order", "POST", "/fapi/v1/order",
                       {**order, "type": "MARKET", "quantity": "0.01",
                        "newClientOrderId": "fid-buy"}, signed=True)
            await api.call("POST", "/fapi/v1/order", {
                **order, "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.003",
                "price": "90000", "newClientOrderId": "fid-cancel"}, signed=True)
            await api.call("POST", "/fapi/v1/order", {
                **order, "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.003",
                "price": "90000", "newClientOrderId": "fid-rest"}, signed=True)
            await keep("GET /fapi/v1/order", "GET", "/fapi/v1/order",
                       {**sym, "origClientOrderId": "fid-buy"}, signed=True)
            await keep("GET /fapi/v1/openOrders", "GET", "/fapi/v1/openOrders", sym, signed=True)
            await keep("GET /fapi/v1/allOrders", "GET", "/fapi/v1/allOrders", sym, signed=True)
            await keep("DELETE /fapi/v1/order", "DELETE", "/fapi/v1/order",
                       {**sym, "origClientOrderId": "fid-cancel"}, signed=True)
            await keep("GET /fapi/v1/userTrades", "GET", "/fapi/v1/userTrades", sym, signed=True)
            for path in ("/fapi/v2/positionRisk", "/fapi/v3/positionRisk", "/fapi/v2/account",
                         "/fapi/v3/account", "/fapi/v2/balance", "/fapi/v3/balance"):
                await keep(f"GET {path}", "GET", path, signed=True)

            # the common rejections, with a 0.01 BTC long and the "fid-rest" order open
            mkt = {**order, "type": "MARKET"}
            await reject("insufficient margin", "POST", "/fapi/v1/order",
                         {**mkt, "quantity": "5"})
            await reject("reduce-only rejected", "POST", "/fapi/v1/order",
                         {**mkt, "quantity": "0.01", "reduceOnly": "true"})
            await reject("duplicate client id (open order)", "POST", "/fapi/v1/order", {
                **order, "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.003",
                "price": "90000", "newClientOrderId": "fid-rest"})
            await reject("min notional", "POST", "/fapi/v1/order", {**mkt, "quantity": "0.001"})
            await reject("unknown symbol (public)", "GET", "/fapi/v1/premiumIndex",
                         {"symbol": "NOPEUSDT"}, signed=False)
            await reject("unknown symbol (signed)", "POST", "/fapi/v1/order",
                         {**mkt, "symbol": "NOPEUSDT", "quantity": "0.01"})
            await reject("bad signature", "GET", "/fapi/v2/balance", secret="wrong" * 8)
            await reject("timestamp outside recvWindow", "GET", "/fapi/v2/balance",
                         ts=int(time.time() * 1000) - 120_000)
            await reject("unknown API key", "GET", "/fapi/v2/balance",
                         key="unknownkey0123456789")
            await reject("API key format", "GET", "/fapi/v2/balance", key="bad key!")
            await reject("query unknown order", "GET", "/fapi/v1/order",
                         {**sym, "orderId": 424242})
            await reject("cancel unknown order", "DELETE", "/fapi/v1/order",
                         {**sym, "orderId": 424242})
            await reject("missing parameter", "GET", "/fapi/v1/klines", sym, signed=False)
            await reject("malformed parameter", "GET", "/fapi/v1/klines",
                         {**sym, "interval": "1m", "limit": "abc"}, signed=False)
            await reject("bad interval", "GET", "/fapi/v1/klines", {**sym, "interval": "3m"},
                         signed=False)
            await reject("bad order type", "POST", "/fapi/v1/order",
                         {**order, "type": "FOO", "quantity": "0.01"})
            await reject("quantity precision", "POST", "/fapi/v1/order",
                         {**mkt, "quantity": "0.0101"})
            await reject("quantity zero", "POST", "/fapi/v1/order", {**mkt, "quantity": "0"})
            await reject("quantity above max", "POST", "/fapi/v1/order",
                         {**mkt, "quantity": "1000.001"})
            await reject("bad leverage", "POST", "/fapi/v1/leverage", {**sym, "leverage": 200})
            await reject("margin type unchanged", "POST", "/fapi/v1/marginType",
                         {**sym, "marginType": "CROSSED"})
            await reject("margin type with position", "POST", "/fapi/v1/marginType",
                         {**sym, "marginType": "ISOLATED"})
            await reject("position side unchanged", "POST", "/fapi/v1/positionSide/dual",
                         {"dualSidePosition": "false"})
            await reject("hedge mode", "POST", "/fapi/v1/positionSide/dual",
                         {"dualSidePosition": "true"})
            await reject("recvWindow too large", "GET", "/fapi/v2/balance",
                         {"recvWindow": 70_000})
            await reject("unserved path", "GET", "/fapi/v1/depth", sym, signed=False)
            await api.call("POST", "/fapi/v1/leverage", {**sym, "leverage": 125}, signed=True)
            await reject("over max position at leverage", "POST", "/fapi/v1/order",
                         {**mkt, "quantity": "1"})
            await api.call("POST", "/fapi/v1/leverage", {**sym, "leverage": 10}, signed=True)

            # replay to bar 121: closes for the market streams, funding at bar 120's open
            async with s.post(emu.rest_url + "/admin/clock",
                              json={"to_ms": START + 121 * MIN + 1000}) as r:
                assert r.status == 200
            await keep("GET /fapi/v1/fundingRate", "GET", "/fapi/v1/fundingRate", sym)
            await keep("GET /fapi/v1/income", "GET", "/fapi/v1/income",
                       {"incomeType": "FUNDING_FEE"}, signed=True)
            await keep("DELETE /fapi/v1/allOpenOrders", "DELETE", "/fapi/v1/allOpenOrders",
                       sym, signed=True)
            await reject("conditional order on /fapi/v1/order", "POST", "/fapi/v1/order", {
                **sym, "side": "SELL", "type": "STOP_MARKET", "quantity": "0.01",
                "stopPrice": "50000", "reduceOnly": "true"})

            got: dict[str, list[dict[str, Any]]] = {}
            await _ws_collect(market_ws, {"kline", "markPriceUpdate", "aggTrade", "forceOrder"},
                              got, 10.0)
            await _ws_collect(user_ws, {"ORDER_TRADE_UPDATE", "ACCOUNT_UPDATE ORDER",
                                        "ACCOUNT_UPDATE FUNDING_FEE"}, got, 10.0)
            for e in ("kline", "markPriceUpdate", "aggTrade", "forceOrder",
                      "ORDER_TRADE_UPDATE"):
                if e in got:
                    shapes[f"ws {e}"] = got[e][0]
            if "ACCOUNT_UPDATE ORDER" in got:
                shapes["ws ACCOUNT_UPDATE"] = got["ACCOUNT_UPDATE ORDER"][0]
            if "ACCOUNT_UPDATE FUNDING_FEE" in got:
                c.funding_update = got["ACCOUNT_UPDATE FUNDING_FEE"][0]

            # listenKey closed, then kept alive / connected: -1125
            await keep("DELETE /fapi/v1/listenKey", "DELETE", "/fapi/v1/listenKey")
            await reject("listenKey gone (REST)", "PUT", "/fapi/v1/listenKey", signed=False)
            async with s.get(f"{emu.ws_url.removesuffix('/ws')}/private/ws",
                             params={"listenKey": "nope"}) as r:
                errors["listenKey unknown (websocket)"] = (r.status, await r.json())
            await user_ws.close()
            await market_ws.close()

            # service faults (admin endpoint), then back to none
            async def faults(body: dict[str, Any]) -> None:
                async with s.post(emu.rest_url + "/admin/faults", json=body) as r:
                    assert r.status == 200
            await faults({"http_5xx_rate": 1.0})
            await reject("5xx fault", "GET", "/fapi/v1/time", signed=False)
            await faults({"profile": "none"})
            await faults({"maintenance": [[START, START + 1000 * MIN]]})
            await reject("maintenance", "GET", "/fapi/v1/time", signed=False)
            await faults({"profile": "none"})
    finally:
        await emu.stop()

    # rate limits: 2 weight per window, banned at the first repeat
    tight = Emulator([fidelity_dataset()], {KEY: SECRET}, cfg(weight_limit=2, ban_after=1))
    await tight.start()
    try:
        async with aiohttp.ClientSession() as s:
            api = Client(s, tight.rest_url)
            for _ in range(2):
                assert (await api.call("GET", "/fapi/v1/time"))[0] == 200
            c.errors["too many requests"] = await api.call("GET", "/fapi/v1/time")
            c.errors["IP banned"] = await api.call("GET", "/fapi/v1/time")
    finally:
        await tight.stop()

    # the signed request of the general-info page, with its key and secret
    doc = Emulator([fidelity_dataset()], {DOC_KEY: DOC_SECRET}, cfg())
    await doc.start()
    try:
        async with aiohttp.ClientSession() as s:
            hdr = {"X-MBX-APIKEY": DOC_KEY}
            url = doc.rest_url + "/fapi/v1/order"
            for name, sig in (("as documented", DOC_SIGNATURE),
                              ("one hex digit changed", "4" + DOC_SIGNATURE[1:])):
                async with s.post(f"{url}?{DOC_PAYLOAD}&signature={sig}", headers=hdr) as r:
                    c.doc_signature[f"query, {name}"] = (r.status, await r.json())
                async with s.post(url, data=f"{DOC_PAYLOAD}&signature={sig}", headers={
                        **hdr, "Content-Type": "application/x-www-form-urlencoded"}) as r:
                    c.doc_signature[f"body, {name}"] = (r.status, await r.json())
    finally:
        await doc.stop()
    return c


# general-info page, "SIGNED Endpoint Examples for POST /fapi/v1/order - HMAC Keys", example 1
DOC_KEY = "dbefbc809e3e83c283a984c3a1459732ea7db1360ca80c5c2c8867408d28cc83"
DOC_SECRET = "2b5eb11e18796d12d88f13dc27dbbd02c2cc51ff7059765ed9821957d82bb4d9"
DOC_PAYLOAD = ("symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&price=9000&timeInForce=GTC"
               "&recvWindow=5000&timestamp=1591702613943")
DOC_SIGNATURE = "3c661234138461fcc7a7d8746c6558c9842d4e10870d2ecbedf7777cad694af9"


@pytest.fixture(scope="module")
def captured() -> Captured:
    return asyncio.run(asyncio.wait_for(_scenario(), 120))


# --- the checks -------------------------------------------------------------------------------

def test_shape_checker_reports_each_kind_of_deviation() -> None:
    shape = {"a": S, "b?": N, "c": [{"d": B}], "k": (N, S)}
    assert deviations(shape, {"a": "x", "c": [{"d": True}], "k": [1, "2"]}) == []
    assert deviations(shape, {"a": 1, "b": "1", "c": [], "k": [1], "z": 0}) == [
        "$.a: num instead of str", "$.b: str instead of num", "$.c: empty, nothing to check",
        "$.k: 1 items instead of 2", "$.z: not documented"]
    assert deviations(shape, {"c": [{"d": "true"}, {}], "k": [1, 2]}) == [
        "$.a: missing", "$.c[].d: missing", "$.c[].d: str instead of bool",
        "$.k[1]: num instead of str"]


@pytest.mark.parametrize("name", sorted(SPECS))
def test_shape_matches_documented_example(name: str, captured: Captured) -> None:
    page, shape = SPECS[name]
    assert name in captured.shapes, f"{name}: nothing captured ({DOCS}{page})"
    found = deviations(shape, captured.shapes[name])
    left = [d for d in found if (name, d) not in WAIVED]
    assert left == [], f"{name} vs {DOCS}{page}: {left}"


@pytest.mark.parametrize("name, dev", sorted(WAIVED), ids=[f"{n} {d}" for n, d in sorted(WAIVED)])
def test_waived_deviation_still_present(name: str, dev: str, captured: Captured,
                                        request: pytest.FixtureRequest) -> None:
    request.applymarker(pytest.mark.xfail(strict=True, reason=WAIVED[(name, dev)]))
    assert dev not in deviations(SPECS[name][1], captured.shapes[name])


@pytest.mark.parametrize("name", sorted(REJECTIONS))
def test_error_code_status_and_message_as_documented(name: str, captured: Captured,
                                                     request: pytest.FixtureRequest) -> None:
    if name in WAIVED_ERRORS:
        request.applymarker(pytest.mark.xfail(strict=True, reason=WAIVED_ERRORS[name]))
    status, body = captured.errors[name]
    code = REJECTIONS[name]
    assert isinstance(body, dict) and set(body) == {"code", "msg"}, body
    assert body["code"] == code, (name, body)
    want = STATUS.get(code) or ({429} if name == "too many requests" else
                                {418} if name == "IP banned" else set(range(400, 500)))
    assert status in want, (name, status)
    assert doc_message(code, body["msg"]), f"{name}: {body['msg']!r} not in {ERROR_DOC}"


def test_funding_on_a_cross_position_pushes_the_balance_only(captured: Captured) -> None:
    """Event-Balance-and-Position-Update: FUNDING FEE on a crossed position -> only `B`
    (the funding asset), no position rows."""
    ev = captured.funding_update
    assert ev is not None, "no FUNDING_FEE ACCOUNT_UPDATE seen"
    assert ev["a"]["P"] == [] and [b["a"] for b in ev["a"]["B"]] == ["USDT"]


def test_documented_hmac_example_signature_is_accepted(captured: Captured) -> None:
    """General-info page, HMAC example 1 (query string) and 2 (request body): the documented
    signature passes the signature check and the request then fails only on its 2020
    timestamp (-1021); one changed hex digit fails the signature (-1022)."""
    assert sign(DOC_SECRET, DOC_PAYLOAD) == DOC_SIGNATURE
    got = {k: (st, b["code"]) for k, (st, b) in captured.doc_signature.items()}
    assert got == {"query, as documented": (400, -1021), "body, as documented": (400, -1021),
                   "query, one hex digit changed": (400, -1022),
                   "body, one hex digit changed": (400, -1022)}
