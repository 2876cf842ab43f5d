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
from bot.mechanics.fills import window_inputs
from bot.risk import engine as en
from bot.risk.inputs import risk_inputs
from bot.risk.policy import RiskPolicy
from bot.signals import detectors as dt
from bot.signals import positioning as ps
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


def prepare(bars: Bars, signals: Signals, settings: RunSettings) -> Inputs:
    """Market arrays (mark falls back to last-trade prices), fill-model windows and the
    risk engine's signal matrix, all causal."""
    n = len(bars)

    def col(name: str, fallback: str | None = None) -> np.ndarray:
        if bars.has(name):
            out = np.ascontiguousarray(bars[name], dtype=np.float64)
            if fallback is not None:
                out = np.where(np.isfinite(out), out, bars[fallback])
            return out
        if fallback is not None:
            return np.ascontiguousarray(bars[fallback], dtype=np.float64)
        return np.full(n, np.nan)

    close = col("close")
    qv = col("quote_volume") if bars.has("quote_volume") else bars["volume"] * close
    liq = np.nan_to_num(col("liq_long_notional")) + np.nan_to_num(col("liq_short_notional"))
    vol_w, sig_w, liq_w = window_inputs(close, qv, liq, settings.fills.window_bars)
    market = {"ts": bars.ts, "open": col("open"), "high": col("high"), "low": col("low"),
              "close": close, "mark_open": col("mark_open", "open"),
              "mark_high": col("mark_high", "high"), "mark_low": col("mark_low", "low"),
              "mark_close": col("mark_close", "close"), "funding": col("funding_rate"),
              "window": np.ascontiguousarray(np.stack([vol_w, sig_w, liq_w], axis=1))}
    filled = bars["filled"] if bars.has("filled") else np.zeros(n, dtype=np.bool_)
    bph = max(1, 3_600_000 // bars.interval_ms)
    pos, det = signals.positioning, signals.detectors
    sig = risk_inputs(close, market["high"], market["low"], bars["volume"].astype(np.float64),
                      filled, market["mark_close"], pos[:, ps.C_LONG_SCORE],
                      pos[:, ps.C_SHORT_SCORE], det[:, dt.D_CASCADE_STATE],
                      det[:, dt.D_EXHAUSTION_STATE], signals.heatmap.clusters, bph, 4 * bph)
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
        progress: Callable[[int], None] | None = None) -> RunResult:
    """One backtest run over every bar of `inputs`."""
    bars = inputs.bars
    n = len(bars)
    targets = np.ascontiguousarray(strategy.targets(bars, inputs.signals), dtype=np.float64)
    if targets.shape != (n,) or not np.isfinite(targets).all():
        raise ValueError(f"strategy {strategy.name} returned targets of shape {targets.shape} "
                         "or non-finite values; expected one finite leverage per bar")
    acct, pos = ac.new_account(settings.wallet, 2, leverage=125.0)
    st = np.zeros(eg.N_STATE)
    st[: kn.N_K] = kn.new_state(settings.wallet)
    rec = np.zeros((n, eg.N_REC))
    trd = np.zeros((2 * n + 16, eg.N_TRD))
    dcs = np.zeros((n + 16, eg.N_DCS))
    fp = fill_params(settings, sizing_of(strategy))
    pol = policy.to_array()
    m = inputs.market
    b = brackets
    floor, cap, mmr, cum, _ = ac.stack_brackets([b, b])   # slot 0 and the hedge slot
    for t0 in range(0, n, CHUNK):
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
                     metrics(rec, trades, decisions, st, acct, settings, bars), targets)


def sizing_of(strategy: Strategy) -> str:
    """The strategy's position sizing: `entry` (default) or `rebalance`."""
    sizing = str(getattr(strategy, "sizing", "entry"))
    if sizing not in kn.SIZINGS:
        raise ValueError(f"unknown sizing {sizing!r}; expected one of {list(kn.SIZINGS)}")
    return sizing


def fill_params(settings: RunSettings, sizing: str) -> np.ndarray:
    """The kernel's fill, fee and sizing parameters (`bot.execution.kernel.F_*`)."""
    f = settings.fills
    fp = np.zeros(kn.N_FP)
    fp[kn.F_COEF] = f.impact_coef
    fp[kn.F_HALF_SPREAD] = f.half_spread_bps * 1e-4
    fp[kn.F_LIQ_MULT] = f.liq_multiplier
    fp[kn.F_MAX_IMPACT] = f.max_impact
    fp[kn.F_TAKER] = settings.fees.taker
    fp[kn.F_LIQ_FEE] = settings.fees.liquidation
    fp[kn.F_BAND] = settings.band
    fp[kn.F_SIZING] = kn.SIZINGS[sizing]
    return fp


def interventions(rec: np.ndarray) -> int:
    """Binding risk interventions: episodes (runs of consecutive bars) in which the risk
    decision changed the strategy's target. Decisions that only logged a state are not
    counted."""
    c = rec[:, eg.R_CLIPPED] > 0.0 if len(rec) else np.zeros(0, dtype=bool)
    return int(np.count_nonzero(c[1:] & ~c[:-1]) + (1 if len(c) and c[0] else 0))


def metrics(rec: np.ndarray, trades: np.ndarray, decisions: np.ndarray, st: np.ndarray,
            acct: np.ndarray, settings: RunSettings, bars: Bars) -> dict[str, Any]:
    eq = np.r_[settings.wallet, rec[:, eg.R_EQUITY]]
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
        "time_in_market": float((rec[:, eg.R_QTY] != 0.0).mean()) if len(rec) else 0.0,
        "n_trades": int((~liq).sum()),
        "liquidated_at": None if first_liq is None else iso(int(bars.ts[int(first_liq[0])])),
        "liquidation_price": None if first_liq is None else float(first_liq[3]),
        "n_risk_actions": interventions(rec),
        "n_decision_changes": int(len(decisions)),
        "max_leverage_used": float(np.abs(rec[:, eg.R_LEVERAGE]).max()) if len(rec) else 0.0,
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
