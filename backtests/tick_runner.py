"""Tick replay around the numba loop of `backtests.ticks`: where the ticks come from, the
bars they aggregate into, chunked runs with progress, and results in the bar runner's form.

The bars of a tick replay are the ticks' own aggregation (`bot.data.trades.aggregate`);
what trades cannot tell (mark prices, funding, open interest, ratios, realised
liquidations) is joined from the dataset's bars: state columns by bar time, event columns
(funding, liquidation notional) onto the first tick bar at or after their bar, a moved
settlement still paid on its own minute's mark (`funding_marks`). Signals,
fill windows and the strategy's targets then come from the bar runner's `prepare`, so a
bar and a tick replay of the same data see the same signals.
Units: as `backtests.runner` (quote, base, leverage = notional / equity, int64 ms UTC).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backtests import engine as eg
from backtests import ticks as tk
from backtests.runner import (
    Inputs,
    RunResult,
    RunSettings,
    fill_params,
    flat_before,
    metrics,
    prepare,
    sizing_of,
)
from bot.data.bars import MINUTE_MS, OPTIONAL_COLUMNS, Bars
from bot.data.dataset import Dataset, iso
from bot.data.trades import TRADES_TABLE, Ticks, bars_of, from_tables, load_files
from bot.errors import LiqbotError
from bot.execution import kernel as kn
from bot.mechanics import account as ac
from bot.mechanics.brackets import Brackets
from bot.risk import engine as en
from bot.risk.policy import RiskPolicy
from bot.signals import stream as sm
from strategies.base import Strategy, targets_of

#: Ticks per chunk of the numba loop (one progress step).
CHUNK_TICKS = 2_000_000
#: Columns that land on one bar (summed onto the next tick bar when their bar has no tick).
EVENT_COLUMNS = ("funding_rate", "liq_long_notional", "liq_short_notional",
                 "agg_taker_buy_notional", "agg_taker_sell_notional")
STATE_COLUMNS = tuple(c for c in OPTIONAL_COLUMNS if c not in EVENT_COLUMNS + ("filled",)) + \
    ("index_close",)


@dataclass
class TickInputs:
    """What the tick loop reads, computed once per dataset: the ticks, their bars (with
    the first tick of each bar in `starts`, plus the end), and the bar runner's inputs."""

    ticks: Ticks
    starts: np.ndarray
    inputs: Inputs
    liq_notional: np.ndarray
    fund_mark: np.ndarray          # the mark each bar's funding settles at (`funding_marks`)

    @property
    def bars(self) -> Bars:
        return self.inputs.bars


def ticks_of(ds: Dataset, label: str) -> tuple[Ticks, Bars]:
    """A dataset's ticks and the bars to join them with: its `trades` (and `liquidations`)
    tables, or for a synthetic dataset without them, its tick mode generated now (the
    same seed gives the same ticks as `liqbot data synth --ticks`)."""
    if TRADES_TABLE not in ds.tables and "generator" in ds.meta:
        from bot.data.synthetic_ticks import add_ticks
        ds = add_ticks(ds)
    return from_tables(ds.bars.symbol, ds.tables, label), ds.bars


def tick_source(ds: Dataset | None, label: str, start_ms: int | None = None,
                end_ms: int | None = None) -> tuple[Ticks, Bars | None]:
    """The ticks (and the bars to join) of a dataset (`ticks_of`), or with `ds` None of the
    Binance Vision trades / aggTrades file `label`; cut to [start_ms, end_ms)."""
    if ds is None:
        ticks, base = load_files([Path(label)]), None
    else:
        ticks, base = ticks_of(ds, label)
    if start_ms is not None or end_ms is not None:
        ticks = ticks.between(start_ms, end_ms)
        base = base.between(start_ms, end_ms) if base is not None else None
    if len(ticks) == 0:
        raise LiqbotError(f"{label}: no trades in the selected span")
    return ticks, base


