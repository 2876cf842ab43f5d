"""Resampling bars to a coarser interval with exact aggregation rules.

Rules: open = first, high = max, low = min, close = last; volumes, trade counts and
liquidation notionals are summed; state series (open interest, ratios, premium, index)
take the last value; funding settlements are summed over the settlements inside the
coarse bar (NaN when there is none); `filled` is True if any constituent bar was filled.
Coarse bars are aligned to multiples of the target interval since the epoch (UTC), the
convention exchanges use for 1h/4h/1d klines.
"""

from __future__ import annotations

import numpy as np

from bot.data.bars import Bars

_FIRST = frozenset({"open", "mark_open"})
_MAX = frozenset({"high", "mark_high"})
_MIN = frozenset({"low", "mark_low"})
_SUM = frozenset({"volume", "quote_volume", "trades", "taker_buy_volume",
                  "taker_buy_quote_volume", "liq_long_notional", "liq_short_notional"})
_EVENT_SUM = frozenset({"funding_rate"})
_ANY = frozenset({"filled"})
# everything else (close, mark_close, index_close, premium_close, open_interest*, ratios): last


def resample(bars: Bars, interval_ms: int) -> Bars:
    """Aggregate `bars` to `interval_ms`, which must be a whole multiple of the source interval."""
    if interval_ms % bars.interval_ms:
        raise ValueError(
            f"resample: target interval {interval_ms} ms is not a multiple of the source "
            f"interval {bars.interval_ms} ms"
        )
    if interval_ms == bars.interval_ms or len(bars) == 0:
        return bars
    bucket = bars.ts // interval_ms * interval_ms
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    last = np.r_[starts[1:], len(bars)] - 1
    out: dict[str, np.ndarray] = {"ts": bucket[starts]}
    for name, col in bars.columns.items():
        if name == "ts":
            continue
        if name in _FIRST:
            out[name] = col[starts]
        elif name in _MAX:
            out[name] = np.maximum.reduceat(col, starts)
        elif name in _MIN:
            out[name] = np.minimum.reduceat(col, starts)
        elif name in _SUM:
            out[name] = np.add.reduceat(col, starts)
        elif name in _EVENT_SUM:
            present = np.add.reduceat(np.isfinite(col).astype(np.int64), starts)
            total = np.add.reduceat(np.nan_to_num(col, nan=0.0), starts)
            out[name] = np.where(present > 0, total, np.nan)
        elif name in _ANY:
            out[name] = np.logical_or.reduceat(col, starts)
        else:
            out[name] = col[last]
    return Bars(bars.symbol, interval_ms, out)
