"""The strategy protocol: declared parameters, a causal batch `targets` and a streaming form.

`targets(bars, signals)` returns, for every bar, the signed target LEVERAGE (position
notional / equity; + long, - short) decided at that bar's close and executed at the next
bar's open: `len(bars)` FINITE floats (0.0 where it has no view yet: NaN / inf stop a
backtest naming the first such bar; the daemon holds the previous target). It may use
bars[:t+1] and signals[:t+1] only; `liqbot backtest --check-lookahead` recomputes it on
prefixes and fails on any difference. Every strategy takes `leverage`: target exposure x
leverage = notional / equity.

What it reads (read-only arrays, one row per bar): `bars.close`, `bars.ts`, `bars["high"]`,
optional columns when `bars.has(name)` (units in `bot.data.bars`; `funding_rate` is NaN
except on a settlement's bar); `signals.positioning[:, positioning.C_*]` (funding, its
z-score, carry, open-interest changes, ratios, taker imbalance, heatmap asymmetry, the
crowding scores C_LONG_SCORE / C_SHORT_SCORE in [0, 1]); `signals.detectors[:,
detectors.D_*]` (D_CASCADE_STATE +1 long cascade / -1 short squeeze / 0, strengths,
D_EXHAUSTION_STATE, ...); `signals.heatmap` per-bar series (`long_total`, `short_total`,
`near_long`, `near_short`, `consumed_long`, `consumed_short`, `confidence`) and `clusters`
(n, 6): nearest dense liquidation cluster below (price, far edge, share) then above, NaN
when none.

User strategies are loaded as `--strategy module:Class` (PYTHONPATH, else the current
directory); a subclass that sets no `name` is named "module:Class". An exception raised in
the user's own code (importing the module, `check()`, `targets()`) is a UserCodeError
naming their file and line (exit 2), not a bug in liqbot.

Streaming (the daemon): `stream(symbol, interval_ms)` returns a `StrategyStream` whose
`update(x, out)` takes ONE closed bar's input row (`bot.signals.stream.X_*`) and that bar's
signal output row (`O_HEAT + H_*`, `O_POS + C_*`, `O_DET + D_*`), both float64, and returns
the target leverage for that bar without recomputing history. `state()` is a checkpoint
(bytes); `Strategy.stream_from(blob)` resumes from it (re-stepping history from a fresh
`stream()` gives the same result). Three forms:
- exact: a subclass returns a `StepForm` from `step_form()`: a float64 state array and a
  step over (state, x, out) that calls the same `@njit` step kernel the batch `targets`
  loops over, so stream == batch bar for bar (tests/test_strategy_stream.py);
- bounded window, the default for user strategies that only implement `targets`: set the
  class attribute `WINDOW` (bars); the stream keeps the last WINDOW rows and returns
  `targets(window_bars, window_signals)[-1]`. The rebuilt `Bars` holds ts, OHLC and volume
  always, and every other column of the X_* row once any bar stepped so far had a value
  there (sticky, so `funding_rate` stays present between settlements; `trades`,
  `taker_buy_quote_volume`, `index_close`, `open_interest_value` are not in the row and
  never present). The rebuilt `Signals` holds the heatmap per-bar series (from the
  H_* slice), positioning and detectors; the whole-map fields of the heatmap (`mass`,
  `meta`, `snapshots`, `snapshot_lo`) are EMPTY arrays. Exact only when `targets` at bar t
  depends on at most the last WINDOW bars (`--check-lookahead` compares it with the batch
  targets at sampled bars: `backtests.lookahead.stream_check`);
- custom: override `stream()` (and `stream_from()`) with your own `StrategyStream`.
With none of these, `stream()` raises LiqbotError.

Sizing (common parameter `sizing`, default the class attribute `SIZING`; read it as
`strategy.sizing`); the backtester and the daemon implement it:
- `entry`: the position's base quantity is fixed when the target changes (target x equity /
  price at that decision) and held until the target changes again: price moves change its
  leverage, not its size;
- `rebalance`: constant leverage: the quantity is re-sized whenever the actual leverage
  drifts outside the rebalancing band around the target.

Parameters are declared with `Param` (type float, int, str or bool, default, choices of
that type, bounds `lo`/`hi`, open or closed); `check()` enforces relations between them
(e.g. fast < slow). Violations raise LiqbotError naming the parameter: "--param fast:
expected ..., got ..."; a declared default that violates its own Param is named as a
declaration error. A bool parameter takes true/false, 1/0, yes/no, on/off.
"""

