"""Trade ticks for the tick replay: Binance Vision `trades` / `aggTrades` files, a dataset's
tick tables, and the aggregation of ticks into bars.

Units (as in `bot.data.bars`): `ts` int64 ms UTC, `price` quote per base, `qty` base,
`side` int8 (+1 the taker bought, -1 the taker sold; Vision's `is_buyer_maker = true` is a
taker SELL). Liquidation ticks (forced orders, e.g. the synthetic ground truth): `ts` int64
ms, `side` int8 (+1 a LONG was liquidated, i.e. a forced sell; -1 a short), `price` (quote
per base), `qty` (base); their notional is price x qty (quote).

Vision layouts (USD-M, with or without a header row, plain, .gz or .zip):
trades `id,price,qty,quote_qty,time,is_buyer_maker`; aggTrades `agg_trade_id,price,quantity,
first_trade_id,last_trade_id,transact_time,is_buyer_maker` (one row per taker order and
price level; an "event" of the replay is one row either way). Parsing and the per-file
checks (types, time order, positive finite price and qty, time unit) are
`bot.data.binance_vision.load_file`'s; this module adds the id order within a file, the
order across files and one symbol, and the same checks for a dataset's tables. Every
problem is a `DataError` naming the file, the 1-based row (line in the file, or row of the
table) and the column: exit 2.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numba import njit

from bot.data import binance_vision as bv
from bot.data.bars import Bars, Trades
from bot.data.csvfile import BLOCK_SIZE
from bot.data.dataset import SYMBOL_RE
from bot.data.validate import LineOf, check_ts_range
from bot.errors import DataError

TRADES_TABLE = "trades"
LIQ_TABLE = "liquidations"
TICK_KINDS = ("trades", "aggTrades")
_ID_COLUMN = {"trades": "id", "aggTrades": "agg_trade_id"}


@dataclass(frozen=True)
class Ticks:
    """Trade ticks of one symbol and (optionally empty) liquidation ticks, both in time
    order. `source` names where they came from (for messages)."""

    trades: Trades
    liq_ts: np.ndarray
    liq_side: np.ndarray
    liq_price: np.ndarray
    liq_qty: np.ndarray
    source: str = ""

    @property
    def symbol(self) -> str:
        return self.trades.symbol

    def __len__(self) -> int:
        return len(self.trades)

    def between(self, start_ms: int | None, end_ms: int | None) -> Ticks:
        """Ticks with ts in [start_ms, end_ms)."""
        t = self.trades
        lo = 0 if start_ms is None else int(np.searchsorted(t.ts, start_ms, "left"))
        hi = len(t) if end_ms is None else int(np.searchsorted(t.ts, end_ms, "left"))
        llo = 0 if start_ms is None else int(np.searchsorted(self.liq_ts, start_ms, "left"))
        lhi = len(self.liq_ts) if end_ms is None else int(np.searchsorted(self.liq_ts, end_ms,
                                                                          "left"))
        s, ls = slice(lo, hi), slice(llo, lhi)
        return Ticks(Trades(t.symbol, t.ts[s], t.price[s], t.qty[s], t.side[s]),
                     self.liq_ts[ls], self.liq_side[ls], self.liq_price[ls], self.liq_qty[ls],
                     self.source)


def no_liquidations() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Empty liquidation tick columns (ts, side, price, qty) for `Ticks`."""
    return (np.zeros(0, np.int64), np.zeros(0, np.int8), np.zeros(0), np.zeros(0))


def load_files(paths: Sequence[Path], *, block_size: int = BLOCK_SIZE) -> Ticks:
    """Binance Vision trades or aggTrades files (one symbol, one kind) as ticks, in time
    order. Files may come in any order; overlapping files are an error. Each file is
    streamed in batches of `block_size` CSV bytes (`bv.load_file`); peak memory is about
    the ticks (25 bytes a row) plus one batch, and one more file's ticks when joining."""
    if not paths:
        raise DataError("(arguments)", "no trades or aggTrades files given")
    parts = _load_each(paths, block_size)
    parts.sort(key=lambda p: int(p[1].ts[0]))
    _check_sequence(parts)
    source = ", ".join(p[0].name for p in parts)
    trades = [p[1] for p in parts]
    parts.clear()                   # `trades` holds the only references: _join frees them
    return Ticks(_join(trades), *no_liquidations(), source=source)