def tick_bars(ticks: Ticks, base: Bars | None,
              interval_ms: int | None = None) -> tuple[Bars, np.ndarray]:
    """The ticks' bars with `base`'s other columns joined (module docstring), and each
    bar's first tick index (+ the end)."""
    step = int(interval_ms or (base.interval_ms if base is not None else MINUTE_MS))
    bars, starts = bars_of(ticks.trades, step)
    extra: dict[str, np.ndarray] = {}
    if base is not None and len(base):
        bts = base.ts
        idx = np.searchsorted(bars.ts, bts, "left")
        exact = (idx < len(bars)) & (bars.ts[np.minimum(idx, len(bars) - 1)] == bts)
        for name in STATE_COLUMNS:
            if base.has(name):
                col = np.full(len(bars), np.nan)
                col[idx[exact]] = base[name][exact]
                extra[name] = col
        inside = (idx < len(bars)) & (bts >= bars.ts[0])
        for name in EVENT_COLUMNS:
            if base.has(name):
                v = np.asarray(base[name], np.float64)
                ok = inside & np.isfinite(v)
                col = np.full(len(bars), np.nan)
                if ok.any():
                    sums = np.bincount(idx[ok], weights=v[ok], minlength=len(bars))
                    hit = np.bincount(idx[ok], minlength=len(bars)) > 0
                    col[hit] = sums[hit]
                if name != "funding_rate":
                    col = np.where(np.isnan(col) & (bars.ts >= bts[0]) &
                                   (bars.ts < base.end_ms), 0.0, col)
                extra[name] = col
    if "liq_long_notional" not in extra and len(ticks.liq_ts):
        # the bar containing the tick, or the next bar when its minute had no trade
        k = np.searchsorted(bars.ts, ticks.liq_ts - step + 1, "left")
        ok = k < len(bars)
        notional = ticks.liq_price * ticks.liq_qty
        for name, s in (("liq_long_notional", 1), ("liq_short_notional", -1)):
            m = ok & (ticks.liq_side == s)
            extra[name] = np.bincount(k[m], weights=notional[m], minlength=len(bars))
    return bars.with_columns(**extra), starts


def funding_marks(bars: Bars, base: Bars | None) -> np.ndarray:
    """The mark (quote per base) each tick bar's funding settles at: the bar's own mark
    open (`stream.bar_column`: the trade open without mark klines), except on a bar that
    `tick_bars` moved a settlement onto from a minute without trades: there the mark open
    of the settlement's own minute in `base` (what a bar replay of `base` pays on; the
    position cannot change in between, no tick traded), rate-weighted when several
    settlements land on one bar."""
    mark = np.array(sm.bar_column(bars, sm.X_MARK_OPEN), dtype=np.float64)
    if base is None or not len(base) or not base.has("funding_rate") or not len(bars):
        return mark
    bts = base.ts
    rate = np.asarray(base["funding_rate"], np.float64)
    idx = np.searchsorted(bars.ts, bts, "left")
    at = np.minimum(idx, len(bars) - 1)
    ok = (idx < len(bars)) & (bts >= bars.ts[0]) & np.isfinite(rate)
    moved = ok & (bars.ts[at] != bts)
    if not moved.any():
        return mark
    m_j = np.where(moved, sm.bar_column(base, sm.X_MARK_OPEN), mark[at])
    n = len(bars)
    count = np.bincount(idx[ok], minlength=n)
    num = np.bincount(idx[ok], weights=(rate * m_j)[ok], minlength=n)
    den = np.bincount(idx[ok], weights=rate[ok], minlength=n)
    last = np.zeros(n)
    last[idx[moved]] = m_j[moved]
    hit = np.zeros(n, dtype=bool)
    hit[idx[moved]] = True
    weighted = np.divide(num, den, out=last.copy(), where=den != 0.0)
    mark[hit] = np.where(count[hit] == 1, last[hit], weighted[hit])
    return mark


