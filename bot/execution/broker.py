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

    def rejections(self) -> dict[str, str]: ...


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
        #: why the venue refused orders at the last open, by client id (`rejections`)
        self._refused: dict[str, str] = {}

    # --- orders -------------------------------------------------------------------------
    def submit(self, order: Order) -> None:
        """Queue a market order for the next bar of its symbol (one per slot)."""
        self._pending[order.slot] = order

    def pending(self) -> list[Order]:
        return [self._pending[k] for k in sorted(self._pending)]

    def rejections(self) -> dict[str, str]:
        """{client id: why} of the orders refused at the last `on_bar_open` (the store's
        intent reason); read once, then cleared."""
        out, self._refused = self._refused, {}
        return out

    def cancel(self, client_id: str) -> Order | None:
        """Drop the pending order `client_id` so it never fills (a replayed symbol whose
        data ended has no next open for it); returns it, or None when none is pending."""
        for slot, order in list(self._pending.items()):
            if order.client_id == client_id:
                return self._pending.pop(slot)
        return None

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
                self._refused[order.client_id] = ("reduce-only: no position on its side "
                                                  "left to reduce at the open")
                continue
            px, fee, slip = kn.fill_order(self.acct, self.pos, slot, qty, open_px,
                                          order.window[0], order.window[1], order.window[2],
                                          self.fp)
            if px <= 0.0:
                self._refused[order.client_id] = f"no price at the open ({open_px!r})"
            else:
                fills.append(Fill(f"{order.client_id}-f", order.client_id, symbol, slot, ts,
                                  qty, px, fee, slip, False))
        self.bar_ts[i] = ts
        self.bar_range[i] = (mark_open, mark_low, mark_high)
        self._liquidations(i, ts, fills)
        return fills, payments

    def _liquidations(self, i: int, ts: int, fills: list[Fill], at_close: bool = False) -> None:
        """The portfolio's liquidation rounds (`kernel.liquidation_rounds`) in symbol i's
        bar: symbol i first (every symbol at a close instant), then every symbol that has
        seen another's liquidation since its last check. What the broker knows of each
        symbol at open time `ts`: its bar's mark range and open if that bar was processed,
        else its last mark close (its bar has not arrived); at a close instant every
        symbol's last mark close. With one symbol nothing is re-checked, so single-symbol
        runs are unchanged. A fill id names the check (the symbol's own bar, another's, a
        close instant) and the symbol whose bar ran it: a slot liquidated in another
        symbol's bar can be reopened and liquidated again in its own, and both fills must
        be kept."""
        n_sym = len(self.symbols)
        last = self.marks[0::2].copy()             # each symbol's last mark close
        here = (self.bar_ts == ts) & (not at_close)
        lo = np.where(here, self.bar_range[:, 1], last)
        hi = np.where(here, self.bar_range[:, 2], last)
        ref = np.where(here, self.bar_range[:, 0], last)
        first = np.zeros(n_sym) if not at_close else np.ones(n_sym)
        first[i] = 1.0
        out = np.zeros((2 * n_sym, 4))
        n = kn.liquidation_rounds(first, lo, hi, ref, self.acct, self.pos,
                                  np.zeros(2 * n_sym), self.floor, self.cap, self.mmr,
                                  self.cum, self.fp, np.zeros((n_sym, 2)), out)
        for slot, q, lp, fee in out[:n]:
            s = int(slot) // 2
            tag = f"-close-{self.symbols[i]}" if at_close else \
                ("" if s == i else f"-after-{self.symbols[i]}")
            fills.append(Fill(f"liq-{self.symbols[s]}-{ts}-{int(slot)}{tag}", "",
                              self.symbols[s], int(slot), ts, float(q), float(lp), float(fee),
                              0.0, True))

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
