"""Reading exchange CSV files (plain, .gz or single-member .zip) into typed numpy columns.

One streaming reader (`CsvStream`): the file is decompressed on the fly (`open_source`, with
the zip-bomb limits enforced on the bytes as they are read) and parsed by pyarrow's CSV
reader in blocks of `BLOCK_SIZE` bytes, one typed batch at a time, so a multi-GB trades day
never sits in memory as text or as a full Arrow table. `read_csv` collects all batches (the
small kinds); the tick loader appends each batch into `ColumnBuffers`. When pyarrow refuses
a block, a slow row-by-row pass from that block's first line finds the first bad row and
column so the `DataError` can name them. Row numbers are 1-based line numbers in the
(decompressed) CSV, header line included, so a user can jump to them in an editor.
"""

from __future__ import annotations

import csv
import gzip
import itertools
import re
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, NoReturn

import numpy as np

from bot.data.arrow import array_to_numpy
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


@dataclass(frozen=True)
class CsvBatch:
    """One parsed block of rows: its columns and the file line number of its first row."""

    first_line: int
    columns: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0


#: Limits on what one compressed file may expand to, checked BEFORE decompressing (zip:
#: the member's declared size and ratio) and enforced while streaming (gzip, and zip
#: members whose header lies). The largest real Vision file (a BTCUSDT trades day) expands
#: to about 1.5 GB at a ratio near 5; CSV of numbers rarely compresses beyond 20x.
MAX_UNCOMPRESSED = 4 << 30
MAX_RATIO = 100
RATIO_FLOOR = 16 << 20      # below 16 MiB any ratio is fine (small repetitive files)
_CHUNK = 1 << 20
#: CSV bytes parsed per batch (~10k trades rows). pyarrow's working memory grows with it
#: (measured: +33 MB at 512 KiB, +125 MB at 4 MiB); smaller blocks cost Python overhead.
BLOCK_SIZE = 512 << 10
_HEAD = 64 << 10            # bytes peeked for header detection and the row-count estimate


def _too_big(label: str, size: int, packed: int) -> DataError | None:
    if size > MAX_UNCOMPRESSED:
        return DataError(label, f"expands to {size:,} bytes, above the {MAX_UNCOMPRESSED:,}-byte "
                                "limit (zip bomb or wrong file?)")
    if size > RATIO_FLOOR and size > MAX_RATIO * max(packed, 1):
        return DataError(label, f"compression ratio {size / max(packed, 1):,.0f}:1 is above the "
                                f"{MAX_RATIO}:1 limit (zip bomb?); not decompressed")
    return None


def _cannot_read(label: str, exc: OSError) -> DataError:
    return DataError(label, f"cannot read file ({exc.strerror or type(exc).__name__})")


#: Turns an exception of the underlying (decompressing) file object into a DataError, or
#: None to let it propagate.
OnError = Callable[[Exception], DataError | None]