from __future__ import annotations

import inspect
import io
import json
import math
import sysconfig
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np

from bot.data.bars import Bars
from bot.data.dataset import iso
from bot.errors import LiqbotError, UserCodeError
from bot.signals import detectors as dt
from bot.signals import heatmap as hm
from bot.signals import positioning as ps
from bot.signals import stream as ss
from bot.signals.pipeline import Signals

SIZINGS: tuple[str, ...] = ("entry", "rebalance")
MAX_LEVERAGE = 125.0
#: The types a `Param` may declare.
KINDS: tuple[type, ...] = (float, int, str, bool)
# what a bool parameter accepts (`--param short=0`, `short=yes`, ...); bool("0") is True
_BOOLS: dict[Any, bool] = {True: True, False: False, "true": True, "false": False,
                           "1": True, "0": False, "yes": True, "no": False, "on": True,
                           "off": False}


@dataclass(frozen=True)
class Param:
    """A strategy parameter: type (float, int, str), default, help, allowed values, and
    optional numeric bounds: value >= lo (> lo when `lo_open`), value <= hi (< hi when
    `hi_open`). Floats must be finite."""

    kind: type
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __post_init__(self) -> None:
        """Refuse a declaration no value could pass: an unsupported `kind`, or `choices` not
        of that kind (int choices written as strings would never match an int)."""
        if self.kind not in KINDS:
            raise LiqbotError(f"Param kind must be one of float, int, str, bool; got "
                              f"{getattr(self.kind, '__name__', self.kind)!r}")
        ok = (int, float) if self.kind is float else self.kind
        bad = [c for c in self.choices
               if not isinstance(c, ok) or isinstance(c, bool) and self.kind is not bool]
        if bad:
            raise LiqbotError(f"Param choices must be {self.kind.__name__} values like the "
                              f"parameter; got {bad[0]!r} in {self.choices!r}")

    def range_text(self, key: str) -> str:
        """'0 < leverage <= 125', 'fast >= 1', ... ('' when unbounded)."""
        left = "" if self.lo is None else f"{self.lo:g} {'<' if self.lo_open else '<='} "
        right = "" if self.hi is None else f" {'<' if self.hi_open else '<='} {self.hi:g}"
        if self.lo is not None and self.hi is None:
            return f"{key} {'>' if self.lo_open else '>='} {self.lo:g}"
        return f"{left}{key}{right}" if left or right else ""

    def parse(self, key: str, raw: Any) -> Any:
        """The typed, validated value of `raw` (LiqbotError naming `key` otherwise)."""
        name = self.kind.__name__
        try:
            if self.kind is bool:
                value: Any = _BOOLS[raw.strip().lower() if isinstance(raw, str) else raw]
            elif self.kind is int and isinstance(raw, float):
                if not raw.is_integer():
                    raise ValueError
                value = int(raw)
            elif self.kind is int and isinstance(raw, str):
                value = int(raw.strip())
            else:
                value = self.kind(raw)
        except (TypeError, ValueError, OverflowError, KeyError):
            want = "true or false (1/0, yes/no, on/off)" if self.kind is bool else name
            raise LiqbotError(f"--param {key}: expected {want}, got {raw!r}") from None
        if self.kind is float and not math.isfinite(value):
            raise LiqbotError(f"--param {key}: expected a finite float, got {raw!r}")
        if self.choices and value not in self.choices:
            raise LiqbotError(f"--param {key}: expected one of {', '.join(self.choices)}, "
                              f"got {value!r}")
        if self.lo is not None or self.hi is not None:
            low_bad = self.lo is not None and (value <= self.lo if self.lo_open
                                               else value < self.lo)
            high_bad = self.hi is not None and (value >= self.hi if self.hi_open
                                                else value > self.hi)
            if low_bad or high_bad:
                raise LiqbotError(f"--param {key}: expected {self.range_text(key)}, got {value!r}")
        return value


