"""Building one dataset from several exchange files (`liqbot data import`).

Klines files form the bar grid (several days are concatenated; rows repeated identically
across overlapping files are kept once, conflicting repeats are an error). Every other kind
is attached to that grid: mark/premium/index klines by open time, metrics as-of their
publication time, funding and liquidation snapshots as events in the bar that contains them
(see `bot.data.align` for the no-lookahead rules).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bot.data import binance_vision as bv
from bot.data.align import align_asof, place_events
from bot.data.bars import Bars, Trades
from bot.data.dataset import Dataset, iso, sha256_of
from bot.data.validate import fill_gaps, find_gaps
from bot.errors import DataError


def _concat_bars(parts: list[tuple[bv.VisionFile, Bars]]) -> Bars:
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
    paths: Sequence[Path], *, fill: bool = False, allow_gaps: bool = False,
    exchange: str = "binance",
) -> Dataset:
    """Parse, validate and merge Binance Vision files into one Dataset.

    Gaps in the kline grid are an error unless `fill` (insert flagged flat bars) or
    `allow_gaps` (keep them, they are listed in the manifest) is set.
    """
    files = [bv.load_file(p) for p in paths]
    klines = [(f, bv.kline_bars(f)) for f in files if f.kind == "klines"]
    if not klines:
        trades = [f for f in files if f.kind in ("aggTrades", "trades")]
        if not trades:
            raise DataError(str(paths[0]), "no klines (or trades) among the files; a dataset "
                                           "needs a bar grid")
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
    return Dataset(bars.with_columns(**extra), exchange, sources, tables)


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
