"""The venue: per-API-key cross-margin accounts on the shared trading kernel, their orders,
and the matching that the replayed market drives.

All money moves through `bot.execution.kernel` / `bot.mechanics` (one implementation):
- MARKET: fills on arrival at the venue's last price (`Market.last_price`: the open of the
  bar in progress) through `kernel.fill_order` (fill-model slippage over the window known
  at the last close, taker fee). With the `split_fill` / `partial_expire` faults it
  executes as several trades (each booked by `account.apply_fill` at the price
  `kernel.fill_order` gives the executed quantity, taker fee) or only in part, then
  EXPIRED. Margin is checked first with `account.initial_margin_check` (-2019 / -2027).
- LIMIT: a buy at or above the last price (a sell at or below) is marketable and fills at
  once like a MARKET order. Otherwise it rests and fills at its limit price, maker fee
  (`account.apply_fill`), at the close of the first bar that opened at or after its
  placement and traded THROUGH it (`fills.limit_fills`): a bar that began before the order
  existed is never used (no fills on prices seen before the order).
- STOP_MARKET: triggers when a later bar's MARK range reaches the stop price; fills at the
  stop price plus slippage (`kernel.fill_order`, taker). Stops are checked before the
  liquidation of the same bar.
- At each bar close: resting orders, then mark-price liquidation (`kernel.liquidate` at the
  position's adverse mark extreme). At each bar open: funding (`kernel.settle_funding`)
  when the bar carries a settlement.
One-way mode only (positionSide BOTH): one kernel slot per symbol.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bot.emulator import errors as er
from bot.emulator.clock import SimClock
from bot.emulator.market import Market, SymbolData
from bot.execution import kernel as kn
from bot.mechanics import account as ac
from bot.mechanics.brackets import Brackets, position_limit
from bot.mechanics.fees import VenueFees
from bot.mechanics.fills import limit_fills
from bot.mechanics.liquidation import position_maintenance

OPEN_STATES = ("NEW", "PARTIALLY_FILLED")
ORDER_TYPES = ("MARKET", "LIMIT", "STOP_MARKET")


@dataclass(frozen=True)
class SymbolRules:
    """exchangeInfo filters of one symbol (Binance's BTCUSDT values by default)."""

    tick: float = 0.1
    step: float = 0.001
    min_qty: float = 0.001
    max_qty: float = 1000.0
    min_notional: float = 100.0
    price_precision: int = 2
    qty_precision: int = 3


def price_grid(prices: np.ndarray) -> float:
    """The coarsest power of ten (1 .. 1e-8) every price is a multiple of: the tick the
    data was quoted on (Binance klines carry prices on the symbol's tick grid)."""
    x = np.asarray(prices, dtype=np.float64)
    x = x[np.isfinite(x) & (x > 0)]
    for k in range(0, 9):
        d = 10.0 ** -k
        if np.all(np.abs(x / d - np.round(x / d)) < 1e-6):
            return d
    return 1e-8


def rules_for(symbol: str, closes: np.ndarray) -> SymbolRules:
    """exchangeInfo filters for a symbol the emulator has none for. BTCUSDT and ETHUSDT keep
    Binance's; any other symbol gets rules scaled to its price, so a drill on an alt
    trades whole lots of a sensible size instead of BTC's 0.001-lot, 1,000-max filters:
    tick = the grid of its first closes (`price_grid`), step = the power of ten at or below
    100 quote at the first close (which is BTC's 0.001 at 60k-100k), max quantity 1e6 steps,
    min notional 5 quote (Binance's usual for alts). Real values come from the venue's
    exchangeInfo; give `rules` to the emulator to use them."""
    if symbol == "BTCUSDT":
        return SymbolRules()
    if symbol == "ETHUSDT":                 # Binance's ETHUSDT filters
        return SymbolRules(tick=0.01, step=0.001, min_qty=0.001, max_qty=10_000.0,
                           min_notional=20.0, price_precision=2, qty_precision=3)
    x = np.asarray(closes[:1000], dtype=np.float64)
    x = x[np.isfinite(x) & (x > 0)]
    if not len(x):
        return SymbolRules()
    tick = price_grid(x)
    step = 10.0 ** math.floor(math.log10(100.0 / float(x[0])) + 1e-9)
    return SymbolRules(tick=tick, step=step, min_qty=step, max_qty=step * 1e6,
                       min_notional=5.0, price_precision=max(0, round(-math.log10(tick))),
                       qty_precision=max(0, round(-math.log10(step))))


@dataclass
class EOrder:
    order_id: int
    client_id: str
    symbol: str
    side: str                      # BUY | SELL
    type: str                      # MARKET | LIMIT | STOP_MARKET | LIQUIDATION
    qty: float                     # base, > 0
    price: float                   # limit price (0 for others)
    stop_price: float
    reduce_only: bool
    tif: str
    time: int                      # simulated ms of placement
    status: str = "NEW"
    executed: float = 0.0
    avg_price: float = 0.0
    cum_quote: float = 0.0
    update_time: int = 0
    working_type: str = "MARK_PRICE"

    @property
    def sign(self) -> float:
        return 1.0 if self.side == "BUY" else -1.0


@dataclass
class ETrade:
    trade_id: int
    order_id: int
    symbol: str
    side: str
    price: float
    qty: float
    fee: float
    realized: float
    maker: bool
    time: int


@dataclass
class Account:
    """One API key's cross-margin account: kernel arrays plus orders and trades."""

    key: str
    acct: np.ndarray
    pos: np.ndarray
    orders: dict[int, EOrder] = field(default_factory=dict)
    trades: list[ETrade] = field(default_factory=list)
    update_ms: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    funding_log: list[tuple[str, int, float]] = field(default_factory=list)


class Venue:
    """Accounts, orders and the bar-driven matching; `sync()` catches up with the clock."""

    def __init__(self, market: Market, clock: SimClock, brackets: dict[str, Brackets],
                 fees: VenueFees, fp: np.ndarray, rules: dict[str, SymbolRules] | None = None,
                 wallet: float = 10_000.0) -> None:
        self.market, self.clock, self.fees, self.fp = market, clock, fees, fp
        self.symbols = list(market.symbols)
        self.slot = {s: i for i, s in enumerate(self.symbols)}
        missing = [s for s in self.symbols if s not in brackets]
        if missing:
            raise ValueError(f"no leverage brackets for {missing}")
        self.brackets = brackets
        self.floor, self.cap, self.mmr, self.cum, self.max_lev = ac.stack_brackets(
            [brackets[s] for s in self.symbols])
        self.rules = {s: (rules or {}).get(s) or rules_for(s, market.symbols[s].close)
                      for s in self.symbols}
        self.wallet0 = wallet
        self.accounts: dict[str, Account] = {}
        self._ids = itertools.count(1_000_001)
        self._trade_ids = itertools.count(5_000_001)
        self._closed = {s: 0 for s in self.symbols}   # bar closes processed
        self._opened = {s: 0 for s in self.symbols}   # bar opens processed
        self.listeners: list[Callable[[str, dict[str, Any]], None]] = []   # (key, event)
        #: how a MARKET order of n lots executes (trade sizes in lots, rest expired?); the
        #: emulator sets it to its fault injector's `fill_plan`; None: one trade
        self.fill_plan: Callable[[EOrder, int], tuple[list[int], bool]] | None = None
        self.bar_listeners: list[Callable[[str, int], None]] = []          # (symbol, i)
        self.now = clock.now_ms()

    # --- accounts -------------------------------------------------------------------------
    def account(self, key: str) -> Account:
        a = self.accounts.get(key)
        if a is None:
            acct, pos = ac.new_account(self.wallet0, len(self.symbols), leverage=20.0)
            a = Account(key, acct, pos, update_ms=np.zeros(len(self.symbols), dtype=np.int64))
            self.accounts[key] = a
        return a

    def data(self, symbol: str) -> SymbolData:
        d = self.market.get(symbol)
        if d is None:
            raise er.bad_symbol()
        return d

    def marks(self) -> np.ndarray:
        return np.array([self.market.mark(self.market.symbols[s], self.now)
                         for s in self.symbols])

    # --- the clock drives the venue --------------------------------------------------------
    def sync(self) -> None:
        """Process every bar close and open up to the clock's now, in time order (closes
        before opens at the same instant)."""
        now = self.clock.now_ms()
        iv = self.market.interval_ms
        while True:
            best: tuple[int, int, str] | None = None
            for s in self.symbols:
                d = self.market.symbols[s]
                n = len(d.ts)
                if self._closed[s] < min(self._opened[s], n):
                    cand = (int(d.ts[self._closed[s]]) + iv, 0, s)
                    if cand[0] <= now and (best is None or cand < best):
                        best = cand
                if self._opened[s] < n:
                    cand = (int(d.ts[self._opened[s]]), 1, s)
                    if cand[0] <= now and (best is None or cand < best):
                        best = cand
            if best is None:
                break
            t, kind, s = best
            self.now = t
            if kind == 0:
                self._on_close(s, self._closed[s])
                self._closed[s] += 1
            else:
                self._on_open(s, self._opened[s])
                self._opened[s] += 1
        self.now = now

    def _on_open(self, s: str, i: int) -> None:
        d = self.market.symbols[s]
        rate = float(d.funding[i])
        if rate != rate:
            return
        slot = self.slot[s]
        for a in self.accounts.values():
            paid = kn.settle_funding(a.acct, a.pos, slot, float(d.mark_open[i]), rate)
            if paid != 0.0:
                a.funding_log.append((s, int(d.ts[i]), paid))
                # Binance: funding on a cross position pushes the balance only (no P rows)
                iso = a.pos[slot, ac.P_ISOLATED] == ac.ISOLATED
                self._emit_account(a, "FUNDING_FEE", [slot] if iso else [])

    def _on_close(self, s: str, i: int) -> None:
        d = self.market.symbols[s]
        bar_open = int(d.ts[i])
        for a in self.accounts.values():
            for o in sorted(a.orders.values(), key=lambda o: o.order_id):
                if o.symbol != s or o.status not in OPEN_STATES or o.time > bar_open:
                    continue
                if o.type == "LIMIT" and limit_fills(o.sign, o.price, d.low[i], d.high[i]):
                    self._fill(a, o, o.price, maker=True, window=None)
                elif o.type == "STOP_MARKET" and (
                        (o.side == "BUY" and d.mark_high[i] >= o.stop_price) or
                        (o.side == "SELL" and d.mark_low[i] <= o.stop_price)):
                    w = (float(d.win_vol[i - 1]), float(d.win_sig[i - 1]),
                         float(d.win_liq[i - 1])) if i > 0 else (0.0, 0.0, 0.0)
                    # a bar that opens through the stop fills at its open, not the stop
                    gap = (o.side == "BUY" and d.mark_open[i] > o.stop_price) or \
                        (o.side == "SELL" and d.mark_open[i] < o.stop_price)
                    ref = float(d.open[i]) if gap else o.stop_price
                    self._fill(a, o, ref, maker=False, window=w)
            self._liquidate(a, s, i)
        for cb in self.bar_listeners:
            cb(s, i)

    def _liquidate(self, a: Account, s: str, i: int) -> None:
        d = self.market.symbols[s]
        slot = self.slot[s]
        q = float(a.pos[slot, ac.P_QTY])
        if q == 0.0:
            return
        marks = self.marks()
        lo, hi = float(d.mark_low[i]), float(d.mark_high[i])
        marks[slot] = kn.adverse_mark(a.pos, slot, lo, hi)
        real_before = float(a.acct[ac.A_REALIZED])
        dq, lp, fee = kn.liquidate(a.acct, a.pos, slot, lo, hi, marks, self.floor, self.cap,
                                   self.mmr, self.cum, self.fp)
        if lp != lp:
            return
        t = int(d.ts[i]) + self.market.interval_ms - 1
        o = EOrder(next(self._ids), f"autoclose-{t}", s, "BUY" if dq > 0 else "SELL",
                   "LIQUIDATION", abs(dq), float(lp), 0.0, True, "IOC", t, "FILLED",
                   abs(dq), float(lp), abs(dq) * float(lp), t)
        a.orders[o.order_id] = o
        tr = ETrade(next(self._trade_ids), o.order_id, s, o.side, float(lp), abs(dq),
                    float(fee),
                    float(a.acct[ac.A_REALIZED]) - real_before, False, t)
        a.trades.append(tr)
        self._cancel_reduce_only(a, s, t)
        self._emit_order(a, o, tr)
        self._emit_account(a, "ORDER", [slot])

    # --- orders --------------------------------------------------------------------------
    def place(self, key: str, p: dict[str, str]) -> EOrder:
        """Validate and accept an order (Binance's checks and codes), filling it at once
        when it is a MARKET or marketable LIMIT order."""
        self.sync()
        a = self.account(key)
        s = p.get("symbol", "")
        if not s:
            raise er.mandatory("symbol")
        d = self.data(s)
        r = self.rules[s]
        side = p.get("side", "")
        if side not in ("BUY", "SELL"):
            raise er.mandatory("side")
        typ = p.get("type", "")
        if typ not in ORDER_TYPES:
            raise er.bad_order_type()
        qty = _num(p, "quantity")
        if qty <= 0:
            raise er.qty_not_positive()
        if abs(qty / r.step - round(qty / r.step)) > 1e-6:
            raise er.precision()
        if qty > r.max_qty * (1.0 + 1e-9):
            raise er.qty_above_max()
        price = _num(p, "price") if typ == "LIMIT" else 0.0
        stop = _num(p, "stopPrice") if typ == "STOP_MARKET" else 0.0
        for v in (price, stop):
            if v and abs(v / r.tick - round(v / r.tick)) > 1e-6:
                raise er.precision()
        if typ == "LIMIT" and price <= 0:
            raise er.mandatory("price")
        if typ == "STOP_MARKET" and stop <= 0:
            raise er.mandatory("stopPrice")
        reduce_only = p.get("reduceOnly", "false").lower() == "true"
        cid = p.get("newClientOrderId") or f"emu-{next(self._ids)}"
        if any(o.client_id == cid and o.status in OPEN_STATES for o in a.orders.values()):
            raise er.duplicate_client_id()
        slot = self.slot[s]
        sign = 1.0 if side == "BUY" else -1.0
        q = float(a.pos[slot, ac.P_QTY])
        if reduce_only and (q == 0.0 or q * sign > 0.0):
            raise er.reduce_only_rejected()
        last = self.market.last_price(d, self.now)
        ref = price if typ == "LIMIT" else stop if typ == "STOP_MARKET" else last
        if not reduce_only and qty * ref < r.min_notional:
            raise er.min_notional(r.min_notional)
        marketable = typ == "MARKET" or (typ == "LIMIT" and (price - last) * sign >= 0.0)
        if not reduce_only:
            code = ac.initial_margin_check(a.acct, a.pos, slot, sign * qty,
                                           last if marketable else ref, self.marks(),
                                           self.fees.taker, self.floor, self.cap, self.mmr,
                                           self.cum, self.max_lev)
            if code == ac.REJECT_INSUFFICIENT_MARGIN:
                raise er.insufficient_margin()
            if code == ac.REJECT_BRACKET_LEVERAGE:
                raise er.over_max_position()
        o = EOrder(next(self._ids), cid, s, side, typ, qty, price, stop, reduce_only,
                   p.get("timeInForce", "GTC") if typ == "LIMIT" else "GTC", self.now,
                   update_time=self.now, working_type=p.get("workingType", "MARK_PRICE"))
        a.orders[o.order_id] = o
        self._emit_order(a, o, None)
        if marketable:
            self._fill(a, o, last, maker=False, window=self.market.window(d, self.now))
        return o

    def _fill(self, a: Account, o: EOrder, ref: float, maker: bool,
              window: tuple[float, float, float] | None) -> None:
        """Execute `o` at `ref` (maker: the limit price; else plus the fill model's
        slippage, taker fee). A MARKET order may execute as several trades or only in part
        (`fill_plan`: the `split_fill` / `partial_expire` faults): each trade its own id,
        fee and ORDER_TRADE_UPDATE (PARTIALLY_FILLED until the last: FILLED, or EXPIRED with
        the rest unfilled), all at the price the fill model gives the executed quantity."""
        slot = self.slot[o.symbol]
        q = float(a.pos[slot, ac.P_QTY])
        qty = o.qty
        if o.reduce_only:
            if q == 0.0 or q * o.sign > 0.0:
                self._finish(a, o, "EXPIRED")
                return
            qty = min(qty, abs(q))
        pieces, expire = [qty], False
        if o.type == "MARKET" and not maker and self.fill_plan is not None:
            step = self.rules[o.symbol].step
            lots, expire = self.fill_plan(o, round(qty / step))
            if len(lots) > 1 or expire:
                pieces = [round(k * step, 12) for k in lots]
                if not expire:    # the last takes the rest, subtracted in booking order:
                    rest = qty    # a close of the whole position ends at exactly 0
                    for x in pieces[:-1]:
                        rest -= x
                    pieces[-1] = rest
        w = window or (0.0, 0.0, 0.0)
        executed = pieces[0] if len(pieces) == 1 else round(sum(pieces), 12)
        # one price for the executed quantity (the fill model), every piece at it
        px = ref if maker else kn.fill_price(o.sign * executed, ref, w[0], w[1], w[2], self.fp)
        rate = self.fees.maker if maker else float(self.fp[kn.F_TAKER])
        t = self.now
        done = 0.0
        for n, piece in enumerate(pieces):
            fees0, real0 = float(a.acct[ac.A_FEES]), float(a.acct[ac.A_REALIZED])
            ac.apply_fill(a.acct, a.pos, slot, o.sign * piece, px, rate)
            last = n == len(pieces) - 1
            done = qty if last and not expire else round(done + piece, 12)
            o.executed = done
            o.avg_price, o.cum_quote = float(px), o.executed * float(px)
            o.status = "FILLED" if last and not expire else "PARTIALLY_FILLED"
            o.update_time = t
            a.update_ms[slot] = t
            tr = ETrade(next(self._trade_ids), o.order_id, o.symbol, o.side, float(px), piece,
                        float(a.acct[ac.A_FEES]) - fees0,
                        float(a.acct[ac.A_REALIZED]) - real0, maker, t)
            a.trades.append(tr)
            self._emit_order(a, o, tr)
            self._emit_account(a, "ORDER", [slot])
        if expire:                            # the book ran out: the rest is not filled
            self._finish(a, o, "EXPIRED")
        if a.pos[slot, ac.P_QTY] == 0.0:
            self._cancel_reduce_only(a, o.symbol, t)

    def _cancel_reduce_only(self, a: Account, s: str, t: int) -> None:
        """Binance expires open reduce-only orders once the position is gone."""
        for o in a.orders.values():
            if o.symbol == s and o.reduce_only and o.status in OPEN_STATES:
                o.update_time = t
                self._finish(a, o, "EXPIRED")

    def _finish(self, a: Account, o: EOrder, status: str) -> None:
        o.status, o.update_time = status, self.now
        self._emit_order(a, o, None)

    def find(self, key: str, p: dict[str, str]) -> EOrder:
        """The order named by `orderId` or `origClientOrderId` (-2013 if none)."""
        self.sync()
        a = self.account(key)
        self.data(p.get("symbol", ""))
        if "orderId" in p:
            o = a.orders.get(int(_num(p, "orderId")))
            if o is not None and o.symbol == p["symbol"]:
                return o
        elif "origClientOrderId" in p:
            hits = [o for o in a.orders.values() if o.client_id == p["origClientOrderId"]
                    and o.symbol == p["symbol"]]
            if hits:
                return max(hits, key=lambda o: o.order_id)
        else:
            raise er.mandatory("orderId")
        raise er.no_order()

    def cancel(self, key: str, p: dict[str, str]) -> EOrder:
        try:
            o = self.find(key, p)
        except er.ApiError as exc:
            if exc.code == -2013:
                raise er.unknown_order_cancel() from None
            raise
        if o.status not in OPEN_STATES:
            raise er.unknown_order_cancel()
        self._finish(self.account(key), o, "CANCELED")
        return o

    def set_leverage(self, key: str, symbol: str, lev: int) -> float:
        """Returns the max notional at that leverage (largest bracket cap allowing it)."""
        self.sync()
        d = self.data(symbol)
        b = self.brackets[d.symbol]
        if not 1 <= lev <= float(b.max_leverage.max()):
            raise er.bad_leverage(lev)
        a = self.account(key)
        a.pos[self.slot[symbol], ac.P_LEVERAGE] = float(lev)
        return position_limit(b, lev)

    def set_margin_type(self, key: str, symbol: str, mode: str) -> None:
        self.sync()
        self.data(symbol)
        if mode not in ("ISOLATED", "CROSSED"):
            raise er.mandatory("marginType")
        a = self.account(key)
        i = self.slot[symbol]
        want = ac.ISOLATED if mode == "ISOLATED" else ac.CROSS
        if a.pos[i, ac.P_ISOLATED] == want:
            raise er.margin_type_unchanged()
        if a.pos[i, ac.P_QTY] != 0.0 or any(o.symbol == symbol and o.status in OPEN_STATES
                                             for o in a.orders.values()):
            raise er.margin_type_with_position()
        a.pos[i, ac.P_ISOLATED] = want

    # --- derived figures ------------------------------------------------------------------
    def position_view(self, a: Account, s: str) -> dict[str, float]:
        i = self.slot[s]
        marks = self.marks()
        q, entry = float(a.pos[i, ac.P_QTY]), float(a.pos[i, ac.P_ENTRY])
        mark = float(marks[i])
        notional = q * mark
        lev = float(a.pos[i, ac.P_LEVERAGE])
        lp = float(ac.liquidation_price(a.acct, a.pos, i, marks, self.floor, self.cap,
                                        self.mmr, self.cum)) if q else 0.0
        b = self.brackets[s]
        maint = float(position_maintenance(q, mark, self.floor[i], self.cap[i], self.mmr[i],
                                           self.cum[i])) if q else 0.0
        return {"qty": q, "entry": entry, "mark": mark, "notional": notional,
                "upnl": float(ac.unrealized(a.pos, i, mark)), "leverage": lev,
                "liq": lp if lp == lp and lp > 0 else 0.0, "im": abs(notional) / lev,
                "mm": maint, "isolated": float(a.pos[i, ac.P_ISOLATED]),
                "iso_margin": float(a.pos[i, ac.P_MARGIN]),
                "max_notional": position_limit(b, lev)}

    def totals(self, a: Account) -> dict[str, float]:
        views = [self.position_view(a, s) for s in self.symbols]
        wallet = float(a.acct[ac.A_WALLET])
        upnl = sum(v["upnl"] for v in views)
        im = sum(v["im"] for v in views if v["qty"])
        mm = sum(v["mm"] for v in views if v["qty"])
        margin_balance = wallet + upnl
        avail = max(0.0, margin_balance - im)
        return {"wallet": wallet, "upnl": upnl, "margin_balance": margin_balance, "im": im,
                "mm": mm, "available": avail}

    # --- user-stream events ----------------------------------------------------------------
    def _emit(self, key: str, ev: dict[str, Any]) -> None:
        for cb in self.listeners:
            cb(key, ev)

    def _emit_order(self, a: Account, o: EOrder, tr: ETrade | None) -> None:
        t = o.update_time or self.now
        x = "TRADE" if tr is not None else {"NEW": "NEW", "CANCELED": "CANCELED",
                                            "EXPIRED": "EXPIRED"}.get(o.status, "NEW")
        self._emit(a.key, {"e": "ORDER_TRADE_UPDATE", "E": t, "T": t, "o": {
            "s": o.symbol, "c": o.client_id, "S": o.side, "o": o.type, "f": o.tif,
            "q": _s(o.qty), "p": _s(o.price), "ap": _s(o.avg_price), "sp": _s(o.stop_price),
            "x": x, "X": o.status, "i": o.order_id, "l": _s(tr.qty if tr else 0.0),
            "z": _s(o.executed), "L": _s(tr.price if tr else 0.0), "N": "USDT",
            "n": _s(tr.fee if tr else 0.0), "T": t, "t": tr.trade_id if tr else 0, "b": "0",
            "a": "0", "m": bool(tr.maker) if tr else False, "R": o.reduce_only,
            "wt": o.working_type, "ot": o.type, "ps": "BOTH", "cp": False,
            "rp": _s(tr.realized if tr else 0.0), "pP": False, "si": 0, "ss": 0, "V": "NONE",
            "pm": "NONE", "gtd": 0, "er": "0"}})

    def _emit_account(self, a: Account, reason: str, slots: list[int]) -> None:
        t = self.now
        wallet = float(a.acct[ac.A_WALLET])
        positions = []
        for i in slots:
            s = self.symbols[i]
            v = self.position_view(a, s)
            positions.append({"s": s, "pa": _s(v["qty"]), "ep": _s(v["entry"]),
                              "bep": _s(v["entry"]), "cr": _s(float(a.pos[i, ac.P_REALIZED])),
                              "up": _s(v["upnl"]),
                              "mt": "isolated" if v["isolated"] else "cross",
                              "iw": _s(v["iso_margin"]), "ps": "BOTH"})
        self._emit(a.key, {"e": "ACCOUNT_UPDATE", "E": t, "T": t, "a": {
            "m": reason, "B": [{"a": "USDT", "wb": _s(wallet), "cw": _s(wallet), "bc": "0"}],
            "P": positions}})


def _num(p: dict[str, str], name: str) -> float:
    if name not in p or p[name] == "":
        raise er.mandatory(name)
    try:
        v = float(p[name])
    except ValueError:
        raise er.bad_param(name) from None
    if not math.isfinite(v):
        raise er.bad_param(name)
    return v


def _s(x: float) -> str:
    if x != x:
        return "0"
    return f"{float(x):.8f}".rstrip("0").rstrip(".")
