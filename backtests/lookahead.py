"""`--check-lookahead`: recompute signals and targets on prefixes of the data and compare.

A causal strategy gives, for bars[:k], exactly the first k targets it gives on the whole
series. Any difference means it used the future; the first differing bar is reported.

Which prefixes: `cuts` even ones, and the prefixes that END at the bars where the full
run's target changes (up to `at_changes` of them, spread evenly over the changes). A
strategy that peeks acts on what it saw: its target changes at the bar before the move it
foresaw, and the prefix ending there hides the move. Even cuts alone missed a strategy
that went flat whenever the next hour's low was 3% below the close (+53% on five days of
2025-10 where `hold` was liquidated): no cut fell within its hour before a drop.

The same option also checks that the strategy's STREAM (what paper and live trading step
one closed bar at a time: `Strategy.stream`) trades the targets the backtest computed
(`stream_check`): a `WINDOW` shorter than the history `targets` reads makes a paper run
trade differently from its backtest, silently (a review's strategy with WINDOW = 600 and a
longer lookback: 5 trades in the backtest, none in the paper replay).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bot.data.bars import Bars
from bot.errors import LiqbotError
from bot.mechanics.brackets import Brackets
from bot.signals import pipeline
from bot.signals import stream as sm
from bot.signals.pipeline import Signals
from strategies.base import Strategy, WindowStream, targets_of, window_target

#: bars at which a bounded-window stream is compared (each costs one `targets` call on its
#: window): evenly spread, plus the bars where the full run's target changes and the bars
#: just before them (a window too short mistimes or misses exactly those)
STREAM_SAMPLES = 64

#: prefixes ending at a target change checked at most (each costs a signal run over it)
AT_CHANGES = 32


def prefixes(full: np.ndarray, cuts: int = 5, at_changes: int = AT_CHANGES) -> list[int]:
    """The prefix lengths to check: `cuts` even ones, and k = t + 1 for up to `at_changes`
    bars t at which the full run's target differs from the bar before (evenly spread)."""
    n = len(full)
    if n < 3:                        # no prefix of 2 or more bars shorter than the run
        return []
    even = {max(2, n * i // (cuts + 1)) for i in range(1, cuts + 1)}
    changed = np.flatnonzero(~np.isclose(full[1:], full[:-1], rtol=0, atol=0,
                                         equal_nan=True)) + 1
    if len(changed) > at_changes > 0:
        changed = changed[np.linspace(0, len(changed) - 1, at_changes).round().astype(int)]
    elif at_changes <= 0:
        changed = changed[:0]
    # k = n is the full run itself (a change at the last bar): nothing to compare
    return sorted(k for k in even | {int(t) + 1 for t in changed} if 2 <= k < n)


@dataclass(frozen=True)
class LookaheadCheck:
    """What `check` found: the prefixes run, the first violation (prefix length, first
    differing bar) or None when the strategy was causal on all of them, and the full run's
    targets (what `stream_check` compares the stream with)."""

    prefixes: int
    violation: tuple[int, int] | None
    targets: np.ndarray


def check(bars: Bars, signals: Signals, strategy: Strategy, brackets: Brackets,
          cuts: int = 5, at_changes: int = AT_CHANGES) -> LookaheadCheck:
    """Run the strategy on every prefix of `prefixes` and compare with the full run."""
    full = targets_of(strategy, bars, signals)
    ks = prefixes(full, cuts, at_changes)
    for k in ks:
        part_bars = bars.take(slice(0, k))
        part = targets_of(strategy, part_bars, pipeline.compute(part_bars, brackets))
        diff = np.flatnonzero(~np.isclose(part, full[:k], rtol=0, atol=0, equal_nan=True))
        if len(diff):
            return LookaheadCheck(len(ks), (k, int(diff[0])), full)
    return LookaheadCheck(len(ks), None, full)


@dataclass(frozen=True)
class StreamCheck:
    """What `stream_check` found: the stream's form ("window N", "exact", "custom" or
    "none": no streaming form), the bars compared, and the first difference (bar, the
    stream's target, the backtest's) or None."""

    form: str
    bars: int
    violation: tuple[int, float, float] | None


def _sample_bars(full: np.ndarray, samples: int) -> np.ndarray:
    """Bars to compare a window stream at: `samples` even ones, and around target changes."""
    n = len(full)
    even = np.linspace(0, n - 1, min(samples, n)).round().astype(int)
    changed = np.flatnonzero(~np.isclose(full[1:], full[:-1], rtol=0, atol=0,
                                         equal_nan=True)) + 1
    if len(changed) > samples:
        changed = changed[np.linspace(0, len(changed) - 1, samples).round().astype(int)]
    return np.unique(np.concatenate([even, changed, np.maximum(changed - 1, 0)]))


def stream_check(bars: Bars, strategy: Strategy, brackets: Brackets, full: np.ndarray,
                 fill_window: int = 60, samples: int = STREAM_SAMPLES) -> StreamCheck:
    """Compare what the strategy's stream (paper / live) trades with the backtest's targets
    `full` on the same bars: the stream is fed the signal kernel's rows as the daemon feeds
    it (from the first bar on). An exact or custom stream is stepped over every bar; a
    bounded-window stream is evaluated at sampled bars (`window_target` over the window
    ending there). Equal within 1e-9 relative (a window recomputes from its first bar)."""
    try:
        fresh = strategy.stream(bars.symbol, bars.interval_ms)
    except LiqbotError:
        return StreamCheck("none", 0, None)
    n = len(bars)
    if isinstance(fresh, WindowStream):
        size = fresh.size
        at = _sample_bars(full, samples)
        need = np.zeros(n, dtype=bool)
        for t in at:
            need[max(0, t - size + 1):t + 1] = True
        # only the rows a window needs, packed: a window's rows stay consecutive
        row_of = np.cumsum(need) - 1
        xs = np.empty((int(need.sum()), sm.N_X))
        outs = np.empty((len(xs), sm.N_OUT))
        seen_at: dict[int, np.ndarray] = {}
        seen = np.zeros(sm.N_X, dtype=bool)
        todo = iter(at.tolist())
        nxt = next(todo, None)

        def window_sink(t0: int, rows: np.ndarray) -> None:
            nonlocal seen, nxt
            x = sm.bar_matrix(bars.take(slice(t0, t0 + len(rows))))
            part = need[t0:t0 + len(rows)]
            where = row_of[t0:t0 + len(rows)][part]
            xs[where] = x[part]
            outs[where] = rows[part]
            cum = np.logical_or.accumulate(~np.isnan(x), axis=0) | seen
            while nxt is not None and nxt < t0 + len(rows):
                seen_at[nxt] = cum[nxt - t0].copy()
                nxt = next(todo, None)
            seen = cum[-1].copy()

        pipeline.stream_chunks(bars, brackets, window_sink, fill_window=fill_window)
        for t in at:
            lo, hi = row_of[max(0, t - size + 1)], row_of[t] + 1
            got = window_target(strategy, xs[lo:hi], outs[lo:hi], seen_at[int(t)],
                                bars.symbol, bars.interval_ms)
            if not _same(got, full[t]):
                return StreamCheck(f"window {size}", len(at), (int(t), got, float(full[t])))
        return StreamCheck(f"window {size}", len(at), None)
    form = "exact" if strategy.step_form() is not None else "custom"
    found: list[tuple[int, float, float]] = []

    def step_sink(t0: int, rows: np.ndarray) -> None:
        if found:
            return
        x = sm.bar_matrix(bars.take(slice(t0, t0 + len(rows))))
        for k in range(len(rows)):
            got = fresh.update(x[k], rows[k])
            if not _same(got, full[t0 + k]):
                found.append((t0 + k, got, float(full[t0 + k])))
                return

    pipeline.stream_chunks(bars, brackets, step_sink, fill_window=fill_window)
    return StreamCheck(form, n, found[0] if found else None)


def _same(a: float, b: float) -> bool:
    """Equal within 1e-9 relative (or both NaN)."""
    return bool(np.isclose(a, b, rtol=1e-9, atol=1e-12, equal_nan=True))
