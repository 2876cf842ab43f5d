"""Preparing inputs, running the numba loop in chunks, and collecting results.

Units: wallet and notionals in quote (USDT), quantities in base, leverage = notional /
equity, returns and drawdowns as fractions, timestamps int64 ms UTC.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from backtests import engine as eg
from backtests.metrics import MINUTES_PER_YEAR, max_drawdown, ratios
from bot.config import FillsConfig
from bot.data.bars import REQUIRED_COLUMNS, Bars
from bot.data.dataset import iso
from bot.execution import kernel as kn
from bot.mechanics import account as ac
from bot.mechanics.brackets import Brackets
from bot.mechanics.fees import VenueFees, venue_fees
from bot.risk import engine as en
from bot.risk.policy import RiskPolicy
from bot.signals import pipeline
from bot.signals import stream as sm
from bot.signals.pipeline import Signals
from strategies.base import Strategy, targets_of

CHUNK = 50_000


@dataclass(frozen=True)
class RunSettings:
    """Account and execution settings shared by the runs of one backtest."""

    wallet: float = 100_000.0                 # initial equity, quote
    fills: FillsConfig = FillsConfig()
    fees: VenueFees = field(default_factory=lambda: venue_fees("binance"))
    band: float = 0.05                        # no rebalance within 5% of the position


@dataclass
class Inputs:
    """Arrays the loop reads, computed once per dataset. `signals` may be a
    `pipeline.LazySignals` (computed when a strategy first reads it)."""

    bars: Bars
    market: dict[str, np.ndarray]
    sig: np.ndarray
    signals: Signals


#: bar_matrix columns of the loop's market arrays (`market` keys)
_MARKET = (("open", sm.X_OPEN), ("high", sm.X_HIGH), ("low", sm.X_LOW), ("close", sm.X_CLOSE),
           ("mark_open", sm.X_MARK_OPEN), ("mark_high", sm.X_MARK_HIGH),
           ("mark_low", sm.X_MARK_LOW), ("mark_close", sm.X_MARK_CLOSE),
           ("funding", sm.X_FUNDING))


def prepare(bars: Bars, brackets: Brackets, settings: RunSettings,
            keep_signals: bool = False, risk_rows: bool = True) -> Inputs:
    """Market arrays, fill-model windows and the risk engine's signal matrix, all causal,
    from one run of the signal step kernel the daemon steps bar by bar
    (`bot.signals.stream`; the same input fallbacks: mark falls back to last-trade prices).

    Memory: the kernel runs in chunks (`pipeline.compute_chunked`); the market arrays are
    the Bars' own columns where no fallback applies (`stream.bar_column`); the strategies'
    `signals` are computed in the same run with `keep_signals`, else on first use (a
    second run of the kernel, only for a strategy or caller that reads them). With
    `risk_rows` False (one run per dataset) the signal matrix and fill windows are not
    kept: `run` steps the kernel chunk by chunk beside the loop (a kernel run per `run`)."""
    fw = settings.fills.window_bars
    if keep_signals or risk_rows:
        signals, sig, window = pipeline.compute_chunked(bars, brackets, fill_window=fw,
                                                        signals=keep_signals, risk=risk_rows)
    else:
        signals, sig, window = None, np.zeros((0, en.N_SIG)), np.zeros((0, sm.N_FILL))
    if signals is None:
        signals = cast(Signals, pipeline.LazySignals(bars, brackets, fw))
    market = {"ts": bars.ts, **{k: sm.bar_column(bars, j) for k, j in _MARKET},
              "window": window}
    return Inputs(bars, market, sig, signals)


def trim_columns(bars: Bars, strategy: Strategy) -> Bars:
    """`bars` with only the columns a bar backtest of `strategy` reads, when it is one of
    the built-in strategies (`strategies.BUILTIN`, which read signal inputs only; tested):
    the signal inputs (`stream.INPUT_COLUMNS`) and the required OHLCV. Any other strategy
    keeps every column. Everything downstream (the market arrays, the report, the decision
    rows, the lookahead check) reads signal inputs only. Memory: what a run never reads (a
    Binance dataset's trades count, taker buy quote volume, open interest value: 4 MB a
    column for a year of 1m bars) is freed once nothing else holds the full Bars."""
    from strategies import BUILTIN

    if type(strategy) not in BUILTIN.values() or not len(bars):
        return bars
    keep = sm.INPUT_COLUMNS | set(REQUIRED_COLUMNS)
    if keep >= set(bars.columns):
        return bars
    return Bars(bars.symbol, bars.interval_ms,
                {k: v for k, v in bars.columns.items() if k in keep})


@dataclass
class RunResult:
    name: str
    records: np.ndarray          # (n, eg.N_REC), or (n, eg.N_REC_CORE): `run`'s record_columns
    trades: np.ndarray           # (k, eg.N_TRD)
    decisions: np.ndarray        # (m, eg.N_DCS)
    metrics: dict[str, float]
    targets: np.ndarray


def run(inputs: Inputs, strategy: Strategy, policy: RiskPolicy, brackets: Brackets,
        settings: RunSettings, name: str,
        progress: Callable[[int], None] | None = None, start: int = 0,
        record_columns: int = eg.N_REC) -> RunResult:
    """One backtest run over every bar of `inputs`. With `start` > 0 the account opens at
    bar `start` (fresh wallet, no position, fresh risk memory): the bars before it only warm
    the signals and the strategy; their records are flat at the wallet and the metrics
    that count bars (interventions, time in market) read bars from `start` on.

    `record_columns`: eg.N_REC keeps every per-bar record column; eg.N_REC_CORE only the
    first ones (equity, position, leverage, clipped: what `metrics`, `decision_rows` and
    the report read), 4 float64 a bar instead of 13."""
    bars = inputs.bars
    n = len(bars)
    if not 0 <= start < max(n, 1):
        raise ValueError(f"start {start} outside the {n} bars")
    if record_columns not in (eg.N_REC_CORE, eg.N_REC):
        raise ValueError(f"record_columns: expected {eg.N_REC_CORE} or {eg.N_REC}, got "
                         f"{record_columns}")
    targets = targets_of(strategy, bars, inputs.signals)
    acct, pos = ac.new_account(settings.wallet, 2, leverage=125.0)
    st = np.zeros(eg.N_STATE)
    st[: kn.N_K] = kn.new_state(settings.wallet)
    rec = np.zeros((n, record_columns))
    flat_before(rec, start, settings.wallet)
    trd = np.zeros((2 * n + 16, eg.N_TRD))
    dcs = np.zeros((n + 16, eg.N_DCS))
    fp = fill_params(settings, sizing_of(strategy))
    pol = policy.to_array()
    m = inputs.market
    b = brackets
    floor, cap, mmr, cum, _ = ac.stack_brackets([b, b])   # slot 0 and the hedge slot

    def loop(t0: int, t1: int, window: np.ndarray, sig: np.ndarray) -> None:
        eg.run_chunk(t0, t1, m["ts"], m["open"], m["close"], m["mark_open"], m["mark_high"],
                     m["mark_low"], m["mark_close"], m["funding"], window, sig, targets, pol,
                     fp, floor, cap, mmr, cum, b.cap, b.max_leverage, acct, pos, st, rec, trd,
                     dcs)
        if progress:
            progress(t1 - t0)

    if len(inputs.sig) == n:
        for t0 in range(start, n, CHUNK):
            loop(t0, min(n, t0 + CHUNK), m["window"], inputs.sig)
    else:                                # `prepare(risk_rows=False)`: signals beside the loop
        sig, window = _Rows(n, en.N_SIG), _Rows(n, sm.N_FILL)

        def sink(t0: int, out: np.ndarray) -> None:
            t1 = t0 + len(out)
            sig.a[t0:t1] = out[:, sm.O_SIG:sm.O_SIG + en.N_SIG]
            window.a[t0:t1] = out[:, sm.O_FILL:sm.O_FILL + sm.N_FILL]
            if t1 > start:
                loop(max(t0, start), t1, window.a, sig.a)
            sig.release(t1)              # bar t reads sig[t] and window[t - 1] only
            window.release(t1 - 1)

        if n:
            pipeline.stream_chunks(bars, brackets, sink, pipeline.CHUNK,
                                   fill_window=settings.fills.window_bars)
    trades = trd[: int(min(st[eg.ST_N_TRADES], len(trd)))]
    decisions = dcs[: int(min(st[eg.ST_N_DEC], len(dcs)))]
    return RunResult(name, rec, trades, decisions,
                     metrics(rec, trades, decisions, st, acct, settings, bars, start), targets)


class _Rows:
    """An (n, k) float64 array `a` in private anonymous memory whose leading rows, once
    read for the last time, go back to the OS (`release`): the streamed signal rows of one
    run stay resident about one chunk at a time while the loop still indexes them by bar.
    Without MAP_PRIVATE / MADV_DONTNEED (not Linux or macOS) a plain array, kept whole."""

    def __init__(self, n: int, k: int) -> None:
        self._map = None
        if hasattr(mmap, "MAP_PRIVATE") and hasattr(mmap, "MADV_DONTNEED"):
            # private: MADV_DONTNEED then frees the pages (a shared mapping would keep them)
            self._map = mmap.mmap(-1, max(1, n * k * 8), flags=mmap.MAP_PRIVATE)
            self.a = np.frombuffer(self._map, dtype=np.float64, count=n * k).reshape(n, k)
        else:
            self.a = np.zeros((n, k))
        self._row = k * 8
        self._done = 0

    def release(self, rows: int) -> None:
        """Drop the whole pages of rows [0, rows) (never read again; they would read 0)."""
        end = rows * self._row // mmap.PAGESIZE * mmap.PAGESIZE
        if self._map is not None and end > self._done:
            self._map.madvise(mmap.MADV_DONTNEED, self._done, end - self._done)
            self._done = end


def sizing_of(strategy: Strategy) -> str:
    """The strategy's position sizing: `entry` (default) or `rebalance`."""
    sizing = str(getattr(strategy, "sizing", "entry"))
    if sizing not in kn.SIZINGS:
        raise ValueError(f"unknown sizing {sizing!r}; expected one of {list(kn.SIZINGS)}")
    return sizing