class Source:
    """The decompressed bytes of one file as a read-only binary stream (what pyarrow reads).

    Counts the bytes it hands out and, for compressed files, raises `DataError` past
    `MAX_UNCOMPRESSED` / `MAX_RATIO` (`packed` = compressed size); turns decompression
    errors into `DataError`s (`on_error`); `head` peeks at the start without consuming it.
    `size_hint` is the expected decompressed size (for preallocation only, never trusted).
    """

    def __init__(self, fh: IO[bytes], label: str, *, packed: int | None, size_hint: int,
                 on_error: OnError, closers: Sequence[IO[bytes] | zipfile.ZipFile] = ()) -> None:
        self.label = label
        self.size_hint = size_hint
        self._fh = fh
        self._packed = packed
        self._on_error = on_error
        self._closers = closers
        self._count = 0
        self._pushed = b""
        self.closed = False

    @property
    def compressed(self) -> bool:
        return self._packed is not None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def _raw(self, size: int) -> bytes:
        """Up to `size` bytes (all when negative) from the file, fewer only at its end."""
        parts: list[bytes] = []
        while size != 0:
            try:
                chunk = self._fh.read(_CHUNK if size < 0 else min(size, _CHUNK))
            except DataError:
                raise
            except Exception as exc:  # noqa: BLE001 (translated or re-raised below)
                err = self._on_error(exc)
                if err is None:
                    raise
                raise err from None
            if not chunk:
                break
            self._count += len(chunk)
            if self._packed is not None:
                err = _too_big(self.label, self._count, self._packed)
                if err is not None:
                    raise err
            parts.append(chunk)
            if size > 0:
                size -= len(chunk)
        return b"".join(parts)

    def read(self, size: int | None = -1) -> bytes:
        """Like a binary file's read: `size` bytes, fewer only at the end; all when -1."""
        size = -1 if size is None or size < 0 else size
        head = self._pushed
        if 0 <= size < len(head):
            self._pushed = head[size:]
            return head[:size]
        self._pushed = b""
        rest = self._raw(size if size < 0 else size - len(head))
        return head + rest if head else rest

    def head(self) -> bytes:
        """The file's start without consuming it: at least `_HEAD` bytes (all of a shorter
        file), more until it holds a non-blank line ending (up to 1 MiB of first line)."""
        buf = bytearray(self._pushed)
        while True:
            more = self._raw(_HEAD)
            buf += more
            if len(more) < _HEAD or (buf.strip() and (b"\n" in buf or len(buf) >= _CHUNK)):
                break
        self._pushed = bytes(buf)
        return self._pushed

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            for f in (self._fh, *self._closers):
                f.close()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def open_source(path: Path) -> Source:
    """The decompressed CSV of `path` as a stream (`Source`); its label names the file (and
    zip member). Compressed files are size-checked before (zip: the declared size and ratio)
    and while decompressing (`MAX_UNCOMPRESSED`, `MAX_RATIO`), so a small archive holding
    gigabytes is refused without inflating it. Close it (it is a context manager)."""
    label = str(path)
    name = path.name.lower()
    try:
        packed = path.stat().st_size
        if name.endswith(".zip"):
            return _open_zip(path, label, packed)
        if name.endswith(".gz"):
            def gz_error(exc: Exception) -> DataError | None:
                if isinstance(exc, FileNotFoundError | PermissionError):
                    return _cannot_read(label, exc)
                if isinstance(exc, OSError | EOFError | zlib.error):
                    return DataError(label, "not a readable gzip file (truncated or corrupt)")
                return None
            try:
                fh = gzip.open(path, "rb")  # noqa: SIM115 (closed by the Source)
            except OSError as exc:
                raise gz_error(exc) or exc from None
            return Source(fh, label, packed=packed, size_hint=_gzip_size(path, packed),
                          on_error=gz_error)

        def plain_error(exc: Exception) -> DataError | None:
            return _cannot_read(label, exc) if isinstance(exc, OSError) else None
        return Source(path.open("rb"), label, packed=None, size_hint=packed,
                      on_error=plain_error)
    except DataError:
        raise
    except OSError as exc:
        raise _cannot_read(label, exc) from None


def _gzip_size(path: Path, packed: int) -> int:
    """The size a gzip file declares in its trailer (mod 4 GiB; a hint only), capped by the
    ratio limit."""
    if packed < 18:
        return 0
    with path.open("rb") as fh:
        fh.seek(-4, 2)
        declared = int.from_bytes(fh.read(4), "little")
    return min(declared, MAX_RATIO * packed, MAX_UNCOMPRESSED)


def _open_zip(path: Path, label: str, packed: int) -> Source:
    def zip_error(exc: Exception) -> DataError | None:
        if isinstance(exc, zipfile.BadZipFile | EOFError | zipfile.LargeZipFile):
            return DataError(label, "not a readable zip archive (truncated or corrupt)")
        if isinstance(exc, FileNotFoundError | PermissionError):
            return _cannot_read(label, exc)
        if isinstance(exc, OSError | ValueError | NotImplementedError | zlib.error):
            return DataError(label, f"zip member unreadable ({type(exc).__name__})")
        return None

    zf: zipfile.ZipFile | None = None
    try:
        zf = zipfile.ZipFile(path)
        members = [m for m in zf.infolist() if not m.is_dir()]
        if len(members) != 1:
            raise DataError(label, f"expected one CSV inside the zip, found {len(members)}")
        info = members[0]
        member = f"{label}:{info.filename}"
        err = _too_big(member, info.file_size, info.compress_size)
        if err is not None:
            raise err
        fh = zf.open(info)
    except DataError:
        if zf is not None:
            zf.close()
        raise
    except Exception as exc:  # noqa: BLE001 (translated or re-raised below)
        if zf is not None:
            zf.close()
        err = zip_error(exc)
        if err is None:
            raise
        raise err from None
    return Source(fh, member, packed=info.compress_size,
                  size_hint=min(info.file_size, MAX_UNCOMPRESSED), on_error=zip_error,
                  closers=(zf,))


