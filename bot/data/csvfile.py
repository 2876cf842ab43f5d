"""Reading exchange CSV files (plain, .gz or single-member .zip) into typed numpy columns.

Fast path: pyarrow's CSV reader with explicit column types. When it refuses a file, a slow
row-by-row pass finds the first bad row and column so the `DataError` can name them.
Row numbers are 1-based line numbers in the (decompressed) CSV, header line included, so a
user can jump to them in an editor.
"""

from __future__ import annotations

import csv
import gzip
import io
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bot.errors import DataError

#: Column types: "i8" int64, "f8" float64, "bool", "str", "datetime" ("YYYY-MM-DD HH:MM:SS" UTC).
_ARROW_TYPES = {"i8": "int64", "f8": "float64", "bool": "bool_", "str": "string",
                "datetime": "string"}      # pyarrow type factories, resolved at read time


@dataclass(frozen=True)
class CsvSpec:
    """Layout of one file kind: ordered (name, type) columns; header names are the same names."""

    kind: str
    columns: tuple[tuple[str, str], ...]

    @property
    def names(self) -> list[str]:
        return [c for c, _ in self.columns]


@dataclass(frozen=True)
class CsvTable:
    """Parsed columns plus where data rows start (line number of the first data row)."""

    label: str
    columns: dict[str, np.ndarray]
    first_line: int
    has_header: bool

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def line_of(self, index: int) -> int:
        """File line number of data row `index` (0-based)."""
        return self.first_line + int(index)


#: Limits on what one compressed file may expand to, checked BEFORE decompressing (zip:
#: the member's declared size and ratio) and enforced while streaming (gzip, and zip
#: members whose header lies). The largest real Vision file (a BTCUSDT trades day) expands
#: to about 1.5 GB at a ratio near 5; CSV of numbers rarely compresses beyond 20x.
MAX_UNCOMPRESSED = 4 << 30
MAX_RATIO = 100
RATIO_FLOOR = 16 << 20      # below 16 MiB any ratio is fine (small repetitive files)
_CHUNK = 1 << 20


def _too_big(label: str, size: int, packed: int) -> DataError | None:
    if size > MAX_UNCOMPRESSED:
        return DataError(label, f"expands to {size:,} bytes, above the {MAX_UNCOMPRESSED:,}-byte "
                                "limit (zip bomb or wrong file?)")
    if size > RATIO_FLOOR and size > MAX_RATIO * max(packed, 1):
        return DataError(label, f"compression ratio {size / max(packed, 1):,.0f}:1 is above the "
                                f"{MAX_RATIO}:1 limit (zip bomb?); not decompressed")
    return None


def _stream(fh, label: str, packed: int) -> bytes:  # noqa: ANN001 (binary file object)
    """Read a decompressing stream in chunks, stopping at the limits."""
    out = bytearray()
    while chunk := fh.read(_CHUNK):
        out += chunk
        err = _too_big(label, len(out), packed)
        if err is not None:
            raise err
    return bytes(out)


def read_bytes(path: Path) -> tuple[bytes, str]:
    """Decompressed CSV bytes and a label naming the file (and zip member).

    Compressed files are size-checked before and while decompressing (`MAX_UNCOMPRESSED`,
    `MAX_RATIO`), so a small archive holding gigabytes is refused without inflating it.
    """
    label = str(path)
    name = path.name.lower()
    try:
        packed = path.stat().st_size
        if name.endswith(".zip"):
            return _read_zip(path, label, packed)
        if name.endswith(".gz"):
            try:
                with gzip.open(path, "rb") as fh:
                    return _stream(fh, label, packed), label
            except (OSError, EOFError, zlib.error) as exc:
                if isinstance(exc, FileNotFoundError | PermissionError):
                    raise
                raise DataError(label, "not a readable gzip file (truncated or corrupt)") from None
        return path.read_bytes(), label
    except DataError:
        raise
    except OSError as exc:
        raise DataError(label, f"cannot read file ({exc.strerror or type(exc).__name__})") from None


