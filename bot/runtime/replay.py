"""The replay feed: datasets through the Feed interface on a simulated clock.

Bars of every symbol are merged by open time; a bar is delivered when it closes on the
simulated clock. `speed` is simulated seconds per wall second (60 = an hour per minute);
0 = as fast as possible. Offline paper runs, demos and tests use it; the daemon cannot tell
it from an exchange feed except by the clock and `data_end_ms`.

Datasets of different spans: each symbol is replayed over its own bars. A symbol whose
data has ended is not a dead live feed: `data_end_ms` tells the daemon when it ended, so
it records that once and holds the symbol as the portfolio backtest holds a symbol without
bars (docs/daemon.md, "Replays of different spans"). The difference is logged once, when
the feed is made. Having `data_end_ms` is what makes a feed a replay to the daemon: no
stale-feed watchdog, a gap in a dataset is a `data_gap` event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping

import numpy as np

from bot.data.bars import Bars
from bot.data.dataset import iso
from bot.errors import LiqbotError
from bot.runtime.feed import BarEvent

log = logging.getLogger("liqbot.replay")


class ReplayFeed:
    """Replays `bars` (symbol -> Bars, one interval) at `speed`."""

    def __init__(self, bars: Mapping[str, Bars], speed: float = 0.0,
                 inject: Callable[[str, dict[str, float]], dict[str, float] | None] | None
                 = None) -> None:
        if not bars:
            raise LiqbotError("--replay: no dataset to replay")
        intervals = {b.interval_ms for b in bars.values()}
        if len(intervals) != 1:
            raise LiqbotError(f"--replay: datasets have different intervals {sorted(intervals)}")
        if not (speed >= 0.0 and np.isfinite(speed)):
            raise LiqbotError(f"--speed: expected a finite number >= 0, got {speed}")
        self.data = dict(bars)
        self.symbols = tuple(self.data)
        self.interval_ms = intervals.pop()
        self.speed = speed
        self.inject = inject          # tests: replace or corrupt a bar dict before delivery
        self._after = {s: -1 for s in self.symbols}
        self._now = min(int(b.ts[0]) for b in self.data.values() if len(b))
        self._ends = {s: b.end_ms for s, b in self.data.items() if len(b)}
        spans = {(b.start_ms, b.end_ms) for b in self.data.values() if len(b)}
        if len(spans) > 1:
            log.warning(span_warning(self.data))

    def data_end_ms(self, symbol: str) -> int | None:
        """The close of `symbol`'s last replayed bar (None: no bars): after it the symbol's
        data has ended, which the daemon does not take for a dead feed."""
        return self._ends.get(symbol)

    def seek(self, after: Mapping[str, int]) -> None:
        """Deliver only bars opening after `after[symbol]` (a restart's watermark). The clock
        resumes at the close of the last bar processed, so the scheduled jobs (daily summary,
        funding check) fire at their next time after it, not at once as if the replay had
        started over (a resumed run recorded a spurious summary and settlement)."""
        for s, ts in after.items():
            if s in self._after:
                self._after[s] = int(ts)
        done = [ts for s, ts in self._after.items() if ts >= 0]
        if done:
            self._now = max(done) + self.interval_ms

    async def history(self, symbol: str, until_ms: int | None = None) -> Bars | None:
        """A replay starts at its first bar, like the backtest of the same dataset."""
        return None

    def now_ms(self) -> int:
        return self._now

    async def poll_positioning(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def events(self) -> AsyncIterator[BarEvent]:
        cols = {s: {k: b[k].tolist() for k in b.names} for s, b in self.data.items()}
        starts = {s: int(np.searchsorted(b.ts, self._after[s], "right"))
                  for s, b in self.data.items()}
        all_ts = np.unique(np.concatenate([b.ts[starts[s]:] for s, b in self.data.items()]))
        wall0 = time.monotonic()
        sim0 = int(all_ts[0]) if len(all_ts) else self._now
        idx = dict(starts)
        for k, ts in enumerate(all_ts):
            close_ms = int(ts) + self.interval_ms
            if self.speed > 0.0:
                due = wall0 + (close_ms - sim0) / 1000.0 / self.speed
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            elif k % 64 == 0:
                await asyncio.sleep(0)         # let the scheduler and signal handlers run
            self._now = close_ms
            for s in self.symbols:
                i = idx[s]
                b = self.data[s]
                if i < len(b) and b.ts[i] == ts:
                    idx[s] = i + 1
                    bar = {name: c[i] for name, c in cols[s].items()}
                    if self.inject is not None:
                        bar = self.inject(s, bar)
                        if bar is None:
                            continue
                    yield BarEvent(s, bar, close_ms)


def span_warning(data: Mapping[str, Bars]) -> str:
    """The one warning of a replay whose datasets cover different spans: each span, and
    what happens outside a symbol's own span."""
    spans = ", ".join(f"{s} {iso(b.start_ms)} .. {iso(b.end_ms)}"
                      for s, b in data.items() if len(b))
    return (f"--replay: the datasets cover different spans ({spans}); a symbol trades only "
            "inside its own: before its first bar it is flat and not traded, after its last "
            "one data_ended event, its position held at its last close and its pending "
            "orders cancelled (as the portfolio backtest holds a symbol without bars; its "
            "pending order never fills)")