def _load_each(paths: Sequence[Path], block_size: int) -> list[tuple[Path, Trades]]:
    """Each file's ticks (one kind for all files)."""
    parts: list[tuple[Path, Trades]] = []
    kinds: set[str] = set()
    for path in paths:
        f = bv.load_file(path, batch_check=_check_ids, block_size=block_size)
        if not SYMBOL_RE.fullmatch(f.symbol):    # the ticks' symbol comes from the name
            raise DataError(str(path), f"no symbol in the file name (got {f.symbol[:40]!r}): "
                                       "name it as Binance does, e.g. "
                                       "BTCUSDT-trades-2025-10-10.zip, or import it with "
                                       "`liqbot data import FILE --symbol BTCUSDT`")
        if f.kind not in TICK_KINDS:
            raise DataError(str(path), f"is a {f.kind} file; the tick replay reads trades or "
                                       "aggTrades files")
        kinds.add(f.kind)
        parts.append((path, bv.trades_of(f)))
    if len(kinds) > 1:
        raise DataError(str(paths[0]), "mixes trades and aggTrades files; give one kind "
                                       "(aggTrades rows aggregate trades rows)")
    return parts


def _check_sequence(parts: list[tuple[Path, Trades]]) -> None:
    """Files in time order are one symbol and do not overlap."""
    symbol = parts[0][1].symbol
    for (pa, a), (pb, b) in zip(parts, parts[1:], strict=False):
        if b.symbol != symbol:
            raise DataError(str(pb), f"symbol {b.symbol} differs from {symbol} ({pa.name})")
        if int(b.ts[0]) < int(a.ts[-1]):
            raise DataError(str(pb), f"overlaps {pa.name} in time (starts at {int(b.ts[0])} "
                                     f"ms, before that file's last trade at {int(a.ts[-1])} ms)"
                                     "; give each span once")


def _join(parts: list[Trades]) -> Trades:
    """Files' ticks end to end. Each part is released once copied (the list is emptied), so
    the peak is the result plus about one part, not twice the ticks."""
    if len(parts) == 1:
        return parts.pop()
    n = sum(len(p) for p in parts)
    names = ("ts", "price", "qty", "side")
    out = {k: np.empty(n, getattr(parts[0], k).dtype) for k in names}
    i = 0
    symbol = parts[0].symbol
    while parts:
        p = parts.pop(0)
        for k in names:
            out[k][i:i + len(p)] = getattr(p, k)
        i += len(p)
    return Trades(symbol, *(out[k] for k in names))


def _check_ids(kind: str, cols: dict[str, np.ndarray], label: str, line_of: LineOf) -> None:
    """Trade ids strictly increase within a file (a duplicated or shuffled export); run on
    each batch of the file (`bv.BatchCheck`: the previous batch's last row comes first)."""
    name = _ID_COLUMN[kind]
    ids = cols[name]
    bad = np.flatnonzero(np.diff(ids) <= 0)
    if len(bad):
        i = int(bad[0]) + 1
        raise DataError(label, f"{name} {int(ids[i])} does not increase (previous "
                                f"{int(ids[i - 1])}): duplicated or unsorted rows",
                        row=line_of(i), column=name)


def from_tables(symbol: str, tables: dict[str, dict[str, np.ndarray]], label: str) -> Ticks:
    """A dataset's `trades` table (ts, price, qty, side) and optional `liquidations` table
    (ts, side, price, qty) as ticks, checked like the files. `label` names the dataset
    directory in errors (rows are 1-based table rows)."""
    if TRADES_TABLE not in tables:
        raise DataError(label, "the dataset has no trades table: import Binance Vision trades "
                               "or aggTrades files (`liqbot data import`) or synthesise one "
                               "with `liqbot data synth --ticks`")
    t = tables[TRADES_TABLE]
    where = f"{label}/{TRADES_TABLE}.parquet"
    cols = _columns(t, where, (("ts", np.int64), ("price", np.float64), ("qty", np.float64),
                               ("side", np.int8)))
    if len(cols["ts"]) == 0:
        raise DataError(where, "no trades")
    _check_ms(cols["ts"], where)
    _check_sorted(cols["ts"], where)
    for name in ("price", "qty"):
        _check_positive(cols[name], where, name)
    _check_sides(cols["side"], where)
    trades = Trades(symbol, cols["ts"], cols["price"], cols["qty"], cols["side"])
    if LIQ_TABLE not in tables:
        return Ticks(trades, *no_liquidations(), source=label)
    lwhere = f"{label}/{LIQ_TABLE}.parquet"
    lc = _columns(tables[LIQ_TABLE], lwhere, (("ts", np.int64), ("side", np.int8),
                                              ("price", np.float64), ("qty", np.float64)))
    _check_ms(lc["ts"], lwhere)
    _check_sorted(lc["ts"], lwhere)
    for name in ("price", "qty"):
        _check_positive(lc[name], lwhere, name)
    _check_sides(lc["side"], lwhere)
    return Ticks(trades, lc["ts"], lc["side"], lc["price"], lc["qty"], source=label)