def fill_params(settings: RunSettings, sizing: str) -> np.ndarray:
    """The kernel's fill, fee and sizing parameters for these settings."""
    return kn.fill_params(settings.fills, settings.fees, settings.band, sizing)


def interventions(rec: np.ndarray) -> int:
    """Binding risk interventions: episodes (runs of consecutive bars) in which the risk
    decision changed the order sent (`kernel.decide`'s clipped flag). Decisions that only
    logged a state, or capped inside the rebalance band, are not counted."""
    c = rec[:, eg.R_CLIPPED] > 0.0 if len(rec) else np.zeros(0, dtype=bool)
    return int(np.count_nonzero(c[1:] & ~c[:-1]) + (1 if len(c) and c[0] else 0))


def metrics(rec: np.ndarray, trades: np.ndarray, decisions: np.ndarray, st: np.ndarray,
            acct: np.ndarray, settings: RunSettings, bars: Bars,
            start: int = 0) -> dict[str, Any]:
    live = rec[start:]
    # the equity curve: the wallet, then the account's bars (read in place, not copied)
    w0 = settings.wallet
    eq = live[:, eg.R_EQUITY]
    last = eq[-1] if len(eq) else np.float64(w0)
    bars_per_year = MINUTES_PER_YEAR * 60_000 / bars.interval_ms
    sharpe, sortino = ratios(eq, bars_per_year, first=w0)
    liq = trades[:, 6] == 1.0 if len(trades) else np.zeros(0, dtype=bool)
    first_liq = trades[liq][0] if liq.any() else None
    return {
        "initial_equity": settings.wallet,
        "final_equity": float(last),
        "total_return": float(last / w0 - 1.0),
        "max_drawdown": max_drawdown(eq, first=w0),
        "sharpe": sharpe,
        "sortino": sortino,
        "liquidations": int(liq.sum()),
        "funding": float(acct[ac.A_FUNDING]),
        "fees": float(acct[ac.A_FEES]),
        # the part of `fees` the liquidations' clearance took (often all the equity left)
        "liquidation_fees": float(trades[liq, 4].sum()) if len(trades) else 0.0,
        "slippage": float(trades[:, 5].sum()) if len(trades) else 0.0,
        "time_in_market": float((live[:, eg.R_QTY] != 0.0).mean()) if len(live) else 0.0,
        "n_trades": int((~liq).sum()),
        "liquidated_at": None if first_liq is None else iso(int(bars.ts[int(first_liq[0])])),
        "liquidation_price": None if first_liq is None else float(first_liq[3]),
        "n_risk_actions": interventions(live),
        "n_decision_changes": int(len(decisions)),
        "max_leverage_used": float(np.abs(live[:, eg.R_LEVERAGE]).max()) if len(live) else 0.0,
        "bust": bool(st[kn.K_BUST]),
    }


