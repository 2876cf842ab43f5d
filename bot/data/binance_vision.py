"""Loader for Binance Vision (data.binance.vision) USD-M futures files.

Kinds and their columns (the CSVs exist with and without a header row):
- klines, markPriceKlines, premiumIndexKlines, indexPriceKlines: open_time, open, high, low,
  close, volume, close_time, quote_volume, count, taker_buy_volume, taker_buy_quote_volume,
  ignore (mark/index/premium files carry zeros in the volume fields);
- fundingRate: calc_time, funding_interval_hours, last_funding_rate (rate per interval);
  a multi-symbol history with a leading `symbol` column (`symbol,calc_time,...`, one file
  for many symbols) is read too: the importer keeps the dataset's symbol's rows;
- metrics (5-minute snapshots): create_time ("YYYY-MM-DD HH:MM:SS" UTC), symbol,
  sum_open_interest (base), sum_open_interest_value (quote), count_toptrader_long_short_ratio,
  sum_toptrader_long_short_ratio, count_long_short_ratio, sum_taker_long_short_vol_ratio;
- liquidationSnapshot: time, side (SELL = a long was liquidated), order_type, time_in_force,
  original_quantity, price, average_price, order_status, last_fill_quantity,
  accumulated_fill_quantity;
- aggTrades: agg_trade_id, price, quantity, first_trade_id, last_trade_id, transact_time,
  is_buyer_maker;  trades: id, price, qty, quote_qty, time, is_buyer_maker.
`is_buyer_maker = true` means the taker SOLD.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bot.data.bars import Bars, Trades
from bot.data.csvfile import (
    BLOCK_SIZE,
    BOM,
    ColumnBuffers,
    CsvSpec,
    CsvStream,
    CsvTable,
    read_csv,
    read_head,
)
from bot.data.validate import (
    MAX_FUNDING_RATE,
    LineOf,
    check_bar_columns,
    check_grid,
    check_time,
    check_ts_range,
    to_ms,
    ts_unit,
)
from bot.errors import DataError, LiqbotError

_KLINE_COLS = (("open_time", "i8"), ("open", "f8"), ("high", "f8"), ("low", "f8"),
               ("close", "f8"), ("volume", "f8"), ("close_time", "i8"),
               ("quote_volume", "f8"), ("count", "i8"), ("taker_buy_volume", "f8"),
               ("taker_buy_quote_volume", "f8"), ("ignore", "f8"))
KLINE_KINDS = ("klines", "markPriceKlines", "premiumIndexKlines", "indexPriceKlines")
SPECS: dict[str, CsvSpec] = {
    **{k: CsvSpec(k, _KLINE_COLS) for k in KLINE_KINDS},
    "fundingRate": CsvSpec("fundingRate", (("calc_time", "i8"), ("funding_interval_hours", "i8"),
                                           ("last_funding_rate", "f8"))),
    "metrics": CsvSpec("metrics", (("create_time", "datetime"), ("symbol", "str"),
                                   ("sum_open_interest", "f8"), ("sum_open_interest_value", "f8"),
                                   ("count_toptrader_long_short_ratio", "f8"),
                                   ("sum_toptrader_long_short_ratio", "f8"),
                                   ("count_long_short_ratio", "f8"),
                                   ("sum_taker_long_short_vol_ratio", "f8"))),
    "liquidationSnapshot": CsvSpec("liquidationSnapshot", (
        ("time", "i8"), ("side", "str"), ("order_type", "str"), ("time_in_force", "str"),
        ("original_quantity", "f8"), ("price", "f8"), ("average_price", "f8"),
        ("order_status", "str"), ("last_fill_quantity", "f8"),
        ("accumulated_fill_quantity", "f8"))),
    "aggTrades": CsvSpec("aggTrades", (("agg_trade_id", "i8"), ("price", "f8"), ("quantity", "f8"),
                                       ("first_trade_id", "i8"), ("last_trade_id", "i8"),
                                       ("transact_time", "i8"), ("is_buyer_maker", "bool"))),
    "trades": CsvSpec("trades", (("id", "i8"), ("price", "f8"), ("qty", "f8"),
                                 ("quote_qty", "f8"), ("time", "i8"), ("is_buyer_maker", "bool"))),
}
#: a funding history of many symbols: `symbol` first, then the fundingRate columns
FUNDING_MULTI = CsvSpec("fundingRate", (("symbol", "str"), *SPECS["fundingRate"].columns))
_HEADER_KIND = {"calc_time": "fundingRate", "symbol": "fundingRate", "create_time": "metrics",
                "time": None,
                "agg_trade_id": "aggTrades", "id": "trades"}
_INTERVALS_MS = {"1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000,
                 "30m": 1_800_000, "1h": 3_600_000, "2h": 7_200_000, "4h": 14_400_000,
                 "6h": 21_600_000, "8h": 28_800_000, "12h": 43_200_000, "1d": 86_400_000}


def interval_ms(text: str, flag: str | None = None) -> int:
    """'1m' -> 60000, the Binance interval names; an unknown one is an error naming `flag`
    (the option that gave it) when given."""
    try:
        return _INTERVALS_MS[text]
    except KeyError:
        problem = f"unknown interval {text[:20]!r}; expected one of {', '.join(_INTERVALS_MS)}"
        if flag:
            raise LiqbotError(f"{flag}: {problem}") from None
        raise DataError("(argument)", problem) from None


def interval_name(ms: int) -> str:
    for name, value in _INTERVALS_MS.items():
        if value == ms:
            return name
    return f"{ms}ms"


#: kinds a Vision file name (or its download folder) spells out
NAMED_KINDS = ("markPriceKlines", "premiumIndexKlines", "indexPriceKlines", "fundingRate",
               "metrics", "liquidationSnapshot", "aggTrades")


def detect_kind(path: Path) -> str:
    """Kind from the file name, else Vision's folder (a price-kline kind's files are named
    like klines: `markPriceKlines/BTCUSDT-1m-2025-10-10.zip`; a folder counts only when it
    is named exactly the kind, so klines under `~/metrics_study/` stay klines), else the
    header row."""
    name = path.name
    for kind in NAMED_KINDS:
        if kind in name:
            return kind
    for part in reversed(path.parent.parts):
        if part in NAMED_KINDS:
            return part
    if re.search(r"-trades-", name):
        return "trades"
    if re.search(r"[-_]funding[-_]", name):
        return "fundingRate"
    if re.search(r"-\d+[mhdwM]-", name):
        return "klines"
    first = _first_field(path)
    kind = _HEADER_KIND.get(first)
    if kind is None:
        if first == "open_time":
            return "klines"
        raise DataError(str(path), "cannot tell which Binance Vision file kind this is; name it "
                                   "like Vision does (e.g. BTCUSDT-1m-2025-10-10.zip, "
                                   "BTCUSDT-fundingRate-2025-10.zip)")
    return kind


def symbol_of(path: Path) -> str:
    """'BTCUSDT-1m-2025-10-10.zip' -> 'BTCUSDT'; 'good.csv' -> 'GOOD.CSV'. Not validated
    here: `importer` checks it against `dataset.SYMBOL_RE` (or takes --symbol)."""
    return re.split(r"[-_]", path.name, maxsplit=1)[0].upper()


@dataclass(frozen=True)
class VisionFile:
    """One parsed file: its kind, symbol and the raw typed table."""

    path: Path
    kind: str
    symbol: str
    table: CsvTable
    time_unit: str = "ms"      # the unit its time columns were written in (converted to ms)


#: A check run on each batch of a trades / aggTrades file: (kind, columns, file label,
#: line_of). The columns hold the batch's rows with the previous batch's last row first
#: (so a check comparing neighbours sees the boundary); line_of maps an index to its line.
BatchCheck = Callable[[str, dict[str, np.ndarray], str, LineOf], None]
#: Tick kinds: (time, quantity, id) column names.
_TICK_COLUMNS = {"aggTrades": ("transact_time", "quantity", "agg_trade_id"),
                 "trades": ("time", "qty", "id")}


def load_file(path: Path, kind: str | None = None, *, batch_check: BatchCheck | None = None,
              block_size: int = BLOCK_SIZE) -> VisionFile:
    """Parse and validate one Vision file (any kind). trades / aggTrades files are streamed
    (`_read_ticks`; `batch_check` adds a check, `block_size` sets the batch size in bytes)
    and keep only the tick columns (time in ms, price, quantity, is_buyer_maker)."""
    kind = kind or detect_kind(path)
    if kind not in SPECS:
        raise DataError(str(path), f"unknown kind {kind!r}; expected one of {', '.join(SPECS)}")
    if kind in _TICK_COLUMNS:
        return VisionFile(path, kind, symbol_of(path),
                          _read_ticks(path, kind, batch_check, block_size))
    multi = kind == "fundingRate" and _first_field(path) == "symbol"
    table = read_csv(path, FUNDING_MULTI if multi else SPECS[kind])
    cols = table.columns
    label = table.label
    unit = _times_to_ms(kind, cols, label, table.line_of)
    if kind in KLINE_KINDS:
        ts = cols["open_time"]
        close_time = cols["close_time"]
        step = int(close_time[0] - ts[0] + 1)
        if step <= 0:
            raise DataError(label, f"close_time {int(close_time[0])} is not after open_time "
                                   f"{int(ts[0])}", row=table.line_of(0), column="close_time")
        check_time(ts, label, table.line_of)
        check_grid(ts, step, label, table.line_of)
        check_bar_columns({**_kline_fields(cols), "ts": ts, "close_time": close_time},
                          label, table.line_of, step,
                          positive_prices=kind != "premiumIndexKlines",
                          volumes=kind == "klines")
    elif kind == "fundingRate":
        if multi:                      # increasing per symbol (the file is sorted by symbol)
            for sym in np.unique(cols["symbol"]):
                rows = np.flatnonzero(cols["symbol"] == sym)
                check_time(cols["calc_time"][rows], label,
                           lambda i, rows=rows: table.line_of(int(rows[i])), "calc_time")
        else:
            check_time(cols["calc_time"], label, table.line_of, "calc_time")
        _check_finite(cols, ("last_funding_rate",), label, table.line_of)
        big = np.abs(cols["last_funding_rate"]) > MAX_FUNDING_RATE
        if big.any():
            i = int(np.flatnonzero(big)[0])
            raise DataError(label, f"funding rate {cols['last_funding_rate'][i]:g} per interval "
                                   f"is beyond +-{MAX_FUNDING_RATE:g}: rates are fractions "
                                   "(0.0001 = 0.01%), not percent", row=table.line_of(i),
                            column="last_funding_rate")
        rates = np.abs(cols["last_funding_rate"])
        if len(rates) >= 3 and float(np.median(rates)) >= PERCENT_MEDIAN:
            raise DataError(label, f"median |funding rate| {float(np.median(rates)):g} per "
                                   f"interval: rates are fractions (0.0001 = 0.01%), this "
                                   f"file looks written in percent (a median of "
                                   f"{PERCENT_MEDIAN:g} = {PERCENT_MEDIAN:.1%} per interval "
                                   "is beyond any sustained real market)",
                            column="last_funding_rate")
    elif kind == "metrics":
        check_time(cols["create_time"], label, table.line_of, "create_time")
        numbers = tuple(n for n, t in SPECS[kind].columns if t == "f8")
        _check_finite(cols, numbers, label, table.line_of)
        _check_not_negative(cols, numbers, label, table.line_of)
    elif kind == "liquidationSnapshot":
        bad = ~np.isin(cols["side"], ("BUY", "SELL"))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(label, f"side must be BUY or SELL, got {cols['side'][i]!r}",
                            row=table.line_of(i), column="side")
        numbers = tuple(n for n, t in SPECS[kind].columns if t == "f8")
        _check_finite(cols, numbers, label, table.line_of)
        _check_not_negative(cols, numbers, label, table.line_of)
        with np.errstate(over="ignore"):
            notional = cols["average_price"] * cols["accumulated_fill_quantity"]
        big = ~(notional <= MAX_LIQ_NOTIONAL)
        if big.any():
            i = int(np.flatnonzero(big)[0])
            raise DataError(label, f"average_price x accumulated_fill_quantity = "
                                   f"{float(notional[i]):g} is beyond {MAX_LIQ_NOTIONAL:g} "
                                   "(quote) for one liquidation order: corrupt or mis-scaled",
                            row=table.line_of(i), column="accumulated_fill_quantity")
    return VisionFile(path, kind, MULTI if multi else symbol_of(path), table, unit)


#: `VisionFile.symbol` of a file holding many symbols (`symbol` column): `for_symbol` picks
MULTI = "*"


def _first_field(path: Path) -> str:
    """The first header field of a CSV ('' when the first line is data)."""
    data, _ = read_head(path)
    return data.removeprefix(BOM).split(b",", 1)[0].strip().decode("utf-8", "replace")


def for_symbol(f: VisionFile, symbol: str) -> VisionFile:
    """`f` cut to `symbol`'s rows when it holds many symbols (`MULTI`), else `f`; a file
    without a row of `symbol` is an error naming the symbols it holds."""
    if f.symbol != MULTI:
        return f
    cols = f.table.columns
    rows = np.flatnonzero(cols["symbol"] == symbol)
    if not len(rows):
        held = np.unique(cols["symbol"])
        listed = ", ".join(str(x)[:20] for x in held[:8]) + (", ..." if len(held) > 8 else "")
        raise DataError(str(f.path), f"holds no rows of {symbol} ({len(held)} symbol(s): "
                                     f"{listed})", column="symbol")
    # validated at load (rows checked per symbol, naming the file's lines); the cut keeps
    # the line of its first row (a sorted export's rows of one symbol are contiguous)
    table = CsvTable(f.table.label, {k: v[rows] for k, v in cols.items()},
                     f.table.line_of(int(rows[0])), f.table.has_header)
    return VisionFile(f.path, f.kind, symbol, table, f.time_unit)


def _read_ticks(path: Path, kind: str, batch_check: BatchCheck | None,
                block_size: int) -> CsvTable:
    """A trades / aggTrades file, streamed: each batch is checked (`_check_ticks`, then
    `batch_check`) with the previous batch's last row prepended, so the order checks and
    the time-unit detection see across batch boundaries and name the right line; the
    tick columns are appended into buffers. Peak memory: the result plus one batch."""
    tcol, qcol, idcol = _TICK_COLUMNS[kind]
    keep = (tcol, "price", qcol, "is_buyer_maker")
    with CsvStream(path, SPECS[kind], keep=(*keep, idcol), block_size=block_size) as stream:
        label = stream.label
        out = ColumnBuffers({tcol: np.int64, "price": np.float64, qcol: np.float64,
                             "is_buyer_maker": np.bool_}, stream.rows_hint)
        prev: dict[str, np.ndarray] | None = None
        for batch in stream:
            if not len(batch):
                continue
            raw = batch.columns
            if prev is None:
                cols, line_of = dict(raw), _lines_from(batch.first_line)
            else:
                cols = {k: np.concatenate([prev[k], v]) for k, v in raw.items()}
                line_of = _lines_from(batch.first_line - 1)
            _times_to_ms(kind, cols, label, line_of)
            _check_ticks(kind, cols, label, line_of)
            if batch_check is not None:
                batch_check(kind, cols, label, line_of)
            skip = 0 if prev is None else 1
            out.append({k: cols[k][skip:] for k in keep})
            prev = {k: v[-1:].copy() for k, v in raw.items()}
    if prev is None:
        raise DataError(label, "no data rows")
    return CsvTable(label, out.finish(), stream.first_line, stream.has_header)


def _lines_from(first: int) -> LineOf:
    """line_of for rows whose index 0 is on line `first`."""
    return lambda i: first + int(i)


def _check_ticks(kind: str, cols: dict[str, np.ndarray], label: str, line_of: LineOf) -> None:
    """Trades / aggTrades rows: time never goes back, price and quantity finite and > 0."""
    tcol, qcol, _ = _TICK_COLUMNS[kind]
    d = np.diff(cols[tcol])
    if (d < 0).any():
        i = int(np.flatnonzero(d < 0)[0]) + 1
        raise DataError(label, "timestamp goes back in time", row=line_of(i), column=tcol)
    _check_finite(cols, ("price", qcol), label, line_of)
    for name in ("price", qcol):
        bad = cols[name] <= 0
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(label, f"{name} must be positive, got {float(cols[name][i])!r}",
                            row=line_of(i), column=name)


def _check_finite(cols: dict[str, np.ndarray], names: tuple[str, ...], label: str,
                  line_of: LineOf) -> None:
    for name in names:
        bad = ~np.isfinite(cols[name])
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(label, "value is NaN or infinite", row=line_of(i), column=name)


def _check_not_negative(cols: dict[str, np.ndarray], names: tuple[str, ...], label: str,
                        line_of: LineOf) -> None:
    """Quantities, prices, open interest and ratios are never below zero."""
    for name in names:
        bad = cols[name] < 0
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(label, f"negative {name} {float(cols[name][i])!r}",
                            row=line_of(i), column=name)


#: One liquidation order's quote notional above this (1e12: a trillion USDT, beyond any
#: market's whole open interest) is a corrupt or mis-scaled row, not a liquidation.
MAX_LIQ_NOTIONAL = 1e12

#: |funding rate| per interval above MAX_FUNDING_RATE (validate) is refused as a unit error
#: (Binance caps its rates at a few percent; a rate written in percent, 0.01 for 0.01%, is
#: 100x too big)
#: ... and a file whose MEDIAN |rate| reaches this (0.5% per interval, about 550% a year at
#: 8h) is refused too: in percent, a typical 0.01% is 0.01, under the limit above (the real
#: files in ../shared: median 0.0001, max 0.00375)
PERCENT_MEDIAN = 0.005

#: The epoch-time columns of each kind (converted to ms in place by `load_file`).
_TIME_COLUMNS = {**{k: ("open_time",) for k in KLINE_KINDS}, "fundingRate": ("calc_time",),
                 "liquidationSnapshot": ("time",), "aggTrades": ("transact_time",),
                 "trades": ("time",)}


def _times_to_ms(kind: str, cols: dict[str, np.ndarray], label: str, line_of) -> str:  # noqa: ANN001
    """Detect the unit (s / ms / us, named in errors) of the time columns; store int64 ms.
    Returns the unit the first time column was written in ("ms" when it has none).

    Binance moved some files to microseconds; a file in seconds would otherwise become a
    "60ms" dataset in 1970. close_time (open + interval - 1 unit) converts as an end bound.
    """
    names = _TIME_COLUMNS.get(kind, ())
    unit = ts_unit(int(cols[names[0]][0])) if names and len(cols[names[0]]) else "ms"
    for name in names:
        cols[name] = to_ms(cols[name], label, line_of, name)
    if kind in KLINE_KINDS:
        cols["close_time"] = to_ms(np.asarray(cols["close_time"], np.int64) + 1, label, line_of,
                                   "close_time") - 1
    if kind == "metrics":
        check_ts_range(cols["create_time"], label, line_of, "create_time")
    return unit


def _to_ms(ts: np.ndarray) -> np.ndarray:
    """Time columns are int64 ms once `load_file` has run (see `_times_to_ms`)."""
    return np.asarray(ts, dtype=np.int64)


def _kline_fields(cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"open": cols["open"], "high": cols["high"], "low": cols["low"],
            "close": cols["close"], "volume": cols["volume"],
            "quote_volume": cols["quote_volume"], "trades": cols["count"],
            "taker_buy_volume": cols["taker_buy_volume"],
            "taker_buy_quote_volume": cols["taker_buy_quote_volume"]}


def kline_bars(f: VisionFile) -> Bars:
    """A klines file as Bars (interval from close_time - open_time + 1)."""
    cols = f.table.columns
    ts = _to_ms(cols["open_time"])
    step = int(cols["close_time"][0] + 1 - ts[0])
    return Bars(f.symbol, step, {"ts": ts, **_kline_fields(cols)})


def price_kline_columns(f: VisionFile) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Mark / premium / index klines as (ts, {bar column: values})."""
    cols = f.table.columns
    ts = _to_ms(cols["open_time"])
    if f.kind == "markPriceKlines":
        return ts, {"mark_open": cols["open"], "mark_high": cols["high"],
                    "mark_low": cols["low"], "mark_close": cols["close"]}
    if f.kind == "premiumIndexKlines":
        return ts, {"premium_close": cols["close"]}
    return ts, {"index_close": cols["close"]}


