"""The daemon's logging: text or JSON lines, and a filter that keeps secrets out.

Every record passes `SecretFilter`, which replaces any known secret value (API key, secret,
passphrase, token from the environment or the credentials file) and URL userinfo with
`***` in the message and its arguments, so not even an exception text can leak one.

The `logging.file` handler (`LogFileHandler`) survives a file it cannot write (a full disk,
an I/O error): instead of Python's "--- Logging error ---" traceback for every record, one
ERROR record on the other handlers (stderr; `liqbot_errors_total` counts it) names
`logging.file`, the path and the OS error; the file is then left alone and retried every
`retry_s` seconds, quietly, and a line says so once it is written again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bot.config import SECRET_ENV

_USERINFO = re.compile(r"(\w+://)([^/@\s:]+):([^/@\s]+)@")


class SecretFilter(logging.Filter):
    """Masks secret values and URL passwords in every record."""

    def __init__(self, secrets: list[str] | None = None) -> None:
        super().__init__()
        found = [os.environ.get(v, "") for v in SECRET_ENV.values()]
        self.secrets = sorted({s for s in [*found, *(secrets or [])] if len(s) >= 4},
                              key=len, reverse=True)

    def mask(self, text: str) -> str:
        for s in self.secrets:
            text = text.replace(s, "***")
        return _USERINFO.sub(r"\1\2:***@", text)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.mask(record.getMessage())
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = self.mask(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts (ms UTC), level, logger, msg, and structured extras."""

    EXTRAS = ("symbol", "bar_ts", "reasons", "run_id")   # run_id: `liqbot run` sets it

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": int(record.created * 1000), "level": record.levelname,
               "logger": record.name, "msg": record.getMessage()}
        for k in self.EXTRAS:
            if hasattr(record, k):
                out[k] = getattr(record, k)
        if record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out)


class LogFileHandler(logging.FileHandler):
    """`logging.FileHandler` for `logging.file` that reports a failed write once.

    An OSError while writing (ENOSPC, EIO, ...) closes the file and logs one ERROR on the
    `liqbot.logs` logger (this handler skips it); records are then dropped from the file,
    not printed as tracebacks, until a retry every `retry_s` seconds succeeds.
    """

    def __init__(self, filename: Path, retry_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(filename, encoding="utf-8")
        self.retry_s = retry_s
        self.clock = clock
        self.failed_at: float | None = None     # when the last write failed; None: healthy
        self.lost = 0                           # records not written since then
        self._failed_now = False
        self._reporting = False

    def emit(self, record: logging.LogRecord) -> None:
        if self._reporting:                     # our own report: stderr has it
            return
        if self.failed_at is not None and self.clock() - self.failed_at < self.retry_s:
            self.lost += 1
            return
        self._failed_now = False
        try:
            super().emit(record)                # reopening a closed file can raise too
        except OSError:
            self.handleError(record)
        if self.failed_at is not None and not self._failed_now:
            lost, self.failed_at, self.lost = self.lost, None, 0
            self._report(logging.WARNING, f"logging.file: writing to {self.baseFilename} "
                         f"again ({lost:,} record(s) were not written to it)", here=True)

    def handleError(self, record: logging.LogRecord) -> None:
        """An OSError: close the file, report it once, drop records until a retry works;
        anything else (a bug in a log call) as `logging` does."""
        exc = sys.exc_info()[1]
        if not isinstance(exc, OSError):
            super().handleError(record)
            return
        self._failed_now = True
        first = self.failed_at is None
        self.failed_at = self.clock()
        self.lost += 1
        stream, self.stream = self.stream, None  # reopened (appending) by the next retry
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()
        if first:
            why = exc.strerror or type(exc).__name__
            self._report(logging.ERROR, f"logging.file: cannot write {self.baseFilename} "
                         f"({why}); records go to stderr only, the file is retried every "
                         f"{self.retry_s:g} s")

    def _report(self, level: int, text: str, *, here: bool = False) -> None:
        """Log `text` on the other handlers (stderr, the error counter); also in this file
        with `here` (it works again)."""
        self._reporting = not here
        try:
            logging.getLogger("liqbot.logs").log(level, text)
        finally:
            self._reporting = False


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to `sys.stderr` as it is when a record is emitted, not when the handler was
    made: a command run in-process (the tests' `cli`, a library caller) may replace stderr
    between two commands, and a handler bound to the first one's stream wrote a "Logging
    error" traceback into the second one's output once that stream was closed."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def setup(level: str = "INFO", fmt: str = "text", file: Path | None = None,
          secrets: list[str] | None = None) -> None:
    """Configure the `liqbot` loggers (stderr, plus `file` when given)."""
    root = logging.getLogger("liqbot")
    root.setLevel(level)
    for h in list(root.handlers):
        root.removeHandler(h)
    handlers: list[logging.Handler] = [StderrHandler()]
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(LogFileHandler(file))
    flt = SecretFilter(secrets)
    for h in handlers:
        h.addFilter(flt)
        h.setFormatter(JsonFormatter() if fmt == "json" else
                       logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(h)
    root.propagate = False