def flat_before(rec: np.ndarray, start: int, wallet: float) -> None:
    """The records of the bars before an account opened at `start`: equity (and wallet,
    when kept) at the opening wallet, no position."""
    rec[:start, eg.R_EQUITY] = wallet
    if rec.shape[1] > eg.R_WALLET:
        rec[:start, eg.R_WALLET] = wallet


def from_bar(result: RunResult, k: int) -> RunResult:
    """The run seen from bar `k` on (records, trades and decisions re-indexed to it): what a
    report of an account opened at `k` (`run(..., start=k)`) draws. Metrics unchanged."""
    if k == 0:
        return result
    trades = result.trades[result.trades[:, 0] >= k].copy() if len(result.trades) \
        else result.trades
    decisions = result.decisions[result.decisions[:, 0] >= k].copy() \
        if len(result.decisions) else result.decisions
    if len(trades):
        trades[:, 0] -= k
    if len(decisions):
        decisions[:, 0] -= k
    return RunResult(result.name, result.records[k:], trades, decisions, result.metrics,
                     result.targets[k:])


def decision_rows(result: RunResult, bars: Bars) -> list[dict[str, Any]]:
    """The decision timeline with rendered reasons (outside the kernel)."""
    from bot.risk.reasons import reason_names, render
    rows = []
    for d in result.decisions:
        t = int(d[0])
        dec = d[3:]
        side = float(np.sign(result.records[t, eg.R_QTY]) or np.sign(d[1]) or 1.0)
        rows.append({"ts": iso(int(bars.ts[t])), "bar": t,
                     "state": en.STATE_NAMES[int(dec[en.D_STATE])],
                     "reasons": reason_names(int(dec[en.D_REASONS])),
                     "target_notional": float(d[1]), "allowed_notional": float(d[2]),
                     "text": render(dec, side)})
    return rows