def read_bytes(path: Path) -> tuple[bytes, str]:
    """Decompressed CSV bytes and a label naming the file (and zip member), limits enforced
    (`open_source`). Whole file in memory: for small files only."""
    with open_source(path) as src:
        return src.read(), src.label


def read_head(path: Path) -> tuple[bytes, str]:
    """The first bytes of the decompressed CSV (at least its first line) and its label."""
    with open_source(path) as src:
        return src.head(), src.label


#: The UTF-8 byte order mark spreadsheet programs put before a CSV's first line.
BOM = b"\xef\xbb\xbf"


def _looks_like_header(first_line: bytes) -> bool:
    field = first_line.removeprefix(BOM).split(b",", 1)[0].strip()
    if not field:
        return False
    try:
        float(field)
        return False
    except ValueError:
        # a datetime-first file (metrics) starts with a digit even in data rows
        return not field[:1].isdigit()


class CsvStream:
    """`path` parsed according to `spec`, batch by batch (iterate it; close it or use it as a
    context manager). With or without a header row (both layouts exist): `has_header`,
    `first_line` (line of the first data row). Every column is type- and null-checked;
    only `keep` (default all) is converted to numpy. `rows_hint` estimates the row count
    from the first rows' length (for preallocation)."""

    def __init__(self, path: Path, spec: CsvSpec, *, keep: Sequence[str] | None = None,
                 block_size: int = BLOCK_SIZE) -> None:
        self.path = path
        self.spec = spec
        self.keep = frozenset(spec.names if keep is None else keep)
        self.block_size = block_size
        self._src = open_source(path)
        self.label = self._src.label
        try:
            head = self._src.head()
            if not head.strip():
                raise DataError(self.label, "file is empty (no data rows)")
            first = head.split(b"\n", 1)[0].rstrip(b"\r")
            self.has_header = _looks_like_header(first)
            if self.has_header:
                got = [h.strip().decode("utf-8", "replace") for h in first.split(b",")]
                if len(got) != len(spec.columns):
                    raise DataError(self.label, f"expected {len(spec.columns)} columns for "
                                                f"{spec.kind}, header has {len(got)}", row=1)
        except BaseException:
            self._src.close()
            raise
        self.first_line = 2 if self.has_header else 1
        self._reader: Any = None            # pyarrow's streaming reader while iterating
        size = max(self._src.size_hint, len(head))
        per_row = len(head) / max(head.count(b"\n"), 1)
        # rows are >= 12 bytes ("1,1,1,1,1,1" + newline): a blank-line head cannot inflate it
        self.rows_hint = min(int(size / per_row * 1.02), size // 12) + 1024

    def close(self) -> None:
        self._close_reader()
        self._src.close()

    def __enter__(self) -> CsvStream:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
        if isinstance(ev, DataError) and ev.row is not None and self._src.compressed:
            _verify(self.path)

    def __iter__(self) -> Iterator[CsvBatch]:
        import pyarrow as pa  # imported here: commands that read no CSV start lighter
        import pyarrow.csv as pacsv

        arrow_errors = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError)
        spec = self.spec
        opts = pacsv.ReadOptions(column_names=spec.names, skip_rows=1 if self.has_header else 0,
                                 block_size=self.block_size)
        conv = pacsv.ConvertOptions(
            column_types={n: getattr(pa, _ARROW_TYPES[t])() for n, t in spec.columns},
            strings_can_be_null=False,
        )
        line = self.first_line
        try:
            self._reader = pacsv.open_csv(self._src, read_options=opts, convert_options=conv)
        except arrow_errors:
            self._fail(line)
        try:
            while True:
                try:
                    batch = self._reader.read_next_batch()
                except StopIteration:
                    return
                except arrow_errors:
                    self._fail(line)
                yield CsvBatch(line, self._columns(batch, line))
                line += batch.num_rows
        finally:
            self._close_reader()

    def _close_reader(self) -> None:
        """Stop pyarrow's read-ahead before the source closes: a reader left running on a
        Python file object aborts the interpreter at exit."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _columns(self, batch: Any, line: int) -> dict[str, np.ndarray]:
        """One Arrow record batch as numpy columns (`keep` only), nulls refused."""
        cols: dict[str, np.ndarray] = {}
        for name, typ in self.spec.columns:
            col = batch.column(name)
            if col.null_count:
                nulls = array_to_numpy(col.is_null())
                raise DataError(self.label, "empty or NaN value",
                                row=line + int(np.flatnonzero(nulls)[0]), column=name)
            if name not in self.keep:
                continue
            arr = array_to_numpy(col)
            if typ == "datetime":
                try:
                    arr = np.asarray(arr, dtype="datetime64[ms]").astype(np.int64)
                except ValueError:
                    self._fail(line)
            cols[name] = arr
        return cols

    def _fail(self, line: int) -> NoReturn:
        """pyarrow refused the block starting at `line`: name the bad row, or say so."""
        _diagnose(self.path, self.label, self.spec, self.first_line, line)
        if line > self.first_line:     # the block's start was a guess: try the whole file
            _diagnose(self.path, self.label, self.spec, self.first_line, self.first_line)
        raise DataError(self.label, "unreadable CSV (could not locate the bad row)") from None


def read_csv(path: Path, spec: CsvSpec) -> CsvTable:
    """Parse `path` according to `spec` (all rows in memory: the small kinds)."""
    with CsvStream(path, spec) as stream:
        parts = [b for b in stream if len(b)]
    if not parts:
        raise DataError(stream.label, "no data rows")
    # a copy even of one part: writable arrays, Arrow buffers released
    cols = {name: np.concatenate([p.columns[name] for p in parts]) for name in spec.names}
    return CsvTable(stream.label, cols, stream.first_line, stream.has_header)


class ColumnBuffers:
    """Numpy columns appended batch by batch without holding two copies: preallocated from
    a row estimate (pages of `np.empty` never written cost no memory), grown in place by a
    quarter when short, trimmed in place at the end."""

    def __init__(self, dtypes: Mapping[str, type], rows_hint: int) -> None:
        self._bufs = {k: np.empty(max(rows_hint, 1), dtype=t) for k, t in dtypes.items()}
        self.rows = 0

    def append(self, cols: Mapping[str, np.ndarray]) -> None:
        n = len(next(iter(cols.values())))
        end = self.rows + n
        for name, buf in self._bufs.items():
            if end > len(buf):
                buf.resize(max(end, len(buf) + len(buf) // 4), refcheck=False)
            buf[self.rows:end] = cols[name]
        self.rows = end

    def finish(self) -> dict[str, np.ndarray]:
        """The columns, trimmed to the rows appended (the buffers are handed over)."""
        for buf in self._bufs.values():
            buf.resize(self.rows, refcheck=False)
        out, self._bufs = self._bufs, {}
        return out


def _verify(path: Path) -> None:
    """Decompress all of `path`, raising its own DataError (corrupt, truncated, too big).

    A bad row in a compressed file may be garbage from a corrupt stream, which the
    checksum at the end would reveal; the whole-file reader met that first, so the stream
    reader checks it before blaming a row."""
    with open_source(path) as src:
        while src.read(_CHUNK):
            pass


def _lines(src: Source) -> Iterator[bytes]:
    """The stream's lines (without their line ending)."""
    rest = b""
    while chunk := src.read(_CHUNK):
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        yield from lines
    if rest:
        yield rest


