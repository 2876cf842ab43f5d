"""Parameter sweeps: grid expansion, Optuna trials, walk-forward windows, parallel execution
(a local process pool or a Ray cluster) and resume. The `liqbot sweep` command is a thin
shell around `sweep()` (docs/sweeps.md).

A sweep is a set of independent TASKS, one backtest each: (dataset, bar span, segment,
parameter set). Every task is a pure function of its inputs, so the results do not depend
on the backend or the number of workers. Each finished task is one ROW, appended to
`OUT/rows.jsonl` at once (a killed sweep keeps its finished rows) under a content KEY
(sha256 of the settings, the dataset's bars, the span and the parameters); a rerun with the
same OUT reuses the rows whose key it needs instead of running them again.
`OUT/results.parquet` holds exactly the rows of the current sweep in a fixed order.

Segments: `full` (no walk-forward: the whole dataset), `train` and `test` (walk-forward).
A run over bars [start, end) warms signals and strategy on bars [0, start) and opens the
account (fresh wallet) at `start`. Sharpe and Sortino are computed from the equity of the
live bars only (`runner.run` computes them over every bar, flat warm-up bars included).

Units: wallet and equity in quote, returns and drawdowns as fractions, spans in bars,
timestamps int64 ms UTC (ISO strings in rows).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
import math
import os
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from bot.errors import LiqbotError

#: Metrics a sweep can rank by, with +1 = higher is better, -1 = lower is better.
OBJECTIVES: dict[str, int] = {"sharpe": 1, "sortino": 1, "total_return": 1, "final_equity": 1,
                              "max_drawdown": -1, "liquidations": -1}
JOURNAL, RESULTS, MANIFEST = "rows.jsonl", "results.parquet", "sweep.json"
#: Optuna trials asked per batch before telling their results: fixed (not the number of
#: workers) so a seeded study samples the same parameter sets on any backend.
TRIAL_BATCH = 4
MAX_CHUNK = 16            # tasks per process-pool / Ray submission
_SPAN = re.compile(r"^(\d+)([mhdw]?)$")
_UNIT_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


# ----------------------------------------------------------------------------- grid

def _param_spec(cls: type, key: str) -> Any:
    """The declared `Param` of `key` (with the default leverage bounds), or LiqbotError."""
    from strategies.base import LEVERAGE, Param

    known = {**cls.PARAMS, "sizing": cls._sizing_param()}
    if key not in known:
        raise LiqbotError(f"--grid {key}: {cls.name} has no parameter {key!r}; known: "
                          f"{', '.join(known)}")
    spec = known[key]
    if key == "leverage" and spec.lo is None and spec.hi is None:
        spec = Param(spec.kind, spec.default, spec.help, spec.choices, LEVERAGE.lo, LEVERAGE.hi,
                     LEVERAGE.lo_open, LEVERAGE.hi_open)
    return spec


def _expand_range(key: str, text: str, kind: type) -> list[str]:
    """`START:STOP:STEP` (inclusive, numeric parameters) -> the listed values as strings."""
    try:
        lo, hi, step = (kind(p) if kind is int else float(p) for p in text.split(":"))
    except ValueError:
        raise LiqbotError(f"--grid {key}: expected START:STOP:STEP numbers, got {text!r}") from None
    if not (step > 0 and hi >= lo) or not all(map(math.isfinite, (lo, hi, step))):
        raise LiqbotError(f"--grid {key}: expected START <= STOP and STEP > 0, got {text!r}")
    n = int(math.floor((hi - lo) / step + 1e-9)) + 1
    if n > 10_000:
        raise LiqbotError(f"--grid {key}: {text!r} expands to {n} values (at most 10000)")
    return [str(kind(lo + i * step)) if kind is int else repr(round(lo + i * step, 12))
            for i in range(n)]


def parse_grid(items: Sequence[str], cls: type) -> dict[str, list[Any]]:
    """`["fast=5,10", "slow=20:40:10"]` -> {"fast": [5, 10], "slow": [20, 30, 40]}: typed,
    each value checked against the strategy's declared type, choices and range (LiqbotError
    naming the option and key otherwise). Keys keep the command-line order."""
    if not items:
        raise LiqbotError("--grid: give at least one KEY=V1,V2,... (or KEY=START:STOP:STEP)")
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key, text = key.strip(), text.strip()
        if not sep or not key or not text:
            raise LiqbotError(f"--grid: expected KEY=V1,V2,... or KEY=START:STOP:STEP, got {item!r}")
        if key in grid:
            raise LiqbotError(f"--grid {key}: given twice; list every value in one --grid")
        spec = _param_spec(cls, key)
        raws = [v.strip() for v in text.split(",")]
        if len(raws) == 1 and ":" in raws[0] and spec.kind in (int, float):
            raws = _expand_range(key, raws[0], spec.kind)
        if any(not r for r in raws):
            raise LiqbotError(f"--grid {key}: empty value in {text!r}")
        values = []
        for raw in raws:
            try:
                value = spec.parse(key, raw)
            except LiqbotError as exc:
                raise LiqbotError(str(exc).replace("--param ", "--grid ", 1)) from None
            if value in values:
                raise LiqbotError(f"--grid {key}: value {raw!r} listed twice")
            values.append(value)
        grid[key] = values
    return grid


def expand(grid: dict[str, list[Any]], cls: type) -> tuple[list[dict[str, Any]], int, str]:
    """Every combination of the grid in command-line order that the strategy accepts (its
    `check`, e.g. fast < slow), as full parameter dicts (defaults included); the number of
    combinations skipped and the first reason."""
    valid: list[dict[str, Any]] = []
    skipped, first = 0, ""
    for combo in itertools.product(*grid.values()):
        params = dict(zip(grid, combo, strict=True))
        try:
            valid.append(dict(cls(**params).params))
        except LiqbotError as exc:
            skipped += 1
            first = first or f"{params}: {exc}"
    return valid, skipped, first


# ----------------------------------------------------------------------------- windows

@dataclass(frozen=True)
class Window:
    """Bar spans of one walk-forward window ([a, b) train, [b, c) test) or of the whole
    dataset (index -1, no test)."""

    index: int
    train: tuple[int, int]
    test: tuple[int, int] | None = None


def parse_span(text: str, interval_ms: int, option: str = "--walk-forward") -> int:
    """A span in bars: a bar count (`1440`) or a duration (`90m`, `12h`, `2d`, `1w`)."""
    m = _SPAN.fullmatch(text.strip())
    if not m:
        raise LiqbotError(f"{option}: expected a bar count or a duration like 12h, 2d, 1w, got {text!r}")
    n, unit = int(m.group(1)), m.group(2)
    bars = n if not unit else n * _UNIT_MS[unit] // interval_ms
    if bars < 1:
        raise LiqbotError(f"{option}: {text!r} is shorter than one bar ({interval_ms // 1000} s)")
    return bars


def windows(n: int, train: int, test: int, name: str = "dataset") -> list[Window]:
    """Rolling windows over n bars: train [s, s+train), test [s+train, s+train+test),
    s = 0, test, 2*test, ... while the test span fits."""
    if train + test > n:
        raise LiqbotError(f"--walk-forward: {name} has {n} bars, fewer than one window of "
                          f"{train} train + {test} test bars")
    out = []
    for k, s in enumerate(range(0, n - train - test + 1, test)):
        out.append(Window(k, (s, s + train), (s + train, s + train + test)))
    return out


# ----------------------------------------------------------------------------- tasks

@dataclass(frozen=True)
class Setup:
    """Everything a task needs besides its dataset, span and parameters (picklable)."""

    strategy: str
    risk: str                     # "on" | "off"
    preset: str
    policy: Any                   # bot.risk.policy.RiskPolicy
    settings: Any                 # backtests.runner.RunSettings
    #: (symbol, Brackets) from a --tiers file and/or at the account's leverage setting; a
    #: symbol not listed runs on `brackets.for_symbol`'s table (shipped, or BTCUSDT's as
    #: the stand-in)
    tables: tuple[tuple[str, Any], ...] = ()
    #: the driver's `code_digest()`, carried to every worker (which checks its own)
    code: str = field(default_factory=lambda: code_digest())
    #: `strategy_digest` of a user's `module:Class` ("" for a shipped strategy): in the
    #: row keys, not the manifest, so an edited strategy file reruns into the same OUT
    strategy_code: str = ""

    def describe(self) -> dict[str, Any]:
        s = self.settings
        out = {"strategy": self.strategy, "risk": self.risk,
               "preset": self.preset if self.risk == "on" else "-",
               "policy": self.policy.model_dump(mode="json"), "wallet": s.wallet,
               "band": s.band, "fees": asdict(s.fees), "fills": s.fills.model_dump(mode="json"),
               "code": self.code}
        if self.tables:       # only then: a sweep on the default tables keeps its old keys
            out["brackets"] = {sym: b.rows() for sym, b in self.tables}
        return out

    def brackets(self, symbol: str) -> Any:
        from bot.mechanics import brackets as br

        return dict(self.tables).get(symbol) or br.for_symbol(symbol)

    def digest(self) -> str:
        """The settings' part of every row key: `describe()`, plus the user's strategy
        file digest when there is one (a shipped strategy keeps its old keys)."""
        d = self.describe()
        if self.strategy_code:
            d["strategy_code"] = self.strategy_code
        return _sha(d)


@dataclass(frozen=True)
class Task:
    """One backtest: `dataset` (scenario name or absolute directory), account live on bars
    [start, end) after warming on [0, start)."""

    dataset: str
    window: int
    segment: str                  # "full" | "train" | "test"
    start: int
    end: int
    params: tuple[tuple[str, Any], ...]
    key: str


def _sha(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def fingerprint(bars: Any) -> str:
    """Content hash of a dataset's bars, EVERY column (`Bars.digest`): keys change with
    anything a run reads. Until 2026-12-06 only ts and OHLC: a re-import that added
    funding (or changed marks, open interest, volume) reused the old rows as if new."""
    return str(bars.digest())[:24]


#: the code a row's figures come from: the trading kernel, mechanics, risk, signals, the
#: backtest loops and the shipped strategies (a user's own strategy file: `strategy_digest`)
CODE_DIRS = ("bot/execution", "bot/mechanics", "bot/risk", "bot/signals", "bot/data",
             "bot/jit.py", "backtests", "strategies")
#: files hashed under CODE_DIRS: the sources and the data shipped with them (the leverage
#: bracket tables, bot/mechanics/brackets/*.json, that a sweep without --tiers runs on)
CODE_SUFFIXES = (".py", ".json")


def tree_digest(root: Path) -> str:
    """sha256 (16 hex) of the CODE_SUFFIXES files under CODE_DIRS of the tree at `root`,
    names and contents. Until 2026-12-06 only `*.py`: an updated shipped bracket table
    (JSON) left the digest, and so every row key, unchanged, so a rerun into the same OUT
    reused rows computed on the old margin tiers."""
    h = hashlib.sha256()
    for d in CODE_DIRS:
        base = root / d
        files = [base] if base.is_file() else sorted(
            f for f in base.rglob("*")
            if f.is_file() and f.suffix in CODE_SUFFIXES and "__pycache__" not in f.parts)
        for f in files:
            h.update(str(f.relative_to(root)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


@functools.cache
def code_digest() -> str:
    """`tree_digest` of this install: in the setup, so a sweep's OUT refuses to mix rows
    computed by another version (until 2026-12-06 a rerun after a change of the mechanics
    reused the old figures as if computed now)."""
    return tree_digest(Path(__file__).resolve().parent.parent)


def strategy_digest(spec: str) -> str:
    """sha256 (16 hex) of the source file a user's `module:Class` strategy was loaded from
    (the module's own file, not modules it imports); "" for a shipped strategy (its code is
    in `code_digest`) or a module without a file. Until 2026-12-06 a user's file was in no
    key: a rerun after editing it reused the rows computed with the old code."""
    import sys

    from strategies import BUILTIN, find

    if spec in BUILTIN:
        return ""
    source = getattr(sys.modules.get(find(spec).__module__), "__file__", None)
    if not source:
        return ""
    try:
        return hashlib.sha256(Path(source).read_bytes()).hexdigest()[:16]
    except OSError as exc:
        raise LiqbotError(f"--strategy {spec}: cannot read {source} ({exc.strerror})") from None


def make_task(setup_digest: str, dataset: str, fp: str, window: int, segment: str,
              span: tuple[int, int], params: dict[str, Any]) -> Task:
    """One backtest of the sweep; its key names the dataset as given and its content, so
    two datasets (or one moved) never share rows: the rows carry the dataset's name."""
    items = tuple(sorted(params.items()))
    key = _sha([setup_digest, dataset, fp, segment, span[0], span[1], items])[:32]
    return Task(dataset, window, segment, span[0], span[1], items, key)


