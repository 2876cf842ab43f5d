"""Preparing inputs, running the numba loop in chunks, and collecting results.

Units: wallet and notionals in quote (USDT), quantities in base, leverage = notional /
equity, returns and drawdowns as fractions, timestamps int64 ms UTC.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from backtests import engine as eg
from backtests.metrics import MINUTES_PER_YEAR, max_drawdown, ratios
from bot.config import FillsConfig
from bot.data.bars import Bars
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
from strategies.base import Strategy

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
    """Arrays the loop reads, computed once per dataset."""

    bars: Bars
    market: dict[str, np.ndarray]
    sig: np.ndarray
    signals: Signals


def prepare(bars: Bars, brackets: Brackets, settings: RunSettings) -> Inputs:
    """Market arrays, fill-model windows and the risk engine's signal matrix, all causal,
    from one run of the signal step kernel the daemon steps bar by bar
    (`bot.signals.stream`; the same input fallbacks: mark falls back to last-trade prices)."""
    x = sm.bar_matrix(bars)
    signals, out = pipeline.compute_stream(bars, brackets, fill_window=settings.fills.window_bars,
                                           x=x)

    def col(k: int) -> np.ndarray:
        return np.ascontiguousarray(x[:, k])

    market = {"ts": bars.ts, "open": col(sm.X_OPEN), "high": col(sm.X_HIGH),
              "low": col(sm.X_LOW), "close": col(sm.X_CLOSE), "mark_open": col(sm.X_MARK_OPEN),
              "mark_high": col(sm.X_MARK_HIGH), "mark_low": col(sm.X_MARK_LOW),
              "mark_close": col(sm.X_MARK_CLOSE), "funding": col(sm.X_FUNDING),
              "window": np.ascontiguousarray(out[:, sm.O_FILL:sm.O_FILL + sm.N_FILL])}
    sig = np.ascontiguousarray(out[:, sm.O_SIG:sm.O_SIG + en.N_SIG])
    return Inputs(bars, market, sig, signals)


@dataclass
class RunResult:
    name: str
    records: np.ndarray          # (n, eg.N_REC)
    trades: np.ndarray           # (k, eg.N_TRD)
    decisions: np.ndarray        # (m, eg.N_DCS)
    metrics: dict[str, float]
    targets: np.ndarray


def run(inputs: Inputs, strategy: Strategy, policy: RiskPolicy, brackets: Brackets,
        settings: RunSettings, name: str,
        progress: Callable[[int], None] | None = None, start: int = 0) -> RunResult:
    """One backtest run over every bar of `inputs`. With `start` > 0 the account opens at
    bar `start` (fresh wallet, no position, fresh risk memory): the bars before it only warm
    the signals and the strategy; their records are flat at the wallet and the metrics
    that count bars (interventions, time in market) read bars from `start` on."""
    bars = inputs.bars
    n = len(bars)
    if not 0 <= start < max(n, 1):
        raise ValueError(f"start {start} outside the {n} bars")
    targets = np.ascontiguousarray(strategy.targets(bars, inputs.signals), dtype=np.float64)
    if targets.shape != (n,) or not np.isfinite(targets).all():
        raise ValueError(f"strategy {strategy.name} returned targets of shape {targets.shape} "
                         "or non-finite values; expected one finite leverage per bar")
    acct, pos = ac.new_account(settings.wallet, 2, leverage=125.0)
    st = np.zeros(eg.N_STATE)
    st[: kn.N_K] = kn.new_state(settings.wallet)
    rec = np.zeros((n, eg.N_REC))
    rec[:start, eg.R_EQUITY] = settings.wallet
    rec[:start, eg.R_WALLET] = settings.wallet
    trd = np.zeros((2 * n + 16, eg.N_TRD))
    dcs = np.zeros((n + 16, eg.N_DCS))
    fp = fill_params(settings, sizing_of(strategy))
    pol = policy.to_array()
    m = inputs.market
    b = brackets
    floor, cap, mmr, cum, _ = ac.stack_brackets([b, b])   # slot 0 and the hedge slot
    for t0 in range(start, n, CHUNK):
        t1 = min(n, t0 + CHUNK)
        eg.run_chunk(t0, t1, m["ts"], m["open"], m["close"], m["mark_open"], m["mark_high"],
                     m["mark_low"], m["mark_close"], m["funding"], m["window"], inputs.sig,
                     targets, pol, fp, floor, cap, mmr, cum, b.cap, b.max_leverage, acct, pos,
                     st, rec, trd, dcs)
        if progress:
            progress(t1 - t0)
    trades = trd[: int(min(st[eg.ST_N_TRADES], len(trd)))]
    decisions = dcs[: int(min(st[eg.ST_N_DEC], len(dcs)))]
    return RunResult(name, rec, trades, decisions,
                     metrics(rec, trades, decisions, st, acct, settings, bars, start), targets)


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
    eq = np.r_[settings.wallet, live[:, eg.R_EQUITY]]      # the account's bars only
    bars_per_year = MINUTES_PER_YEAR * 60_000 / bars.interval_ms
    sharpe, sortino = ratios(eq, bars_per_year)
    liq = trades[:, 6] == 1.0 if len(trades) else np.zeros(0, dtype=bool)
    first_liq = trades[liq][0] if liq.any() else None
    return {
        "initial_equity": settings.wallet,
        "final_equity": float(eq[-1]),
        "total_return": float(eq[-1] / settings.wallet - 1.0),
        "max_drawdown": max_drawdown(eq),
        "sharpe": sharpe,
        "sortino": sortino,
        "liquidations": int(liq.sum()),
        "funding": float(acct[ac.A_FUNDING]),
        "fees": float(acct[ac.A_FEES]),
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