def _read_zip(path: Path, label: str, packed: int) -> tuple[bytes, str]:
    try:
        with zipfile.ZipFile(path) as zf:
            members = [m for m in zf.infolist() if not m.is_dir()]
            if len(members) != 1:
                raise DataError(label, f"expected one CSV inside the zip, found {len(members)}")
            info = members[0]
            err = _too_big(f"{label}:{info.filename}", info.file_size, info.compress_size)
            if err is not None:
                raise err
            with zf.open(info) as fh:
                return _stream(fh, f"{label}:{info.filename}", info.compress_size), \
                    f"{label}:{info.filename}"
    except DataError:
        raise
    except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile):
        raise DataError(label, "not a readable zip archive (truncated or corrupt)") from None
    except (OSError, ValueError, NotImplementedError, zlib.error) as exc:
        if isinstance(exc, FileNotFoundError | PermissionError):
            raise
        raise DataError(label, f"zip member unreadable ({type(exc).__name__})") from None


def _looks_like_header(first_line: bytes) -> bool:
    field = first_line.split(b",", 1)[0].strip()
    if not field:
        return False
    try:
        float(field)
        return False
    except ValueError:
        # a datetime-first file (metrics) starts with a digit even in data rows
        return not field[:1].isdigit()


def read_csv(path: Path, spec: CsvSpec) -> CsvTable:
    """Parse `path` according to `spec`; with or without a header row (both layouts exist)."""
    data, label = read_bytes(path)
    if not data.strip():
        raise DataError(label, "file is empty (no data rows)")
    first = data.split(b"\n", 1)[0].rstrip(b"\r")
    has_header = _looks_like_header(first)
    if has_header:
        got = [h.strip().decode("utf-8", "replace") for h in first.split(b",")]
        if len(got) != len(spec.columns):
            raise DataError(label, f"expected {len(spec.columns)} columns for {spec.kind}, "
                                   f"header has {len(got)}", row=1)
    import pyarrow as pa  # imported here: commands that read no CSV start lighter
    import pyarrow.csv as pacsv

    opts = pacsv.ReadOptions(column_names=spec.names, skip_rows=1 if has_header else 0)
    conv = pacsv.ConvertOptions(
        column_types={n: getattr(pa, _ARROW_TYPES[t])() for n, t in spec.columns},
        strings_can_be_null=False,
    )
    first_line = 2 if has_header else 1
    try:
        table = pacsv.read_csv(io.BytesIO(data), read_options=opts, convert_options=conv)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        _diagnose(data, label, spec, first_line)
        raise DataError(label, "unreadable CSV (could not locate the bad row)") from None
    if table.num_rows == 0:
        raise DataError(label, "no data rows")
    cols: dict[str, np.ndarray] = {}
    for name, typ in spec.columns:
        col = table.column(name)
        if col.null_count:
            idx = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
            raise DataError(label, "empty or NaN value", row=first_line + idx, column=name)
        arr = col.to_numpy()
        if typ == "datetime":
            try:
                arr = np.asarray(arr, dtype="datetime64[ms]").astype(np.int64)
            except ValueError:
                _diagnose(data, label, spec, first_line)
                raise
        cols[name] = arr
    return CsvTable(label, cols, first_line, has_header)


def _diagnose(data: bytes, label: str, spec: CsvSpec, first_line: int) -> None:
    """Slow pass that raises a DataError naming the first bad row and column."""
    text = data.decode("utf-8", "replace")
    reader = csv.reader(io.StringIO(text))
    for lineno, row in enumerate(reader, start=1):
        if lineno < first_line or not row:
            continue
        if len(row) != len(spec.columns):
            raise DataError(label, f"expected {len(spec.columns)} columns, got {len(row)}",
                            row=lineno)
        for (name, typ), value in zip(spec.columns, row, strict=True):
            _check_value(value.strip(), typ, label, lineno, name)


def _check_value(value: str, typ: str, label: str, lineno: int, name: str) -> None:
    try:
        if typ == "i8":
            int(value)
        elif typ == "f8":
            float(value)
        elif typ == "bool":
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError
        elif typ == "datetime":
            np.datetime64(value, "ms")
        return
    except ValueError:
        expected = {"i8": "an integer", "f8": "a number", "bool": "true or false",
                    "datetime": "a time like 2025-10-10 00:05:00"}[typ]
        raise DataError(label, f"expected {expected}, got {value!r}", row=lineno,
                        column=name) from None
