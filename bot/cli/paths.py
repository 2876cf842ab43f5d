"""Output paths and result values, checked before any work starts.

Every command that writes a file or a directory calls `check_output` / `check_output_dir`
first, so a typo in `--out`, `--json` or `--png` is an exit-2 message naming the option in a
second, not a traceback after a ten-minute backtest. Both try a real write (root passes
`os.access` even where nothing can be created, e.g. /proc), and `writing` turns a failure of
the final write into the same message. `-` means stdout wherever a FILE is written.
`finite_json` and `cell` turn NaN and infinity into null / '-': no command prints or writes a
non-finite number as a result. `console` and `shown` print user text (paths, names) verbatim:
no rich markup, no `:emoji:` codes; to a file or a pipe, `console` never wraps a message
line (tables fit PIPE_WIDTH).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from bot.errors import LiqbotError

STDOUT = "-"
#: A name that becomes a path component (symbol, table, kind): no separators, no dots.
PLAIN_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")
SYMBOL = re.compile(r"^[A-Z0-9]{2,20}$")


def is_stdout(path: Path | str | None) -> bool:
    return path is not None and str(path) == STDOUT


def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_output(path: Path | None, option: str, *, stdout_ok: bool = True) -> Path | None:
    """Validate an output FILE; returns None for stdout (`-`) or when no path was given.

    The parent directory must exist and be writable; the path must not be a directory;
    an existing file must be writable (it is replaced).
    """
    if path is None:
        return None
    if is_stdout(path):
        if not stdout_ok:
            raise LiqbotError(f"{option}: '-' (stdout) is not supported here; give a file path")
        return None
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise LiqbotError(f"{option}: {path} is a directory, expected a file path")
    if not parent.is_dir():
        what = "is a file, not a directory" if parent.exists() else "does not exist; create it first"
        raise LiqbotError(f"{option}: {parent} {what}")
    if path.exists() and not path.is_file():
        raise LiqbotError(f"{option}: {path} exists and is not a regular file")
    if (path.exists() and not os.access(path, os.W_OK)) or not os.access(parent, os.W_OK):
        raise LiqbotError(f"{option}: {path} is not writable (permission denied)")
    with writing(path, option):      # a real write: an existing file is opened, not changed
        if path.exists():
            path.open("ab").close()
        else:
            path.open("xb").close()
            path.unlink()
    return path


def check_output_dir(path: Path, option: str) -> Path:
    """Validate an output DIRECTORY (created later, with missing parents).

    It must not be stdout or an existing file, and the nearest existing ancestor must be a
    writable directory.
    """
    if is_stdout(path):
        raise LiqbotError(f"{option}: expected a directory, got '-' (stdout)")
    if path.exists() and not path.is_dir():
        raise LiqbotError(f"{option}: {path} exists and is not a directory")
    base = _nearest_existing(path)
    if not base.is_dir():
        raise LiqbotError(f"{option}: {path} cannot be created: {base} is a file, not a directory")
    if not os.access(base, os.W_OK | os.X_OK):
        raise LiqbotError(f"{option}: {path} is not writable (permission denied on {base})")
    made: list[Path] = []   # a real write: the missing directories and a file, then removed
    try:
        with writing(path, option):
            for d in [*reversed(path.absolute().parents), path.absolute()]:
                if not d.exists():
                    d.mkdir()
                    made.append(d)
            fd, probe = tempfile.mkstemp(dir=path, prefix=".liqbot-probe-")
            os.close(fd)
            os.unlink(probe)
    finally:
        for d in reversed(made):
            with contextlib.suppress(OSError):
                d.rmdir()
    return path


@contextlib.contextmanager
def writing(path: Path | None, option: str) -> Iterator[None]:
    """Turn an OSError in the block (writing `path`) into an exit-2 error naming both;
    None (stdout) passes errors on."""
    try:
        yield
    except OSError as exc:
        if path is None:
            raise
        raise LiqbotError(f"{option}: {path} is not writable "
                          f"({exc.strerror or type(exc).__name__})") from None


def check_symbol(symbol: str, option: str) -> str:
    """An exchange symbol like BTCUSDT (upper-cased): `[A-Z0-9]{2,20}`, so it is safe in a
    URL and as a file name."""
    s = symbol.strip().upper()
    if not SYMBOL.fullmatch(s):
        shown = repr(symbol) if len(symbol) <= 40 else f"a string of {len(symbol)} characters"
        raise LiqbotError(f"{option}: expected a symbol like BTCUSDT (2-20 letters and digits), "
                          f"got {shown}")
    return s


#: the smallest and largest wallet (quote) a run accepts: below one unit the tables print
#: 'wallet 0' beside a return in percent; above 1e15 float sums lose the cents
MIN_WALLET, MAX_WALLET = 1.0, 1e15


def check_wallet(wallet: float, option: str = "--wallet") -> float:
    """A wallet (quote) within [MIN_WALLET, MAX_WALLET]; one check for every command."""
    if not (math.isfinite(wallet) and MIN_WALLET <= wallet <= MAX_WALLET):
        raise LiqbotError(f"{option}: expected an amount from {MIN_WALLET:g} to "
                          f"{MAX_WALLET:g} (quote), got {wallet}")
    return wallet


def check_number(value: float | None, option: str, lo: float | None = None,
                 hi: float | None = None, *, lo_open: bool = False) -> float | None:
    """A finite number within [lo, hi] (or (lo, hi] with `lo_open`); None passes."""
    if value is None:
        return None
    ok = math.isfinite(value)
    if ok and lo is not None:
        ok = value > lo if lo_open else value >= lo
    if ok and hi is not None:
        ok = value <= hi
    if not ok:
        left = "(" if lo_open else "["
        rng = f"{left}{lo:g}, {hi:g}]" if lo is not None and hi is not None else (
            f"> {lo:g}" if lo_open else f">= {lo:g}") if lo is not None else "finite"
        raise LiqbotError(f"{option}: expected a finite number in {rng}, got {value}")
    return value


def cell(fmt: str, value: Any) -> str:
    """A table cell; '-' for a missing or non-finite figure (never 'nan')."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return fmt.format(value)


