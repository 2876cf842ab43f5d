"""The daemon's log setup (bot/runtime/logs.py): a `logging.file` that cannot be written."""

from __future__ import annotations

import errno
import logging
from pathlib import Path
from typing import Any

import pytest

from bot.runtime import logs
from bot.runtime.metrics import ErrorCounter


class _FullDisk:
    """A file stream whose writes fail as on a full disk."""

    def __init__(self, err: int = errno.ENOSPC) -> None:
        self.err = err
        self.closed = False

    def write(self, text: str) -> int:
        raise OSError(self.err, __import__("os").strerror(self.err))

    def flush(self) -> None:
        raise OSError(self.err, __import__("os").strerror(self.err))

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def file_log(tmp_path: Path) -> Any:
    """`setup` with a log file, called from the test (stderr is then the captured one)."""
    root = logging.getLogger("liqbot")
    level, propagate = root.level, root.propagate

    def make() -> tuple[Path, Any, ErrorCounter]:
        path = tmp_path / "x.log"
        logs.setup("INFO", "text", path)
        handler = next(h for h in root.handlers if isinstance(h, logging.FileHandler))
        errors = ErrorCounter()
        root.addHandler(errors)
        return path, handler, errors

    yield make
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    root.setLevel(level)
    root.propagate = propagate


def test_a_full_disk_under_logging_file_is_one_warning_not_a_traceback_per_record(
        file_log: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """ENOSPC printed Python's '--- Logging error ---' traceback block for every record (19
    on a cascade-long replay) and nothing said plainly that the file was no longer written.
    Now one line names logging.file, the path and the OS error, and counts as an error."""
    path, handler, errors = file_log()
    log = logging.getLogger("liqbot.daemon")
    log.info("before the disk filled")
    stream = _FullDisk()
    handler.stream = stream
    for i in range(5):
        log.info("bar %d", i)
    err = capsys.readouterr().err
    assert "Logging error" not in err and "Traceback" not in err
    problem = [line for line in err.splitlines() if "logging.file" in line]
    assert problem == [line for line in err.splitlines() if "cannot write" in line]
    assert len(problem) == 1
    assert problem[0].endswith(f"ERROR liqbot.logs: logging.file: cannot write {path} (No space "
                               "left on device); records go to stderr only, the file is "
                               "retried every 60 s")
    assert err.count("bar ") == 5                      # stderr still has every record
    assert errors.count == 1                           # liqbot_errors_total
    assert stream.closed and handler.lost == 5
    assert path.read_text().count("\n") == 1           # what was written before stays


def test_the_log_file_is_written_again_once_a_retry_works(
        file_log: Any, capsys: pytest.CaptureFixture[str]) -> None:
    path, handler, errors = file_log()
    now = [0.0]
    handler.clock = lambda: now[0]
    log = logging.getLogger("liqbot.daemon")
    handler.stream = _FullDisk(errno.EIO)
    log.info("lost 1")
    log.info("lost 2")                                 # within retry_s: not tried
    now[0] = 61.0                                      # the next record retries: it works
    log.info("written again")
    err = capsys.readouterr().err
    assert f"logging.file: cannot write {path} (Input/output error)" in err
    assert f"logging.file: writing to {path} again (2 record(s) were not written to it)" in err
    text = path.read_text()
    assert "lost" not in text and "written again" in text
    assert "writing to" in text                        # the file says what it missed
    assert errors.count == 1 and handler.failed_at is None


def test_the_stderr_handler_writes_to_stderr_as_it_is_now(capsys):
    """A handler bound to the stderr of the command that configured logging wrote a
    'Logging error' traceback into a later in-process command's output once that stream
    was closed (tests/test_operator_status after tests/test_http)."""
    import io
    import logging
    import sys

    from bot.runtime.logs import setup

    old = sys.stderr
    sys.stderr = first = io.StringIO()
    try:
        setup("INFO")
        first.close()
        sys.stderr = second = io.StringIO()
        logging.getLogger("liqbot.test").info("hello")
        assert "hello" in second.getvalue() and "Logging error" not in second.getvalue()
    finally:
        sys.stderr = old