def _columns(t: dict[str, np.ndarray], where: str,
             spec: tuple[tuple[str, type], ...]) -> dict[str, np.ndarray]:
    out = {}
    for name, dtype in spec:
        if name not in t:
            raise DataError(where, f"missing column {name!r}", column=name)
        a = np.asarray(t[name])
        want_int = np.dtype(dtype).kind == "i"
        ok = a.dtype.kind in ("i", "u") if want_int else a.dtype.kind == "f"
        if not ok:
            raise DataError(where, f"column {name} has dtype {a.dtype}, expected "
                                   f"{np.dtype(dtype)}", column=name)
        if want_int and len(a):                 # a narrowing cast must not wrap values
            info = np.iinfo(dtype)
            lo, hi = int(a.min()), int(a.max())
            if lo < info.min or hi > info.max:
                i = int(np.argmax(a < info.min)) if lo < info.min else int(np.argmax(a > info.max))
                raise DataError(where, f"column {name}: {int(a[i])} does not fit {np.dtype(dtype)}",
                                row=i + 1, column=name)
        out[name] = np.ascontiguousarray(a, dtype=dtype)
    return out


def _check_ms(ts: np.ndarray, where: str) -> None:
    """A table's times are int64 ms UTC (as the bars'): a table written in s or us would
    land its ticks in 1970 or after 2100, off every bar of the dataset."""
    check_ts_range(ts, where, lambda i: i + 1, "ts")


def _check_sorted(ts: np.ndarray, where: str) -> None:
    bad = np.flatnonzero(np.diff(ts) < 0)
    if len(bad):
        raise DataError(where, "timestamp goes back in time", row=int(bad[0]) + 2, column="ts")


def _check_positive(a: np.ndarray, where: str, name: str) -> None:
    bad = np.flatnonzero(~(np.isfinite(a) & (a > 0.0)))
    if len(bad):
        i = int(bad[0])
        raise DataError(where, f"{name} must be a positive finite number, got {float(a[i])!r}",
                        row=i + 1, column=name)


def _check_sides(side: np.ndarray, where: str) -> None:
    bad = np.flatnonzero((side != 1) & (side != -1))
    if len(bad):
        i = int(bad[0])
        raise DataError(where, f"side must be 1 or -1, got {int(side[i])}", row=i + 1,
                        column="side")


# --- aggregation ---------------------------------------------------------------------------

#: Columns of `aggregate`'s float output, in order (units as in `bot.data.bars`).
AGG_COLUMNS = ("open", "high", "low", "close", "volume", "quote_volume", "taker_buy_volume",
               "taker_buy_quote_volume")


@njit(cache=True)
def aggregate(ts: np.ndarray, price: np.ndarray, qty: np.ndarray, side: np.ndarray,
              interval_ms: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ticks (in time order) into bars of `interval_ms`, one pass; intervals without a tick
    are skipped, not invented. Returns (bar open ts, (n, 8) floats in `AGG_COLUMNS` order,
    tick start index of each bar plus the end: n + 1 entries). Sums run in tick order."""
    n = len(ts)
    nb = 0
    prev = np.int64(-1)
    for i in range(n):
        b = ts[i] // interval_ms
        if b != prev:
            nb += 1
            prev = b
    bar_ts = np.empty(nb, np.int64)
    x = np.zeros((nb, 8))
    starts = np.empty(nb + 1, np.int64)
    k = -1
    prev = np.int64(-1)
    for i in range(n):
        p = price[i]
        q = qty[i]
        b = ts[i] // interval_ms
        if b != prev:
            k += 1
            prev = b
            bar_ts[k] = b * interval_ms
            starts[k] = i
            x[k, 0] = p
            x[k, 1] = p
            x[k, 2] = p
        if p > x[k, 1]:
            x[k, 1] = p
        if p < x[k, 2]:
            x[k, 2] = p
        x[k, 3] = p
        x[k, 4] += q
        x[k, 5] += p * q
        if side[i] > 0:
            x[k, 6] += q
            x[k, 7] += p * q
    starts[nb] = n
    return bar_ts, x, starts


def bars_of(trades: Trades, interval_ms: int) -> tuple[Bars, np.ndarray]:
    """Bars aggregated from ticks (`aggregate`) and each bar's first tick index (+ end)."""
    if len(trades) == 0:
        raise DataError("(ticks)", "no trades to aggregate")
    bar_ts, x, starts = aggregate(trades.ts, trades.price, trades.qty, trades.side,
                                  int(interval_ms))
    cols: dict[str, np.ndarray] = {"ts": bar_ts}
    for j, name in enumerate(AGG_COLUMNS):
        cols[name] = np.ascontiguousarray(x[:, j])
    cols["trades"] = np.diff(starts)
    return Bars(trades.symbol, int(interval_ms), cols), starts