# ----------------------------------------------------------------------------- worker side

_DATA: dict[str, tuple[int, Any]] = {}      # dataset -> (_version, bars)
_PREP: OrderedDict[tuple[str, int], Any] = OrderedDict()
_PREP_MAX = 4


def _version(dataset: str) -> int:
    """A dataset directory's manifest mtime (ns), 0 for a scenario name: a worker that
    outlives one sweep reloads a dataset re-imported since (the keys say it changed)."""
    m = Path(dataset) / "manifest.json"
    try:
        return m.stat().st_mtime_ns
    except OSError:
        return 0


def _prepared(dataset: str, end: int, setup: Setup) -> tuple[Any, Any]:
    """(Inputs, Brackets) for bars [0, end) of `dataset`, cached per process (LRU of 4)."""
    from backtests.runner import prepare
    from backtests.scenarios import load_scenario

    ver = _version(dataset)
    if _DATA.get(dataset, (None, None))[0] != ver:      # new, or re-imported since loaded
        _DATA[dataset] = (ver, load_scenario(dataset).bars)
    data = _DATA[dataset][1]
    brackets = setup.brackets(data.symbol)
    k = (dataset, ver, end, _sha(brackets.rows()), setup.settings.fills.window_bars)
    if k in _PREP:
        _PREP.move_to_end(k)
        return _PREP[k]
    bars = data.take(slice(0, end))
    _PREP[k] = (prepare(bars, brackets, setup.settings), brackets)
    while len(_PREP) > _PREP_MAX:
        _PREP.popitem(last=False)
    return _PREP[k]


