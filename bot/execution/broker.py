"""The Broker protocol and the PaperBroker, which fills on the live or replayed market with
the backtester's mechanics (`bot.execution.kernel`: fill model, fees, funding at
settlements, mark-price liquidation, brackets).

An order is a signed base quantity for one account slot with a client order id. Market
orders only: an order submitted at a bar's close fills at the next bar's open of its symbol
(plus the fill model's slippage, measured over the window known when it was decided),
exactly as in a backtest. The paper account is the broker's: `acct`/`pos` arrays with two
slots per symbol (main, hedge), margined together in cross.

A liquidation lowers the shared wallet, which moves every other symbol's cross
liquidation price: after one, the other symbols' slots are checked again in the same call
until nothing more is liquidated, as the portfolio backtest's open phase does
(`backtests.portfolio.run_bars`). A symbol whose bar at the same open time was already
processed is checked over that bar's mark range; one whose bar has not arrived yet at its
last mark close. After each close (`at_close`) every symbol is checked at its last mark
close, the portfolio's close instant: an account two symbols took under its maintenance
margin together is liquidated there.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from bot.execution import kernel as kn
from bot.mechanics import account as ac
from bot.mechanics.brackets import Brackets

NO_BAR = np.iinfo(np.int64).min       # `bar_ts` of a symbol without a processed bar


@dataclass(frozen=True, slots=True)
class Order:
    """What the order manager sends: `qty` base (+ buys), market, on one slot."""

    client_id: str
    symbol: str
    slot: int
    qty: float
    reduce_only: bool
    window: tuple[float, float, float]    # fill-model window known at the decision


@dataclass(frozen=True, slots=True)
class Fill:
    """A fill or a forced liquidation; `fill_id` is unique and stable across restarts."""

    fill_id: str
    client_id: str          # "" for liquidations
    symbol: str
    slot: int
    ts: int                 # bar open time of the fill, ms UTC
    qty: float              # signed base
    price: float
    fee: float              # quote
    slippage: float         # quote cost versus the open
    liquidation: bool


@dataclass(frozen=True, slots=True)
class Funding:
    symbol: str
    slot: int
    ts: int
    rate: float
    mark: float
    payment: float          # quote, + paid


def reduce_only_qty(order: Order, held: float) -> float:
    """What of `order` the venue executes against the position `held` (base): a
    reduce-only order at most closes it and never opens or grows one (0: rejected). Since
    2026-12-06 a slot can be liquidated in another symbol's bar or at a close instant,
    after its own decision queued a reduce (or the kill switch's flatten): that order,
    filled as sent, opened the opposite position."""
    if not order.reduce_only:
        return order.qty
    if held == 0.0 or order.qty * held > 0.0:
        return 0.0
    return order.qty if abs(order.qty) <= abs(held) else -held


class Broker(Protocol):
    """What the daemon needs from a venue (paper here; live through ccxt later)."""

    def submit(self, order: Order) -> None: ...

    def pending(self) -> list[Order]: ...


class PaperBroker:
    """Simulated venue on the shared trading kernel."""

    def __init__(self, symbols: list[str], brackets: list[Brackets], wallet: float,
                 fp: np.ndarray) -> None:
        self.symbols = list(symbols)
        self.index = {s: i for i, s in enumerate(self.symbols)}
        self.acct, self.pos = ac.new_account(wallet, 2 * len(symbols), leverage=125.0)
        per_slot = [b for b in brackets for _ in range(2)]
        self.floor, self.cap, self.mmr, self.cum, _ = ac.stack_brackets(per_slot)
        self.fp = fp
        self.marks = np.zeros(2 * len(symbols))      # last mark close per slot
        # per symbol, its last processed bar: open time and mark (open, low, high), the
        # reference mark and range a re-check after another symbol's liquidation in the
        # same bar uses
        self.bar_ts = np.full(len(symbols), NO_BAR, dtype=np.int64)
        self.bar_range = np.full((len(symbols), 3), np.nan)
        self._pending: dict[int, Order] = {}

    # --- orders -------------------------------------------------------------------------
    def submit(self, order: Order) -> None:
        """Queue a market order for the next bar of its symbol (one per slot)."""
        self._pending[order.slot] = order

    def pending(self) -> list[Order]:
        return [self._pending[k] for k in sorted(self._pending)]

    # --- the venue's side of a bar -------------------------------------------------------
    def on_bar_open(self, symbol: str, ts: int, open_px: float, mark_open: float,
                    mark_high: float, mark_low: float,
                    funding_rate: float) -> tuple[list[Fill], list[Funding]]:
        """Funding at a settlement, fills at the open, liquidation at the mark extremes
        (the open phase of `bot.execution.kernel`)."""
        i = self.index[symbol]
        fills: list[Fill] = []
        payments: list[Funding] = []
        for slot in (2 * i, 2 * i + 1):
            paid = kn.settle_funding(self.acct, self.pos, slot, mark_open, funding_rate)
            if paid != 0.0:
                payments.append(Funding(symbol, slot, ts, funding_rate, mark_open, paid))
        for slot in (2 * i, 2 * i + 1):
            order = self._pending.pop(slot, None)
            if order is None:
                continue
            qty = reduce_only_qty(order, float(self.pos[slot, ac.P_QTY]))
            if qty == 0.0:                 # nothing left to reduce: the venue rejects it
                continue
            px, fee, slip = kn.fill_order(self.acct, self.pos, slot, qty, open_px,
                                          order.window[0], order.window[1], order.window[2],
                                          self.fp)
            if px > 0.0:
                fills.append(Fill(f"{order.client_id}-f", order.client_id, symbol, slot, ts,
                                  qty, px, fee, slip, False))
        self.bar_ts[i] = ts
        self.bar_range[i] = (mark_open, mark_low, mark_high)
        self._liquidations(i, ts, fills)
        return fills, payments

    def _range(self, s: int, ts: int) -> tuple[float, float]:
        """Symbol s's mark (low, high) at open time `ts`: its bar's if that bar was already
        processed, else its last mark close (its bar has not arrived: nothing more known)."""
        if self.bar_ts[s] == ts:
            return float(self.bar_range[s, 1]), float(self.bar_range[s, 2])
        mark = float(self.marks[2 * s])
        return mark, mark

    def _reference(self, ts: int, at_close: bool) -> np.ndarray:
        """Every slot's mark while another symbol is checked: at a close instant the last
        mark closes; in a bar's open range the mark OPEN of a symbol whose bar at `ts` was
        processed (the portfolio's reference: its close came later than the other
        symbol's extreme may have), else its last close."""
        ref = self.marks.copy()
        if not at_close:
            for s in np.flatnonzero(self.bar_ts == ts):
                ref[2 * s] = ref[2 * s + 1] = self.bar_range[s, 0]
        return ref

    def _check_symbol(self, s: int, i: int, ts: int, marks: np.ndarray, ref: np.ndarray,
                      fills: list[Fill], at_close: bool) -> int:
        """Liquidation checks of symbol s's two slots over its mark range (at its last mark
        close when `at_close`), the other symbols at `marks` (as
        `backtests.portfolio._check_symbol`), in symbol i's bar; returns the number of slots
        liquidated. `marks` of s's slots are back at their reference (`ref`) afterwards. The fill
        id names the check (s's own bar, another symbol's, a close instant) and the symbol
        whose bar ran it: s's own bar at the same open time may still fill an order that
        reopens the slot and liquidate it again, and both fills must be kept."""
        a = 2 * s
        if at_close:
            lo = hi = float(self.marks[a])
            tag = f"-close-{self.symbols[i]}"
        else:
            lo, hi = self._range(s, ts)
            tag = "" if s == i else f"-after-{self.symbols[i]}"
        symbol = self.symbols[s]
        n = 0
        for slot in (a, a + 1):
            if self.pos[slot, ac.P_QTY] == 0.0:
                continue
            adverse = kn.adverse_mark(self.pos, slot, lo, hi)
            marks[a] = adverse
            marks[a + 1] = adverse
            q, lp, fee = kn.liquidate(self.acct, self.pos, slot, lo, hi, marks, self.floor,
                                      self.cap, self.mmr, self.cum, self.fp)
            if lp == lp:
                fills.append(Fill(f"liq-{symbol}-{ts}-{slot}{tag}", "", symbol, slot, ts, q,
                                  lp, fee, 0.0, True))
                n += 1
        marks[a] = ref[a]
        marks[a + 1] = ref[a + 1]
        return n

    def _liquidations(self, i: int, ts: int, fills: list[Fill], at_close: bool = False) -> None:
        """The portfolio's liquidation rounds (`backtests.portfolio._liquidation_rounds`)
        in symbol i's bar: symbol i's own checks (every symbol's at a close instant), then,
        while any slot was liquidated, the re-checks of every symbol that has seen another
        symbol's liquidation since its last check (one liquidation can cause another).
        The other symbols were checked at their own bars; with one symbol nothing is
        re-checked, so single-symbol runs are unchanged."""
        n_sym = len(self.symbols)
        ref = self._reference(ts, at_close)
        marks = ref.copy()
        own = [0] * n_sym                     # liquidations of each symbol's slots here
        seen = [0] * n_sym                    # others' liquidations at its last check
        total = 0
        for s in (range(n_sym) if at_close else (i,)):
            n = self._check_symbol(s, i, ts, marks, ref, fills, at_close)
            own[s] += n
            total += n
            seen[s] = total - own[s]
        again = total > 0 and n_sym > 1
        while again:
            again = False
            for s in range(n_sym):
                others = total - own[s]
                if others <= seen[s]:
                    continue
                if self.pos[2 * s, ac.P_QTY] == 0.0 and self.pos[2 * s + 1, ac.P_QTY] == 0.0:
                    seen[s] = others
                    continue
                n = self._check_symbol(s, i, ts, marks, ref, fills, at_close)
                own[s] += n
                total += n
                seen[s] = total - own[s]
                if n > 0:
                    again = True

    def at_close(self, symbol: str, ts: int) -> list[Fill]:
        """After `set_mark` of `symbol`'s close at bar `ts`: every symbol at its last mark
        close, liquidated where the account is under its maintenance margin at these marks
        together (the portfolio's close instant). Each bar's own check sees one symbol's
        extreme against the others' marks, so two symbols falling together could leave the
        cross account under maintenance with neither past its own price. One symbol: its
        bar's range held the close already, nothing to do."""
        fills: list[Fill] = []
        if len(self.symbols) > 1:
            self._liquidations(self.index[symbol], ts, fills, at_close=True)
        return fills

    def set_mark(self, symbol: str, mark_close: float) -> None:
        i = self.index[symbol]
        self.marks[2 * i] = mark_close
        self.marks[2 * i + 1] = mark_close

    # --- checkpoint --------------------------------------------------------------------
    def snapshot(self) -> dict[str, object]:
        return {"acct": self.acct.copy(), "pos": self.pos.copy(), "marks": self.marks.copy(),
                "bar_ts": self.bar_ts.copy(), "bar_range": self.bar_range.copy(),
                "pending": [(o.client_id, o.symbol, o.slot, o.qty, o.reduce_only, *o.window)
                            for o in self.pending()]}

    def restore(self, snap: dict[str, object]) -> None:
        """A snapshot's state; one without `bar_ts`/`bar_range` (older checkpoints) leaves
        no bar processed: a re-check then uses the symbols' last mark closes."""
        self.acct[:] = np.asarray(snap["acct"])
        self.pos[:] = np.asarray(snap["pos"])
        self.marks[:] = np.asarray(snap["marks"])
        ts, rng = snap.get("bar_ts"), snap.get("bar_range")
        if ts is not None and rng is not None and np.shape(rng) == self.bar_range.shape:
            self.bar_ts[:] = np.asarray(ts, dtype=np.int64)
            self.bar_range[:] = np.asarray(rng, dtype=float)
        else:
            self.bar_ts[:] = NO_BAR
            self.bar_range[:] = np.nan
        self._pending = {}
        for cid, sym, slot, qty, ro, v, s, liq in snap["pending"]:  # type: ignore[attr-defined]
            self._pending[int(slot)] = Order(str(cid), str(sym), int(slot), float(qty),
                                             bool(ro), (float(v), float(s), float(liq)))


def to_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """Arrays into one blob (np.savez), for checkpoints."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def from_bytes(blob: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
