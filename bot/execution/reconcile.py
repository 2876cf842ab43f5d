"""Reconciliation bookkeeping of the live broker: which exchange trades and funding payments
are already counted, and where our positions differ from the exchange's.

Pure data, no I/O (the LiveBroker does the requests), so the rules are testable alone:
- a trade is keyed by (symbol, trade id): seen on REST and on the user-data stream, or
  twice on the stream, it counts once;
- REST trade history is read from the first id not yet read (`rest_from`), so a trade the
  stream skipped (disconnect, out of order) is still found; before any trade id is known it
  is read from a start time (`since_ms`: the run's start), never from id 0;
- "ours" is the set of client ids this run (and the runs it resumes) actually sent and whose
  trades are not all counted yet (`ours`), not a client-id prefix: an earlier run's trades
  are not booked;
- funding payments are keyed by the venue's transaction id;
- a position that differs from ours beyond the venue's rounding is adopted (the caller
  records the difference as a store event).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: relative tolerance on quantities and prices the venue sends as rounded decimals
REL_TOL = 1e-9
ABS_QTY_TOL = 1e-9


@dataclass
class Ledger:
    """Trades and funding payments already counted, per symbol."""

    rest_from: dict[str, int] = field(default_factory=dict)    # next trade id to read on REST
    seen: dict[str, set[int]] = field(default_factory=dict)    # counted ids >= rest_from
    funding_ids: set[int] = field(default_factory=set)         # counted funding tranIds
    funding_from_ms: int = 0                                   # funding read since (ms)
    duplicates: int = 0                                        # repeats ignored
    since_ms: dict[str, int] = field(default_factory=dict)     # no id known: read from (ms)
    ours: set[str] = field(default_factory=set)                # sent, trades still due

    def take(self, symbol: str, trade_id: int) -> bool:
        """True the first time a trade is offered (it must be counted), False after."""
        if trade_id < self.rest_from.get(symbol, 0) or trade_id in self.seen.setdefault(
                symbol, set()):
            self.duplicates += 1
            return False
        self.seen[symbol].add(trade_id)
        return True

    def knows(self, symbol: str, trade_id: int) -> bool:
        """True when the trade was counted already (nothing changes)."""
        return trade_id < self.rest_from.get(symbol, 0) or trade_id in self.seen.get(symbol, ())

    def advance(self, symbol: str, read_up_to: int) -> None:
        """REST has returned every trade up to id `read_up_to` inclusive."""
        nxt = max(self.rest_from.get(symbol, 0), read_up_to + 1)
        self.rest_from[symbol] = nxt
        self.seen[symbol] = {i for i in self.seen.get(symbol, set()) if i >= nxt}

    def take_funding(self, tran_id: int) -> bool:
        if tran_id in self.funding_ids:
            self.duplicates += 1
            return False
        self.funding_ids.add(tran_id)
        return True

    def to_json(self) -> dict[str, Any]:
        return {"rest_from": self.rest_from,
                "seen": {s: sorted(v) for s, v in self.seen.items()},
                "funding_ids": sorted(self.funding_ids), "funding_from_ms": self.funding_from_ms,
                "duplicates": self.duplicates, "since_ms": self.since_ms,
                "ours": sorted(self.ours)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Ledger:
        return cls({k: int(v) for k, v in d.get("rest_from", {}).items()},
                   {k: {int(i) for i in v} for k, v in d.get("seen", {}).items()},
                   {int(i) for i in d.get("funding_ids", [])}, int(d.get("funding_from_ms", 0)),
                   int(d.get("duplicates", 0)),
                   {k: int(v) for k, v in d.get("since_ms", {}).items()},
                   {str(c) for c in d.get("ours", [])})


@dataclass(frozen=True)
class PositionDiff:
    """Our view of a symbol's position against the exchange's (one-way mode)."""

    symbol: str
    ours_qty: float
    ours_entry: float
    theirs_qty: float
    theirs_entry: float

    def message(self) -> str:
        return (f"{self.symbol}: position {self.ours_qty:+.8f} @ {self.ours_entry:,.2f} in our "
                f"books, {self.theirs_qty:+.8f} @ {self.theirs_entry:,.2f} at the exchange; "
                "adopted the exchange's")


def differs(a: float, b: float, abs_tol: float) -> bool:
    return abs(a - b) > abs_tol + REL_TOL * max(abs(a), abs(b))


def position_diffs(ours: dict[str, tuple[float, float]],
                   theirs: dict[str, tuple[float, float]], qty_step: dict[str, float]
                   ) -> list[PositionDiff]:
    """Symbols whose (qty, entry) differ: quantity beyond half a lot step (or 1e-9), entry
    beyond 1e-6 relative when both hold a position."""
    out = []
    for s, (q, e) in ours.items():
        tq, te = theirs.get(s, (0.0, 0.0))
        tol = max(ABS_QTY_TOL, 0.5 * qty_step.get(s, 0.0) - ABS_QTY_TOL)
        if differs(q, tq, tol) or (q != 0.0 and tq != 0.0 and
                                   abs(e - te) > 1e-6 * max(abs(e), abs(te))):
            out.append(PositionDiff(s, q, e, tq, te))
    return out


def wallet_differs(ours: float, theirs: float) -> bool:
    """The venue sends balances to 8 decimals and books fees it rounds: 1e-4 quote plus
    1e-9 relative is noise, more is a difference."""
    return differs(ours, theirs, 1e-4)
