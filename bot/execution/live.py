"""The LiveBroker: the daemon's venue through ccxt (async; ccxt.pro for the user stream).

It plays the PaperBroker's role for the daemon (`submit`, `pending`, `on_bar_open`,
`set_mark`, `snapshot`/`restore`, the `acct`/`pos`/`marks` arrays and brackets) plus the
async half only a real venue has (`start`, `sync`, `flush`, `close`):

- start: markets, one-way position mode, margin mode and leverage per symbol; a new run
  adopts the exchange's wallet and positions; a resumed run keeps its checkpoint and
  re-reads every trade after the last one it had counted.
- flush (after the daemon has committed the intents): market orders with the daemon's
  client ids and reduce-only flags, within the per-order and per-day notional caps
  (reduce-only orders are exempt: they can only lower exposure), rounded to the lot step.
  A definite rejection (margin, reduce-only, min notional...) is final; anything else
  (timeout, lost answer, 5xx, 429) makes the order UNKNOWN and it is looked up by client id
  before any resend; only "no such order" allows the resend (same client id), and after a
  send whose fate is unknown only once that request can no longer be executed (its
  timestamp + recvWindow has passed on the venue's clock) and the trade history since the
  send shows no trade of it (Binance keeps client ids unique among OPEN orders only, so a
  filled order not yet visible to the look-up would otherwise be placed twice). A 429, or a
  5xx the venue documents as "not executed", leaves nothing to wait for.
- sync (before each bar): trades from the user-data stream and from REST (`fromId`; before
  any id is known, from the run's start time in windows of at most 7 days), counted once by
  trade id (`reconcile.Ledger`); a trade is ours when its client id is one we sent; funding
  payments from the income history; every `reconcile_s` the exchange's positions and wallet
  are compared with ours and adopted where they differ (an event for the store). The
  snapshot is taken between two trade reads and a symbol whose trades moved between them is
  judged at the next reconciliation (a trade around the snapshot is never adopted AND
  booked).
- fees: a fee in the quote asset moves the wallet; a fee in another asset (BNB) does not
  (the venue takes it from that asset's balance): it is recorded as an event in its own
  asset, with its quote value when the broker has a mark for it.
- on_bar_open: books the exchange's trades and payments that happened before the bar's
  close into `acct`/`pos` through `bot.mechanics.account` (the fill at the exchange's price
  and fee; a forced liquidation as the venue's trade), in exchange time order. At one
  instant a payment is booked before the fills when we held a position then (the venue
  settles the position held at the funding time: the emulator processes the bar's open,
  funding included, before orders placed at that instant), after them when we were flat
  (it can only have been paid on their position); the amount is the venue's either way.
- partial fills: an order may execute as several trades (one per book level: each its own
  trade id, booked once like any trade) and end FILLED, or end EXPIRED / CANCELED with
  only part executed. Its executed quantity is learnt from the order answer or the look-up
  by client id; it retires once the booked trades reach it (an "order_partial" event when
  that is less than was sent). The unfilled rest is never resent: the daemon's next
  decision starts from the position actually held.
Hedge slots do not exist in one-way mode: a hedge-slot order is refused with an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ccxt
import numpy as np

from bot.errors import exc_text
from bot.execution.broker import Fill, Funding, Order
from bot.execution.reconcile import Ledger, position_diffs, wallet_differs
from bot.execution.venues import Venue
from bot.mechanics import account as ac
from bot.mechanics.brackets import Brackets, from_ccxt

log = logging.getLogger("liqbot.live")

#: ccxt errors after which the order was certainly NOT placed (the answer says so)
DEFINITE = (ccxt.InsufficientFunds, ccxt.BadSymbol, ccxt.BadRequest, ccxt.PermissionDenied,
            ccxt.AccountSuspended, ccxt.NotSupported, ccxt.ArgumentsRequired,
            ccxt.AuthenticationError)


def wallet_of(bal: Any) -> float:
    """The wallet (quote) in a `fetch_balance` answer (Binance's `totalWalletBalance`).
    Missing, null or not a finite number >= 0 raises, so the sync is retried: read as 0, a
    malformed answer was adopted as an empty wallet and halted the run for drawdown."""
    info = bal.get("info") if isinstance(bal, dict) else None
    raw = info.get("totalWalletBalance") if isinstance(info, dict) else None
    try:
        wallet = float(raw)                   # type: ignore[arg-type]
    except (TypeError, ValueError):
        wallet = math.nan
    if not (math.isfinite(wallet) and wallet >= 0.0):
        raise ValueError(f"fetch_balance: totalWalletBalance is {str(raw)[:40]!r}, expected a "
                         "number >= 0; the answer is ignored")
    return wallet


@dataclass(frozen=True)
class LiveSettings:
    """What the broker configures and enforces (config `[live]`)."""

    leverage: int = 20
    margin_mode: str = "cross"                  # cross | isolated
    max_order_notional: float = math.inf        # quote; reduce-only orders exempt
    max_day_notional: float = math.inf          # quote per UTC day; reduce-only exempt
    reconcile_s: float = 30.0                   # wall seconds between full reconciliations
    attempts: int = 6                           # send / look-up tries within one flush
    backoff_s: float = 0.2                      # first retry delay, doubled each time
    use_ws: bool = True                         # user-data stream (REST stays authoritative)
    recv_window_ms: int = 5_000                 # recvWindow sent with each order (Binance's
    #                                             default); bounds how long a lost one may live


@dataclass
class Inflight:
    """An order that left (or may have left): its fate is learnt from the exchange."""

    order: Order
    state: str                  # "unknown" (look it up before any resend) | "open" | "done"
    amount: float               # base sent (rounded to the lot step), > 0; -1: restored from
    #                             a checkpoint before it was sent (caps and lots still to check)
    order_id: str = ""
    executed: float = -1.0      # final executed qty once known (base, > 0 or 0)
    booked: float = 0.0         # base counted from trades
    sent_ms: int = 0            # request timestamp (venue ms) of a send whose fate is not
    #                             known yet; 0: none outstanding
    trade_mark: int = 0         # trades counted (`LiveBroker.taken`) before that send


#: a trade whose order cannot be named yet is re-read for this many wall seconds before it
#: is counted as not ours (the venue's order look-up lags its trade history briefly)
TRADE_DEFER_S = 60.0
#: a trade-history window is skipped for good only this long after its end (venue lag)
HISTORY_LAG_MS = 60_000


def _trade_id(r: dict[str, Any]) -> int:
    """A trade row's id, -1 when it has none (the row is then skipped, logged, by
    `_offer_trade`)."""
    try:
        return int(r["id"])
    except (KeyError, TypeError, ValueError):
        return -1


@dataclass(order=True)
class _Ev:
    """An exchange happening waiting to be booked at the open phase of its bar."""

    time: int
    kind: int                   # 0 trade, 1 funding (fills first at one instant)
    key: str = field(compare=False)
    data: dict[str, Any] = field(compare=False)


async def retried(fn: Callable[..., Any], *args: Any, attempts: int, backoff_s: float,
                  on_retry: Callable[[], None] | None = None) -> Any:
    """`await fn(*args)`, retried through network trouble, 5xx and 429 (ccxt
    OperationFailed) up to `attempts` tries, the delay doubling from `backoff_s` to at most
    10 s; the last error is raised. For reads and idempotent settings only."""
    delay = backoff_s
    for attempt in range(attempts):
        try:
            return await fn(*args)
        except ccxt.OperationFailed as exc:          # network, timeout, 5xx, 429
            if attempt == attempts - 1:
                raise
            if on_retry is not None:
                on_retry()
            log.info("%s: %s; retrying in %.1f s", getattr(fn, "__name__", "call"),
                     _short(exc), delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
    raise AssertionError("unreachable")


async def exchange_brackets(exchange: Any, venue: Venue, symbols: list[str],
                            settings: LiveSettings | None = None) -> dict[str, Brackets]:
    """Each symbol's leverage brackets as the venue publishes them for this account (ccxt
    `fetch_leverage_tiers`, a signed request, retried as the broker's reads are), checked by
    `brackets.from_ccxt`: a live run trades on these, never on an assumed table. Raises the
    last ccxt error, or DataError for a table that fails the checks."""
    cfg = settings or LiveSettings()
    budget = {"attempts": cfg.attempts + 4, "backoff_s": cfg.backoff_s}
    await retried(exchange.load_markets, **budget)
    payload = await retried(exchange.fetch_leverage_tiers,
                            [venue.unified(s) for s in symbols], **budget)
    return {s: from_ccxt(payload, venue.unified(s), f"{s} leverage brackets from the exchange")
            for s in symbols}


class LiveBroker:
    """A ccxt venue with the PaperBroker's interface (module docstring)."""

    def __init__(self, exchange: Any, venue: Venue, symbols: list[str],
                 brackets: list[Brackets], interval_ms: int, settings: LiveSettings,
                 wall: Callable[[], float] = time.monotonic,
                 request_ms: Callable[[], int] | None = None) -> None:
        self.ex = exchange
        self.venue = venue
        self.symbols = list(symbols)
        self.index = {s: i for i, s in enumerate(self.symbols)}
        self.unified = {s: venue.unified(s) for s in self.symbols}
        self.interval_ms = interval_ms
        self.cfg = settings
        self.wall = wall
        self._request_ms = request_ms             # None: ccxt's own request timestamp
        iso = settings.margin_mode == "isolated"
        self.acct, self.pos = ac.new_account(0.0, 2 * len(symbols),
                                             leverage=float(settings.leverage), isolated=iso)
        per_slot = [b for b in brackets for _ in range(2)]
        self.floor, self.cap, self.mmr, self.cum, _ = ac.stack_brackets(per_slot)
        self.marks = np.zeros(2 * len(symbols))
        self.queue: list[Order] = []                  # committed, not sent yet
        self.inflight: dict[str, Inflight] = {}       # client id -> order at the exchange
        self.order_cid: dict[str, str] = {}           # exchange order id -> client id
        self.ledger = Ledger()
        self.buffer: dict[str, list[_Ev]] = {s: [] for s in self.symbols}
        self.events: list[dict[str, Any]] = []        # for the store (drained by the daemon)
        self.day = -1
        self.day_notional = 0.0
        self.now_ms = 0
        self.restored = False
        self.sending = True                           # False: orders stay queued (drill end)
        self.step: dict[str, float] = {}
        self._last_reconcile = -math.inf
        self._ws_tasks: list[asyncio.Task[None]] = []
        self.taken = 0                                # trades counted by this broker
        self.taken_by = {s: 0 for s in self.symbols}  # ... per symbol
        self.taken_log: list[tuple[int, str, str]] = []   # (seq, symbol, client id or "")
        self.unresolved: dict[str, int] = {}          # symbol -> trade id re-read later
        self._defers: dict[tuple[str, int], float] = {}   # first deferral
        self.fees_other: dict[str, float] = {}        # fee asset -> amount (not the quote)
        self.stats = {"sent": 0, "resent": 0, "lookups": 0, "unknown": 0, "rejected": 0,
                      "capped": 0, "rest_trades": 0, "ws_trades": 0, "funding": 0,
                      "adopted": 0, "retries": 0, "not_final": 0, "deferred_trades": 0,
                      "reconcile_deferred": 0}

    # ------------------------------------------------------------------ lifecycle
    async def start(self, configure: bool = True) -> None:
        """Markets, account configuration, adoption (new run) or catch-up (resumed run)."""
        await self._call(self.ex.load_markets)
        for s in self.symbols:
            m = self.ex.market(self.unified[s])
            self.step[s] = float(m["precision"]["amount"] or 0.0)
        if configure:
            await self._configure()
        if not self.restored:
            await self._adopt_account(initial=True)
            start_ms = int(await self._call(self.ex.fetch_time))
            for s in self.symbols:                    # history before the run is not ours
                last = await self._call(self.ex.fetch_my_trades, self.unified[s], None, 1)
                if last:                              # (the venue lists the last 7 days)
                    self.ledger.rest_from[s] = int(last[-1]["id"]) + 1
                else:                                 # none: read from the run's start
                    self.ledger.since_ms[s] = start_ms
            self.ledger.funding_from_ms = start_ms
        else:                                         # look every restored order up first
            now = self._request_now()
            for f in self.inflight.values():          # a previous life may have sent it
                f.state = "unknown"                   # at any moment before this start
                f.sent_ms, f.trade_mark = now, 0
            for s in self.symbols:                    # a checkpoint from before `since_ms`
                if s not in self.ledger.rest_from and s not in self.ledger.since_ms:
                    self.ledger.since_ms[s] = max(0, self.ledger.funding_from_ms
                                                  - self.venue.trades_window_ms + 1)
        if self.cfg.use_ws and hasattr(self.ex, "watch_my_trades"):
            self._ws_tasks = [asyncio.create_task(self._watch_trades())]

    async def close(self) -> None:
        for t in self._ws_tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        with contextlib.suppress(Exception):
            await self.ex.close()

    async def _configure(self) -> None:
        """One-way mode, margin mode, leverage (an "already so" answer is success)."""
        with contextlib.suppress(ccxt.ExchangeError):       # -4059: no need to change
            await self._call(self.ex.set_position_mode, False)
        mode = self.venue.margin_modes[1 if self.cfg.margin_mode == "isolated" else 0]
        for s in self.symbols:
            with contextlib.suppress(ccxt.MarginModeAlreadySet, ccxt.BadRequest,
                                     ccxt.ExchangeError):   # -4046 unchanged; -4048 held
                await self._call(self.ex.set_margin_mode, mode, self.unified[s])
            await self._call(self.ex.set_leverage, self.cfg.leverage, self.unified[s])

    async def preflight(self) -> dict[str, Any]:
        """What `run --live --preflight` prints: read-only requests, nothing sent."""
        await self._call(self.ex.load_markets)
        bal = await self._call(self.ex.fetch_balance)
        info = bal.get("info") or {}
        out: dict[str, Any] = {"exchange": self.venue.ccxt_id,
                               "wallet": wallet_of(bal),
                               "available": float(info.get("availableBalance", 0.0) or 0.0),
                               "symbols": {}}
        risk = await self._call(self.ex.fapiPrivateV2GetPositionRisk) \
            if hasattr(self.ex, "fapiPrivateV2GetPositionRisk") else []
        by_sym = {r.get("symbol"): r for r in risk}
        for s in self.symbols:                  # the brackets: `exchange_brackets`
            r = by_sym.get(s, {})
            out["symbols"][s] = {
                "position": float(r.get("positionAmt", 0.0) or 0.0),
                "margin_mode": r.get("marginType", "?"), "leverage": r.get("leverage", "?")}
        return out

    # ------------------------------------------------------------------ daemon interface
    def submit(self, order: Order) -> None:
        """Queue an order; it leaves in `flush`, after the daemon's commit. An order whose
        client id is already known is not queued again (a restart re-deciding a bar)."""
        if order.client_id in self.inflight or any(o.client_id == order.client_id
                                                   for o in self.queue):
            return
        self.queue.append(order)

    def pending(self) -> list[Order]:
        """Orders not yet resolved: queued, or at the exchange without a booked outcome."""
        return self.queue + [f.order for f in self.inflight.values() if f.state != "done"]

    def rejections(self) -> dict[str, str]:
        """Always empty: the exchange's refusals arrive as `reject*` events with its
        message (`drain_events`), stored as events."""
        return {}

    def set_mark(self, symbol: str, mark_close: float) -> None:
        i = self.index[symbol]
        self.marks[2 * i] = mark_close
        self.marks[2 * i + 1] = mark_close

    def at_close(self, symbol: str, ts: int) -> list[Fill]:
        """Nothing: the venue liquidates, and its trades arrive as fills (`on_bar_open`)."""
        return []

    def on_bar_open(self, symbol: str, ts: int, open_px: float, mark_open: float,
                    mark_high: float, mark_low: float,
                    funding_rate: float) -> tuple[list[Fill], list[Funding]]:
        """Book what the exchange did for `symbol` before this bar's close (module
        docstring); the bar's own figures only label the records (slippage, mark)."""
        end = ts + self.interval_ms
        due = sorted(e for e in self.buffer[symbol] if e.time < end)
        self.buffer[symbol] = [e for e in self.buffer[symbol] if e.time >= end]
        fills: list[Fill] = []
        payments: list[Funding] = []
        slot = 2 * self.index[symbol]
        k = 0
        while k < len(due):
            j = k
            while j < len(due) and due[j].time == due[k].time:
                j += 1
            group = due[k:j]                        # one instant: trades, then funding
            if self.pos[slot, ac.P_QTY] != 0.0:     # held at the instant: the venue settles
                group.sort(key=lambda e: -e.kind)   # funding on it before same-instant fills
            for e in group:
                if e.kind == 0:
                    fills.append(self._book_trade(symbol, slot, e, open_px))
                else:
                    p = self._book_funding(symbol, slot, e, mark_open)
                    if p is not None:
                        payments.append(p)
            k = j
        self._retire()
        return fills, payments

    # ------------------------------------------------------------------ booking
    def _book_trade(self, symbol: str, slot: int, e: _Ev, open_px: float) -> Fill:
        d = e.data
        dq, px, fee = float(d["dq"]), float(d["price"]), float(d["fee"])
        liq = bool(d["liquidation"])
        rate = fee / (abs(dq) * px) if dq and px else 0.0
        ac.apply_fill(self.acct, self.pos, slot, dq, px, rate)
        step = self.step.get(symbol, 0.0) or 1e-8
        if abs(self.pos[slot, ac.P_QTY]) < 1e-6 * step:   # float dust of whole lots: flat
            self.pos[slot, ac.P_QTY] = 0.0
            self.pos[slot, ac.P_ENTRY] = 0.0
            self.pos[slot, ac.P_MARGIN] = 0.0
        if liq:
            self.acct[ac.A_LIQUIDATIONS] += 1.0
        cid = d["client_id"]
        f = self.inflight.get(cid)
        if f is not None:
            f.booked += abs(dq)
        bar = e.time - e.time % self.interval_ms
        return Fill(f"{symbol}-{d['trade_id']}", "" if liq else cid, symbol, slot, bar, dq, px,
                    fee, abs(dq) * abs(px - open_px) if not liq else 0.0, liq)

    def _book_funding(self, symbol: str, slot: int, e: _Ev, mark: float) -> Funding | None:
        """A payment the venue reports (+ paid), booked through `account.apply_funding`
        with the rate that reproduces the amount on our position (mark 1: amount = q x
        rate); with no position of ours it waits for the wallet reconciliation."""
        paid = float(e.data["paid"])
        q = float(self.pos[slot, ac.P_QTY])
        if q == 0.0:
            self.events.append(self._event("funding_unbooked", e.key, e.time,
                                           f"{symbol}: funding {paid:+.8f} on a position we "
                                           "do not hold; left to the wallet reconciliation"))
            return None
        ac.apply_funding(self.acct, self.pos, slot, 1.0, paid / q)
        rate = paid / (q * mark) if mark > 0 else float("nan")
        return Funding(symbol, slot, e.time - e.time % self.interval_ms, rate, mark, paid)

    def _retire(self) -> None:
        """Orders whose final outcome is known and fully booked stop being pending (and
        leave `ledger.ours`: no trade of theirs is left to come)."""
        for cid, f in list(self.inflight.items()):
            tol = 0.5 * self.step.get(f.order.symbol, 0.0) + 1e-12
            if f.state == "open" and f.executed >= 0 and f.booked >= f.executed - tol:
                f.state = "done"
            elif f.state == "open" and f.amount > 0 and f.booked >= f.amount - tol:
                f.state = "done"              # answered NEW, then filled in full
            if f.state == "done":
                del self.inflight[cid]
                self.ledger.ours.discard(cid)

    # ------------------------------------------------------------------ sending
    async def flush(self) -> None:
        """Send the queued orders (module docstring), then resolve unknown ones."""
        while self.queue and self.sending:
            o = self.queue.pop(0)
            reason = self._refuse(o)
            if reason:
                self._reject(o, reason, "cap" if "cap" in reason else "refused")
                continue
            amount = self._lots(o)
            if amount <= 0.0:
                self._reject(o, f"{abs(o.qty):.8f} rounds to 0 at the lot step", "lot")
                continue
            if not o.reduce_only:
                self.day_notional += self._growth(o, amount) * float(self.marks[o.slot])
            f = Inflight(o, "unknown", amount)
            self.inflight[o.client_id] = f
            await self._send(f, lookup_first=False)
        await self._resolve_unknown()

    def _lots(self, o: Order) -> float:
        """|qty| in whole lot steps: the nearest step when within 1e-6 of one (float dust
        of a position being closed), else rounded down (never more than decided)."""
        step = self.step.get(o.symbol, 0.0)
        if step <= 0.0:
            return abs(o.qty)
        n = abs(o.qty) / step
        k = round(n) if abs(n - round(n)) < 1e-6 else math.floor(n)
        if k <= 0:
            return 0.0
        return float(self.ex.amount_to_precision(self.unified[o.symbol], k * step))

    def _refuse(self, o: Order) -> str:
        if o.slot % 2:
            return "hedge slots need hedge mode; live trading runs one-way mode"
        if o.reduce_only:
            return ""
        day = self.now_ms // 86_400_000
        if day != self.day:
            self.day, self.day_notional = day, 0.0
        mark = float(self.marks[o.slot])
        if not (math.isfinite(mark) and mark > 0.0):
            return f"no valid mark for {o.symbol} yet ({mark}): the caps cannot be checked"
        notional = self._growth(o) * mark
        if notional > self.cfg.max_order_notional:
            return (f"order notional {notional:,.2f} over the per-order cap "
                    f"{self.cfg.max_order_notional:,.2f} (live.max_order_notional)")
        if self.day_notional + notional > self.cfg.max_day_notional:
            return (f"day notional {self.day_notional + notional:,.2f} over the per-day cap "
                    f"{self.cfg.max_day_notional:,.2f} (live.max_day_notional)")
        return ""

    def _growth(self, o: Order, amount: float | None = None) -> float:
        """The part of `o` (base; `amount`: its size in whole lots, default |qty|) that
        grows exposure, the part the caps count: all of it on a flat or same-side position,
        what goes beyond flat when it flips one. The part that closes the position is
        reduction, exempt like a reduce-only order (a flip of 0.246 BTC long to 0.245 short
        counted 0.491 and was refused whole, leaving the long on)."""
        size = abs(o.qty) if amount is None else amount
        held = float(self.pos[o.slot, ac.P_QTY])
        if held == 0.0 or (held > 0.0) == (o.qty > 0.0):
            return size
        return max(0.0, size - abs(held))

    def _reject(self, o: Order, why: str, kind: str) -> None:
        self.stats["capped" if kind == "cap" else "rejected"] += 1
        log.warning("order %s %s %+.8f not placed: %s", o.client_id, o.symbol, o.qty, why)
        self.events.append(self._event(f"reject_{kind}", f"reject-{o.client_id}", self.now_ms,
                                       f"order {o.client_id} {o.symbol} {o.qty:+.8f}: {why}",
                                       {"client_id": o.client_id, "symbol": o.symbol,
                                        "qty": o.qty}))
        self.inflight.pop(o.client_id, None)
        self.ledger.ours.discard(o.client_id)       # never placed: no trade can come

    async def _send(self, f: Inflight, lookup_first: bool) -> None:
        o = f.order
        s = self.unified[o.symbol]
        params: dict[str, Any] = {self.venue.client_id_param: o.client_id,
                                  "recvWindow": int(self.cfg.recv_window_ms)}
        if o.reduce_only:
            params["reduceOnly"] = True
        delay = self.cfg.backoff_s
        last: BaseException | None = None
        for attempt in range(self.cfg.attempts):
            if lookup_first or attempt > 0:
                found = await self._lookup(f)
                if found is None:           # the look-up itself failed: never resend blind
                    await asyncio.sleep(delay)
                    delay *= 2
                    continue
                if found:
                    return
                if not self.sending:        # the venue has none and none may leave now
                    self.inflight.pop(o.client_id, None)     # (a restart after the
                    self.queue.append(o)    # drill's last close): queued again, as it was
                    return                  # (its id stays ours: a late trade is booked)
                if not await self._absent_for_sure(f):
                    f.state = "unknown"     # a send may still show up: look again later
                    await asyncio.sleep(delay)
                    delay *= 2
                    continue
                if f.amount < 0.0:          # restored before it was sent: the caps and
                    reason = self._refuse(o)                 # the lot step apply now
                    if reason:
                        self._reject(o, reason, "cap" if "cap" in reason else "refused")
                        return
                    f.amount = self._lots(o)
                    if f.amount <= 0.0:
                        self._reject(o, f"{abs(o.qty):.8f} rounds to 0 at the lot step", "lot")
                        return
                    if not o.reduce_only:
                        self.day_notional += self._growth(o, f.amount) * \
                            float(self.marks[o.slot])
                self.stats["resent"] += 1
            self.ledger.ours.add(o.client_id)
            f.sent_ms, f.trade_mark = self._request_now(), self.taken
            try:
                r = await self.ex.create_order(s, "market", "buy" if o.qty > 0 else "sell",
                                               f.amount, None, params)
            except ccxt.DuplicateOrderId:
                lookup_first = True
                continue
            except DEFINITE as exc:
                self._reject(o, _short(exc), "exchange")
                return
            except ccxt.InvalidOrder as exc:
                self._reject(o, _short(exc), "exchange")
                return
            except (ccxt.OperationFailed, ccxt.ExchangeError) as exc:
                if not isinstance(exc, ccxt.OperationFailed) and self._refused(exc):
                    self._reject(o, _short(exc), "exchange")     # -2027 / -2028: final
                    return
                # timeout, lost answer, 5xx, 429 (OperationFailed and its NetworkError
                # subclasses), any other answer: the order may exist, unless the answer
                # says the request was not executed (nothing to wait for then)
                if self._unprocessed(exc):
                    f.sent_ms = 0
                self.stats["unknown"] += 1
                self.stats["retries"] += 1
                log.warning("order %s: %s; looking it up by client id before any resend",
                            o.client_id, _short(exc))
                f.state = "unknown"
                last = exc
                await asyncio.sleep(delay)
                delay *= 2
                continue
            self.stats["sent"] += 1
            f.sent_ms = 0
            self._learn(f, r)
            return
        if isinstance(last, ccxt.ExchangeError) and not isinstance(last, ccxt.OperationFailed) \
                and await self._lookup(f) is False and await self._absent_for_sure(f):
            self._reject(o, _short(last), "exchange")      # refused every time, never placed
            return
        f.state = "unknown"                  # still unknown: `sync` looks it up again

    def _refused(self, exc: BaseException) -> bool:
        """True when the venue's answer refuses the order itself (`Venue.refused_answers`:
        the position limit at the leverage setting, or its margin): never placed."""
        text = str(exc)
        return any(m in text for m in self.venue.refused_answers)

    def _unprocessed(self, exc: BaseException) -> bool:
        """True when the venue's answer says the request was not executed: a rate limit
        (429/418), a timestamp outside recvWindow, or a 5xx text the venue documents as a
        failure (`Venue.unprocessed_answers`)."""
        if isinstance(exc, (ccxt.DDoSProtection, ccxt.InvalidNonce)):
            return True
        text = str(exc)
        return any(m in text for m in self.venue.unprocessed_answers)

    def _request_now(self) -> int:
        """The timestamp a request signed now carries (venue ms): ccxt's `nonce()` (local
        clock minus the learnt time difference), or the injected clock."""
        if self._request_ms is not None:
            return int(self._request_ms())
        nonce = getattr(self.ex, "nonce", None)
        if nonce is not None:
            with contextlib.suppress(ccxt.BaseError, TypeError, ValueError):
                return int(nonce())
        return int(time.time() * 1000)

    async def _absent_for_sure(self, f: Inflight) -> bool:
        """Is the venue's "no such order" final? Only when no send of ours may still be
        executed or hidden: the last send of unknown fate is past its timestamp + recvWindow
        (+ the venue's clock tolerance), and the trades counted since it (the history read
        now) carry neither its client id nor an order we cannot name yet."""
        if f.sent_ms <= 0:
            return True
        deadline = f.sent_ms + int(self.cfg.recv_window_ms) + self.venue.clock_tolerance_ms
        s = f.order.symbol
        if self._request_now() <= deadline:
            self.stats["not_final"] += 1
            return False
        await self._read_trades(s)
        cid = f.order.client_id
        if s in self.unresolved or any(seq > f.trade_mark and sym == s and c in (cid, "")
                                       for seq, sym, c in self.taken_log):
            self.stats["not_final"] += 1
            log.warning("order %s: not found, but the trade history since its send has a "
                        "trade of it (or of an order not named yet); not resent", cid)
            return False
        return True

    async def _lookup(self, f: Inflight) -> bool | None:
        """Find an order by client id: True (known now), False (the exchange has none),
        None (could not ask)."""
        self.stats["lookups"] += 1
        try:
            r = await self.ex.fetch_order(None, self.unified[f.order.symbol],
                                          {self.venue.client_id_lookup_param:
                                           f.order.client_id})
        except ccxt.OrderNotFound:
            return False
        except (ccxt.OperationFailed, ccxt.ExchangeError) as exc:
            log.warning("look-up of %s failed: %s", f.order.client_id, _short(exc))
            return None
        self._learn(f, r)
        return True

    def _learn(self, f: Inflight, r: dict[str, Any]) -> None:
        f.order_id = str(r.get("id") or "")
        if f.order_id:
            self.order_cid[f.order_id] = f.order.client_id
        status = r.get("status")
        if f.amount < 0.0:
            f.amount = float(r.get("amount") or 0.0) or abs(f.order.qty)
        f.state = "open"
        if status in ("closed", "canceled", "expired", "rejected"):
            first = f.executed < 0.0
            f.executed = float(r.get("filled") or 0.0)
            tol = 0.5 * self.step.get(f.order.symbol, 0.0) + 1e-12
            if f.executed == 0.0:
                self.events.append(self._event(
                    "order_unfilled", f"unfilled-{f.order.client_id}", self.now_ms,
                    f"order {f.order.client_id} ended {status} without a fill"))
            elif first and f.amount > 0.0 and f.executed < f.amount - tol:
                # a partial fill is final: the rest is not resent (the next decision starts
                # from the position the venue reports); the trades of the part are booked
                self.events.append(self._event(
                    "order_partial", f"partial-{f.order.client_id}", self.now_ms,
                    f"order {f.order.client_id} {f.order.symbol} ended {status} with "
                    f"{f.executed:g} of {f.amount:g} filled; the rest is not held",
                    {"client_id": f.order.client_id, "status": status,
                     "executed": f.executed, "amount": f.amount}))

    async def _resolve_unknown(self) -> None:
        for f in list(self.inflight.values()):
            if f.state == "unknown":
                await self._send(f, lookup_first=True)

    # ------------------------------------------------------------------ reading
    async def sync(self, now_ms: int) -> None:
        """Before a bar: unknown orders resolved, trades and funding read, periodic
        reconciliation (module docstring)."""
        self.now_ms = now_ms
        await self._resolve_unknown()
        for f in list(self.inflight.values()):   # answered NEW: learn the final outcome
            if f.state == "open" and f.executed < 0.0:
                await self._lookup(f)
        for s in self.symbols:
            i = self.index[s]
            busy = any(f.order.symbol == s for f in self.inflight.values()) or \
                self.pos[2 * i, ac.P_QTY] != 0.0
            if busy:
                await self._read_trades(s)
        await self._read_funding(now_ms)
        if self.wall() - self._last_reconcile >= self.cfg.reconcile_s:
            await self.reconcile()

    async def _read_trades(self, s: str) -> None:
        """REST trade history from the first id not read; with no id known yet, from the
        start time first (`_find_first_trade`), never from id 0. A trade whose order cannot
        be named yet stops the read before it (re-read at the next one)."""
        if s not in self.ledger.rest_from and not await self._find_first_trade(s):
            return
        while True:
            frm = self.ledger.rest_from[s]
            rows = await self._call(self.ex.fetch_my_trades, self.unified[s], None, 1000,
                                    {self.venue.trades_from_id_param: frm})
            rows = sorted((r for r in rows if _trade_id(r) >= frm), key=_trade_id)
            for r in rows:
                took = await self._offer_trade(s, r, "rest")
                if took is None:                      # its order is not named yet
                    self.unresolved[s] = _trade_id(r)
                    self.ledger.advance(s, _trade_id(r) - 1)
                    return
                if took:
                    self.stats["rest_trades"] += 1
            self.unresolved.pop(s, None)
            if rows:
                self.ledger.advance(s, _trade_id(rows[-1]))
            if len(rows) < 1000:
                return

    async def _find_first_trade(self, s: str) -> bool:
        """No trade id known for `s`: the history from `ledger.since_ms` (the run's start)
        in windows of at most `venue.trades_window_ms` (Binance: 7 days) up to now. True
        once a trade is found (id reading starts at it), False when there is none yet."""
        win = self.venue.trades_window_ms
        since = self.ledger.since_ms.setdefault(s, max(0, self.now_ms - win + 1))
        while True:
            end = since + win - 1
            rows = await self._call(self.ex.fetch_my_trades, self.unified[s], since, 1000,
                                    {"endTime": end})
            ids = [_trade_id(r) for r in rows if _trade_id(r) >= 0]
            if ids:
                self.ledger.rest_from[s] = min(ids)
                del self.ledger.since_ms[s]
                return True
            if end >= self.now_ms - HISTORY_LAG_MS:   # the window reaches now: none yet
                return False
            since = self.ledger.since_ms[s] = end + 1

    def _note_taken(self, s: str, cid: str) -> None:
        """A counted trade's (symbol, client id) in counting order, for the "no such order"
        check of a send of unknown fate (only what followed the oldest such send is kept)."""
        self.taken += 1
        self.taken_by[s] = self.taken_by.get(s, 0) + 1
        self.taken_log.append((self.taken, s, cid))
        if len(self.taken_log) > 4096:
            marks = [f.trade_mark for f in self.inflight.values() if f.sent_ms > 0]
            keep = min(marks) if marks else self.taken
            self.taken_log = [e for e in self.taken_log if e[0] > keep]

    async def _offer_trade(self, s: str, r: dict[str, Any], source: str) -> bool | None:
        """One exchange trade, counted once per id: True counted, False not (a repeat or a
        malformed payload), None not yet (its order cannot be named now; for at most
        `TRADE_DEFER_S`, then it counts as not ours). Every field is parsed BEFORE
        the id is taken, so a malformed payload is logged and skipped, never half-counted."""
        try:
            tid = int(r["id"])
            ts = int(r["timestamp"])
            amount = float(r["amount"])
            price = float(r["price"])
            side = r["side"]
            fee = float((r.get("fee") or {}).get("cost") or 0.0)
            fee_asset = str((r.get("fee") or {}).get("currency") or self.venue.quote)
            if side not in ("buy", "sell") or not (math.isfinite(amount) and amount > 0.0
                                                   and math.isfinite(price) and price > 0.0
                                                   and math.isfinite(fee)):
                raise ValueError(f"side {side!r}, amount {amount}, price {price}, fee {fee}")
        except (KeyError, TypeError, ValueError) as exc:
            log.error("%s trade payload from %s skipped (malformed: %s)", s, source, exc)
            return False
        if self.ledger.knows(s, tid):
            self.ledger.duplicates += 1
            return False
        info = r.get("info") or {}
        oid = str(r.get("order") or info.get("orderId") or info.get("i") or "")
        cid = info.get("c") or self.order_cid.get(oid)
        if cid is None and oid:
            try:
                o = await self._call(self.ex.fetch_order, oid, self.unified[s])
                cid = o.get("clientOrderId") or ""
            except ccxt.BaseError as exc:
                first = self._defers.setdefault((s, tid), self.wall())
                later = self.wall() - first < TRADE_DEFER_S
                log.warning("trade %d: order %s unknown (%s)%s", tid, oid, _short(exc),
                            "; read again later" if later else "")
                if later:
                    self.stats["deferred_trades"] += 1
                    return None
                cid = ""
            self.order_cid[oid] = cid
        if not self.ledger.take(s, tid):
            return False
        self._defers.pop((s, tid), None)
        cid = str(cid or "")
        self._note_taken(s, cid)
        liq = cid.startswith(self.venue.liquidation_client_prefix)
        ours = cid in self.inflight or cid in self.ledger.ours      # ids we sent, no prefix
        if not (liq or ours):
            self.events.append(self._event("foreign_trade", f"foreign-{s}-{tid}",
                                           ts, f"{s}: trade {tid} of order "
                                           f"{oid} is not ours; the position will be adopted"))
            return True
        dq = amount if side == "buy" else -amount
        if fee_asset != self.venue.quote and fee:
            self._fee_in_other_asset(s, tid, ts, fee, fee_asset)
            fee = 0.0                         # the quote wallet does not pay it
        self.buffer[s].append(_Ev(ts, 0, f"{s}-{tid}", {
            "trade_id": tid, "dq": dq, "price": price, "fee": fee,
            "client_id": "" if liq else cid, "liquidation": liq, "source": source}))
        return True

    def _fee_in_other_asset(self, s: str, tid: int, ts: int, fee: float, asset: str) -> None:
        """A fee the venue took in another asset (BNB): recorded in that asset, valued in
        quote when the broker has a mark of `<asset><quote>`, and NOT taken from the quote
        wallet (the venue debits that asset's balance; taking it from ours would make the
        wallet differ and the reconciliation adopt it)."""
        self.fees_other[asset] = self.fees_other.get(asset, 0.0) + fee
        pair = f"{asset}{self.venue.quote}"
        px = float(self.marks[2 * self.index[pair]]) if pair in self.index else math.nan
        value = fee * px if math.isfinite(px) and px > 0.0 else None
        worth = f" (about {value:.8f} {self.venue.quote})" if value is not None else \
            f" (no {pair} price: not valued)"
        self.events.append(self._event(
            "fee_other_asset", f"fee-{s}-{tid}", ts,
            f"{s}: trade {tid} paid its fee in {asset}: {fee:.8f} {asset}{worth}; not taken "
            f"from the {self.venue.quote} wallet",
            {"asset": asset, "fee": fee, "quote_value": value, "trade_id": tid}))

    async def _read_funding(self, now_ms: int) -> None:
        """Funding payments since the last read, when a settlement hour has passed."""
        step = self.venue.settlement_every_ms
        frm = self.ledger.funding_from_ms
        if now_ms // step == frm // step and frm:
            return
        for s in self.symbols:
            rows = await self._call(self.ex.fetch_funding_history, self.unified[s],
                                    max(frm - step, 0), 1000)
            for r in rows:
                tid = int(r.get("id") or r["info"]["tranId"])
                if not self.ledger.take_funding(tid):
                    continue
                self.stats["funding"] += 1
                self.buffer[s].append(_Ev(int(r["timestamp"]), 1, f"funding-{tid}",
                                          {"paid": -float(r["amount"])}))
        self.ledger.funding_from_ms = now_ms

    async def _watch_trades(self) -> None:
        """The user-data stream: trades offered to the ledger (REST remains the authority;
        a reconnect after a drop is ccxt's next call)."""
        delay = 0.1
        while True:
            try:
                rows = await self.ex.watch_my_trades()
                delay = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as exc:              # noqa: BLE001 - any stream error: retry
                log.info("user stream: %s; reconnecting", _short(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            for r in rows:
                try:
                    s = (r.get("info") or {}).get("s")
                    if s in self.buffer and await self._offer_trade(s, r, "ws"):
                        self.stats["ws_trades"] += 1
                except asyncio.CancelledError:
                    raise
                except Exception as exc:          # noqa: BLE001 - the stream must survive
                    log.error("user stream trade skipped: %s", _short(exc))

    # ------------------------------------------------------------------ reconciliation
    async def reconcile(self) -> None:
        """Exchange positions, wallet and open orders against ours; differences adopted and
        recorded. Skipped while an order's outcome is unknown (it cannot be judged). The
        snapshot is taken between two trade reads: a trade counted by the second read (or
        by the stream meanwhile) may or may not be in it, so that symbol (and the wallet)
        is left to the next reconciliation instead of being adopted and booked again."""
        self._last_reconcile = self.wall()
        if any(f.state == "unknown" for f in self.inflight.values()):
            return
        for s in self.symbols:
            await self._read_trades(s)
        before = dict(self.taken_by)
        snap = await self._venue_account()
        for s in self.symbols:
            await self._read_trades(s)
        moved = {s for s in self.symbols if self.taken_by.get(s, 0) != before.get(s, 0)}
        moved |= set(self.unresolved)
        if moved:
            self.stats["reconcile_deferred"] += 1
            log.info("reconciliation of %s left to the next one: trades arrived around "
                     "the snapshot", sorted(moved))
        self._adopt(*snap, initial=False, skip=moved)
        opens = [o for s in self.symbols
                 for o in await self._call(self.ex.fetch_open_orders, self.unified[s])]
        for o in opens:
            cid = o.get("clientOrderId") or ""
            if cid not in self.inflight:
                self.events.append(self._event("unknown_open_order", f"open-{o.get('id')}",
                                               self.now_ms, f"open order {o.get('id')} "
                                               f"({cid or 'no client id'}) is not ours"))

    async def _adopt_account(self, initial: bool) -> None:
        self._adopt(*await self._venue_account(), initial=initial, skip=set())

    async def _venue_account(self) -> tuple[float, dict[str, tuple[float, float]]]:
        """The venue's wallet (quote) and positions {symbol: (signed qty, entry)}."""
        bal = await self._call(self.ex.fetch_balance)
        wallet = wallet_of(bal)
        rows = await self._call(self.ex.fetch_positions, [self.unified[s] for s in self.symbols])
        theirs: dict[str, tuple[float, float]] = {}
        for p in rows:
            s = (p.get("info") or {}).get("symbol")
            if s in self.index and p.get("contracts"):
                q = float(p["contracts"]) * (1.0 if p.get("side") == "long" else -1.0)
                theirs[s] = (q, float(p.get("entryPrice") or 0.0))
        return wallet, theirs

    def _adopt(self, wallet: float, theirs: dict[str, tuple[float, float]], initial: bool,
               skip: set[str]) -> None:
        """Adopt the venue's positions and wallet where they differ from ours plus the
        unbooked trades; the symbols in `skip` (and then the wallet) are not judged."""
        # what the exchange has done that we have not booked yet
        pending_dq = {s: sum(e.data["dq"] for e in self.buffer[s] if e.kind == 0)
                      for s in self.symbols}
        unbooked = any(self.buffer[s] for s in self.symbols)
        ours = {s: (float(self.pos[2 * i, ac.P_QTY]) + pending_dq[s],
                    float(self.pos[2 * i, ac.P_ENTRY])) for s, i in self.index.items()}
        if unbooked:          # entries move with the unbooked fills: compare quantities only
            ours = {s: (q, theirs.get(s, (0.0, e))[1]) for s, (q, e) in ours.items()}
        ours = {s: v for s, v in ours.items() if s not in skip}
        for d in position_diffs(ours, theirs, self.step):
            i = 2 * self.index[d.symbol]
            self.pos[i, ac.P_QTY] = d.theirs_qty - pending_dq[d.symbol]
            self.pos[i, ac.P_ENTRY] = d.theirs_entry if d.theirs_qty else 0.0
            if not initial or d.theirs_qty:
                self.stats["adopted"] += 1
                self.events.append(self._event("position_adopted",
                                               f"adopt-{d.symbol}-{self.now_ms}", self.now_ms,
                                               d.message(), {"symbol": d.symbol,
                                                             "ours": d.ours_qty,
                                                             "theirs": d.theirs_qty}))
        if initial or (not unbooked and not skip
                       and wallet_differs(float(self.acct[ac.A_WALLET]), wallet)):
            if not initial:
                self.stats["adopted"] += 1
                self.events.append(self._event(
                    "wallet_adopted", f"wallet-{self.now_ms}", self.now_ms,
                    f"wallet {float(self.acct[ac.A_WALLET]):,.8f} in our books, {wallet:,.8f} "
                    "at the exchange; adopted the exchange's",
                    {"ours": float(self.acct[ac.A_WALLET]), "theirs": wallet}))
            self.acct[ac.A_WALLET] = wallet

    # ------------------------------------------------------------------ checkpoint
    def snapshot(self) -> dict[str, object]:
        pend = [(o.client_id, o.symbol, o.slot, o.qty, o.reduce_only, *o.window)
                for o in self.pending()]
        extra = {"ledger": self.ledger.to_json(), "day": self.day,
                 "day_notional": self.day_notional,
                 "amounts": {f.order.client_id: f.amount for f in self.inflight.values()},
                 "buffer": {s: [[e.time, e.kind, e.key, e.data] for e in v]
                            for s, v in self.buffer.items()}}
        return {"acct": self.acct.copy(), "pos": self.pos.copy(), "marks": self.marks.copy(),
                "pending": pend, "extra": extra}

    def restore(self, snap: dict[str, Any]) -> None:
        """A checkpoint's state: every order pending in it is UNKNOWN until looked up."""
        self.acct[:] = np.asarray(snap["acct"])
        self.pos[:] = np.asarray(snap["pos"])
        self.marks[:] = np.asarray(snap["marks"])
        extra = snap.get("extra") or {}
        amounts = extra.get("amounts", {})
        self.queue, self.inflight = [], {}
        for cid, sym, slot, qty, ro, v, s, liq in snap["pending"]:
            o = Order(str(cid), str(sym), int(slot), float(qty), bool(ro),
                      (float(v), float(s), float(liq)))
            self.inflight[o.client_id] = Inflight(o, "unknown",
                                                  float(amounts.get(o.client_id, -1.0)))
        self.ledger = Ledger.from_json(extra.get("ledger", {}))
        self.day = int(extra.get("day", -1))
        self.day_notional = float(extra.get("day_notional", 0.0))
        self.buffer = {s: [_Ev(int(t), int(k), str(key), dict(d)) for t, k, key, d in
                           extra.get("buffer", {}).get(s, [])] for s in self.symbols}
        self.ledger.ours |= set(self.inflight)       # pending in a checkpoint: ours
        self.restored = True

    # ------------------------------------------------------------------ helpers
    def drain_events(self) -> list[dict[str, Any]]:
        out, self.events = self.events, []
        return out

    def _event(self, kind: str, key: str, ts: int, message: str,
               data: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"event_key": key, "ts": int(ts), "kind": kind, "message": message,
                "data": data or {}}

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """A read (or an idempotent setting) retried through network trouble, 5xx and 429."""
        def count() -> None:
            self.stats["retries"] += 1
        return await retried(fn, *args, attempts=self.cfg.attempts + 4,
                             backoff_s=self.cfg.backoff_s, on_retry=count)


def _short(exc: BaseException) -> str:
    return exc_text(exc, 160)
