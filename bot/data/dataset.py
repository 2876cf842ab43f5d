"""A dataset on disk: Parquet files plus a small JSON manifest.

Layout of a dataset directory:
- `manifest.json`: exchange, symbol, timeframe, span, rows, columns, gaps, source files with
  sha256, and for synthetic data the generator and its parameters;
- `bars.parquet`: the bar columns (see `bot.data.bars` for units);
- optional `<table>.parquet` tables (trades, synthetic ground truth), each a flat set of
  equal-length columns.
The round trip is lossless: int64 and float64 columns are stored as such.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bot.data.bars import Bars
from bot.data.binance_vision import interval_name
from bot.data.validate import find_gaps
from bot.errors import DataError

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


def iso(ms: int) -> str:
    """int64 ms UTC -> '2025-10-10T21:15:00Z'."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class Dataset:
    """Bars of one symbol, extra tables, and the manifest metadata that travels with them."""

    bars: Bars
    exchange: str = "binance"
    sources: list[dict[str, Any]] = field(default_factory=list)
    tables: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def manifest(self) -> dict[str, Any]:
        b = self.bars
        gaps = find_gaps(b.ts, b.interval_ms)
        return {
            "format_version": FORMAT_VERSION,
            "exchange": self.exchange,
            "symbol": b.symbol,
            "timeframe": interval_name(b.interval_ms),
            "interval_ms": b.interval_ms,
            "span": {"start_ms": b.start_ms, "end_ms": b.end_ms,
                     "start": iso(b.start_ms) if len(b) else None,
                     "end": iso(b.end_ms) if len(b) else None},
            "rows": len(b),
            "columns": b.names,
            "gaps": [{"start": iso(g.start_ms), "end": iso(g.end_ms), "missing": g.missing}
                     for g in gaps],
            "filled_bars": int(b["filled"].sum()) if b.has("filled") else 0,
            "tables": {name: len(next(iter(cols.values()))) if cols else 0
                       for name, cols in self.tables.items()},
            "sources": self.sources,
            **self.meta,
        }


def save(ds: Dataset, out: Path) -> Path:
    """Write `ds` to directory `out` (created if needed); returns the manifest path."""
    out.mkdir(parents=True, exist_ok=True)
    _write_table(ds.bars.columns, out / "bars.parquet")
    for name, cols in ds.tables.items():
        _write_table(cols, out / f"{name}.parquet")
    path = out / MANIFEST
    path.write_text(json.dumps(ds.manifest(), indent=2) + "\n", encoding="utf-8")
    return path


def _write_table(cols: dict[str, np.ndarray], path: Path) -> None:
    table = pa.table({k: pa.array(v) for k, v in cols.items()})
    pq.write_table(table, path, compression="zstd")


def _read_table(path: Path) -> dict[str, np.ndarray]:
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise DataError(str(path), f"unreadable Parquet file ({exc})") from None
    return {name: table.column(name).to_numpy() for name in table.column_names}


def load(path: Path) -> Dataset:
    """Read a dataset directory written by `save`."""
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise DataError(str(path), f"not a dataset directory (no {MANIFEST}); build one with "
                                   "`liqbot data import` or `liqbot data synth`")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(str(mpath), f"unreadable manifest ({exc})") from None
    for key in ("symbol", "interval_ms", "exchange"):
        if key not in manifest:
            raise DataError(str(mpath), f"manifest lacks the key {key!r}")
    cols = _read_table(path / "bars.parquet")
    try:
        bars = Bars(manifest["symbol"], int(manifest["interval_ms"]), cols)
    except ValueError as exc:
        raise DataError(str(path / "bars.parquet"), str(exc)) from None
    tables = {name: _read_table(path / f"{name}.parquet") for name in manifest.get("tables", {})}
    known = {"format_version", "exchange", "symbol", "timeframe", "interval_ms", "span", "rows",
             "columns", "gaps", "filled_bars", "tables", "sources"}
    meta = {k: v for k, v in manifest.items() if k not in known}
    return Dataset(bars, manifest["exchange"], manifest.get("sources", []), tables, meta)