def evaluate(setup: Setup, task: Task) -> dict[str, Any]:
    """Run one task; its row: identity columns, `p_*` parameters and every metric (test
    rows also carry `equity`, the live bars' equity curve, for the concatenated figure)."""
    from backtests import engine as eg
    from backtests.runner import run
    from bot.data.dataset import iso
    from strategies import find

    if setup.code != code_digest():        # a Ray node on another install of liqbot
        raise LiqbotError(f"sweep worker on {os.uname().nodename}: its liqbot backtest code "
                          f"({code_digest()}) is not the driver's ({setup.code}); install the "
                          "same version on every node")
    if setup.strategy_code and strategy_digest(setup.strategy) != setup.strategy_code:
        raise LiqbotError(f"sweep worker on {os.uname().nodename}: its file of --strategy "
                          f"{setup.strategy} is not the driver's; copy the same file to every "
                          "node")
    inputs, brackets = _prepared(task.dataset, task.end, setup)
    strat = find(setup.strategy)(**dict(task.params))
    res = run(inputs, strat, setup.policy, brackets, setup.settings, task.segment,
              start=task.start, record_columns=eg.N_REC_CORE)   # equity: all a row reads
    wallet = setup.settings.wallet
    eq = np.r_[wallet, res.records[task.start:, eg.R_EQUITY]]
    m = dict(res.metrics)                    # ratios over the live bars (runner.metrics)
    ts = inputs.bars.ts
    row: dict[str, Any] = {"key": task.key, "dataset": task.dataset, "window": task.window,
                           "segment": task.segment, "start": iso(int(ts[task.start])),
                           "end": iso(int(ts[task.end - 1])), "bars": task.end - task.start}
    row.update({f"p_{k}": v for k, v in task.params})
    row.update(m)
    row["equity"] = [float(x) for x in eq[1:]] if task.segment == "test" else None
    return row


