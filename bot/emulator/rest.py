"""REST routes of the emulator, Binance USD-M paths and shapes (what ccxt `binanceusdm`
calls). Public market data comes from `Market` up to the simulated now; signed endpoints go
through `Authenticator` and the `Venue`. Decimals are strings, times int ms, as Binance.
Orders answer with their state after matching (like `newOrderRespType=RESULT`)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from bot.emulator import errors as er
from bot.emulator.account import EOrder, ETrade
from bot.emulator.market import _s

if TYPE_CHECKING:
    from bot.emulator.server import Emulator


def _time_window(rows: list[Any], q: dict[str, str], oldest_first: bool) -> list[Any]:
    """Rows (with a `.time`, ms) inside [startTime, endTime], at most `limit` (500, max
    1000): the oldest ones when paging forward from startTime, else the newest, as Binance."""
    start, end = _int(q, "startTime"), _int(q, "endTime")
    limit = min(_int(q, "limit", 500) or 500, 1000)
    rows = [r for r in rows if (start is None or r.time >= start) and (end is None or r.time <= end)]
    return rows[:limit] if oldest_first else rows[-limit:]


def _int(q: dict[str, str], name: str, default: int | None = None) -> int | None:
    if name not in q:
        return default
    try:
        return int(q[name])
    except ValueError:
        raise er.bad_param(name) from None


def order_json(o: EOrder, answer: bool = False) -> dict[str, Any]:
    """An order as Binance shows it. `answer`: the shape of POST / DELETE `/fapi/v1/order`
    (with `cumQty`, no `time`); else the shape of the queries (GET order, openOrders,
    allOrders: with `time`, no `cumQty`), as the documented examples."""
    out: dict[str, Any] = {
        "orderId": o.order_id, "symbol": o.symbol, "status": o.status,
        "clientOrderId": o.client_id, "price": _s(o.price), "avgPrice": _s(o.avg_price),
        "origQty": _s(o.qty), "executedQty": _s(o.executed), "cumQuote": _s(o.cum_quote),
        "timeInForce": o.tif, "type": o.type, "reduceOnly": o.reduce_only,
        "closePosition": False, "side": o.side, "positionSide": "BOTH",
        "stopPrice": _s(o.stop_price), "workingType": o.working_type, "priceProtect": False,
        "origType": o.type, "priceMatch": "NONE", "selfTradePreventionMode": "NONE",
        "goodTillDate": 0, "updateTime": o.update_time}
    if answer:
        out["cumQty"] = _s(o.executed)
    else:
        out["time"] = o.time
    return out


def trade_json(t: ETrade) -> dict[str, Any]:
    return {"buyer": t.side == "BUY", "commission": _s(t.fee), "commissionAsset": "USDT",
            "id": t.trade_id, "maker": t.maker, "orderId": t.order_id, "price": _s(t.price),
            "qty": _s(t.qty), "quoteQty": _s(t.qty * t.price), "realizedPnl": _s(t.realized),
            "side": t.side, "positionSide": "BOTH", "symbol": t.symbol, "time": t.time}


def exchange_symbol(emu: Emulator, s: str) -> dict[str, Any]:
    r = emu.venue.rules[s]
    return {
        "symbol": s, "pair": s, "contractType": "PERPETUAL", "deliveryDate": 4133404800000,
        "onboardDate": 1569398400000, "status": "TRADING", "maintMarginPercent": "2.5000",
        "requiredMarginPercent": "5.0000", "baseAsset": s.removesuffix("USDT"),
        "quoteAsset": "USDT", "marginAsset": "USDT", "pricePrecision": r.price_precision,
        "quantityPrecision": r.qty_precision, "baseAssetPrecision": 8, "quotePrecision": 8,
        "underlyingType": "COIN", "underlyingSubType": [], "settlePlan": 0,
        "triggerProtect": "0.0500",
        "liquidationFee": _s(emu.venue.fees.liquidation), "marketTakeBound": "0.05",
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": _s(r.tick), "maxPrice": "4529764",
             "tickSize": _s(r.tick)},
            {"filterType": "LOT_SIZE", "stepSize": _s(r.step), "maxQty": _s(r.max_qty),
             "minQty": _s(r.min_qty)},
            {"filterType": "MARKET_LOT_SIZE", "stepSize": _s(r.step), "maxQty": _s(r.max_qty),
             "minQty": _s(r.min_qty)},
            {"filterType": "MIN_NOTIONAL", "notional": _s(r.min_notional)}],
        "orderTypes": ["LIMIT", "MARKET", "STOP_MARKET"], "timeInForce": ["GTC", "IOC"]}


class Routes:
    """Handlers bound to one `Emulator`."""

    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.hidden: dict[tuple[str, int], float] = {}   # (key, order id) -> visible at (wall)
        self.wall: Callable[[], float] = time.monotonic   # the hiding's clock (tests inject)

    def _visible(self, key: str, o: EOrder) -> bool:
        """False while a lost order is hidden from the order queries (`hide_lost_order_s`)."""
        until = self.hidden.get((key, o.order_id))
        if until is None:
            return True
        if self.wall() >= until:
            del self.hidden[(key, o.order_id)]
            return True
        return False

    def register(self, app: web.Application) -> None:
        g, p = app.router.add_get, app.router.add_post
        v1 = "/fapi/v1"
        for path, h in ((f"{v1}/ping", self.ping), (f"{v1}/time", self.time),
                        (f"{v1}/exchangeInfo", self.exchange_info),
                        (f"{v1}/klines", self.klines), (f"{v1}/markPriceKlines", self.mark_klines),
                        (f"{v1}/premiumIndex", self.premium_index),
                        (f"{v1}/fundingRate", self.funding_rate),
                        (f"{v1}/openInterest", self.open_interest),
                        ("/futures/data/openInterestHist", self.oi_hist),
                        ("/futures/data/globalLongShortAccountRatio", self.long_short),
                        (f"{v1}/leverageBracket", self.leverage_bracket),
                        ("/fapi/v2/leverageBracket", self.leverage_bracket),
                        (f"{v1}/positionSide/dual", self.dual_get),
                        (f"{v1}/order", self.get_order), (f"{v1}/openOrders", self.open_orders),
                        (f"{v1}/openOrder", self.get_order),
                        (f"{v1}/allOrders", self.all_orders),
                        ("/fapi/v2/positionRisk", self.position_risk_v2),
                        ("/fapi/v3/positionRisk", self.position_risk_v3),
                        ("/fapi/v2/account", self.account_v2),
                        ("/fapi/v3/account", self.account_v3),
                        ("/fapi/v2/balance", self.balance), ("/fapi/v3/balance", self.balance),
                        (f"{v1}/userTrades", self.user_trades),
                        (f"{v1}/commissionRate", self.commission_rate),
                        (f"{v1}/income", self.income)):
            g(path, h)
        p(f"{v1}/order", self.post_order)
        app.router.add_delete(f"{v1}/order", self.cancel_order)
        app.router.add_delete(f"{v1}/allOpenOrders", self.cancel_all)
        p(f"{v1}/leverage", self.leverage)
        p(f"{v1}/marginType", self.margin_type)
        p(f"{v1}/positionSide/dual", self.dual_post)
        p(f"{v1}/listenKey", self.listen_key_post)
        app.router.add_put(f"{v1}/listenKey", self.listen_key_put)
        app.router.add_delete(f"{v1}/listenKey", self.listen_key_delete)

    # --- helpers --------------------------------------------------------------------------
    def _now(self) -> int:
        self.emu.venue.sync()
        return self.emu.venue.now

    def _sym(self, q: dict[str, str]) -> Any:
        if "symbol" not in q:
            raise er.mandatory("symbol")
        return self.emu.venue.data(q["symbol"])

    async def _signed(self, request: web.Request) -> tuple[str, dict[str, str]]:
        body = await request.text() if request.can_read_body else ""
        params = dict(request.query)
        if body:
            params.update(dict(await request.post()))
        key = self.emu.auth.check(request.headers.get("X-MBX-APIKEY"), request.query_string,
                                  body, {k: str(v) for k, v in params.items()})
        return key, {k: str(v) for k, v in params.items()}

    # --- public ---------------------------------------------------------------------------
    async def ping(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def time(self, request: web.Request) -> web.Response:
        return web.json_response({"serverTime": self._now()})

    async def exchange_info(self, request: web.Request) -> web.Response:
        return web.json_response({
            "timezone": "UTC", "serverTime": self._now(),
            "rateLimits": [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE",
                            "intervalNum": 1, "limit": self.emu.limiter.limit}],
            "exchangeFilters": [], "assets": [{"asset": "USDT", "marginAvailable": True,
                                               "autoAssetExchange": "-10000"}],
            "symbols": [exchange_symbol(self.emu, s) for s in self.emu.venue.symbols]})

    async def klines(self, request: web.Request, mark: bool = False) -> web.Response:
        q = dict(request.query)
        d = self._sym(q)
        if "interval" not in q:
            raise er.mandatory("interval")
        if q["interval"] != self.emu.hub.iv_name:
            raise er.ApiError(400, -1120, "Invalid interval.")
        now = self._now()
        limit = min(_int(q, "limit", 500) or 500, 1500)
        idx = self.emu.market.select(d, now, _int(q, "startTime"), _int(q, "endTime"), limit)
        return web.json_response([self.emu.market.kline_row(d, int(i), now, mark) for i in idx])

    async def mark_klines(self, request: web.Request) -> web.Response:
        return await self.klines(request, mark=True)

    def _premium(self, d: Any, now: int) -> dict[str, Any]:
        m = self.emu.market
        rate, _ = m.last_funding(d, now)
        mark = m.mark(d, now)
        return {"symbol": d.symbol, "markPrice": _s(mark), "indexPrice": _s(mark),
                "estimatedSettlePrice": _s(mark), "lastFundingRate": _s(rate),
                "interestRate": "0.0001", "nextFundingTime": m.next_funding_ms(d, now),
                "time": now}

    async def premium_index(self, request: web.Request) -> web.Response:
        q = dict(request.query)
        now = self._now()
        if "symbol" in q:
            return web.json_response(self._premium(self._sym(q), now))
        return web.json_response([self._premium(d, now) for d in self.emu.market.symbols.values()])

    async def funding_rate(self, request: web.Request) -> web.Response:
        q = dict(request.query)
        d = self._sym(q)
        now = self._now()
        limit = min(_int(q, "limit", 100) or 100, 1000)
        start, end = _int(q, "startTime"), _int(q, "endTime")
        rows = [{"symbol": d.symbol, "fundingTime": int(d.ts[i]),
                 "fundingRate": _s(d.funding[i]), "markPrice": _s(d.mark_open[i])}
                for i in range(len(d.ts)) if d.funding[i] == d.funding[i] and d.ts[i] <= now
                and (start is None or d.ts[i] >= start) and (end is None or d.ts[i] <= end)]
        return web.json_response(rows[:limit] if start is not None else rows[-limit:])

    async def open_interest(self, request: web.Request) -> web.Response:
        q = dict(request.query)
        d = self._sym(q)
        now = self._now()
        rows = self.emu.market.state_rows(d, "open_interest", now, self.emu.market.interval_ms,
                                          None, None, 1)
        if not rows:            # the dataset has no open interest: none is made up (a "0"
            # would read as a market nobody holds); documented deviation, ccxt gives None
            return web.json_response({"symbol": d.symbol, "time": now})
        return web.json_response({"symbol": d.symbol, "openInterest": _s(rows[-1][1]),
                                  "time": now})

    async def _periodic(self, request: web.Request, column: str) -> list[tuple[int, float]]:
        q = dict(request.query)
        d = self._sym(q)
        periods = {"5m": 300_000, "15m": 900_000, "30m": 1_800_000, "1h": 3_600_000,
                   "2h": 7_200_000, "4h": 14_400_000, "6h": 21_600_000, "12h": 43_200_000,
                   "1d": 86_400_000}
        if q.get("period") not in periods:
            raise er.mandatory("period")
        limit = min(_int(q, "limit", 30) or 30, 500)
        return self.emu.market.state_rows(d, column, self._now(), periods[q["period"]],
                                          _int(q, "startTime"), _int(q, "endTime"), limit)

    async def oi_hist(self, request: web.Request) -> web.Response:
        s = request.query.get("symbol", "")
        rows = await self._periodic(request, "open_interest")
        val = {t: v for t, v in await self._periodic(request, "open_interest_value")}
        return web.json_response([{"symbol": s, "sumOpenInterest": _s(v),
                                   "sumOpenInterestValue": _s(val.get(t, 0.0)),
                                   "timestamp": t} for t, v in rows])

    async def long_short(self, request: web.Request) -> web.Response:
        s = request.query.get("symbol", "")
        rows = await self._periodic(request, "long_short_ratio")
        return web.json_response([{"symbol": s, "longShortRatio": _s(r),
                                   "longAccount": f"{r / (1 + r):.4f}",
                                   "shortAccount": f"{1 / (1 + r):.4f}", "timestamp": t}
                                  for t, r in rows])

    # --- signed: account configuration ------------------------------------------------------
    async def leverage_bracket(self, request: web.Request) -> web.Response:
        _, q = await self._signed(request)
        syms = [self._sym(q).symbol] if "symbol" in q else self.emu.venue.symbols
        out = []
        for s in syms:
            b = self.emu.venue.brackets[s]
            out.append({"symbol": s, "brackets": [      # no notionalCoef: not adjusted
                {"bracket": i + 1, "initialLeverage": int(b.max_leverage[i]),
                 "notionalCap": float(b.cap[i]), "notionalFloor": float(b.floor[i]),
                 "maintMarginRatio": float(b.mmr[i]), "cum": float(b.cum[i])}
                for i in range(len(b))]})
        return web.json_response(out[0] if "symbol" in q else out)

    async def leverage(self, request: web.Request) -> web.Response:
        key, q = await self._signed(request)
        s = self._sym(q).symbol
        lev = _int(q, "leverage")
        if lev is None:
            raise er.mandatory("leverage")
        cap = self.emu.venue.set_leverage(key, s, lev)
        return web.json_response({"leverage": lev, "maxNotionalValue": _s(cap), "symbol": s})

    async def margin_type(self, request: web.Request) -> web.Response:
        key, q = await self._signed(request)
        self.emu.venue.set_margin_type(key, self._sym(q).symbol, q.get("marginType", ""))
        return web.json_response({"code": 200, "msg": "success"})

    async def dual_get(self, request: web.Request) -> web.Response:
        await self._signed(request)
        return web.json_response({"dualSidePosition": False})

    async def dual_post(self, request: web.Request) -> web.Response:
        _, q = await self._signed(request)
        if q.get("dualSidePosition", "").lower() == "false":
            raise er.position_side_unchanged()
        raise er.unknown("Hedge mode (dualSidePosition) is not supported by the liqbot emulator.")

    async def commission_rate(self, request: web.Request) -> web.Response:
        _, q = await self._signed(request)
        s = self._sym(q).symbol
        f = self.emu.venue.fees
        return web.json_response({"symbol": s, "makerCommissionRate": _s(f.maker),
                                  "takerCommissionRate": _s(f.taker),
                                  "rpiCommissionRate": "0"})      # no RPI orders here

    # --- signed: orders ------------------------------------------------------------------------
    async def post_order(self, request: web.Request) -> web.Response:
        key, q = await self._signed(request)
        o = self.emu.venue.place(key, q)
        if self.emu.faults.take_lost_order():
            self.emu.faults.record("timeout_after_accept", self.emu.venue.now,
                                   f"order {o.order_id} {o.client_id}")
            hide = self.emu.faults.profile.hide_lost_order_s
            if hide > 0:
                self.hidden[(key, o.order_id)] = self.wall() + hide
            await self.emu.hub.flush()
            raise LostResponse(self.emu.faults.profile.hang_s)
        return web.json_response(order_json(o, answer=True))

    async def get_order(self, request: web.Request) -> web.Response:
        key, q = await self._signed(request)
        o = self.emu.venue.find(key, q)
        if not self._visible(key, o):
            raise er.no_order()
        return web.json_response(order_json(o))

    async def cancel_order(self, request: web.Request) -> web.Response:
        key, q = await self._signed(request)
        return web.json_response(order_json(self.emu.venue.cancel(key, q), answer=True))

    async def cancel_all(self, request: web.Request) -> web.Response:
        key, q = await self._signed(request)
        s = self._sym(q).symbol
        a = self.emu.venue.account(key)
        for o in list(a.orders.values()):
            if o.symbol == s and o.status in ("NEW", "PARTIALLY_FILLED"):
                self.emu.venue.cancel(key, {"symbol": s, "orderId": str(o.order_id)})
        return web.json_response({"code": 200, "msg": "The operation of cancel all open order "
                                                      "is done."})

    async def open_orders(self, request: web.Request) -> web.Response:
        key, q = await self._signed(request)
        self._now()
        s = self._sym(q).symbol if "symbol" in q else None
        a = self.emu.venue.account(key)
        return web.json_response([order_json(o) for o in a.orders.values()
                                  if o.status in ("NEW", "PARTIALLY_FILLED")
                                  and (s is None or o.symbol == s) and self._visible(key, o)])

    async def all_orders(self, request: web.Request) -> web.Response:
        key, q = await self._signed(request)
        self._now()
        s = self._sym(q).symbol
        rows = _time_window([o for o in self.emu.venue.account(key).orders.values()
                             if o.symbol == s and self._visible(key, o)], q, oldest_first=False)
        return web.json_response([order_json(o) for o in rows])

    async def user_trades(self, request: web.Request) -> web.Response:
        key, q = await self._signed(request)
        self._now()
        s = self._sym(q).symbol
        trades = [t for t in self.emu.venue.account(key).trades if t.symbol == s]
        from_id = _int(q, "fromId")
        if from_id is not None:          # Binance: trades with id >= fromId, oldest first
            trades = [t for t in trades if t.trade_id >= from_id]
        rows = _time_window(trades, q, oldest_first="startTime" in q or from_id is not None)
        return web.json_response([trade_json(t) for t in rows])

    async def income(self, request: web.Request) -> web.Response:
        """`/fapi/v1/income`: FUNDING_FEE rows only (the other income types are not kept),
        oldest first; `income` is signed from the account's side (+ received)."""
        key, q = await self._signed(request)
        self._now()
        s = self._sym(q).symbol if "symbol" in q else None
        kind = q.get("incomeType", "FUNDING_FEE")
        rows = [] if kind != "FUNDING_FEE" else [
            _Income(FUNDING_TRAN_BASE + k, sym, t, -paid)
            for k, (sym, t, paid) in enumerate(self.emu.venue.account(key).funding_log)
            if s is None or sym == s]
        lim = min(_int(q, "limit", 100) or 100, 1000)
        rows = _time_window(rows, {**q, "limit": str(lim)}, oldest_first=True)
        return web.json_response([{"symbol": r.symbol, "incomeType": "FUNDING_FEE",
                                   "income": _s(r.income), "asset": "USDT",
                                   "info": "FUNDING_FEE", "time": r.time,
                                   "tranId": r.tran_id, "tradeId": ""} for r in rows])

    # --- signed: positions and balances ------------------------------------------------------
    def _positions(self, key: str, q: dict[str, str], v3: bool) -> list[dict[str, Any]]:
        self._now()
        venue = self.emu.venue
        a = venue.account(key)
        syms = [self._sym(q).symbol] if "symbol" in q else venue.symbols
        out = []
        for s in syms:
            v = venue.position_view(a, s)
            i = venue.slot[s]
            if v3 and v["qty"] == 0.0:
                continue             # v3 lists only symbols with a position or open orders
            row: dict[str, Any] = {
                "symbol": s, "positionSide": "BOTH", "positionAmt": _s(v["qty"]),
                "entryPrice": _s(v["entry"]), "breakEvenPrice": _s(v["entry"]),
                "markPrice": _s(v["mark"]), "unRealizedProfit": _s(v["upnl"]),
                "liquidationPrice": _s(v["liq"]), "isolatedMargin": _s(v["iso_margin"]),
                "notional": _s(v["notional"]), "isolatedWallet": _s(v["iso_margin"]),
                "updateTime": int(a.update_ms[i])}
            if v3:
                row.update({"marginAsset": "USDT", "initialMargin": _s(v["im"]),
                            "maintMargin": _s(v["mm"]), "positionInitialMargin": _s(v["im"]),
                            "openOrderInitialMargin": "0", "adl": 0, "bidNotional": "0",
                            "askNotional": "0"})
            else:
                row.update({"leverage": str(int(v["leverage"])),
                            "maxNotionalValue": _s(v["max_notional"]),
                            "marginType": "isolated" if v["isolated"] else "cross",
                            "isAutoAddMargin": "false"})
            out.append(row)
        return out

    async def position_risk_v2(self, request: web.Request) -> web.Response:
        key, q = await self._signed(request)
        return web.json_response(self._positions(key, q, v3=False))

    async def position_risk_v3(self, request: web.Request) -> web.Response:
        key, q = await self._signed(request)
        return web.json_response(self._positions(key, q, v3=True))

    async def account_v2(self, request: web.Request) -> web.Response:
        return await self._account(request, v3=False)

    async def account_v3(self, request: web.Request) -> web.Response:
        return await self._account(request, v3=True)

    async def _account(self, request: web.Request, v3: bool) -> web.Response:
        """`/fapi/v2/account` and `/fapi/v3/account` as documented: v3 drops the account
        flags (feeTier, canTrade, ...) and the assets' `marginAvailable`, and lists only the
        symbols with a position (open orders hold no margin here) with fewer keys."""
        key, _ = await self._signed(request)
        now = self._now()
        venue = self.emu.venue
        a = venue.account(key)
        t = venue.totals(a)
        asset = {"asset": "USDT", "walletBalance": _s(t["wallet"]),
                 "unrealizedProfit": _s(t["upnl"]), "marginBalance": _s(t["margin_balance"]),
                 "maintMargin": _s(t["mm"]), "initialMargin": _s(t["im"]),
                 "positionInitialMargin": _s(t["im"]), "openOrderInitialMargin": "0",
                 "crossWalletBalance": _s(t["wallet"]), "crossUnPnl": _s(t["upnl"]),
                 "availableBalance": _s(t["available"]), "maxWithdrawAmount": _s(t["available"]),
                 "marginAvailable": True, "updateTime": now}
        positions = []
        for s in venue.symbols:
            v = venue.position_view(a, s)
            im = _s(v["im"] if v["qty"] else 0.0)
            updated = int(a.update_ms[venue.slot[s]])
            if v3:
                if v["qty"] == 0.0:
                    continue
                positions.append({"symbol": s, "positionSide": "BOTH",
                                  "positionAmt": _s(v["qty"]),
                                  "unrealizedProfit": _s(v["upnl"]),
                                  "isolatedMargin": _s(v["iso_margin"]),
                                  "notional": _s(v["notional"]),
                                  "isolatedWallet": _s(v["iso_margin"]), "initialMargin": im,
                                  "maintMargin": _s(v["mm"]), "updateTime": updated})
                continue
            positions.append({"symbol": s, "initialMargin": im,
                              "maintMargin": _s(v["mm"]), "unrealizedProfit": _s(v["upnl"]),
                              "positionInitialMargin": im, "openOrderInitialMargin": "0",
                              "leverage": str(int(v["leverage"])),
                              "isolated": bool(v["isolated"]), "entryPrice": _s(v["entry"]),
                              "maxNotional": _s(v["max_notional"]), "bidNotional": "0",
                              "askNotional": "0", "positionSide": "BOTH",
                              "positionAmt": _s(v["qty"]), "notional": _s(v["notional"]),
                              "isolatedWallet": _s(v["iso_margin"]), "updateTime": updated})
        flags: dict[str, Any] = {} if v3 else {
            "feeTier": 0, "feeBurn": False, "canTrade": True, "canDeposit": True,
            "canWithdraw": True, "updateTime": 0, "multiAssetsMargin": False,
            "tradeGroupId": -1}
        if v3:
            del asset["marginAvailable"]
        return web.json_response({
            **flags, "totalInitialMargin": _s(t["im"]),
            "totalMaintMargin": _s(t["mm"]), "totalWalletBalance": _s(t["wallet"]),
            "totalUnrealizedProfit": _s(t["upnl"]), "totalMarginBalance": _s(t["margin_balance"]),
            "totalPositionInitialMargin": _s(t["im"]), "totalOpenOrderInitialMargin": "0",
            "totalCrossWalletBalance": _s(t["wallet"]), "totalCrossUnPnl": _s(t["upnl"]),
            "availableBalance": _s(t["available"]), "maxWithdrawAmount": _s(t["available"]),
            "assets": [asset], "positions": positions})

    async def balance(self, request: web.Request) -> web.Response:
        key, _ = await self._signed(request)
        now = self._now()
        a = self.emu.venue.account(key)
        t = self.emu.venue.totals(a)
        return web.json_response([{
            "accountAlias": "emu", "asset": "USDT", "balance": _s(t["wallet"]),
            "crossWalletBalance": _s(t["wallet"]), "crossUnPnl": _s(t["upnl"]),
            "availableBalance": _s(t["available"]), "maxWithdrawAmount": _s(t["available"]),
            "marginAvailable": True, "updateTime": now}])

    # --- user-data stream keys ----------------------------------------------------------------
    async def listen_key_post(self, request: web.Request) -> web.Response:
        key = self.emu.auth.key_only(request.headers.get("X-MBX-APIKEY"))
        for lk, k in self.emu.listen_keys.items():
            if k == key:
                return web.json_response({"listenKey": lk})
        lk = secrets.token_urlsafe(48).replace("-", "A").replace("_", "B")
        self.emu.listen_keys[lk] = key
        return web.json_response({"listenKey": lk})

    async def listen_key_put(self, request: web.Request) -> web.Response:
        key = self.emu.auth.key_only(request.headers.get("X-MBX-APIKEY"))
        for lk, k in self.emu.listen_keys.items():
            if k == key:
                return web.json_response({"listenKey": lk})
        raise er.listen_key_missing()

    async def listen_key_delete(self, request: web.Request) -> web.Response:
        key = self.emu.auth.key_only(request.headers.get("X-MBX-APIKEY"))
        for lk in [lk for lk, k in self.emu.listen_keys.items() if k == key]:
            del self.emu.listen_keys[lk]
        await self.emu.hub.close_key(key)
        return web.json_response({})


FUNDING_TRAN_BASE = 9_000_000_001     # tranId of the first funding payment of an account


@dataclass(frozen=True)
class _Income:
    tran_id: int
    symbol: str
    time: int
    income: float                      # quote, + received


class LostResponse(Exception):
    """The order was accepted; its answer is withheld `hang_s` and the connection dropped."""

    def __init__(self, hang_s: float) -> None:
        super().__init__("response lost (fault)")
        self.hang_s = hang_s
