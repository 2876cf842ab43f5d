"""Loaders for ccxt-shaped history: OHLCV lists, FundingRateHistory, OpenInterest and
LongShortRatio dicts (the unified structures of the ccxt manual).

OHLCV rows are [timestamp ms, open, high, low, close, volume (base)]. FundingRateHistory
has `timestamp` (settlement, ms) and `fundingRate` (per interval). OpenInterest has
`timestamp`, `openInterestAmount` (base) and `openInterestValue` (quote). Row numbers in
errors are 1-based positions in the list.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bot.data.align import align_asof, place_events
from bot.data.bars import Bars
from bot.data.binance_vision import interval_ms, interval_name
from bot.data.validate import check_bar_columns, check_time
from bot.errors import DataError


def _line(i: int) -> int:
    return i + 1


def bars_from_ohlcv(symbol: str, timeframe: str, rows: Sequence[Sequence[Any]],
                    label: str = "ccxt OHLCV") -> Bars:
    """Validated Bars from ccxt OHLCV rows."""
    for i, r in enumerate(rows):
        if len(r) != 6:
            raise DataError(label, f"expected 6 fields [ts, o, h, l, c, v], got {len(r)}",
                            row=_line(i))
        if any(v is None for v in r):
            col = ("timestamp", "open", "high", "low", "close", "volume")[
                [v is None for v in r].index(True)]
            raise DataError(label, "missing value", row=_line(i), column=col)
    arr = np.asarray(rows, dtype=np.float64)
    cols = {"ts": arr[:, 0].astype(np.int64), "open": arr[:, 1], "high": arr[:, 2],
            "low": arr[:, 3], "close": arr[:, 4], "volume": arr[:, 5]}
    check_time(cols["ts"], label, _line, "timestamp")
    check_bar_columns(cols, label, _line)
    return Bars(symbol, interval_ms(timeframe), cols)


def _series(rows: Sequence[dict[str, Any]], key: str, label: str) -> tuple[np.ndarray, np.ndarray]:
    ts = np.empty(len(rows), dtype=np.int64)
    vals = np.empty(len(rows))
    for i, r in enumerate(rows):
        if not isinstance(r, dict) or r.get("timestamp") is None or r.get(key) is None:
            raise DataError(label, f"expected a dict with timestamp and {key}", row=_line(i),
                            column=key)
        ts[i] = int(r["timestamp"])
        vals[i] = float(r[key])
    order = np.argsort(ts, kind="stable")
    return ts[order], vals[order]


def mark_columns(bars: Bars, rows: Sequence[Sequence[Any]]) -> dict[str, np.ndarray]:
    """Mark-price OHLCV rows matched to bars by open time (NaN where missing)."""
    m = bars_from_ohlcv(bars.symbol, _tf(bars), rows, "ccxt mark OHLCV")
    idx = np.searchsorted(m.ts, bars.ts)
    ok = (idx < len(m)) & (m.ts[np.clip(idx, 0, len(m) - 1)] == bars.ts)
    out = {}
    for src, dst in (("open", "mark_open"), ("high", "mark_high"), ("low", "mark_low"),
                     ("close", "mark_close")):
        col = np.full(len(bars), np.nan)
        col[ok] = m[src][idx[ok]]
        out[dst] = col
    return out


def _tf(bars: Bars) -> str:
    return interval_name(bars.interval_ms)


def funding_column(bars: Bars, rows: Sequence[dict[str, Any]]) -> np.ndarray:
    """Funding settlements placed on the bar containing each settlement time."""
    ts, rate = _series(rows, "fundingRate", "ccxt FundingRateHistory")
    return place_events(bars.ts, bars.interval_ms, ts, rate)


def open_interest_columns(bars: Bars, rows: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Open interest as-of its timestamp (base and quote)."""
    out = {}
    for key, name in (("openInterestAmount", "open_interest"),
                      ("openInterestValue", "open_interest_value")):
        if all(isinstance(r, dict) and r.get(key) is not None for r in rows):
            ts, v = _series(rows, key, "ccxt OpenInterest")
            out[name] = align_asof(bars.ts, bars.interval_ms, ts, v)
    if not out:
        raise DataError("ccxt OpenInterest", "rows carry neither openInterestAmount nor "
                                             "openInterestValue")
    return out


def long_short_column(bars: Bars, rows: Sequence[dict[str, Any]]) -> np.ndarray:
    ts, v = _series(rows, "longShortRatio", "ccxt LongShortRatio")
    return align_asof(bars.ts, bars.interval_ms, ts, v)
