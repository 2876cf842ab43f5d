"""Putting coarser or irregular series onto bars without lookahead.

Time convention: a decision taken at the close of bar i (time `ts[i] + interval_ms`) may
use a value only if that value was PUBLISHED strictly before that instant. A value's
publication time is not the start of the period it describes: the open interest snapshot
stamped 00:05 exists from 00:05, a funding rate is final at its settlement time, a 4h
aggregate covering 00:00-04:00 exists only at 04:00. Callers pass publication times
(or the period end plus `delay_ms` for sources that publish late).
"""

from __future__ import annotations

import numpy as np


def align_asof(
    bar_ts: np.ndarray,
    interval_ms: int,
    published_ms: np.ndarray,
    values: np.ndarray,
    delay_ms: int = 0,
) -> np.ndarray:
    """State series (open interest, ratios) as seen at each bar's close.

    Returns, for each bar i, the last value with `published_ms + delay_ms < ts[i] + interval_ms`
    (NaN before the first publication). `published_ms` must be sorted ascending.
    A value published exactly at the next bar's open is NOT visible at this bar's close.
    """
    visible_at = np.asarray(published_ms, dtype=np.int64) + delay_ms
    idx = np.searchsorted(visible_at, np.asarray(bar_ts, dtype=np.int64) + interval_ms, "left") - 1
    vals = np.asarray(values, dtype=np.float64)
    out = np.full(len(bar_ts), np.nan)
    ok = idx >= 0
    out[ok] = vals[idx[ok]]
    return out


def place_events(
    bar_ts: np.ndarray,
    interval_ms: int,
    event_ms: np.ndarray,
    values: np.ndarray,
) -> np.ndarray:
    """Point events (funding settlements, liquidations) on the bar whose interval contains them.

    An event at time e lands on bar i with ts[i] <= e < ts[i] + interval_ms; it is therefore
    known by that bar's close and never earlier. Several events in one bar are summed; bars
    without events get NaN (liquidation-flow callers use `np.nan_to_num`).
    Events outside every bar are dropped. `bar_ts` must be sorted ascending.
    """
    bar_ts = np.asarray(bar_ts, dtype=np.int64)
    ev = np.asarray(event_ms, dtype=np.int64)
    vals = np.asarray(values, dtype=np.float64)
    idx = np.searchsorted(bar_ts, ev, "right") - 1
    inside = (idx >= 0) & (ev < bar_ts[np.clip(idx, 0, None)] + interval_ms) if len(bar_ts) else (
        np.zeros(len(ev), dtype=bool))
    out = np.full(len(bar_ts), np.nan)
    idx, vals = idx[inside], vals[inside]
    if len(idx):
        sums = np.bincount(idx, weights=vals, minlength=len(bar_ts))
        hit = np.bincount(idx, minlength=len(bar_ts)) > 0
        out[hit] = sums[hit]
    return out
