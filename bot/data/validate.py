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
        i = _first((cols[name] < PRICE_MIN) | (cols[name] > PRICE_MAX))
        if i is not None:
            raise DataError(label, f"price {float(cols[name][i])!r} is outside the plausible "
                                   f"{PRICE_MIN:g} .. {PRICE_MAX:g} (quote per base)",
                            row=line_of(i), column=name)
    if positive_prices:
        i = _first(cols["high"] > MAX_BAR_RANGE * cols["low"])
        if i is not None:
            raise DataError(label, f"high {float(cols['high'][i])!r} is more than "
                                   f"{MAX_BAR_RANGE:g}x the low {float(cols['low'][i])!r} in one "
                                   "bar: corrupt, not a market move", row=line_of(i),
                            column="high")
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


#: Plausible prices (quote per base) and the widest high/low of one bar: a row beyond them
#: is a corrupt or mis-scaled file (1e308, 1e-300), whose returns would print as 1e300%.
PRICE_MIN, PRICE_MAX = 1e-12, 1e12
MAX_BAR_RANGE = 100.0

#: Plausible bar times, int64 ms UTC: 2000-01-01 .. 2100-01-01.
TS_MIN_MS = 946_684_800_000
TS_MAX_MS = 4_102_444_800_000
#: Unit of an epoch timestamp by magnitude: below 1e11 seconds (1e11 ms is 1973), below
#: 1e14 milliseconds, below 1e17 microseconds (Binance moved some files to us in 2025).
_UNITS = (("s", 1e11, 1000), ("ms", 1e14, 1), ("us", 1e17, 0))


def ts_unit(value: int) -> str:
    """'s', 'ms', 'us' or 'ns' for one epoch timestamp, judged by its magnitude."""
    for name, upper, _ in _UNITS:
        if abs(value) < upper:
            return name
    return "ns"


def to_ms(ts: np.ndarray, label: str, line_of: LineOf, column: str = "open_time") -> np.ndarray:
    """Epoch timestamps in s, ms or us (one unit per file, detected) as int64 ms UTC.

    Raises DataError naming the row when the unit changes within the file, a value is
    negative or in nanoseconds, or the converted time falls outside 2000..2100.
    """
    ts = np.asarray(ts, dtype=np.int64)
    if not len(ts):
        return ts
    unit = ts_unit(int(ts[0]))
    units = np.select([np.abs(ts) < 1e11, np.abs(ts) < 1e14, np.abs(ts) < 1e17],
                      [0, 1, 2], 3)
    i = _first(units != units[0])
    if i is not None:
        raise DataError(label, f"timestamp unit changes from {unit} to {ts_unit(int(ts[i]))} "
                               f"({int(ts[i])})", row=line_of(i), column=column)
    if unit == "ns":
        raise DataError(label, f"timestamp {int(ts[0])} looks like nanoseconds; expected "
                               "seconds, milliseconds or microseconds since 1970",
                        row=line_of(0), column=column)
    out = ts * 1000 if unit == "s" else ts // 1000 if unit == "us" else ts
    check_ts_range(out, label, line_of, column, unit)
    return out


def check_ts_range(ts_ms: np.ndarray, label: str, line_of: LineOf, column: str = "open_time",
                   unit: str = "ms") -> None:
    """Times within 2000..2100 (a 'ms' column holding seconds lands in 1970)."""
    i = _first((ts_ms < TS_MIN_MS) | (ts_ms >= TS_MAX_MS))
    if i is not None:
        raise DataError(label, f"timestamp {int(ts_ms[i])} ms (read as {unit}) is outside "
                               "2000-01-01 .. 2100-01-01; expected epoch milliseconds UTC "
                               f"(a {ts_unit(int(ts_ms[i]))} value?)", row=line_of(i),
                        column=column)


def check_bars(bars: Bars, label: str, line_of: LineOf) -> None:
    """Everything the CSV import checks, on Bars read back from a dataset (Parquet): time in
    ms within 2000..2100, strictly increasing, on the interval grid; finite positive OHLC with
    high/low consistent; non-negative volumes; taker volume within volume."""
    check_ts_range(bars.ts, label, line_of, "ts")
    check_time(bars.ts, label, line_of, "ts")
    check_grid(bars.ts, bars.interval_ms, label, line_of, "ts")
    check_bar_columns(bars.columns, label, line_of)
    check_optional_columns(bars.columns, label, line_of)