def evaluate_chunk(setup: Setup, tasks: list[Task]) -> list[dict[str, Any]]:
    return [evaluate(setup, t) for t in tasks]


# ----------------------------------------------------------------------------- backends

OnRows = Callable[[list[dict[str, Any]]], None]


class Backend(Protocol):
    """Runs chunks of tasks, calling `on_rows` in the driver as each chunk finishes."""

    parallelism: int

    def execute(self, setup: Setup, chunks: list[list[Task]], on_rows: OnRows) -> None: ...

    def close(self, abort: bool = False) -> None: ...


class LocalBackend:
    """Every core by default: a process pool (forkserver where available, else spawn;
    workers import numba once and load its on-disk cache); 1 worker runs in-process."""

    def __init__(self, workers: int | None = None) -> None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        self.parallelism = workers or cores or 1
        self._pool: Any = None

    def execute(self, setup: Setup, chunks: list[list[Task]], on_rows: OnRows) -> None:
        if self.parallelism == 1:
            for chunk in chunks:
                on_rows(evaluate_chunk(setup, chunk))
            return
        import multiprocessing as mp
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        from bot import interrupts

        # a Ctrl-C while the workers start is taken once every one has a pid (the first
        # submit launches them all): `close(abort=True)` then stops them all; interrupted
        # half-way, a worker still starting outlived this process and failed (traceback)
        with interrupts.held():
            if self._pool is None:
                methods = mp.get_all_start_methods()
                ctx = mp.get_context("forkserver" if "forkserver" in methods else "spawn")
                if "forkserver" in methods:
                    ctx.set_forkserver_preload(["backtests.sweep", "backtests.runner"])
                    _start_forkserver()
                self._pool = ProcessPoolExecutor(self.parallelism, mp_context=ctx)
            pending = {self._pool.submit(evaluate_chunk, setup, c) for c in chunks}
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    on_rows(f.result())
        except BaseException:
            for f in pending:
                f.cancel()
            raise

    def close(self, abort: bool = False) -> None:
        """Shut the pool down; `abort` (an interrupted sweep) stops the running workers too
        instead of waiting for their chunks (their rows are not in the journal yet)."""
        if self._pool is None:
            return
        if abort:   # ProcessPoolExecutor has no public terminate before Python 3.14
            for proc in list(getattr(self._pool, "_processes", {}).values()):
                proc.terminate()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool = None