def _diagnose(path: Path, label: str, spec: CsvSpec, first_line: int, start: int) -> None:
    """Slow pass that raises a DataError naming the first bad row and column, checking rows
    from line `start` on (the lines before it are skipped unparsed: they parsed fine)."""
    with open_source(path) as src:
        lines = _lines(src)
        for _ in itertools.islice(lines, start - 1):
            pass
        texts = (ln.rstrip(b"\r").removeprefix(BOM).decode("utf-8", "replace") for ln in lines)
        for lineno, row in enumerate(csv.reader(texts), start=start):
            if lineno < first_line or not row:
                continue
            if len(row) != len(spec.columns):
                raise DataError(label, f"expected {len(spec.columns)} columns, got {len(row)}",
                                row=lineno)
            for (name, typ), value in zip(spec.columns, row, strict=True):
                _check_value(value.strip(), typ, label, lineno, name)


#: What pyarrow's CSV reader takes as an int64 / a float64 (Python's `int` and `float` take
#: more: '1_000', '+12', non-ASCII digits, integers past int64), so the slow pass names the
#: row pyarrow refused instead of finding nothing wrong.
_INT_TEXT = re.compile(r"-?[0-9]+")
_FLOAT_TEXT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|[+-]?(nan|inf|infinity)",
                         re.IGNORECASE)


def _check_value(value: str, typ: str, label: str, lineno: int, name: str) -> None:
    try:
        if typ == "i8":
            if not _INT_TEXT.fullmatch(value) or not -2**63 <= int(value) < 2**63:
                raise ValueError
        elif typ == "f8":
            if not _FLOAT_TEXT.fullmatch(value):
                raise ValueError
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