#: Optional bar columns that are prices (positive, plausible; NaN = not known at that bar).
OPTIONAL_PRICES = ("mark_open", "mark_high", "mark_low", "mark_close", "index_close")
#: Optional columns that are amounts, counts or ratios (never below zero; NaN = not known).
NOT_NEGATIVE = ("open_interest", "open_interest_value", "liq_long_notional",
                "liq_short_notional", "long_short_ratio", "top_long_short_ratio",
                "oi_coin_margin_value", "oi_stablecoin", "agg_taker_buy_notional",
                "agg_taker_sell_notional")
#: Funding columns: a rate per interval (fraction); beyond this it is corrupt or in percent.
MAX_FUNDING_RATE = 0.1


def check_optional_columns(cols: Mapping[str, np.ndarray], label: str,
                           line_of: LineOf) -> None:
    """The optional bar columns of a dataset read back: never infinite; prices positive
    within PRICE_MIN .. PRICE_MAX, amounts and ratios not negative, funding rates within
    +-MAX_FUNDING_RATE. NaN stays allowed (a series not known yet at that bar)."""
    for name, v in cols.items():
        if name in ("ts", "trades", "filled") or v.dtype.kind != "f":
            continue
        i = _first(np.isinf(v))
        if i is not None:
            raise DataError(label, "value is infinite", row=line_of(i), column=name)
    for name in OPTIONAL_PRICES:
        if name in cols:
            v = cols[name]
            i = _first((v < PRICE_MIN) | (v > PRICE_MAX))
            if i is not None:
                raise DataError(label, f"price {float(v[i])!r} is outside the plausible "
                                       f"{PRICE_MIN:g} .. {PRICE_MAX:g} (quote per base)",
                                row=line_of(i), column=name)
    if "mark_high" in cols and "mark_low" in cols:
        i = _first(cols["mark_high"] < cols["mark_low"])        # (NaN compares False)
        if i is not None:
            raise DataError(label, f"mark_high {float(cols['mark_high'][i])!r} is below "
                                   f"mark_low {float(cols['mark_low'][i])!r}",
                            row=line_of(i), column="mark_high")
    for name in NOT_NEGATIVE:
        if name in cols:
            i = _first(cols[name] < 0)
            if i is not None:
                raise DataError(label, f"negative {name} {float(cols[name][i])!r}",
                                row=line_of(i), column=name)
    for name in ("funding_rate", "funding_rate_avg", "funding_rate_live"):
        if name in cols:
            i = _first(np.abs(cols[name]) > MAX_FUNDING_RATE)
            if i is not None:
                raise DataError(label, f"funding rate {float(cols[name][i]):g} is beyond "
                                       f"+-{MAX_FUNDING_RATE:g} per interval: rates are "
                                       "fractions (0.0001 = 0.01%)", row=line_of(i),
                                column=name)


def find_gaps(ts: np.ndarray, interval_ms: int) -> list[Gap]:
    """Runs of missing bars in a strictly increasing `ts`."""
    if len(ts) < 2:
        return []
    d = np.diff(ts)
    idx = np.flatnonzero(d != interval_ms)
    return [Gap(int(ts[i]) + interval_ms, int(ts[i + 1]), int(d[i] // interval_ms) - 1)
            for i in idx]


def check_grid(ts: np.ndarray, interval_ms: int, label: str, line_of: LineOf,
               column: str = "open_time") -> None:
    """Timestamps sit on the interval grid (a 1m file with a 00:00:30 row is corrupt).

    Intervals of a day or less align to the epoch; longer ones (weeks, months) only need
    whole-interval steps between rows.
    """
    if interval_ms <= 86_400_000:
        i = _first(ts % interval_ms != 0)
    else:
        i = _first(np.r_[False, np.diff(ts) % interval_ms != 0])
    if i is not None:
        raise DataError(label, f"timestamp {int(ts[i])} is not aligned to the {interval_ms} ms "
                               "interval", row=line_of(i), column=column)


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
