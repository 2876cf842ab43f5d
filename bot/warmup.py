"""Parallel warm-up of a cold `liqbot backtest`: the two kernel trees compiled at once.

A bar backtest runs two independent numba trees: the signal step kernel
(`bot.signals.stream`: heatmap, positioning, detectors; reached through
`pipeline.stream_chunks` / `compute_chunked`) and the trading loop (`backtests.engine.run_chunk`
-> lean `run_bars` -> `bot.execution.kernel`, `bot.mechanics`, `bot.risk.engine`). On an
empty numba cache both compile, one after the other, in one thread (about 6.6 and 4.5 s of
CPU on this project's 2-core VM). `parallel_compile` overlaps them: a child process
(`bot.warmup.main`) compiles the signal tree, which numba writes to its on-disk cache
(`cache=True`), while this process compiles the trading tree; once the child is done, this
process's first call of the signal kernel LOADS it from that cache instead of compiling it.

Types: numba keys a compilation (and a cache entry) on its argument types (dtype, ndim,
layout, read-only or writable). Both sides therefore run the backtest's own code paths on
a few bars of the same data: the child runs `pipeline.compute_chunked` on the first bars
of the SAME Bars (the stream kernel's inputs are always rows `stream.bar_matrix` builds, a
fresh float64 C array; the config and state tuples come from the same brackets and fill
window), and this process runs `backtests.runner.run` on the first bars of the real market
arrays (`runner.prepare`: the Bars' own read-only columns or fallback arrays, exactly as
the real run reads them) with precomputed (zero) signal rows and a flat strategy, on
throwaway accounts. Nothing it computes is kept: the real run starts afterwards from
scratch, so its results are the same with or without the warm-up (tested).

When: only on a cold cache (neither tree's root kernel has an on-disk cache index: a warm
second process starts no child and compiles nothing), with at least 2 usable CPUs
(`os.sched_getaffinity`), and not when `PARALLEL_WARMUP=0` (not a `LIQBOT_` name: those
are config overrides, and an unknown one is a config error). Not skipped for short
runs: a cold compile costs the same for a day as for a year. The cost is CPU: the child's
interpreter start and imports (~0.4 s) and the signal kernel's load from the cache here.
The gain needs a second core that is actually free: on a machine whose other core is busy
the two processes share one and the cold run takes about as long as without the warm-up.

Limits: the strategy's own kernels still compile in the real run (small; they may read the
signals, so they are not run here); a strategy whose targets are a read-only array gets
the trading tree compiled again for that type (the warm-up's targets are writable, as
every built-in strategy's). The two trees share three small callees (`tier_of`, the
liquidation-price functions): both processes may write their cache index at once; numba
writes an index by read-modify-write, so a signature the child does not use could, in a
rare interleaving, be dropped from the index and be compiled (and cached) once more by a
later process.

Failure never fails the backtest: a child that cannot start, crashes, exits non-zero or
overruns `TIMEOUT` is killed (never left behind: on Linux the kernel also kills it when
this process dies, `_die_with_parent`) and logged at debug level; whatever it did
not write to the cache is compiled here on first use, as without the warm-up. The child's
output goes to /dev/null, never to the user's terminal.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import pickle
import signal
import subprocess
import sys
import time
from typing import Any

import numpy as np

from bot.data.bars import Bars
from bot.mechanics.brackets import Brackets

log = logging.getLogger(__name__)

#: opt-out: PARALLEL_WARMUP=0 compiles everything in this process, as before
ENV = "PARALLEL_WARMUP"
#: the child command (tests override it to exercise the fallback). Not `-m bot.warmup`:
#: run as `__main__` the same compile took ~2 s more system time (3x the page faults)
COMMAND: list[str] = [sys.executable, "-c", "import sys; from bot.warmup import main; "
                      "sys.exit(main())"]
#: seconds to wait for the child once this process's own part is compiled
TIMEOUT = 120.0
#: bars of the dataset each side runs (enough for every code path the types depend on)
BARS = 64


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _index_path(dispatcher: Any) -> str | None:
    """The path of `dispatcher`'s on-disk cache index (numba's `FunctionCache` internals:
    None when they are not as expected, or the dispatcher is not cached)."""
    try:
        path = dispatcher._cache._cache_file._index_path
    except AttributeError:
        return None
    return path if isinstance(path, str) else None


def roots() -> tuple[Any, Any]:
    """The root kernels of the signal tree (the lean `stream.run_steps`, which `run_all`
    calls for `pipeline.stream_chunks`) and of the trading tree (`engine.run_chunk`); None
    for one not found."""
    from backtests import engine as eg
    from bot.signals import stream as sm

    return getattr(sm, "_run_steps_lean", None), getattr(eg, "run_chunk", None)


def cold() -> bool:
    """True when neither tree's root kernel has a cache index yet (an empty or new numba
    cache). Unknown (numba's internals changed) counts as warm: no child."""
    paths = [_index_path(d) for d in roots()]
    return all(p is not None and not os.path.exists(p) for p in paths)


def enabled() -> bool:
    """The warm-up may run: not opted out, at least 2 usable CPUs."""
    return os.environ.get(ENV, "1").strip() != "0" and usable_cpus() >= 2


def signal_job(bars: Bars, brackets: Brackets, fill_window: int) -> None:
    """Compile (and cache) the signal tree as the backtest calls it: a chunked run of the
    stream kernel with every output column kept (the heatmap's materialisation included),
    as `pipeline.compute_chunked`, `LazySignals` and `runner.run`'s streamed rows run it."""
    from bot.signals import pipeline

    pipeline.compute_chunked(bars, brackets, fill_window=fill_window, signals=True, risk=True)


class _Flat:
    """A strategy stand-in: flat targets, the real strategy's name and sizing (its own
    kernels are not compiled here: they may read the signals)."""

    def __init__(self, strategy: Any) -> None:
        self.name = str(getattr(strategy, "name", "warm-up"))
        self.sizing = str(getattr(strategy, "sizing", "entry"))

    def targets(self, bars: Bars, signals: Any) -> np.ndarray:
        return np.zeros(len(bars))


def trading_job(bars: Bars, brackets: Brackets, settings: Any, strategy: Any,
                policy: Any = None) -> None:
    """Compile the trading tree as `runner.run` calls it, on the market arrays of the
    first bars (`runner.prepare` without a signal run: a slice of Bars keeps the columns'
    read-only flag and layout, so the types are the full run's), zero signal rows and fill
    windows (the dtype and layout of the streamed rows), a flat strategy and throwaway
    account state."""
    from backtests import runner
    from bot.risk import engine as en
    from bot.risk.policy import off_policy
    from bot.signals import stream as sm

    if policy is None:                     # risk off: the same numba types as any policy
        policy = off_policy()
    head = bars.take(slice(0, min(len(bars), BARS)))
    k = len(head)
    market = runner.prepare(head, brackets, settings, keep_signals=False,
                            risk_rows=False).market
    market["window"] = np.zeros((k, sm.N_FILL))
    inputs = runner.Inputs(head, market, np.zeros((k, en.N_SIG)),
                           None)  # type: ignore[arg-type]  # the flat strategy reads none
    runner.run(inputs, _Flat(strategy), policy, brackets, settings, "warm-up")  # type: ignore[arg-type]


def start_child(bars: Bars, brackets: Brackets, fill_window: int) -> subprocess.Popen[bytes]:
    """Start the child compiling the signal tree on the first `BARS` bars of `bars` (sent
    pickled on its stdin; its output discarded; same numba cache directory)."""
    from numba.core import config as numba_config

    k = min(len(bars), BARS)
    job = (os.getpid(), bars.symbol, bars.interval_ms,
           {n: np.array(a[:k]) for n, a in bars.columns.items()}, brackets, int(fill_window))
    # this process's numba cache; same interpreter, working directory and environment,
    # so `bot` imports as here (a failed import is a failed child: `finish`)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(numba_config.CACHE_DIR)}
    proc = subprocess.Popen(COMMAND, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    if proc.stdin is not None:
        # a few kB: fits the pipe's buffer, so this never waits for the child
        with contextlib.suppress(OSError):         # it died at once: `finish` reports it
            proc.stdin.write(pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL))
            proc.stdin.close()
    return proc


def finish(proc: subprocess.Popen[bytes], timeout: float = TIMEOUT) -> bool:
    """Wait for the child up to `timeout` seconds; kill it when it overruns. True when it
    exited 0 (its kernels are in the cache)."""
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        log.debug("warm-up child overran %.0f s: killed", timeout)
        rc = None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdin is not None and not proc.stdin.closed:
            with contextlib.suppress(OSError):
                proc.stdin.close()
    if rc != 0 and rc is not None:
        log.debug("warm-up child exited %s: compiling its kernels here", rc)
    return rc == 0


def parallel_compile(bars: Bars, brackets: Brackets, settings: Any, strategy: Any,
                     policy: Any = None) -> bool:
    """On a cold cache (`cold`, `enabled`): compile the signal tree in a child process
    while this one compiles the trading tree, then wait for the child. Returns True when
    the child's part is in the cache; False when nothing was done (warm, disabled, fewer
    than 2 CPUs) or the child failed (its part is compiled on first use, as without the
    warm-up). `policy` None: the risk-off policy (the same numba types either way).
    Never raises for a failure of its own (a failed trading-tree warm-up is logged at
    debug level: the real run compiles it again and reports any fault); an interrupt
    kills the child and propagates."""
    if not len(bars) or not enabled() or not cold():
        return False
    try:
        proc = start_child(bars, brackets, settings.fills.window_bars)
    except (OSError, ValueError, pickle.PicklingError) as exc:
        log.debug("warm-up child not started: %s", exc)
        return False
    t0 = time.perf_counter()
    try:
        trading_job(bars, brackets, settings, strategy, policy)
    except Exception as exc:  # noqa: BLE001 - the real run compiles it (and reports a fault)
        log.debug("warm-up of the trading tree failed: %r", exc)
    except BaseException:                  # an interrupt: never leave the child behind
        finish(proc, 0.0)
        raise
    t1 = time.perf_counter()
    ok = finish(proc, TIMEOUT)
    log.debug("warm-up: trading tree compiled here in %.2f s, then %.2f s waiting for the "
              "child (%s)", t1 - t0, time.perf_counter() - t1, "ok" if ok else "failed")
    return ok


def _die_with_parent(parent: int) -> None:
    """Linux: have the kernel kill this child when its parent dies (PR_SET_PDEATHSIG), so
    a killed backtest leaves no compiling child behind; exit now if the parent is already
    gone. Elsewhere nothing: the child then ends by itself once compiled."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)      # 1 = PR_SET_PDEATHSIG; numba writes atomically
    except (OSError, AttributeError, TypeError):
        return
    if os.getppid() != parent:
        os._exit(1)


def main() -> int:
    """The child: read the pickled job from stdin, compile the signal tree, exit 0."""
    parent, symbol, interval_ms, columns, brackets, fill_window = pickle.load(sys.stdin.buffer)
    _die_with_parent(parent)
    signal_job(Bars(symbol, interval_ms, columns), brackets, fill_window)
    return 0
