"""`--check-lookahead`: recompute signals and targets on prefixes of the data and compare.

A causal strategy gives, for bars[:k], exactly the first k targets it gives on the whole
series. Any difference means it used the future; the first differing bar is reported.
"""

from __future__ import annotations

import numpy as np

from bot.data.bars import Bars
from bot.mechanics.brackets import Brackets
from bot.signals import pipeline
from bot.signals.pipeline import Signals
from strategies.base import Strategy, targets_of


def first_lookahead(bars: Bars, signals: Signals, strategy: Strategy, brackets: Brackets,
                    cuts: int = 5) -> tuple[int, int] | None:
    """(prefix length, first differing bar) of the first violation, or None when causal."""
    full = targets_of(strategy, bars, signals)
    n = len(bars)
    for k in sorted({max(2, n * i // (cuts + 1)) for i in range(1, cuts + 1)}):
        part_bars = bars.take(slice(0, k))
        part = targets_of(strategy, part_bars, pipeline.compute(part_bars, brackets))
        diff = np.flatnonzero(~np.isclose(part, full[:k], rtol=0, atol=0, equal_nan=True))
        if len(diff):
            return k, int(diff[0])
    return None