#: The bounds every `leverage` parameter gets when its Param declares none.
LEVERAGE = Param(float, 3.0, "notional / equity at full exposure", lo=0.0, hi=MAX_LEVERAGE,
                 lo_open=True)


def leverage(default: float, help: str) -> Param:
    """A `leverage` parameter in (0, 125]."""
    return Param(float, default, help, lo=0.0, hi=MAX_LEVERAGE, lo_open=True)


def window(default: int, help: str) -> Param:
    """A length in bars (>= 1)."""
    return Param(int, default, help, lo=1)


_OURS = Path(__file__).resolve().parents[1]            # the repository: bot/, strategies/, ...
_LIBS: tuple[Path, ...] = tuple({Path(v).resolve() for k, v in sysconfig.get_paths().items()
                                 if k in ("stdlib", "platstdlib", "purelib", "platlib")})


def _frames(exc: BaseException) -> list[tuple[Path, int]]:
    """File and line of every Python frame of `exc`'s traceback, outermost first."""
    out: list[tuple[Path, int]] = []
    tb = exc.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        out.append((Path(name) if name.startswith("<") else Path(name).resolve(), tb.tb_lineno))
        tb = tb.tb_next
    return out


def _is_ours(where: Path) -> bool:
    """True for liqbot's own code (bot/, strategies/, backtests/)."""
    return any(where.is_relative_to(_OURS / d) for d in ("bot", "strategies", "backtests"))


def _is_library(where: Path) -> bool:
    """True for the Python installation (stdlib, site-packages) and frozen modules."""
    return str(where).startswith("<") or any(where.is_relative_to(lib) for lib in _LIBS)


def _blame(exc: BaseException) -> tuple[Path, int] | None:
    """Where a user's error is theirs: the innermost frame of their own code (outside
    liqbot and the Python installation, so a numpy function they called badly is not
    named but their line calling it is); None when the innermost frame is liqbot's own
    code (a bug in liqbot; but a LiqbotError there is liqbot refusing what the user's code
    asked, e.g. a bad `Param` declaration) or the error is out of memory."""
    if isinstance(exc, MemoryError):
        return None
    frames = _frames(exc)
    if not frames or _is_ours(frames[-1][0]) and not isinstance(exc, LiqbotError):
        return None
    if isinstance(exc, SyntaxError) and exc.filename:     # raised by the compiler, no frame
        return Path(exc.filename).resolve(), exc.lineno or 0
    mine = [f for f in frames if not _is_ours(f[0]) and not _is_library(f[0])]
    return mine[-1] if mine else frames[-1]


def user_code_error(exc: BaseException, what: str) -> UserCodeError | None:
    """`exc`, raised while liqbot called a user's strategy code (`what`, e.g. "strategy
    m:C: targets()"), as the UserCodeError naming the type, file and line; None when it is
    liqbot's own (re-raise it: a bug)."""
    where = _blame(exc)
    if where is None:
        return None
    text = exc.msg if isinstance(exc, SyntaxError) else str(exc)
    hint = " (bars and signals are shared read-only inputs: copy a column before " \
        "changing it, e.g. bars['close'].copy())" \
        if "read-only" in text or "readonly" in text else ""
    return UserCodeError(f"{what} raised {type(exc).__name__} at {where[0].name}:{where[1]}: "
                         f"{text}{hint}")


def _shipped(strategy: Strategy) -> bool:
    """True for a strategy class defined in `strategies/` (a built-in)."""
    try:
        return Path(inspect.getfile(type(strategy))).resolve().is_relative_to(_OURS /
                                                                               "strategies")
    except (TypeError, OSError):
        return False