def prepare_ticks(ticks: Ticks, base: Bars | None, brackets: Brackets,
                  settings: RunSettings) -> TickInputs:
    """Bars of the ticks, their signals and fill windows (`runner.prepare`)."""
    if len(ticks) == 0:
        raise LiqbotError(f"{ticks.source or 'ticks'}: no trades in the selected span")
    bars, starts = tick_bars(ticks, base)
    if len(bars) < 10:
        raise LiqbotError(f"{ticks.source or 'ticks'}: the ticks make {len(bars)} bar(s); "
                          "a backtest needs at least 10")
    return TickInputs(ticks, starts, prepare(bars, brackets, settings),
                      np.ascontiguousarray(ticks.liq_price * ticks.liq_qty),
                      funding_marks(bars, base))


@dataclass
class TickResult(RunResult):
    trade_ticks: np.ndarray      # tick index of each row of `trades`
    events: int                  # ticks replayed
    every_n: int                 # 0: decisions at bar closes


def run_ticks(ti: TickInputs, strategy: Strategy, policy: RiskPolicy, brackets: Brackets,
              settings: RunSettings, name: str, every_n: int = 0,
              progress: Callable[[int], None] | None = None, start: int = 0) -> TickResult:
    """One tick replay over every tick of `ti`; decisions at bar closes (`every_n` = 0) or
    every `every_n` ticks. Metrics as the bar runner's, with the first liquidation's time
    to the tick. With `start` > 0 the account opens at bar `start`, as `runner.run`'s: the
    bars before it only warm the signals and the strategy; their ticks are not replayed."""
    if every_n < 0:
        raise LiqbotError(f"--risk-every: expected 0 (bar closes) or a positive number of "
                          f"ticks, got {every_n}")
    bars = ti.bars
    n = len(bars)
    if not 0 <= start < max(n, 1):
        raise ValueError(f"start {start} outside the {n} bars")
    targets = targets_of(strategy, bars, ti.inputs.signals)
    acct, pos = ac.new_account(settings.wallet, 2, leverage=125.0)
    st = tk.new_state(settings.wallet, every_n)
    dec = np.zeros(en.N_DECISION)
    out = np.zeros(kn.N_DECIDE)
    rec = np.zeros((n, eg.N_REC))
    flat_before(rec, start, settings.wallet)
    n_dec_max = n + 16 if every_n == 0 else n + len(ti.ticks) // every_n + 16
    trd = np.zeros((2 * n_dec_max + 16, eg.N_TRD))
    trd_tick = np.zeros(len(trd), np.int64)
    dcs = np.zeros((n_dec_max, eg.N_DCS))
    fp = fill_params(settings, sizing_of(strategy))
    pol = policy.to_array()
    m = ti.inputs.market
    t = ti.ticks.trades
    floor, cap, mmr, cum, _ = ac.stack_brackets([brackets, brackets])
    k0 = start
    while k0 < n:
        k1 = int(np.searchsorted(ti.starts, ti.starts[k0] + CHUNK_TICKS, "left"))
        k1 = min(n, max(k1, k0 + 1))
        tk.run_chunk(k0, k1, int(every_n), t.ts, t.price, t.qty, ti.starts, m["ts"],
                     m["close"], ti.fund_mark, m["mark_high"], m["mark_low"],
                     m["mark_close"], m["funding"], m["window"], ti.inputs.sig, targets,
                     ti.ticks.liq_ts, ti.liq_notional, pol, fp, floor, cap, mmr, cum,
                     brackets.cap, brackets.max_leverage, acct, pos, st, dec, out, rec, trd,
                     trd_tick, dcs)
        if progress:
            progress(int(ti.starts[k1] - ti.starts[k0]))
        k0 = k1
    n_trd = int(min(st[tk.TS_N_TRADES], len(trd)))
    trades = trd[:n_trd]
    decisions = dcs[: int(min(st[tk.TS_N_DEC], len(dcs)))]
    res = metrics(rec, trades, decisions, st, acct, settings, bars, start)
    liq = np.flatnonzero(trades[:, 6] == 1.0) if n_trd else np.zeros(0, np.int64)
    if len(liq):
        res["liquidated_at"] = iso(int(t.ts[trd_tick[liq[0]]]))
    return TickResult(name, rec, trades, decisions, res, targets, trd_tick[:n_trd],
                      len(t) - int(ti.starts[start]), int(every_n))
