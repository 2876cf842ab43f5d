"""Ctrl-C (and a SIGTERM a command turns into one) taken only where raising is safe.

Why: Python's own SIGINT handler raises KeyboardInterrupt at the next bytecode boundary,
wherever it is, including inside Python code that numba's COMPILED code calls from C. A
kernel returning arrays boxes them through `numba.core.serialize._numba_unpickle` (the
array type, looked up once per returned array); a KeyboardInterrupt raised there makes the
boxing of that array return NULL, and numba's tuple boxing (`box_tuple`) does not check
its items: the caller receives a tuple holding NULL and the process dies with a
segmentation fault (exit 139, no message) when it unpacks it, or with "SystemError: ...
returned a result with an exception set". A long kernel call (the synthetic generator,
the bar loop) makes that window most of the first seconds of a command: the signal
arrives while native code runs, and is handled at the first Python bytecode, which is
`_numba_unpickle` boxing the result.

`handler` raises KeyboardInterrupt only when the interrupted Python stack holds no frame
that such native code may have called (`unsafe`): numba's or llvmlite's code (except the
dispatcher's compile path, which numba calls from C with its errors checked: a cold
compile stays interruptible) or a namedtuple's `__new__` (numba boxes a NamedTuple by
calling its class). Otherwise the interrupt is deferred: it is delivered again every
`RETRY` seconds until it lands in safe code (microseconds to the end of a compiled call's
boxing, at most an LLVM step). Installed by `bot.cli.main` for SIGINT for the whole
command, and by the commands that stop cleanly on SIGTERM (`liqbot sweep`) for SIGTERM.
`held` holds an interrupt over a step that must not stop half-way (a sweep launching its
worker processes).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType

#: seconds between deliveries of a deferred interrupt
RETRY = 0.02
#: numba methods its C dispatcher calls with the result checked: a KeyboardInterrupt raised
#: below them (the compiler's own Python code) propagates as an ordinary exception
CHECKED_ENTRIES = frozenset({"_compile_for_args", "compile"})

_lock = threading.Lock()
_retry: threading.Timer | None = None
_pending: set[int] = set()
_held = 0


def unsafe(frame: FrameType | None) -> bool:
    """True when raising in `frame` could leave native code with an unchecked failure
    (module docstring): an llvmlite frame anywhere on the stack; a numba frame whose
    outermost numba caller is not a checked dispatcher entry; a namedtuple `__new__`."""
    outer: FrameType | None = None           # the outermost numba frame seen so far
    f = frame
    while f is not None:
        top = str(f.f_globals.get("__name__", "")).partition(".")[0]
        if top == "llvmlite":
            return True
        if top == "numba":
            outer = f
        elif outer is not None:
            if outer.f_code.co_name not in CHECKED_ENTRIES:
                return True
            outer = None
        code = f.f_code
        if code.co_name == "<lambda>" and "_tuple_new" in code.co_names:   # namedtuple
            return True
        f = f.f_back
    return outer is not None and outer.f_code.co_name not in CHECKED_ENTRIES


def _redeliver(signum: int) -> None:
    global _retry
    with _lock:
        _pending.add(signum)
        if _retry is not None:
            return

        def fire() -> None:
            global _retry
            with _lock:
                _retry = None
                sigs = sorted(_pending)
            for s in sigs:
                with contextlib.suppress(OSError):
                    os.kill(os.getpid(), s)

        _retry = threading.Timer(RETRY, fire)
        _retry.daemon = True
        _retry.start()


def handler(signum: int, frame: FrameType | None) -> None:
    """The signal handler: KeyboardInterrupt now when `frame` is safe, else later (at the
    end of a `held` block)."""
    if _held:
        with _lock:
            _pending.add(signum)
        return
    if unsafe(frame):
        _redeliver(signum)
        return
    with _lock:
        _pending.discard(signum)
    raise KeyboardInterrupt


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Within the block an interrupt `handler` receives is held, then raised (as
    KeyboardInterrupt) when the block ends: for steps that must not stop half-way, such as
    launching worker processes (an interrupted launch left a worker starting after this
    process had removed its semaphores: a traceback from the worker). Only where
    `taken_safely` installed the handler; elsewhere (default handling) nothing changes."""
    global _held
    _held += 1
    try:
        yield
    finally:
        _held -= 1
    with _lock:
        hit = bool(_pending) and not _held and _retry is None
        if hit:
            _pending.clear()
    if hit:
        raise KeyboardInterrupt


def pending() -> bool:
    """An interrupt was received and not raised yet (deferred)."""
    with _lock:
        return bool(_pending)


@contextlib.contextmanager
def taken_safely(*signums: int) -> Iterator[None]:
    """Within the block, `signums` (default SIGINT) go through `handler`; the previous
    handlers are restored on exit. A deferred interrupt still pending when the block ends
    normally (or by a zero exit) is raised then, as KeyboardInterrupt. Outside the main
    thread (signal handlers cannot be set there) nothing changes."""
    global _retry
    previous: dict[int, object] = {}
    try:
        for s in signums or (signal.SIGINT,):
            previous[s] = signal.signal(s, handler)
    except ValueError:                      # not the main thread: default handling
        for s, h in previous.items():
            signal.signal(s, h)             # type: ignore[arg-type]
        previous.clear()
    try:
        yield
    except SystemExit as exc:
        if exc.code in (0, None) and _take(previous):
            raise KeyboardInterrupt from None
        raise
    else:
        if _take(previous):
            raise KeyboardInterrupt
    finally:
        for s, h in previous.items():
            signal.signal(s, h)             # type: ignore[arg-type]
        if previous:
            with _lock:
                _pending.difference_update(previous)
                if _retry is not None and not _pending:   # none left for an outer block
                    _retry.cancel()
                    _retry = None


def _take(installed: dict[int, object]) -> bool:
    with _lock:
        hit = bool(_pending & set(installed))
        _pending.difference_update(installed)
    return hit