def _start_forkserver() -> None:
    """Start multiprocessing's fork server (if not running) with SIGINT ignored, a
    disposition that survives its exec; the server hands the one it started with to every
    worker it forks. Ctrl-C signals the whole process group: the server (which ignores
    SIGINT only once its preload imports are done) and the workers each printed a
    KeyboardInterrupt traceback. The sweep's own process takes the interrupt and stops the
    workers (`close(abort=True)`). Here SIGINT is ignored for the fork and exec only."""
    import signal
    import threading
    from multiprocessing import forkserver

    if threading.current_thread() is not threading.main_thread():
        forkserver.ensure_running()
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        forkserver.ensure_running()
    finally:
        signal.signal(signal.SIGINT, previous)


class RayBackend:
    """A Ray cluster: `auto` (the running cluster Ray finds), `HOST:PORT` or `ray://...`
    (an existing cluster), or `local` (a private cluster of this machine's cores on
    127.0.0.1, shut down with the sweep). Datasets are loaded by name on the workers, so a
    dataset directory must exist at the same path on every node."""

    def __init__(self, address: str) -> None:
        try:
            import ray
        except ImportError:
            raise LiqbotError("--ray: Ray is not installed; pip install 'liqbot[ray]'") from None
        self._ray = ray
        if address not in ("auto", "local"):
            _probe(address)
        env = {k: os.environ[k] for k in ("NUMBA_CACHE_DIR",) if k in os.environ}
        kw: dict[str, Any] = {"runtime_env": {"env_vars": env}} if env else {}
        try:
            if address == "local":
                ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False,
                         log_to_driver=False, configure_logging=False, **kw)
            else:
                ray.init(address=address, log_to_driver=False, configure_logging=False, **kw)
        except Exception as exc:  # noqa: BLE001 - Ray raises several kinds for a bad address
            raise LiqbotError(f"--ray {address}: cannot connect to a Ray cluster ({exc})") from None
        self.parallelism = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self._remote = ray.remote(evaluate_chunk)

    def execute(self, setup: Setup, chunks: list[list[Task]], on_rows: OnRows) -> None:
        ray = self._ray
        ref = ray.put(setup)
        pending = [self._remote.remote(ref, c) for c in chunks]
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                on_rows(ray.get(done[0]))
        except BaseException:
            for r in pending:
                with contextlib.suppress(Exception):
                    ray.cancel(r)
            raise

    def close(self, abort: bool = False) -> None:
        self._ray.shutdown()