def funding_events(f: VisionFile) -> tuple[np.ndarray, np.ndarray]:
    """(settlement time ms, rate per interval)."""
    return f.table.columns["calc_time"].astype(np.int64), f.table.columns["last_funding_rate"]


def metrics_series(f: VisionFile) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(snapshot time ms, {open_interest (base), open_interest_value (quote), ratios})."""
    c = f.table.columns
    return c["create_time"], {"open_interest": c["sum_open_interest"],
                              "open_interest_value": c["sum_open_interest_value"],
                              "top_long_short_ratio": c["sum_toptrader_long_short_ratio"],
                              "long_short_ratio": c["count_long_short_ratio"]}


def liquidation_events(f: VisionFile) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(time ms, liquidated side +1 long / -1 short, quote notional filled).

    A liquidation order that SELLs closes a long; one that BUYs closes a short.
    """
    c = f.table.columns
    side = np.where(c["side"] == "SELL", 1, -1).astype(np.int8)
    notional = c["average_price"] * c["accumulated_fill_quantity"]
    return c["time"].astype(np.int64), side, notional


def trades_of(f: VisionFile) -> Trades:
    """aggTrades or trades as ticks (taker side from is_buyer_maker)."""
    c = f.table.columns
    if f.kind == "aggTrades":
        ts, qty = c["transact_time"], c["quantity"]
    else:
        ts, qty = c["time"], c["qty"]
    side = np.where(c["is_buyer_maker"], np.int8(-1), np.int8(1))   # int8, no wide temporary
    return Trades(f.symbol, _to_ms(ts), c["price"], qty, side)