def targets_of(strategy: Strategy, bars: Bars, signals: Signals,
               finite: bool = True) -> np.ndarray:
    """`strategy.targets(bars, signals)` as one finite float64 leverage per bar (contiguous),
    the one place every runner and stream calls a strategy through. `finite=False` lets
    NaN / inf through (the daemon's window stream: the daemon holds the previous target).

    An error raised in a user strategy's own code (outside this repository: not a
    built-in, not the lazily computed signals, not a built-in it subclasses), or targets of
    the wrong shape or not finite from a user strategy, is that strategy's error: a
    UserCodeError naming it (and the line; exit 2, `--debug` prints the traceback), not a
    bug in liqbot. A write into the shared read-only bars or signals gets a hint."""
    name = f"{type(strategy).__module__}:{type(strategy).__name__}"
    try:
        raw = strategy.targets(bars, signals)
    except LiqbotError:
        raise
    except Exception as exc:
        err = user_code_error(exc, f"strategy {name}: targets()")
        if err is None:
            raise                            # ours: a bug in liqbot (or out of memory)
        raise err from exc
    bad = ValueError if _shipped(strategy) else UserCodeError
    try:
        tg = np.ascontiguousarray(raw, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise bad(f"strategy {name}: targets() returned {type(raw).__name__}, not numbers "
                  f"({exc})") from None
    if tg.shape != (len(bars),):
        raise bad(f"strategy {name}: targets() returned shape {tg.shape} for {len(bars)} "
                  f"bars; expected one finite leverage per bar, shape ({len(bars)},)")
    if finite and not np.isfinite(tg).all():
        wrong = np.flatnonzero(~np.isfinite(tg))
        i = int(wrong[0])
        raise bad(f"strategy {name}: targets() returned non-finite values on {len(wrong):,} "
                  f"of {len(bars):,} bars, first {tg[i]} at bar {i} ({iso(int(bars.ts[i]))});"
                  f" expected one finite leverage per bar (return 0.0, flat, where it has no "
                  f"view yet, e.g. during a warm-up)")
    return tg


class StepForm(NamedTuple):
    """An exact streaming form: the initial float64 state and a step over (state, x, out)
    returning the bar's target leverage (mutates state)."""

    init: np.ndarray
    step: Callable[[np.ndarray, np.ndarray, np.ndarray], float]


class StrategyStream:
    """One closed bar at a time: `update(x, out)` -> target leverage; `state()` -> bytes."""

    def update(self, x: np.ndarray, out: np.ndarray) -> float:
        raise NotImplementedError

    def state(self) -> bytes:
        raise NotImplementedError


def _pack(strategy: Strategy, kind: str, arrays: dict[str, np.ndarray]) -> bytes:
    meta = json.dumps({"strategy": strategy.name, "params": strategy.params, "kind": kind})
    buf = io.BytesIO()
    np.savez(buf, meta=np.array(meta), **arrays)
    return buf.getvalue()


def _unpack(strategy: Strategy, blob: bytes, kind: str) -> dict[str, np.ndarray]:
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(str(arrays.pop("meta")))
    except Exception as exc:  # noqa: BLE001 - any decoding failure is a bad checkpoint
        raise LiqbotError(f"strategy checkpoint: not a strategy state ({exc})") from None
    want = {"strategy": strategy.name, "params": strategy.params, "kind": kind}
    if meta != want:
        raise LiqbotError(f"strategy checkpoint: made by {meta.get('strategy')}"
                          f"({meta.get('params')}, {meta.get('kind')} stream), not by "
                          f"{strategy.describe()} ({kind} stream)")
    return arrays


class KernelStream(StrategyStream):
    """The exact streaming form: a state array stepped by the strategy's step kernel."""

    def __init__(self, strategy: Strategy, form: StepForm) -> None:
        self.strategy = strategy
        self._st = np.array(form.init, dtype=np.float64)
        self._step = form.step

    def update(self, x: np.ndarray, out: np.ndarray) -> float:
        if x.shape != (ss.N_X,) or out.shape != (ss.N_OUT,):
            raise ValueError(f"{self.strategy.name} stream: rows of shape {x.shape}, "
                             f"{out.shape}; expected ({ss.N_X},), ({ss.N_OUT},)")
        return float(self._step(self._st, x, out))

    def state(self) -> bytes:
        return _pack(self.strategy, "kernel", {"state": self._st})

    def restore(self, blob: bytes) -> KernelStream:
        st = _unpack(self.strategy, blob, "kernel").get("state")
        if st is None or st.shape != self._st.shape or st.dtype != np.float64:
            raise LiqbotError("strategy checkpoint: state array of the wrong shape for "
                              f"{self.strategy.describe()}")
        self._st = st.copy()
        return self


# X_* column -> Bars column (the bounded-window rebuild)
_X_COLUMNS: tuple[tuple[int, str], ...] = (
    (ss.X_OPEN, "open"), (ss.X_HIGH, "high"), (ss.X_LOW, "low"), (ss.X_CLOSE, "close"),
    (ss.X_VOLUME, "volume"), (ss.X_QUOTE_VOLUME, "quote_volume"),
    (ss.X_TAKER_BUY, "taker_buy_volume"), (ss.X_MARK_OPEN, "mark_open"),
    (ss.X_MARK_HIGH, "mark_high"), (ss.X_MARK_LOW, "mark_low"),
    (ss.X_MARK_CLOSE, "mark_close"), (ss.X_FUNDING, "funding_rate"),
    (ss.X_PREMIUM, "premium_close"), (ss.X_OI, "open_interest"),
    (ss.X_LS_RATIO, "long_short_ratio"), (ss.X_TOP_RATIO, "top_long_short_ratio"),
    (ss.X_LIQ_LONG, "liq_long_notional"), (ss.X_LIQ_SHORT, "liq_short_notional"))
_ALWAYS = frozenset({"open", "high", "low", "close", "volume"})


def bars_from_rows(x: np.ndarray, symbol: str, interval_ms: int,
                   present: np.ndarray | None = None) -> Bars:
    """A `Bars` from input rows (n, N_X): required columns always, the others where
    `present[X_*]` (default: not all-NaN in `x`); `filled` is x[X_FILLED] == 1.0."""
    seen = ~np.isnan(x).all(axis=0) if present is None else present
    cols: dict[str, np.ndarray] = {"ts": x[:, ss.X_TS].astype(np.int64)}
    for i, name in _X_COLUMNS:
        if name in _ALWAYS or seen[i]:
            cols[name] = x[:, i].copy()
    if seen[ss.X_FILLED]:
        cols["filled"] = x[:, ss.X_FILLED] == 1.0
    return Bars(symbol, interval_ms, cols)


def signals_from_rows(out: np.ndarray) -> Signals:
    """A `Signals` from output rows (n, N_OUT): heatmap per-bar series, positioning and
    detectors; the heatmap's whole-map fields (mass, meta, snapshots) are empty arrays."""
    h = out[:, ss.O_HEAT:ss.O_HEAT + ss.N_HEAT]
    run = hm.HeatmapRun(
        long_total=h[:, ss.H_LONG_TOTAL].copy(), short_total=h[:, ss.H_SHORT_TOTAL].copy(),
        consumed_long=h[:, ss.H_CONSUMED_LONG].copy(),
        consumed_short=h[:, ss.H_CONSUMED_SHORT].copy(),
        near_long=h[:, ss.H_NEAR_LONG].copy(), near_short=h[:, ss.H_NEAR_SHORT].copy(),
        confidence=h[:, ss.H_CONFIDENCE].copy(),
        clusters=h[:, ss.H_CLUSTER_BELOW:ss.H_CLUSTER_ABOVE_SHARE + 1].copy(),
        mass=np.empty((2, 0)), meta=np.empty(0), snapshots=np.empty((0, 2, 0)),
        snapshot_lo=np.empty(0))
    return Signals(run, out[:, ss.O_POS:ss.O_POS + ps.N_COMPONENTS].copy(),
                   out[:, ss.O_DET:ss.O_DET + dt.N_DETECTOR].copy())


def window_target(strategy: Strategy, x: np.ndarray, out: np.ndarray, seen: np.ndarray,
                  symbol: str, interval_ms: int) -> float:
    """What the bounded-window stream trades at a bar: `targets` over the window's input
    rows `x` (m, N_X) and signal rows `out` (m, N_OUT), oldest first, ending at that bar,
    its last value. `seen`: the X_* columns that had a value at any bar so far (the
    optional columns the window's Bars carry). Also run by `--check-lookahead`
    (`backtests.lookahead.stream_check`) at sampled bars."""
    bars = bars_from_rows(x, symbol, interval_ms, seen)
    return float(targets_of(strategy, bars, signals_from_rows(out), finite=False)[-1])


class WindowStream(StrategyStream):
    """The bounded-window default: batch `targets` over the last WINDOW bars, last value."""

    def __init__(self, strategy: Strategy, size: int, symbol: str, interval_ms: int) -> None:
        self.strategy = strategy
        self.size = size
        self.symbol = symbol
        self.interval_ms = interval_ms
        self._x = np.full((size, ss.N_X), np.nan)
        self._out = np.full((size, ss.N_OUT), np.nan)
        self._seen = np.zeros(ss.N_X, dtype=bool)   # X_* columns that ever had a value
        self._count = 0

    def update(self, x: np.ndarray, out: np.ndarray) -> float:
        if x.shape != (ss.N_X,) or out.shape != (ss.N_OUT,):
            raise ValueError(f"WindowStream.update: rows of shape {x.shape}, {out.shape}; "
                             f"expected ({ss.N_X},), ({ss.N_OUT},)")
        i = self._count % self.size
        self._x[i] = x
        self._out[i] = out
        self._seen |= ~np.isnan(x)
        self._count += 1
        m = min(self._count, self.size)
        order = (np.arange(self._count - m, self._count)) % self.size   # oldest first
        return window_target(self.strategy, self._x[order], self._out[order], self._seen,
                             self.symbol, self.interval_ms)

    def state(self) -> bytes:
        return _pack(self.strategy, "window", {
            "x": self._x, "out": self._out, "seen": self._seen,
            "count": np.array([self._count], np.int64)})

    def restore(self, blob: bytes) -> WindowStream:
        a = _unpack(self.strategy, blob, "window")
        if (set(a) != {"x", "out", "seen", "count"} or a["x"].shape != self._x.shape
                or a["out"].shape != self._out.shape or a["seen"].shape != self._seen.shape):
            raise LiqbotError(f"strategy checkpoint: window of the wrong shape for "
                              f"{self.strategy.describe()} (WINDOW={self.size})")
        self._x, self._out = a["x"].copy(), a["out"].copy()
        self._seen = a["seen"].astype(bool)
        self._count = int(a["count"][0])
        return self


class Strategy:
    """Base class: subclasses set `name`, `PARAMS` and implement `targets`; optionally
    `check` (relations between parameters), `step_form` (exact streaming) or `WINDOW`."""

    name: ClassVar[str] = "base"
    PARAMS: ClassVar[dict[str, Param]] = {"leverage": LEVERAGE}
    SIZING: ClassVar[str] = "entry"
    WINDOW: ClassVar[int | None] = None
    _auto_name: ClassVar[bool] = False        # `name` was derived, not set

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A subclass that sets no `name` is named `module:Class` (not the base's "base",
        which every unnamed strategy would share: in its output, its paper run's identity
        and its checkpoints)."""
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            cls._auto_name = False
        elif cls.name == Strategy.name or cls._auto_name:
            cls.name = f"{cls.__module__}:{cls.__qualname__}"
            cls._auto_name = True

    def __init__(self, **params: Any) -> None:
        known = {**self.PARAMS, "sizing": self._sizing_param()}
        unknown = set(params) - set(known)
        if unknown:
            raise LiqbotError(f"--param: {self.name} has no parameter {sorted(unknown)[0]!r}; "
                              f"known: {', '.join(known)}")
        self.params: dict[str, Any] = {}
        for key, spec in known.items():
            if key == "leverage" and spec.lo is None and spec.hi is None:
                spec = Param(spec.kind, spec.default, spec.help, spec.choices, LEVERAGE.lo,
                             LEVERAGE.hi, LEVERAGE.lo_open, LEVERAGE.hi_open)
            if key in params:
                self.params[key] = spec.parse(key, params[key])
                continue
            try:
                self.params[key] = spec.parse(key, spec.default)
            except LiqbotError as exc:
                where = "its SIZING" if key == "sizing" else f"its PARAMS[{key!r}]"
                raise LiqbotError(f"strategy {self.name}: the default of {key} declared in "
                                  f"{where} is invalid ({exc}); fix the declaration or "
                                  f"pass --param {key}=VALUE") from None
        try:
            self.check()
        except LiqbotError:
            raise
        except Exception as exc:
            err = user_code_error(exc, f"strategy {type(self).__module__}:"
                                       f"{type(self).__name__}: check()")
            if err is None:
                raise
            raise err from exc

    @classmethod
    def _sizing_param(cls) -> Param:
        return Param(str, cls.SIZING, "entry: quantity fixed at each target change; "
                     "rebalance: constant leverage within the band", SIZINGS)

    @property
    def sizing(self) -> str:
        """'entry' or 'rebalance' (see the module docstring)."""
        return str(self.params["sizing"])

    @classmethod
    def from_strings(cls, pairs: Mapping[str, str]) -> Strategy:
        return cls(**dict(pairs))

    def check(self) -> None:
        """Relations between parameters; raise LiqbotError("--param KEY: ...")."""

    def require(self, ok: bool, key: str, expected: str) -> None:
        """Raise "--param KEY: expected EXPECTED, got VALUE" unless `ok`."""
        if not ok:
            raise LiqbotError(f"--param {key}: expected {expected}, got {self.params[key]!r}")

    def targets(self, bars: Bars, signals: Signals) -> np.ndarray:
        """Target leverage per bar. In a backtest `signals` is a `pipeline.LazySignals`:
        its fields (heatmap, positioning, detectors) are computed when first read; pass
        `signals.get()` where a real `Signals` NamedTuple is needed (a numba function)."""
        raise NotImplementedError

    def step_form(self) -> StepForm | None:
        """The exact streaming form (None: none; the WINDOW default may apply)."""
        return None

    def stream(self, symbol: str = "", interval_ms: int = 60_000) -> StrategyStream:
        """A fresh stream at the start of history. `symbol` and `interval_ms` are only used
        by the bounded-window form (to rebuild `Bars`)."""
        form = self.step_form()
        if form is not None:
            return KernelStream(self, form)
        if self.WINDOW is not None:
            if not (isinstance(self.WINDOW, int) and self.WINDOW >= 1):
                raise LiqbotError(f"strategy {self.name}: WINDOW must be an int >= 1, "
                                  f"got {self.WINDOW!r}")
            return WindowStream(self, self.WINDOW, symbol, interval_ms)
        raise LiqbotError(
            f"strategy {self.name} has no streaming form, so it cannot run live: set the class "
            "attribute WINDOW = <bars> when targets() at bar t needs only the last WINDOW "
            "bars, or override step_form() (exact state + step) or stream()")

    def stream_from(self, blob: bytes, symbol: str = "", interval_ms: int = 60_000
                    ) -> StrategyStream:
        """Resume a stream from `state()` bytes made by the same strategy and parameters."""
        fresh = self.stream(symbol, interval_ms)
        if isinstance(fresh, (KernelStream, WindowStream)):
            return fresh.restore(blob)
        raise LiqbotError(f"strategy {self.name} overrides stream(); override stream_from() "
                          "too to restore its checkpoints")

    def describe(self) -> str:
        return f"{self.name}(" + ", ".join(f"{k}={v}" for k, v in self.params.items()) + ")"