def _probe(address: str, timeout: float = 5.0) -> None:
    """Fail fast (LiqbotError) when nothing accepts TCP at a Ray `HOST:PORT` address: Ray
    itself retries an unreachable head for minutes."""
    import socket

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise LiqbotError(f"--ray: expected HOST:PORT, ray://HOST:PORT, auto or local, got {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise LiqbotError(f"--ray {address}: no Ray cluster answers there ({exc.strerror or exc})") from None


def chunks_of(tasks: list[Task], parallelism: int) -> list[list[Task]]:
    """Tasks grouped by (dataset, end) (one signal preparation per group and worker), each
    group split so every worker gets a share."""
    groups: dict[tuple[str, int], list[Task]] = {}
    for t in tasks:
        groups.setdefault((t.dataset, t.end), []).append(t)
    out = []
    for g in groups.values():
        size = max(1, min(MAX_CHUNK, math.ceil(len(g) / parallelism)))
        out.extend(g[i:i + size] for i in range(0, len(g), size))
    return out


# ----------------------------------------------------------------------------- store

class Journal:
    """`OUT/rows.jsonl`: one JSON row per finished task, appended and flushed at once."""

    def __init__(self, out: Path) -> None:
        self.path = out / JOURNAL
        self.rows: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            with self.path.open(encoding="utf-8") as f:
                for line in f:
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:   # a line cut short by a kill
                        continue
                    if isinstance(row, dict) and "key" in row:
                        self.rows[row["key"]] = row

    def append(self, rows: Iterable[dict[str, Any]]) -> None:
        rows = list(rows)
        with self.path.open("a+b") as f:    # a line cut short by a kill stays on its own line
            f.seek(0, os.SEEK_END)
            if f.tell() and (f.seek(-1, os.SEEK_END), f.read(1))[1] != b"\n":
                f.write(b"\n")
        with self.path.open("a", encoding="utf-8") as f:
            for row in rows:
                line = json.dumps(row, default=_plain)
                f.write(line + "\n")
                self.rows[row["key"]] = json.loads(line)   # as a resumed sweep reads it
            f.flush()
            os.fsync(f.fileno())


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON: {type(value).__name__}")


def _check_manifest(out: Path, manifest: dict[str, Any]) -> None:
    path = out / MANIFEST
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            raise LiqbotError(f"--out: {path} is not a sweep manifest; use another --out") from None
        if old.get("setup") != manifest["setup"]:
            was = old.get("setup", {})
            diff = sorted(k for k in set(manifest["setup"]) | set(was)
                          if was.get(k) != manifest["setup"].get(k))
            why = " (liqbot's backtest code changed since: its rows would not match)" \
                if diff == ["code"] else ""
            raise LiqbotError(f"--out: {out} holds a sweep with other settings ({', '.join(diff)})"
                              f"{why}; use another --out to keep both")
        return
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_parquet(rows: list[dict[str, Any]], path: Path) -> None:
    """All rows with the same columns (missing -> null), written atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols: list[str] = []
    for r in rows:
        cols.extend(k for k in r if k not in cols)
    table = pa.Table.from_pydict({c: [r.get(c) for r in rows] for c in cols})
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- driver

@dataclass
class SweepSpec:
    """What to sweep (see `liqbot sweep --help`)."""

    datasets: list[str]
    strategy: str
    grid: list[str]
    risk: str = "on"
    preset: str = "balanced"
    wallet: float = 100_000.0
    fees: Any = None                 # VenueFees (default: binance)
    fills: Any = None                # FillsConfig (default: built-in)
    trials: int | None = None
    walk_forward: str | None = None  # "TRAIN:TEST"
    objective: str = "sharpe"
    seed: int = 0
    tiers: Path | None = None        # ccxt fetch_leverage_tiers JSON (--tiers)
    #: the account's leverage setting (`live.leverage`): closes the tiers above it
    #: (`brackets.at_leverage`, clamped to a table's largest leverage), as paper and live
    #: trade; None: the tables as published
    leverage: float | None = None


@dataclass
class SweepResult:
    rows: list[dict[str, Any]]       # the current sweep's rows, in order (as in results.parquet)
    param_keys: list[str]            # the grid's parameters, command-line order
    ran: int = 0                     # tasks executed now
    reused: int = 0                  # tasks found in OUT/rows.jsonl
    skipped: int = 0                 # parameter sets the strategy refused (e.g. fast >= slow)
    skip_reason: str = ""
    concatenated: dict[str, dict[str, Any]] = field(default_factory=dict)  # dataset -> OOS


def score(row: dict[str, Any] | None, objective: str) -> float:
    """The row's objective, signed so that higher is better; -inf when missing or NaN."""
    v = None if row is None else row.get(objective)
    if v is None or not math.isfinite(float(v)):
        return -math.inf
    return OBJECTIVES[objective] * float(v)


def concatenated(rows: list[dict[str, Any]], wallet: float, interval_ms: int) -> dict[str, Any]:
    """The out-of-sample figure of chained test windows: each window's per-bar returns
    compounded in window order."""
    from backtests.metrics import MINUTES_PER_YEAR, max_drawdown, ratios

    rets = []
    for r in sorted(rows, key=lambda r: r["window"]):
        e = np.r_[wallet, np.asarray(r["equity"], dtype=np.float64)]
        rets.append(np.diff(e) / np.maximum(e[:-1], 1e-12))
    growth = np.cumprod(1.0 + np.concatenate(rets)) if rets else np.zeros(0)
    eq = np.r_[wallet, wallet * growth]
    sharpe, sortino = ratios(eq, MINUTES_PER_YEAR * 60_000 / interval_ms)
    return {"windows": len(rows), "bars": len(eq) - 1, "total_return": float(eq[-1] / wallet - 1),
            "max_drawdown": max_drawdown(eq), "sharpe": sharpe, "sortino": sortino,
            "liquidations": int(sum(r["liquidations"] for r in rows)),
            "n_trades": int(sum(r["n_trades"] for r in rows))}


class _Runner:
    """Runs missing tasks through a backend, journaling rows as chunks finish."""

    def __init__(self, setup: Setup, backend: Backend, journal: Journal,
                 progress: Callable[[int, int], None] | None) -> None:
        self.setup, self.backend, self.journal, self.progress = setup, backend, journal, progress
        self.ran = self.reused = self.total = 0
        self._seen: set[str] = set()

    def rows(self, tasks: list[Task]) -> dict[str, dict[str, Any]]:
        fresh = [t for t in tasks if t.key not in self._seen]
        self._seen.update(t.key for t in fresh)
        missing = list({t.key: t for t in fresh if t.key not in self.journal.rows}.values())
        self.reused += len(fresh) - len(missing)
        self.total += len(fresh)
        if self.progress:
            self.progress(self.total - len(missing), self.total)
        done = self.total - len(missing)

        def on_rows(rows: list[dict[str, Any]]) -> None:
            nonlocal done
            self.journal.append(rows)
            self.ran += len(rows)
            done += len(rows)
            if self.progress:
                self.progress(done, self.total)

        if missing:
            self.backend.execute(self.setup, chunks_of(missing, self.backend.parallelism), on_rows)
        return {t.key: self.journal.rows[t.key] for t in tasks}


def _suggest(trial: Any, grid: dict[str, list[Any]]) -> dict[str, Any]:
    """An Optuna trial's parameters: ints and floats from [min, max] of the grid's values,
    strings from its values."""
    out: dict[str, Any] = {}
    for k, vals in grid.items():
        if len(vals) == 1:
            out[k] = vals[0]
        elif isinstance(vals[0], bool | str):
            out[k] = trial.suggest_categorical(k, vals)
        elif isinstance(vals[0], int):
            out[k] = trial.suggest_int(k, min(vals), max(vals))
        else:
            out[k] = trial.suggest_float(k, min(vals), max(vals))
    return out


def sweep(spec: SweepSpec, out: Path, backend: Backend,
          progress: Callable[[int, int], None] | None = None) -> SweepResult:
    """Run (or resume) a sweep into `out` (created); see the module docstring."""
    from backtests.runner import RunSettings
    from backtests.scenarios import load_scenario
    from bot.config import FillsConfig
    from bot.mechanics.fees import venue_fees
    from bot.risk.policy import load_policy, off_policy
    from strategies import find

    if spec.objective not in OBJECTIVES:
        raise LiqbotError(f"--objective: expected one of {', '.join(OBJECTIVES)}, got {spec.objective!r}")
    if spec.risk not in ("on", "off"):
        raise LiqbotError(f"--risk: expected on or off, got {spec.risk!r}")
    if spec.trials is not None and not 1 <= spec.trials <= 100_000:
        raise LiqbotError(f"--trials: expected 1..100000, got {spec.trials}")
    if not spec.datasets:
        raise LiqbotError("DATASET: give at least one dataset directory or scenario name")
    cls = find(spec.strategy)
    grid = parse_grid(spec.grid, cls)
    policy = load_policy(spec.preset) if spec.risk == "on" else off_policy()
    settings = RunSettings(wallet=spec.wallet, fills=spec.fills or FillsConfig(),
                           fees=spec.fees or venue_fees("binance"))
    setup = Setup(spec.strategy, spec.risk, spec.preset, policy, settings,
                  strategy_code=strategy_digest(spec.strategy))
    digest = setup.digest()

    # datasets: names as the workers load them, bars for spans and fingerprints
    names, loaded = [], {}
    for d in spec.datasets:
        bars = load_scenario(d, "DATASET").bars
        name = str(Path(d).resolve()) if Path(d).is_dir() else d
        if name in loaded:
            raise LiqbotError(f"DATASET {d!r}: given twice")
        if len(bars) < 10:
            raise LiqbotError(f"DATASET {d!r}: {len(bars)} bars, need at least 10")
        names.append(name)
        loaded[name] = (d, bars, fingerprint(bars))
    if spec.tiers is not None or spec.leverage is not None:
        from bot.mechanics import brackets as br
        syms = sorted({b.symbol for _, b, _ in loaded.values()})
        tables = ((s, br.for_symbol(s, spec.tiers)) for s in syms)
        setup = replace(setup, tables=tuple(
            (s, b if spec.leverage is None else br.at_leverage(b, spec.leverage, clamp=True))
            for s, b in tables))
        digest = setup.digest()
    wins: dict[str, list[Window]] = {}
    for name, (d, bars, _) in loaded.items():
        if spec.walk_forward is None:
            wins[name] = [Window(-1, (0, len(bars)))]
            continue
        tr, sep, te = spec.walk_forward.partition(":")
        if not sep:
            raise LiqbotError(f"--walk-forward: expected TRAIN:TEST (e.g. 2d:1d or 2880:1440), "
                              f"got {spec.walk_forward!r}")
        wins[name] = windows(len(bars), parse_span(tr, bars.interval_ms),
                             parse_span(te, bars.interval_ms), repr(d))

    skipped, reason = 0, ""
    combos: list[dict[str, Any]] = []
    if spec.trials is None:          # refused before OUT gets a manifest of a sweep never run
        combos, skipped, reason = expand(grid, cls)
        if not combos:
            raise LiqbotError(f"--grid: every combination is refused by {cls.name}; first: {reason}")
    _check_manifest(out, {"version": 1, "setup": setup.describe()})
    runner = _Runner(setup, backend, Journal(out), progress)
    wf = spec.walk_forward is not None
    seg = "train" if wf else "full"
    # selection groups: all datasets together (no walk-forward) or one per (dataset, window)
    groups: list[list[tuple[str, Window]]] = (
        [[(n, w)] for n in names for w in wins[n]] if wf else [[(n, wins[n][0]) for n in names]])

    def tasks_of(group: list[tuple[str, Window]], params: dict[str, Any], segment: str) -> list[Task]:
        out_ = []
        for n, w in group:
            span = w.test if segment == "test" else w.train
            assert span is not None
            out_.append(make_task(digest, n, loaded[n][2], w.index, segment, span, params))
        return out_

    def group_score(rows: dict[str, dict[str, Any]], tasks: list[Task]) -> float:
        scores = [score(rows[t.key], spec.objective) for t in tasks]
        return -math.inf if any(s == -math.inf for s in scores) else float(np.mean(scores))

    candidates: list[list[dict[str, Any]]] = []   # per group, in sampling order
    if spec.trials is None:
        runner.rows([t for g in groups for p in combos for t in tasks_of(g, p, seg)])
        candidates = [combos for _ in groups]
    else:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        for g in groups:
            study = optuna.create_study(direction="maximize",
                                        sampler=optuna.samplers.TPESampler(seed=spec.seed))
            cands: list[dict[str, Any]] = []
            left = spec.trials
            while left > 0:
                batch = [study.ask() for _ in range(min(TRIAL_BATCH, left))]
                left -= len(batch)
                asked = []
                for trial in batch:
                    raw = _suggest(trial, grid)
                    try:
                        asked.append((trial, dict(cls(**raw).params)))
                    except LiqbotError as exc:
                        skipped += 1
                        reason = reason or f"{raw}: {exc}"
                        study.tell(trial, state=optuna.trial.TrialState.FAIL)
                rows = runner.rows([t for _, p in asked for t in tasks_of(g, p, seg)])
                for trial, p in asked:
                    s = group_score(rows, tasks_of(g, p, seg))
                    study.tell(trial, s if math.isfinite(s) else -1e300)
                    if p not in cands:
                        cands.append(p)
            if not cands:
                raise LiqbotError(f"--trials: every sampled parameter set is refused by {cls.name}; "
                                  f"first: {reason}")
            candidates.append(cands)

    # selection: the best parameter set of each group (ties: the first in sampling order)
    rows_all = runner.journal.rows
    chosen: list[dict[str, Any]] = []
    for g, cands in zip(groups, candidates, strict=True):
        best = max(range(len(cands)), key=lambda i: (group_score(rows_all, tasks_of(g, cands[i], seg)), -i))
        chosen.append(cands[best])
    if wf:
        runner.rows([t for g, p in zip(groups, chosen, strict=True) for t in tasks_of(g, p, "test")])

    # assemble: datasets in command-line order, windows, segment, candidates in order
    ordered: list[dict[str, Any]] = []
    for g, cands, best in zip(groups, candidates, chosen, strict=True):
        for p in cands:
            for t in tasks_of(g, p, seg):
                ordered.append({**rows_all[t.key], "chosen": p == best})
        if wf:
            ordered.extend({**rows_all[t.key], "chosen": True} for t in tasks_of(g, best, "test"))
    rank = {n: i for i, n in enumerate(names)}
    ordered.sort(key=lambda r: (rank[r["dataset"]], r["window"], r["segment"] == "test"))
    for r in ordered:
        r["dataset"] = loaded[r["dataset"]][0]
        r["objective"] = r.get(spec.objective)
    write_parquet(ordered, out / RESULTS)
    result = SweepResult(ordered, list(grid), runner.ran, runner.reused, skipped, reason)
    if wf:
        for n in names:
            d, bars, _ = loaded[n]
            tests = [r for r in ordered if r["dataset"] == d and r["segment"] == "test"]
            result.concatenated[d] = concatenated(tests, spec.wallet, bars.interval_ms)
    return result