def check_log_file(path: Path | None, key: str = "logging.file", *, create: bool = True
                   ) -> None:
    """The daemon's log file (appended to; missing folders are created): probed before the
    daemon starts, as an output. `create=False` (`config check`) creates nothing: the
    nearest existing folder must be a writable directory."""
    if path is None:
        return
    if not create:
        if path.is_dir():
            raise LiqbotError(f"{key}: {path} is a directory, expected a file path")
        base = path.parent
        while not base.exists() and base != base.parent:
            base = base.parent
        try:                                  # a real write that leaves nothing behind
            if path.exists():
                path.open("ab").close()
            else:
                os.rmdir(tempfile.mkdtemp(prefix=".liqbot-probe-", dir=base))
        except OSError as exc:
            raise LiqbotError(f"{key}: {path} cannot be written (in {base}: "
                              f"{exc.strerror or type(exc).__name__})") from None
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LiqbotError(f"{key}: cannot create the folder {path.parent} "
                          f"({exc.strerror or type(exc).__name__})") from None
    check_output(path, key, stdout_ok=False)


#: the width of output that goes to a file or a pipe (rich's default there is 80 columns,
#: which cut the headers of wide tables); $COLUMNS still decides when set
PIPE_WIDTH = 160


MIN_WIDTH = 40     # a COLUMNS below this (0, 1, ...) is a mistake, not a wish


def width_for(stream: Any) -> int | None:
    """The console width for `stream`: COLUMNS when it is a whole number >= MIN_WIDTH; a
    pipe or file otherwise PIPE_WIDTH (rich's 80 cut wide tables); a terminal its own
    width. Rich reads COLUMNS itself, so a COLUMNS of 0 printed nothing at all, error
    messages included: an unusable one is overridden here."""
    raw = os.environ.get("COLUMNS")
    if raw is not None and raw.strip().isdigit() and int(raw) >= MIN_WIDTH:
        return None                          # rich reads it
    piped = not (hasattr(stream, "isatty") and stream.isatty())
    if piped:
        return PIPE_WIDTH
    if raw is None:
        return None                          # rich asks the terminal
    try:
        return max(MIN_WIDTH, os.get_terminal_size(stream.fileno()).columns)
    except (OSError, ValueError, AttributeError):
        return 80


def console(*, stderr: bool = False) -> Console:
    """The CLI's console: no highlighting, no `:emoji:` codes (a path like /tmp/a:fire:b
    prints as typed); user text inside markup goes through `shown`."""
    stream = sys.stderr if stderr else sys.stdout
    return _Console(stderr=stderr, highlight=False, emoji=False, width=width_for(stream))


class _Console(Console):
    def print(self, *objects: Any, **kwargs: Any) -> None:
        """Message lines (plain strings) sent to a file or a pipe are not wrapped: rich cut
        them at the width (160 columns) mid-field, which broke line-based parsing of the
        final line and of status texts. Tables and other renderables still fit the width;
        a terminal still word-wraps."""
        if (kwargs.get("soft_wrap") is None and not self.is_terminal and objects
                and all(isinstance(o, str) for o in objects)):
            kwargs["soft_wrap"] = True
        super().print(*objects, **kwargs)

    def on_broken_pipe(self) -> None:
        """The reader of our output left (`liqbot ... | head`): rich's default exits 1,
        which reads as "a bug" here; raised instead, `bot.cli.main` exits 141 silently."""
        self.quiet = True
        raise BrokenPipeError


def shown(value: object) -> str:
    """User text (a path, a name) for a markup string: printed verbatim, `[red]` included."""
    return escape(str(value))


def finite_json(value: Any) -> Any:
    """A copy of a JSON-able tree with NaN and +-inf replaced by None (JSON null)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy scalar
        return finite_json(value.item())
    return value


def dumps(value: Any, indent: int | None = 2) -> str:
    """Strict JSON (never NaN/Infinity) of `value`."""
    return json.dumps(finite_json(value), indent=indent, allow_nan=False, default=str)


def write_output(path: Path | None, text: str, option: str = "output") -> None:
    """Write `text` to `path` (an OSError: exit 2 naming `option`), or to stdout when `path`
    is None (`-`)."""
    if path is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()
        return
    with writing(path, option):
        path.write_text(text, encoding="utf-8")
