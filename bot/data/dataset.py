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
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bot.data.arrow import column_to_numpy
from bot.data.bars import Bars
from bot.data.binance_vision import interval_name
from bot.data.validate import check_bars, find_gaps
from bot.errors import DataError
from bot.text import count

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
#: A table name becomes a file name in the dataset directory: plain names only (no path
#: separators, no `..`, never absolute), so a manifest cannot point outside its directory.
TABLE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,20}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def iso(ms: int) -> str:
    """int64 ms UTC -> '2025-10-10T21:15:00Z'."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def gap_note(bars: Bars) -> str | None:
    """What a run over bars with gaps (imported with --allow-gaps) should say: how many, how
    many bars are missing, the first (`find_gaps`); a run steps from the bar before a gap to
    the bar after it (nothing inside it is known: no fill and no liquidation check there)."""
    gaps = find_gaps(bars.ts, bars.interval_ms)
    if not gaps:
        return None
    missing = sum(g.missing for g in gaps)
    return (f"gaps: {len(gaps):,} in the data ({count(missing, 'bar')} missing, the first "
            f"at {iso(gaps[0].start_ms)}); the run steps over each: "
            "nothing inside a gap is known (no fill and no liquidation check there)")


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
    """Write `ds` to directory `out` (created if needed); returns the manifest path.

    The manifest records the sha256 of every Parquet file (`files`), checked by `load`.
    Over a dataset already in `out`, its manifest goes first (a half-written directory is
    no dataset) and its tables that `ds` does not write go last; other files stay.
    """
    for name in ds.tables:
        if not TABLE_NAME.fullmatch(name) or name == "bars":
            raise DataError(str(out), f"table name {name!r} is not a plain name")
    out.mkdir(parents=True, exist_ok=True)
    path = out / MANIFEST
    old = _owned_files(path)
    path.unlink(missing_ok=True)
    files = {"bars.parquet": _write_table(ds.bars.columns, out / "bars.parquet")}
    for name, cols in ds.tables.items():
        files[f"{name}.parquet"] = _write_table(cols, out / f"{name}.parquet")
    manifest = ds.manifest()
    manifest["files"] = files
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    for name in old - files.keys():
        (out / name).unlink(missing_ok=True)
    return path


def _owned_files(manifest_path: Path) -> set[str]:
    """The Parquet files a manifest names (`tables`, `files`; plain names only), else none."""
    try:
        m = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return set()
    tables, files = (m.get("tables"), m.get("files")) if isinstance(m, dict) else (None, None)
    names = [f"{t}.parquet" for t in tables if isinstance(t, str)] if isinstance(tables, dict) else []
    names += [f for f in files if isinstance(f, str)] if isinstance(files, dict) else []
    return {n for n in names if n.endswith(".parquet") and TABLE_NAME.fullmatch(n[:-8])}


def _write_table(cols: dict[str, np.ndarray], path: Path) -> str:
    """Write one Parquet table; returns its sha256."""
    import pyarrow as pa  # imported here: the daemon's start-up does not need it
    import pyarrow.parquet as pq

    table = pa.table({k: pa.array(v) for k, v in cols.items()})
    pq.write_table(table, path, compression="zstd")
    return sha256_of(path)


def _read_table(path: Path, sha256: str | None = None) -> dict[str, np.ndarray]:
    """Columns of one Parquet file, after checking its sha256 when the manifest has one."""
    if sha256 is not None:
        _check_sha(path, sha256)
    elif not path.is_file():
        raise DataError(str(path), "missing table file (named by the manifest)")
    import pyarrow as pa
    import pyarrow.parquet as pq

    # the decoder's buffers from the system allocator: freed, they go back to the OS (the
    # mimalloc / jemalloc pools keep ~10 MB of them even after `release_unused`)
    pool = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        # one column at a time through ParquetFile: `pq.read_table` holds the whole decoded
        # table beside its numpy copies and imports pyarrow.dataset (and with it pandas)
        with pq.ParquetFile(path) as pf:
            cols = {name: column_to_numpy(pf.read(columns=[name], use_threads=False).column(0))
                    for name in pf.schema_arrow.names}
    except (OSError, pa.ArrowException) as exc:
        raise DataError(str(path), f"unreadable Parquet file ({exc})") from None
    finally:
        pa.set_memory_pool(pool)
    pool.release_unused()                       # what the C++ side took from its own pool
    return share_repeats(cols)


def share_repeats(cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`cols` with every read-only column that is bit for bit equal to an earlier one (same
    dtype and length) replaced by that earlier array: kept once in memory. Mark prices
    taken from the trade prices (synthetic data, klines without a mark series) are the
    usual case: a year of 1m bars saves 4 MB a column. Writeable arrays are left alone."""
    out: dict[str, np.ndarray] = {}
    for name, a in cols.items():
        if (not a.flags.writeable and a.ndim == 1 and a.dtype.kind in "iuf"
                and a.dtype.itemsize == 8 and len(a)):
            bits = a.view(np.int64)
            for b in out.values():
                if (b.dtype == a.dtype and len(b) == len(a) and not b.flags.writeable
                        and b[0:1].view(np.int64)[0] == bits[0]
                        and b[-1:].view(np.int64)[0] == bits[-1]
                        and np.array_equal(b.view(np.int64), bits)):
                    a = b
                    break
        out[name] = a
    return out


