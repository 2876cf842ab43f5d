"""The market-data interface of the daemon: one protocol, two sources (replay, exchange).

A feed delivers CLOSED bars, in time order per symbol, as `BarEvent`s. A bar is a dict
keyed by `bot.data.bars` column names with the same units ("ts" = bar OPEN time, int ms
UTC; prices quote/base; volumes base except quote_volume; funding_rate per interval, NaN
unless a settlement falls inside the bar; open_interest base, the latest value published
before the bar's close; liq_*_notional quote). Missing series are NaN or absent; the
signal layer applies the same fallbacks as for a dataset (`bot.signals.stream.bar_row`).

Optional: `data_end_ms(symbol) -> int | None`, the close of the symbol's last bar when its
source is finite (a replay). A feed with it is a replay to the daemon: a symbol without bars
after that time has ended, not died (recorded once, `data_ended`), missing bars before it
are a gap in the data (`data_gap`), and no stale-feed watchdog runs. An exchange feed has no
end and no such method: its missing bars are a dead feed for the watchdog.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from bot.data.bars import Bars


@dataclass(frozen=True, slots=True)
class BarEvent:
    """One closed bar of one symbol; `received_ms` is the feed clock when it was complete."""

    symbol: str
    bar: dict[str, float]
    received_ms: int


class Feed(Protocol):
    """What the daemon needs from a market-data source."""

    symbols: tuple[str, ...]
    interval_ms: int

    async def history(self, symbol: str, until_ms: int | None = None) -> Bars | None:
        """Closed bars before the first event (warm-up), or None when there are none.
        `until_ms` (exclusive, bar open time) bounds them; None = up to the live edge."""
        ...

    def events(self) -> AsyncIterator[BarEvent]:
        """Closed bars from now on, in time order per symbol; ends when the source ends."""
        ...

    def now_ms(self) -> int:
        """The feed's clock (wall time for an exchange, simulated time for a replay)."""
        ...

    async def poll_positioning(self) -> None:
        """Refresh slow series (open interest, long/short ratios); no-op where pushed."""
        ...

    async def close(self) -> None:
        ...
