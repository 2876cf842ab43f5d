"""Building one dataset from several exchange files (`liqbot data import`).

Klines files form the bar grid (several days are concatenated; rows repeated identically
across overlapping files are kept once, conflicting repeats are an error); without klines,
a vendor price file (`api_price_ohlc_history.csv`, 4h) or trades do. Every other kind
is attached to that grid: mark/premium/index klines by open time, metrics as-of their
publication time, funding and liquidation snapshots as events in the bar that contains them,
vendor bucket series as of their bucket END (see `bot.data.align`, `bot.data.vendor` and
docs/data.md for the no-lookahead rules). A file whose name does not tell its kind is
labelled by the user: `FILE:KIND` (`parse_file_arg`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from bot.data import binance_vision as bv
from bot.data import vendor
from bot.data.align import align_asof, place_events
from bot.data.bars import Bars, Trades
from bot.data.dataset import SYMBOL_RE, Dataset, iso, sha256_of
from bot.data.validate import fill_gaps, find_gaps
from bot.errors import DataError

#: Every kind a user may name with FILE:KIND (Binance Vision kinds, then vendor layouts).
ALL_KINDS: tuple[str, ...] = tuple(bv.SPECS) + vendor.VENDOR_KINDS
#: The symbol given to a vendor price file (its name carries none; the vendor export is
#: Binance BTCUSDT perpetual) unless the caller passes `symbol`.
DEFAULT_VENDOR_SYMBOL = "BTCUSDT"

FileArg = Path | tuple[Path, str | None]


def parse_file_arg(text: str) -> tuple[Path, str | None]:
    """'mydump.csv:open_interest' -> (Path('mydump.csv'), 'open_interest').

    Splits on the LAST colon only when what follows is a known kind, so Windows paths
    (C:\\data\\x.csv) and names with colons stay whole paths.
    """
    head, sep, tail = text.rpartition(":")
    if sep and head and tail in ALL_KINDS:
        return Path(head), tail
    return Path(text), None


UNIT_WORDS = {"s": "seconds", "us": "microseconds"}


def _unknown_kind(path: Path) -> DataError:
    return DataError(str(path), "cannot tell which kind of file this is from its name or header; "
                                "name it as Binance Vision or the vendor does (docs/data.md), or "
                                f"label it FILE:KIND with KIND one of: {', '.join(ALL_KINDS)}")


def _load_any(item: FileArg) -> bv.VisionFile | vendor.VendorFile:
    path, kind = item if isinstance(item, tuple) else (Path(item), None)
    head, sep, tail = str(path).rpartition(":")
    if kind is None and sep and head and not path.exists() and Path(head).is_file():
        # the file is named first (DataError's path); the kind is what follows its last ':'
        raise DataError(head, f"unknown kind {tail[:40]!r} after ':'; label a file FILE:KIND "
                              f"with KIND one of: {', '.join(ALL_KINDS)}")
    if kind in vendor.LAYOUTS:
        return vendor.load(path, kind)
    if kind is not None:
        if kind not in bv.SPECS:
            raise DataError(str(path), f"unknown kind {kind!r}; expected one of "
                                       f"{', '.join(ALL_KINDS)}")
        return bv.load_file(path, kind)
    hit = vendor.detect_kind(path)
    if hit is not None:
        return vendor.load(path, *hit)
    try:
        kind = bv.detect_kind(path)
    except DataError as exc:
        if exc.problem.startswith("cannot tell"):
            raise _unknown_kind(path) from None
        raise
    return bv.load_file(path, kind)


def _with_symbol(f: bv.VisionFile, given: str | None) -> bv.VisionFile:
    """`f` with its symbol checked: the one its name starts with (BTCUSDT-1m-...), else
    `given` (--symbol); a name naming another symbol than `given` is an error."""
    if f.symbol == bv.MULTI:
        return f                       # many symbols: the bar grid's rows are kept (later)
    named = f.symbol if SYMBOL_RE.fullmatch(f.symbol) else None
    if named and given and named != given:
        raise DataError(str(f.path), f"the file name says symbol {named}, --symbol says {given}; "
                                     "import one symbol at a time (drop --symbol or rename "
                                     "the file)")
    if named or given:
        return replace(f, symbol=named or given)
    shown = repr(f.symbol) if len(f.symbol) <= 40 else f"a {len(f.symbol)}-character name"
    raise DataError(str(f.path), "no symbol in the file name: expected a symbol like BTCUSDT "
                                 "(2-20 upper-case letters and digits) before the first '-', as "
                                 f"in BTCUSDT-1m-2025-10-10.zip, got {shown}; give it with "
                                 "--symbol (e.g. --symbol BTCUSDT) or rename the file")


def _check_symbol_column(f: bv.VisionFile) -> None:
    """A metrics file's own `symbol` column must name the file's symbol: a renamed ETH file
    would otherwise attach ETH's open interest to BTC's bars."""
    syms = f.table.columns["symbol"]
    bad = np.flatnonzero(syms != f.symbol)
    if len(bad):
        i = int(bad[0])
        raise DataError(str(f.path), f"symbol {str(syms[i])[:40]!r}, not the file's {f.symbol} "
                                     f"({len(bad)} row(s) of another symbol); import one "
                                     "symbol at a time", row=f.table.line_of(i), column="symbol")


#: Vision kinds whose rows are events that add up (liquidation orders, trades): a file
#: given twice, or two files covering the same time, would count them twice. aggTrades and
#: trades are the same trades (one aggregated), so they form one group.
_EVENT_GROUPS = {"liquidationSnapshot": ("liquidationSnapshot", "time",
                                         "liquidation orders"),
                 "aggTrades": ("trades", "transact_time", "trades"),
                 "trades": ("trades", "time", "trades")}


def _check_event_overlaps(files: list[bv.VisionFile]) -> None:
    """Refuse two files of summed events whose time spans overlap (naming both)."""
    groups: dict[str, list[tuple[int, int, bv.VisionFile]]] = {}
    for f in files:
        if f.kind in _EVENT_GROUPS:
            group, col, _ = _EVENT_GROUPS[f.kind]
            t = f.table.columns[col]
            if len(t):
                groups.setdefault(group, []).append((int(t.min()), int(t.max()), f))
    for spans in groups.values():
        spans.sort(key=lambda s: s[0])
        for (_, a_end, a), (b_start, _, b) in zip(spans, spans[1:], strict=False):
            if b_start <= a_end:
                what = _EVENT_GROUPS[b.kind][2]
                same = " (the same file twice?)" if a.path.resolve() == b.path.resolve() else ""
                raise DataError(str(b.path), f"overlaps {a.path.name}{same}: both hold "
                                             f"{what} from {iso(b_start)} to {iso(a_end)}, "
                                             "which would count twice; give each span once")


def _concat_bars(parts: list[tuple[Any, Bars]]) -> Bars:
    parts.sort(key=lambda p: p[1].start_ms)
    first_file, first = parts[0]
    for f, b in parts[1:]:
        if b.symbol != first.symbol:
            raise DataError(str(f.path), f"symbol {b.symbol} differs from {first.symbol} "
                                         f"({first_file.path.name}); import one symbol at a time")
        if b.interval_ms != first.interval_ms:
            raise DataError(str(f.path), f"interval {b.interval_ms} ms differs from "
                                         f"{first.interval_ms} ms ({first_file.path.name})")
    names = first.names
    cols = {n: np.concatenate([b[n] for _, b in parts]) for n in names}
    order = np.argsort(cols["ts"], kind="stable")
    cols = {n: v[order] for n, v in cols.items()}
    ts = cols["ts"]
    dup = np.flatnonzero(ts[1:] == ts[:-1])
    if len(dup):
        keep = np.ones(len(ts), dtype=bool)
        for i in dup:
            if any(cols[n][i] != cols[n][i + 1] for n in names):
                raise DataError(str(parts[0][0].path.parent),
                                f"two files disagree about the bar at {int(ts[i])}")
            keep[i + 1] = False
        cols = {n: v[keep] for n, v in cols.items()}
    return Bars(first.symbol, first.interval_ms, cols)


def build_dataset(
    paths: Sequence[FileArg], *, fill: bool = False, allow_gaps: bool = False,
    exchange: str = "binance", symbol: str | None = None,
) -> Dataset:
    """Parse, validate and merge Binance Vision and vendor files into one Dataset.

    Each item is a path (kind from its name/header) or (path, kind). Gaps in the bar grid
    are an error unless `fill` (insert flagged flat bars) or `allow_gaps` (keep them, they
    are listed in the manifest) is set. `symbol` (--symbol) names the Binance files whose
    names carry none (and must match those whose names do) and a vendor price grid
    (default `DEFAULT_VENDOR_SYMBOL`).
    """
    loaded = [_load_any(p) for p in paths]
    files = [_with_symbol(f, symbol) for f in loaded if isinstance(f, bv.VisionFile)]
    _check_event_overlaps(files)
    vfiles = [f for f in loaded if isinstance(f, vendor.VendorFile)]
    notes: list[str] = [f"{f.path.name}: timestamps in {UNIT_WORDS.get(f.time_unit, f.time_unit)}, "
                        "converted to milliseconds" for f in files if f.time_unit != "ms"]
    klines: list[tuple[Any, Bars]] = [(f, bv.kline_bars(f)) for f in files if f.kind == "klines"]
    prices = [f for f in vfiles if f.kind == "price_ohlc"]
    if not klines and prices:
        klines = [(f, vendor.price_bars(f, symbol or DEFAULT_VENDOR_SYMBOL)) for f in prices]
        notes.append("bar grid from the vendor price file(s); volume (base) = volume_usd / "
                     "mean(open, high, low, close)")
    elif prices:
        notes += [f"{f.path.name}: price file ignored (the klines are the bar grid)"
                  for f in prices]
    if not klines:
        trades = [f for f in files if f.kind in ("aggTrades", "trades")]
        if not trades:
            raise DataError(str(loaded[0].path), "no klines, vendor price file or trades among "
                                                 "the files; a dataset needs a bar grid (the "
                                                 "vendor series alone have no prices): give "
                                                 "klines or the vendor's "
                                                 "api_price_ohlc_history.csv")
        ticks = _concat_trades([bv.trades_of(f) for f in trades])
        klines = [(trades[0], ticks.to_bars())]
    bars = _concat_bars(klines)
    gaps = find_gaps(bars.ts, bars.interval_ms)
    if gaps and not (fill or allow_gaps):
        g = gaps[0]
        raise DataError(str(klines[0][0].path if len(klines) == 1 else
                            klines[0][0].path.parent),
                        f"{len(gaps)} gap(s) in the bars, first: {g.missing} missing bar(s) from "
                        f"{iso(g.start_ms)}; pass --fill-gaps to fill them (flagged) or "
                        "--allow-gaps to keep them")
    if fill:
        bars = fill_gaps(bars)
    extra: dict[str, np.ndarray] = {}
    tables: dict[str, dict[str, np.ndarray]] = {}
    step = bars.interval_ms
    for f in files:
        f = bv.for_symbol(f, bars.symbol)
        if f.symbol != bars.symbol and f.kind != "klines":
            raise DataError(str(f.path), f"symbol {f.symbol} differs from the klines' "
                                         f"{bars.symbol}")
        if f.kind in ("markPriceKlines", "premiumIndexKlines", "indexPriceKlines"):
            ts, cols = bv.price_kline_columns(f)
            idx = np.searchsorted(ts, bars.ts)
            hit = (idx < len(ts)) & (ts[np.clip(idx, 0, len(ts) - 1)] == bars.ts)
            for name, v in cols.items():
                out = extra.get(name, np.full(len(bars), np.nan))
                out[hit] = v[idx[hit]]
                extra[name] = out
        elif f.kind == "fundingRate":
            ts, rate = bv.funding_events(f)
            placed = place_events(bars.ts, step, ts, rate)
            extra["funding_rate"] = _merge(extra.get("funding_rate"), placed)
        elif f.kind == "metrics":
            _check_symbol_column(f)
            ts, cols = bv.metrics_series(f)
            for name, v in cols.items():
                extra[name] = _merge(extra.get(name), align_asof(bars.ts, step, ts, v))
        elif f.kind == "liquidationSnapshot":
            ts, side, notional = bv.liquidation_events(f)
            for name, mask in (("liq_long_notional", side > 0), ("liq_short_notional", side < 0)):
                placed = np.nan_to_num(place_events(bars.ts, step, ts[mask], notional[mask]))
                extra[name] = extra.get(name, np.zeros(len(bars))) + placed
        elif f.kind in ("aggTrades", "trades"):
            t = bv.trades_of(f)
            prev = tables.get("trades")
            cols = {"ts": t.ts, "price": t.price, "qty": t.qty, "side": t.side}
            tables["trades"] = cols if prev is None else {
                k: np.concatenate([prev[k], cols[k]]) for k in cols}
    if "trades" in tables:
        order = np.argsort(tables["trades"]["ts"], kind="stable")
        tables["trades"] = {k: v[order] for k, v in tables["trades"].items()}
    sources = [{"file": f.path.name, "kind": f.kind, "rows": len(f.table),
                "sha256": sha256_of(f.path)} for f in files]
    sources += _attach_vendor(vfiles, files, bars, extra, notes)
    meta = {"import_notes": notes} if notes else {}
    return Dataset(bars.with_columns(**extra), exchange, sources, tables, meta)


def _attach_vendor(vfiles: list[vendor.VendorFile], files: list[bv.VisionFile], bars: Bars,
                   extra: dict[str, np.ndarray], notes: list[str]) -> list[dict[str, Any]]:
    """Vendor series onto `bars` (into `extra`); returns their manifest source entries."""
    kinds = {f.kind for f in files}
    clashes = (("open_interest", "metrics", "Binance-only open interest"),
               ("liquidations", "liquidationSnapshot", "Binance liquidation orders"))
    for vk, bk, what in clashes:
        both = [f for f in vfiles if f.kind == vk]
        if both and bk in kinds:
            raise DataError(str(both[0].path), f"both this all-exchange series and {bk} files "
                                               f"({what}) were given; they measure different "
                                               "things, import one of them")
    from_price = not any(f.kind == "klines" for f in files)
    for f in vfiles:
        if f.coin is not None and not bars.symbol.upper().startswith(f.coin):
            why = (f"api_price_ohlc_history.csv has no coin in its name and is taken as "
                   f"{DEFAULT_VENDOR_SYMBOL} unless --symbol says otherwise: give this coin's "
                   "price file with --symbol, or its klines" if from_price else
                   f"the grid comes from {bars.symbol} klines: give this coin's klines, or "
                   f"the {bars.symbol[:-4] if bars.symbol.endswith('USDT') else bars.symbol} "
                   "series")
            raise DataError(str(f.path), f"{f.coin} series does not match the bar grid's symbol "
                                         f"{bars.symbol}; {why}")
    # every series left is the grid's coin (a FILE:KIND file names none): one group per
    # kind, so a labelled copy of a named file overlaps it (its event sums were added twice)
    by_kind: dict[str, list[vendor.VendorFile]] = {}
    for f in vfiles:
        by_kind.setdefault(f.kind, []).append(f)
    for group in by_kind.values():
        group.sort(key=lambda g: int(g.open_ms[0]))
        for a, b in zip(group, group[1:], strict=False):
            if int(b.open_ms[0]) < int(a.open_ms[-1]) + a.bucket_ms:
                raise DataError(str(b.path), f"overlaps {a.path.name} (same kind {b.kind}); "
                                             "give each span once")
    sources: list[dict[str, Any]] = []
    for f in vfiles:
        cols: dict[str, np.ndarray] = {}
        if f.kind == "orderbook_depth":
            notes.append(f"{f.path.name}: order-book depth read and ignored (no bar column)")
        elif f.kind != "price_ohlc":
            cols = vendor.attach(f, bars)
        for name, v in cols.items():
            if f.layout.role == "event":
                prev = extra.get(name)
                extra[name] = v if prev is None else np.where(
                    np.isnan(prev), v, np.where(np.isnan(v), prev, prev + v))
            else:
                extra[name] = _merge(extra.get(name), v)
        sources.append({"file": f.path.name, "kind": f.kind, "rows": len(f.table),
                        "sha256": sha256_of(f.path), "bucket_ms": f.bucket_ms,
                        "columns": sorted(cols), "timing": f.layout.role})
    if any(f.kind == "open_interest" for f in vfiles):
        notes.append("open_interest (base) = aggregated OI USD / price at the bucket end")
    return sources


def _merge(current: np.ndarray | None, new: np.ndarray) -> np.ndarray:
    """Combine the same series from several files (later non-NaN values win)."""
    if current is None:
        return new
    return np.where(np.isfinite(new), new, current)


def _concat_trades(parts: list[Trades]) -> Trades:
    ts = np.concatenate([t.ts for t in parts])
    order = np.argsort(ts, kind="stable")
    return Trades(parts[0].symbol, ts[order],
                  np.concatenate([t.price for t in parts])[order],
                  np.concatenate([t.qty for t in parts])[order],
                  np.concatenate([t.side for t in parts])[order])
