"""Content checks on bar columns, gap detection and (opt-in) gap filling.

Every check raises `DataError` naming the file, the line and the column of the FIRST
offending row, so a user can fix or report it. All checks are vectorised numpy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from bot.data.bars import Bars
from bot.errors import DataError

LineOf = Callable[[int], int]


@dataclass(frozen=True)
class Gap:
    """Missing bars between `start_ms` (first missing open time) and `end_ms` (exclusive)."""

    start_ms: int
    end_ms: int
    missing: int


def _first(mask: np.ndarray) -> int | None:
    hits = np.flatnonzero(mask)
    return int(hits[0]) if len(hits) else None


def check_time(ts: np.ndarray, label: str, line_of: LineOf, column: str = "open_time") -> None:
    """Strictly increasing timestamps: no duplicates, no going back."""
    if len(ts) < 2:
        return
    d = np.diff(ts)
    i = _first(d <= 0)
    if i is None:
        return
    prev, cur = int(ts[i]), int(ts[i + 1])
    what = "duplicate timestamp" if cur == prev else "timestamp goes back in time"
    raise DataError(label, f"{what}: {cur} after {prev} on the previous row",
                    row=line_of(i + 1), column=column)


def check_bar_columns(cols: Mapping[str, np.ndarray], label: str, line_of: LineOf,
                      interval_ms: int | None = None, positive_prices: bool = True,
                      volumes: bool = True) -> None:
    """OHLC consistency, finite values, non-negative volumes, and close_time when present.

    Mark and index klines carry no volumes (`volumes=False`); premium-index klines are
    signed fractions, so they skip the positive-price check too.
    """
    if not volumes:
        cols = {k: v for k, v in cols.items() if k not in (
            "volume", "quote_volume", "trades", "taker_buy_volume", "taker_buy_quote_volume")}
    for name in ("open", "high", "low", "close", "volume", "quote_volume",
                 "taker_buy_volume", "taker_buy_quote_volume"):
        if name in cols:
            i = _first(~np.isfinite(cols[name]))
            if i is not None:
                raise DataError(label, "value is NaN or infinite", row=line_of(i), column=name)
    for name in ("open", "high", "low", "close") if positive_prices else ():
        i = _first(cols[name] <= 0)
        if i is not None:
            raise DataError(label, f"price must be positive, got {float(cols[name][i])!r}",
                            row=line_of(i), column=name)
    for name in ("volume", "quote_volume", "trades", "taker_buy_volume",
                 "taker_buy_quote_volume"):
        if name in cols:
            i = _first(cols[name] < 0)
            if i is not None:
                raise DataError(label, f"negative {name} {float(cols[name][i])!r}", row=line_of(i),
                                column=name)
    o, h, lo, c = cols["open"], cols["high"], cols["low"], cols["close"]
    i = _first(h < np.maximum(o, c))
    if i is not None:
        raise DataError(label, f"high {float(h[i])!r} is below max(open, close) = "
                               f"{float(max(o[i], c[i]))!r}", row=line_of(i), column="high")
    i = _first(lo > np.minimum(o, c))
    if i is not None:
        raise DataError(label, f"low {float(lo[i])!r} is above min(open, close) = "
                               f"{float(min(o[i], c[i]))!r}", row=line_of(i), column="low")
    if "taker_buy_volume" in cols:
        v, tb = cols["volume"], cols["taker_buy_volume"]
        i = _first(tb > v * (1 + 1e-9) + 1e-12)
        if i is not None:
            raise DataError(label, f"taker_buy_volume {float(tb[i])!r} exceeds volume {float(v[i])!r}",
                            row=line_of(i), column="taker_buy_volume")
    if interval_ms is not None and "close_time" in cols:
        i = _first(cols["close_time"] != cols["ts"] + interval_ms - 1)
        if i is not None:
            raise DataError(label, f"close_time {int(cols['close_time'][i])} is not open_time + "
                                   f"{interval_ms - 1} (mixed intervals?)",
                            row=line_of(i), column="close_time")


def find_gaps(ts: np.ndarray, interval_ms: int) -> list[Gap]:
    """Runs of missing bars in a strictly increasing `ts`."""
    if len(ts) < 2:
        return []
    d = np.diff(ts)
    idx = np.flatnonzero(d != interval_ms)
    return [Gap(int(ts[i]) + interval_ms, int(ts[i + 1]), int(d[i] // interval_ms) - 1)
            for i in idx]


def check_grid(ts: np.ndarray, interval_ms: int, label: str, line_of: LineOf) -> None:
    """Timestamps sit on the interval grid (a 1m file with a 00:00:30 row is corrupt)."""
    i = _first(ts % interval_ms != 0)
    if i is not None:
        raise DataError(label, f"timestamp {int(ts[i])} is not aligned to the {interval_ms} ms "
                               "interval", row=line_of(i), column="open_time")


def fill_gaps(bars: Bars) -> Bars:
    """Insert the missing bars: flat OHLC at the previous close, zero flow, `filled=True`.

    State columns (open interest, ratios, mark, premium) carry the previous value; event
    columns (funding, liquidations) stay empty. Only called when the user asks for it.
    """
    step = bars.interval_ms
    ts = bars.ts
    full = np.arange(ts[0], ts[-1] + step, step, dtype=np.int64)
    if len(full) == len(ts):
        return bars if bars.has("filled") else bars.with_columns(filled=np.zeros(len(ts), bool))
    pos = ((ts - ts[0]) // step).astype(np.int64)
    present = np.zeros(len(full), dtype=bool)
    present[pos] = True
    # index of the last real bar at or before each slot
    src = np.maximum.accumulate(np.where(present, np.arange(len(full)), -1))
    real_index = np.cumsum(present) - 1
    prev_real = real_index[src]
    out: dict[str, np.ndarray] = {"ts": full}
    zero_flow = {"volume", "quote_volume", "trades", "taker_buy_volume",
                 "taker_buy_quote_volume", "liq_long_notional", "liq_short_notional"}
    for name, col in bars.columns.items():
        if name in ("ts", "filled"):
            continue
        if name in zero_flow:
            v = np.zeros(len(full), dtype=col.dtype)
            v[pos] = col
        elif name == "funding_rate":
            v = np.full(len(full), np.nan)
            v[pos] = col
        elif name in ("open", "high", "low", "mark_open", "mark_high", "mark_low"):
            ref = "close" if not name.startswith("mark") else "mark_close"
            v = bars[ref][prev_real].copy()
            v[pos] = col
        else:
            v = col[prev_real]
        out[name] = v
    filled = ~present
    if bars.has("filled"):
        filled[pos] = bars["filled"]
    out["filled"] = filled
    return Bars(bars.symbol, step, out)
