"""`--check-lookahead`: recompute signals and targets on prefixes of the data and compare.

A causal strategy gives, for bars[:k], exactly the first k targets it gives on the whole
series. Any difference means it used the future; the first differing bar is reported.

Which prefixes: `cuts` even ones, and the prefixes that END at the bars where the full
run's target changes (up to `at_changes` of them, spread evenly over the changes). A
strategy that peeks acts on what it saw: its target changes at the bar before the move it
foresaw, and the prefix ending there hides the move. Even cuts alone missed a strategy
that went flat whenever the next hour's low was 3% below the close (+53% on five days of
2025-10 where `hold` was liquidated): no cut fell within its hour before a drop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bot.data.bars import Bars
from bot.mechanics.brackets import Brackets
from bot.signals import pipeline
from bot.signals.pipeline import Signals
from strategies.base import Strategy, targets_of

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
    """What `check` found: the prefixes run, and the first violation (prefix length,
    first differing bar) or None when the strategy was causal on all of them."""

    prefixes: int
    violation: tuple[int, int] | None


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
            return LookaheadCheck(len(ks), (k, int(diff[0])))
    return LookaheadCheck(len(ks), None)