def _manifest_problem(manifest: Any) -> str | None:
    """The first type problem of a parsed manifest, or None."""
    if not isinstance(manifest, dict):
        return f"expected a JSON object, got a {type(manifest).__name__}"
    want = {"symbol": str, "interval_ms": int, "exchange": str}
    for key, typ in want.items():
        if key not in manifest:
            return f"manifest lacks the key {key!r}"
        v = manifest[key]
        if isinstance(v, bool) or not isinstance(v, typ):
            return f"{key}: expected a {typ.__name__}, got a {type(v).__name__}"
    if not SYMBOL_RE.fullmatch(manifest["symbol"]):
        return "symbol: expected a symbol like BTCUSDT (2-20 upper-case letters and digits)"
    if not 0 < manifest["interval_ms"] <= 31 * 86_400_000:
        return f"interval_ms: expected 1 .. {31 * 86_400_000} ms, got {manifest['interval_ms']}"
    tables = manifest.get("tables", {})
    if not isinstance(tables, dict):
        return f"tables: expected an object of name -> rows, got a {type(tables).__name__}"
    for name, rows in tables.items():
        if not TABLE_NAME.fullmatch(name) or name == "bars":
            return (f"tables: {name[:80]!r} is not a plain table name (letters, digits, _; no "
                    "path separators, no '..', not absolute)")
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 0:
            return f"tables.{name}: expected a row count (integer >= 0)"
    files = manifest.get("files", {})
    if not isinstance(files, dict) or not all(
            isinstance(v, str) and SHA256_RE.fullmatch(v) for v in files.values()):
        return "files: expected an object of file name -> sha256 (64 hex digits)"
    for key, typ in (("sources", list), ("rows", int), ("meta", dict)):
        if key in manifest and not isinstance(manifest[key], typ):
            return f"{key}: expected a {typ.__name__}, got a {type(manifest[key]).__name__}"
    return None


def verify(path: Path) -> list[str]:
    """Names of the Parquet files whose sha256 is recorded and checked (`data info --verify`);
    raises DataError on the first mismatch or missing file."""
    manifest = _read_manifest(path)
    files = manifest.get("files", {})
    for name, sha in files.items():
        _check_sha(path / _file_name(name, path), sha)
    return sorted(files)


def _file_name(name: str, path: Path) -> str:
    stem = name[:-len(".parquet")] if name.endswith(".parquet") else ""
    if not (stem == "bars" or TABLE_NAME.fullmatch(stem)):
        raise DataError(str(path / MANIFEST), f"files: {name[:80]!r} is not a plain table file name")
    return name


def _check_sha(f: Path, sha: str) -> None:
    if not f.is_file():
        raise DataError(str(f), "missing table file (named by the manifest)")
    got = sha256_of(f)
    if got != sha:
        raise DataError(str(f), f"checksum mismatch: the manifest records sha256 {sha}, the "
                                f"file has {got} (modified or corrupt)")


def _read_manifest(path: Path) -> dict[str, Any]:
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise DataError(str(path), f"not a dataset directory (no {MANIFEST}); build one with "
                                   "`liqbot data import` or `liqbot data synth`")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise DataError(str(mpath), f"unreadable manifest ({type(exc).__name__})") from None
    problem = _manifest_problem(manifest)
    if problem:
        raise DataError(str(mpath), problem)
    return manifest


def symbol_of(path: Path) -> str:
    """The symbol of a dataset directory, from its manifest (no table is read)."""
    return str(_read_manifest(path)["symbol"])


def interval_of(path: Path) -> int:
    """The bar length (ms) of a dataset directory, from its manifest (no table is read)."""
    return int(_read_manifest(path)["interval_ms"])


def load(path: Path) -> Dataset:
    """Read a dataset directory written by `save`, checking what the CSV import checks.

    The manifest's fields are typed, table names are plain names inside `path`, every
    Parquet file's sha256 is verified when the manifest records it (datasets written before
    checksums existed load without), and the bars pass `validate.check_bars` (time order,
    grid, units, OHLC, finite values).
    """
    manifest = _read_manifest(path)
    files = manifest.get("files", {})
    cols = _read_table(path / "bars.parquet", files.get("bars.parquet"))
    label = str(path / "bars.parquet")
    for name, v in cols.items():
        if v.dtype.kind not in "biuf":
            raise DataError(label, f"expected numbers, got {v.dtype} values", column=name)
    try:
        bars = Bars(manifest["symbol"], manifest["interval_ms"], cols)
    except (ValueError, TypeError) as exc:
        raise DataError(label, str(exc)) from None
    check_bars(bars, label, lambda i: int(i) + 1)
    tables = {}
    for name, rows in manifest.get("tables", {}).items():
        t = _read_table(path / f"{name}.parquet", files.get(f"{name}.parquet"))
        lengths = {len(v) for v in t.values()}
        if len(lengths) > 1 or (lengths and lengths.pop() != rows):
            raise DataError(str(path / f"{name}.parquet"), f"expected {rows} rows in every "
                                                           "column (manifest tables)")
        tables[name] = t
    known = {"format_version", "exchange", "symbol", "timeframe", "interval_ms", "span", "rows",
             "columns", "gaps", "filled_bars", "tables", "sources", "files"}
    meta = {k: v for k, v in manifest.items() if k not in known}
    return Dataset(bars, manifest["exchange"], manifest.get("sources", []), tables, meta)
