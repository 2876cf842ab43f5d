"""Signals one bar at a time: the layouts the backtester and the daemon share.

A bar enters as one float64 row (`X_*` columns, built from a Bars container or a feed's bar
dict with the same fallbacks everywhere); the step kernel writes one output row (`O_*`
offsets) holding the heatmap's per-bar figures, the positioning components, the detector
states, the risk engine's signal row and the fill model's trailing window. The backtester
steps the same kernel over a whole dataset; the daemon steps it once per closed bar.

Layout of the input row (units as in `bot.data.bars`):
X_TS (bar open, ms UTC as float64: exact below 2**53), X_OPEN, X_HIGH, X_LOW, X_CLOSE,
X_VOLUME (base), X_QUOTE_VOLUME (quote), X_TAKER_BUY (base), X_MARK_OPEN, X_MARK_HIGH,
X_MARK_LOW, X_MARK_CLOSE, X_FUNDING (rate per interval, NaN unless settled in the bar),
X_PREMIUM, X_OI (base), X_LS_RATIO, X_TOP_RATIO, X_LIQ_LONG, X_LIQ_SHORT (quote),
X_FILLED (1.0 for a gap-filled bar), X_FUNDING_AVG (vendor OI-weighted funding, rate per 8h,
a state column; NaN when absent).

Layout of the output row: O_HEAT + H_* (heatmap per bar), O_POS + ps.C_* (positioning),
O_DET + dt.D_* (detectors), O_SIG + en.S_* (risk engine inputs), O_FILL + F_* (fill window).

API: `bar_matrix` / `bar_row` build input rows (`bar_column`: one column of them);
`config` (parameters, read-only) and `new_state` (a `StreamState` of numpy arrays,
written by the kernel) set a stream up; `step` / `run_all` are the njit kernels;
`SignalStream` wraps them for the daemon with `snapshot` / `restore` checkpoints. The
batch functions of each part (`positioning_kernel`, `detector_kernel`, `risk_inputs`,
`window_inputs`) are loops over the same per-part step kernels, so batch and stream agree
bit for bit.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np
from numba import njit

from bot.data.bars import Bars
from bot.data.binance_vision import interval_name
from bot.errors import LiqbotError
from bot.jit import lean
from bot.mechanics import fills as fl
from bot.mechanics.brackets import Brackets
from bot.risk import engine as en
from bot.risk import inputs as ri
from bot.signals import detectors as dt
from bot.signals import heatmap as hm
from bot.signals import positioning as ps

(X_TS, X_OPEN, X_HIGH, X_LOW, X_CLOSE, X_VOLUME, X_QUOTE_VOLUME, X_TAKER_BUY, X_MARK_OPEN,
 X_MARK_HIGH, X_MARK_LOW, X_MARK_CLOSE, X_FUNDING, X_PREMIUM, X_OI, X_LS_RATIO, X_TOP_RATIO,
 X_LIQ_LONG, X_LIQ_SHORT, X_FILLED, X_FUNDING_AVG) = range(21)
N_X = 21

# heatmap per-bar figures, in the order of `heatmap.run_kernel`'s output rows
(H_LONG_TOTAL, H_SHORT_TOTAL, H_CONSUMED_LONG, H_CONSUMED_SHORT, H_NEAR_LONG, H_NEAR_SHORT,
 H_CONFIDENCE, H_CLUSTER_BELOW, H_CLUSTER_BELOW_EDGE, H_CLUSTER_BELOW_SHARE, H_CLUSTER_ABOVE,
 H_CLUSTER_ABOVE_EDGE, H_CLUSTER_ABOVE_SHARE) = range(13)
N_HEAT = 13
# fill model window: quote volume, sigma and liquidation notional over the trailing window
F_VOL_W, F_SIG_W, F_LIQ_W = range(3)
N_FILL = 3

O_HEAT = 0
O_POS = O_HEAT + N_HEAT
O_DET = O_POS + ps.N_COMPONENTS
O_SIG = O_DET + dt.N_DETECTOR
O_FILL = O_SIG + en.N_SIG
N_OUT = O_FILL + N_FILL
# scalar heatmap-side state: the funding rate carried forward from its settlement bar
HS_FUNDING = 0
N_HS = 1

# Bars columns copied as they are (NaN when the dataset lacks them)
_PLAIN: tuple[tuple[int, str], ...] = (
    (X_OPEN, "open"), (X_HIGH, "high"), (X_LOW, "low"), (X_CLOSE, "close"),
    (X_VOLUME, "volume"), (X_FUNDING, "funding_rate"), (X_PREMIUM, "premium_close"),
    (X_OI, "open_interest"), (X_LS_RATIO, "long_short_ratio"),
    (X_TOP_RATIO, "top_long_short_ratio"), (X_LIQ_LONG, "liq_long_notional"),
    (X_LIQ_SHORT, "liq_short_notional"), (X_FUNDING_AVG, "funding_rate_avg"))
# mark prices: a non-finite or missing mark takes the last-trade price of the same bar
_MARKS: tuple[tuple[int, str, int], ...] = (
    (X_MARK_OPEN, "mark_open", X_OPEN), (X_MARK_HIGH, "mark_high", X_HIGH),
    (X_MARK_LOW, "mark_low", X_LOW), (X_MARK_CLOSE, "mark_close", X_CLOSE))
_REQUIRED = ("ts", "open", "high", "low", "close", "volume")
# vendor-only datasets (the 4h exports of ../shared/data/coinglass_4h, docs/data.md):
# open interest falls back to the stablecoin-margined OI (unit undocumented, read as a base
# quantity: the heatmap, crowding and exhaustion read only its relative changes; the
# heatmap's calibration read it so), the taker split to the aggregated taker notionals
OI_FALLBACK = "oi_stablecoin"
TAKER_NOTIONALS = ("agg_taker_buy_notional", "agg_taker_sell_notional")
#: every Bars column `bar_column` (so `bar_matrix` and the backtester's market arrays) reads
INPUT_COLUMNS = frozenset({"ts", "filled", "quote_volume", "taker_buy_volume", OI_FALLBACK,
                           *TAKER_NOTIONALS, *(name for _, name in _PLAIN),
                           *(name for _, name, _ in _MARKS)})


def taker_buy_from_notionals(buy: np.ndarray | float, sell: np.ndarray | float,
                             volume: np.ndarray | float) -> np.ndarray:
    """Taker-buy base volume from aggregated taker buy / sell notionals: their buy share
    times the bar's volume; half the volume where the split is unknown or empty."""
    b, s_, v = (np.asarray(a, dtype=np.float64) for a in (buy, sell, volume))
    ok = np.isfinite(b) & np.isfinite(s_) & (b + s_ > 0.0)
    return np.where(ok, b / np.where(ok, b + s_, 1.0), 0.5) * v


def oi_column(bars: Bars) -> str | None:
    """The column open interest is read from: `open_interest`, else the vendor's
    stablecoin-margined OI (`OI_FALLBACK`), else none."""
    if bars.has("open_interest"):
        return "open_interest"
    return OI_FALLBACK if bars.has(OI_FALLBACK) else None


def taker_columns(bars: Bars) -> tuple[str, ...]:
    """The columns the taker-buy volume is read from: `taker_buy_volume`, else both
    aggregated taker notionals (`TAKER_NOTIONALS`), else none (half the volume)."""
    if bars.has("taker_buy_volume"):
        return ("taker_buy_volume",)
    return TAKER_NOTIONALS if all(bars.has(k) for k in TAKER_NOTIONALS) else ()


def fallbacks_read(bars: Bars) -> list[str]:
    """The vendor fallback columns `bar_column` reads for `bars` (none when the columns
    they stand in for are there)."""
    return [c for c in (oi_column(bars),) if c == OI_FALLBACK] + \
        [c for c in taker_columns(bars) if c in TAKER_NOTIONALS]


def bar_column(bars: Bars, j: int) -> np.ndarray:
    """Column `j` (an X_* index) of `bar_matrix(bars)` as a float64 array, with the same
    fallbacks. A column present as it is (every value valid) is the Bars' own array, not a
    copy, so the backtester reads its market prices without duplicating them: read it,
    never write it."""
    n = len(bars)
    if j == X_TS:
        return bars.ts.astype(np.float64)
    if j == X_FILLED:
        return bars["filled"].astype(np.float64) if bars.has("filled") else np.zeros(n)
    if j == X_OI and oi_column(bars) == OI_FALLBACK:
        return np.asarray(bars[OI_FALLBACK], dtype=np.float64)
    for k, name in _PLAIN:
        if k == j:
            return np.asarray(bars[name], dtype=np.float64) if bars.has(name) else \
                np.full(n, np.nan)
    if j == X_QUOTE_VOLUME:
        return np.asarray(bars["quote_volume"], dtype=np.float64) if bars.has("quote_volume") \
            else bar_column(bars, X_VOLUME) * bar_column(bars, X_CLOSE)
    if j == X_TAKER_BUY:
        src = taker_columns(bars)
        if src == ("taker_buy_volume",):
            return np.asarray(bars["taker_buy_volume"], dtype=np.float64)
        if src:
            return taker_buy_from_notionals(bars[src[0]], bars[src[1]],
                                            bar_column(bars, X_VOLUME))
        return 0.5 * bar_column(bars, X_VOLUME)
    for k, name, trade in _MARKS:
        if k == j:
            if not bars.has(name):
                return bar_column(bars, trade)
            m = np.asarray(bars[name], dtype=np.float64)
            ok = np.isfinite(m)
            return m if ok.all() else np.where(ok, m, bar_column(bars, trade))
    raise ValueError(f"bar_column: no input column {j} (expected 0..{N_X - 1})")


def bar_matrix(bars: Bars) -> np.ndarray:
    """The (n, N_X) input rows of a Bars container, with the project's one set of
    fallbacks (`bar_column`): mark_* per value to the trade price, taker buy (absent
    column) to the aggregated taker notionals' buy share of the volume, else half the
    volume, quote volume (absent column) to volume x close, open interest (absent column)
    to the stablecoin-margined OI, other absent columns to NaN, `filled` to 1.0 / 0.0."""
    n = len(bars)
    # built column by column, then one transpose; the rows are 8 floats longer than needed
    # (a view drops them): with n a multiple of 512 (the chunked runs' 4,096 bars) rows a
    # multiple of 4 KiB apart map to the same cache sets, and the transposing copy's 21
    # reads per output row evicted each other (a year in chunks: 10.9 -> 7.8 ms)
    xt = np.empty((N_X, n + 8))[:, :n]
    for j in range(N_X):
        xt[j] = bar_column(bars, j)
    return np.ascontiguousarray(xt.T)


def bar_row(bar: Mapping[str, Any]) -> np.ndarray:
    """One (N_X,) input row from a bar dict keyed by Bars column names (what a live feed
    delivers). An absent key or None is a missing column; the fallbacks are `bar_matrix`'s,
    so `bar_row` of row t's columns equals `bar_matrix(bars)[t]`."""
    missing = [k for k in _REQUIRED if bar.get(k) is None]
    if missing:
        raise LiqbotError(f"bar {dict(bar)!r}: missing required key(s) {missing}")

    def get(name: str) -> float | None:
        v = bar.get(name)
        return None if v is None else float(v)

    x = np.full(N_X, np.nan)
    x[X_TS] = float(int(bar["ts"]))
    for j, name in _PLAIN:
        v = get(name)
        if v is not None:
            x[j] = v
    if get("open_interest") is None and get(OI_FALLBACK) is not None:
        x[X_OI] = get(OI_FALLBACK)
    vol, close = x[X_VOLUME], x[X_CLOSE]
    qv, tb = get("quote_volume"), get("taker_buy_volume")
    x[X_QUOTE_VOLUME] = vol * close if qv is None else qv
    if tb is None and all(get(k) is not None for k in TAKER_NOTIONALS):
        tb = float(taker_buy_from_notionals(get(TAKER_NOTIONALS[0]), get(TAKER_NOTIONALS[1]),
                                            vol))
    x[X_TAKER_BUY] = 0.5 * vol if tb is None else tb
    for j, name, trade in _MARKS:
        m = get(name)
        x[j] = m if m is not None and math.isfinite(m) else x[trade]
    x[X_FILLED] = 1.0 if bar.get("filled") else 0.0
    return x


class StreamConfig(NamedTuple):
    """Everything `step` reads but never writes: parameters and the bracket arrays."""

    heat: hm.HeatmapParams
    levs: np.ndarray
    weights: np.ndarray
    floor: np.ndarray
    cap: np.ndarray
    mmr: np.ndarray
    cum: np.ndarray
    near: float                  # fraction of the close for the near-price masses
    crowding: ps.CrowdingWeights
    detector: dt.DetectorParams
    bars_per_hour: float         # 60.0 on 1m bars, 0.25 on 4h bars: windows are in hours
    block_bars: int              # cascade block of the risk inputs, bars
    fill_window: int             # bars of the fill model's trailing window


class StreamState(NamedTuple):
    """Everything `step` writes, as numpy arrays (a checkpoint is these arrays).

    mass (2, n_bins) / meta (hm.N_META): the heatmap, lazily scaled (`hm.new_state`);
    heat (N_HS): the last settled funding rate (the heatmap's funding, `step`);
    pos (ps.N_PS) + pos_rates (2, z_window) + pos_day (2, bars in 24 h + 1) + pos_h4 (2, bars
    in 4 h):
    positioning scalars and rings (`ps.new_positioning_state`);
    det (dt.N_DS): detector scalars and the 6-close ring; risk (ri.N_RS): risk-input
    scalars; fill (fl.N_FS) + fill_ring (3, fill_window): the fill model's window.
    """

    mass: np.ndarray
    meta: np.ndarray
    heat: np.ndarray
    pos: np.ndarray
    pos_rates: np.ndarray
    pos_day: np.ndarray
    pos_h4: np.ndarray
    det: np.ndarray
    risk: np.ndarray
    fill: np.ndarray
    fill_ring: np.ndarray


def bars_per_hour(interval_ms: int) -> float:
    """Bars in an hour at `interval_ms` (60.0 for 1m, 0.25 for 4h), the unit of the hourly
    windows and warm-ups of positioning and the risk inputs (`ps.hour_bars` makes whole bars
    of them)."""
    return 3_600_000.0 / int(interval_ms)


def bar_length_note(interval_ms: int) -> str | None:
    """What the risk rules read on bars other than 1m, where they were designed and measured
    (docs/risk.md): positioning and the risk inputs count hours, the cascade detector bars."""
    if interval_ms == 60_000:
        return None
    tf = interval_name(interval_ms)
    return (f"risk rules: measured on 1m bars (docs/risk.md); on {tf} bars positioning and "
            f"the risk inputs read hours, but the cascade detector counts bars (its 5- and "
            f"15-bar moves span {5 * interval_ms / 3_600_000:g} h and "
            f"{15 * interval_ms / 3_600_000:g} h here, its 30-bar hold "
            f"{30 * interval_ms / 3_600_000:g} h)")


def config(interval_ms: int, brackets: Brackets, p: hm.HeatmapParams = hm.HeatmapParams(),
           levs: np.ndarray = hm.DEFAULT_LEVERAGES, weights: np.ndarray = hm.DEFAULT_WEIGHTS,
           near: float = 0.03, crowding: ps.CrowdingWeights = ps.CrowdingWeights(),
           detector: dt.DetectorParams = dt.DetectorParams(),
           fill_window: int = 60) -> StreamConfig:
    """The step kernel's parameters, with `pipeline.compute`'s defaults and the
    backtester's settings (risk block = 4 hours, fill window `FillsConfig().window_bars`)."""
    if interval_ms <= 0 or fill_window < 1:
        raise LiqbotError(f"signal stream: interval_ms ({interval_ms}) and fill_window "
                          f"({fill_window}) must be positive")
    bph = bars_per_hour(interval_ms)
    return StreamConfig(p, np.asarray(levs, dtype=np.float64).copy(),
                        np.asarray(weights, dtype=np.float64).copy(), brackets.floor,
                        brackets.cap, brackets.mmr, brackets.cum, float(near), crowding,
                        detector, bph, ri.block_bars_for(bph), int(fill_window))


def new_state(first_close: float, interval_ms: int, brackets: Brackets,
              p: hm.HeatmapParams = hm.HeatmapParams(), levs: np.ndarray = hm.DEFAULT_LEVERAGES,
              weights: np.ndarray = hm.DEFAULT_WEIGHTS, near: float = 0.03,
              crowding: ps.CrowdingWeights = ps.CrowdingWeights(),
              detector: dt.DetectorParams = dt.DetectorParams(),
              fill_window: int = 60) -> StreamState:
    """Empty state with the heatmap grid centred on `first_close` (quote/base); takes the
    same parameters as `config` (only the sizes matter here)."""
    if not (math.isfinite(first_close) and first_close > 0.0):
        raise LiqbotError(f"signal stream: first close must be a positive price, got "
                          f"{first_close!r}")
    c = config(interval_ms, brackets, p, levs, weights, near, crowding, detector, fill_window)
    mass, meta = hm.new_state(float(first_close), p)
    heat = np.full(N_HS, np.nan)
    # the allocators' Python sources (plain numpy: same arrays): a stream started from
    # Python compiles none of them (0.25-0.3 s of a cold start); compiled callers keep theirs
    pos, rates, day, h4 = ps.new_positioning_state.py_func(c.bars_per_hour, crowding.z_window)
    fill, ring = fl.new_window_state.py_func(c.fill_window)
    return StreamState(mass, meta, heat, pos, rates, day, h4,
                       dt.new_detector_state.py_func(), ri.new_risk_state.py_func(), fill, ring)


@njit(cache=True)
def _nan_to_num(v: float) -> float:
    """np.nan_to_num for one value (NaN -> 0, +-inf -> +-max float)."""
    if v != v:
        return 0.0
    if v == np.inf:
        return 1.7976931348623157e308
    if v == -np.inf:
        return -1.7976931348623157e308
    return v


# inline="always": numba inlines `step` (and, inside it, `hm.update`, marked the same way)
# into its compiled callers at the IR level, so `run_steps` loops over the step's body
# instead of calling it per bar. A call passes every array of the state and config tuples
# as exploded structs (~190 words for `step`, ~90 for `update`); inlined, the year's batch
# run took ~170 instead of ~200 ms of CPU, and the backtest's cold compile fell ~0.3 s.
# Same source, same IEEE arithmetic (no fastmath): the rows are bit-identical
# (tests/test_lean.py compares them with `step` called bar by bar). Each specialization of
# a caller re-types the inlined bodies, so keep the callers to one signature (see
# `run_snapshots`). Measured and left out: inlining `hm.side_mass_near` and `hm.nearest_clusters`
# too (~10 ms faster, ~0.5 s more cold compile); `detector_step`, `_add`, `_recenter`,
# `_consume` (no faster, or much slower: 157 -> 210-240 ms).
@njit(cache=True, inline="always")
def step(s: StreamState, c: StreamConfig, x: np.ndarray, out: np.ndarray) -> None:
    """Step every signal by the bar `x` (N_X,) and write its output row `out` (N_OUT,):
    heatmap, positioning (reads the heatmap's near masses), detectors (read the heatmap's
    consumption), risk inputs (read all three) and the fill window."""
    close = x[X_CLOSE]
    if np.isfinite(x[X_FUNDING]):
        s.heat[HS_FUNDING] = x[X_FUNDING]
    # the map's funding: the last settled rate; before any settlement, the vendor's
    # OI-weighted average of this bar (`heatmap.map_funding`, the batch form)
    fund = s.heat[HS_FUNDING] if np.isfinite(s.heat[HS_FUNDING]) else x[X_FUNDING_AVG]
    cl, cs = hm.update(s.mass, s.meta, c.heat, c.levs, c.weights, c.floor, c.cap, c.mmr, c.cum,
                       close, x[X_MARK_HIGH], x[X_MARK_LOW], x[X_OI], x[X_TAKER_BUY],
                       x[X_VOLUME], x[X_QUOTE_VOLUME], x[X_LS_RATIO], fund,
                       x[X_LIQ_LONG], x[X_LIQ_SHORT])
    nl, ns = hm.side_mass_near(s.mass, s.meta, close, c.near)
    lt = hm.side_total(s.meta, hm.LONG)
    st = hm.side_total(s.meta, hm.SHORT)
    out[O_HEAT + H_LONG_TOTAL] = lt
    out[O_HEAT + H_SHORT_TOTAL] = st
    out[O_HEAT + H_CONSUMED_LONG] = cl
    out[O_HEAT + H_CONSUMED_SHORT] = cs
    out[O_HEAT + H_NEAR_LONG] = nl
    out[O_HEAT + H_NEAR_SHORT] = ns
    out[O_HEAT + H_CONFIDENCE] = s.meta[hm.M_CONFIDENCE]
    clusters = out[O_HEAT + H_CLUSTER_BELOW:O_HEAT + N_HEAT]
    hm.nearest_clusters(s.mass, s.meta, close, c.heat, clusters)
    ps.positioning_step(s.pos, s.pos_rates, s.pos_day, s.pos_h4, x[X_TS], close, x[X_FUNDING],
                        x[X_FUNDING_AVG], x[X_PREMIUM], x[X_OI], x[X_LS_RATIO],
                        x[X_TOP_RATIO], x[X_TAKER_BUY],
                        x[X_VOLUME], nl, ns, c.crowding, c.bars_per_hour,
                        out[O_POS:O_POS + ps.N_COMPONENTS])
    dt.detector_step(s.det, close, x[X_QUOTE_VOLUME], x[X_LIQ_LONG] + x[X_LIQ_SHORT], cl + cs,
                     lt + st, x[X_OI], x[X_FUNDING], c.detector,
                     out[O_DET:O_DET + dt.N_DETECTOR])
    ri.risk_step(s.risk, close, x[X_HIGH], x[X_LOW], x[X_VOLUME], x[X_FILLED], x[X_MARK_CLOSE],
                 out[O_POS + ps.C_LONG_SCORE], out[O_POS + ps.C_SHORT_SCORE],
                 out[O_DET + dt.D_CASCADE_STATE], out[O_DET + dt.D_EXHAUSTION_STATE], clusters,
                 c.bars_per_hour, c.block_bars, out[O_SIG:O_SIG + en.N_SIG])
    v, sg, lq = fl.window_step(s.fill, s.fill_ring, close, x[X_QUOTE_VOLUME],
                               _nan_to_num(x[X_LIQ_LONG]) + _nan_to_num(x[X_LIQ_SHORT]),
                               c.fill_window)
    out[O_FILL + F_VOL_W] = v
    out[O_FILL + F_SIG_W] = sg
    out[O_FILL + F_LIQ_W] = lq


@njit(cache=True)
def run_steps(s: StreamState, c: StreamConfig, X: np.ndarray, out: np.ndarray, t0: int,
              t1: int) -> None:
    """`step` over rows t0..t1-1 of X into the same rows of `out`; allocates nothing."""
    for t in range(t0, t1):
        step(s, c, X[t], out[t])


@njit(cache=True)
def run_snapshots(s: StreamState, c: StreamConfig, X: np.ndarray,
                  stride: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`step` over every row of X, plus the heatmap's true notional (and grid origin) at
    every `stride`-th bar when stride > 0 (for the heatmap CLI's plots)."""
    n = X.shape[0]
    out = np.empty((n, N_OUT))
    n_snap = (n + stride - 1) // stride if stride > 0 else 0
    snaps = np.zeros((n_snap, 2, s.mass.shape[1]))
    snap_lo = np.zeros(n_snap)
    if stride <= 0:
        # np.int64(0), not 0: a literal 0 types as Literal[int](0), a second compilation
        # of the whole (inlined) step beside the int64 one the loop below needs
        _run_steps_lean(s, c, X, out, np.int64(0), n)
        return out, snaps, snap_lo
    for k in range(n_snap):
        t = k * stride                       # snapshot right after stepping bar t
        _run_steps_lean(s, c, X, out, t, t + 1)
        snaps[k, 0] = s.mass[hm.LONG] * s.meta[hm.M_SCALE_LONG]
        snaps[k, 1] = s.mass[hm.SHORT] * s.meta[hm.M_SCALE_SHORT]
        snap_lo[k] = s.meta[hm.M_LO]
        _run_steps_lean(s, c, X, out, t + 1, min(t + stride, n))
    return out, snaps, snap_lo


def run_all(s: StreamState, c: StreamConfig, X: np.ndarray) -> np.ndarray:
    """`step` over every row of X (n, N_X): the (n, N_OUT) output rows. Plain Python
    around the lean loop (called once per chunk): an njit wrapper here cost ~0.7 s of a
    cold compile, on the critical path of `bot.warmup`'s signal tree."""
    n = X.shape[0]
    out = np.empty((n, N_OUT))
    _run_steps_lean(s, c, X, out, 0, n)
    return out


#: the batch loops run `run_steps` compiled lean (`bot.jit`): the same `step` source
#: without per-call reference counting; the daemon's `SignalStream.step` calls `step`
_run_steps_lean = lean(run_steps)


def _params_json(c: StreamConfig) -> str:
    return json.dumps({"p": c.heat._asdict(), "crowding": c.crowding._asdict(),
                       "detector": c.detector._asdict(), "near": c.near,
                       "fill_window": c.fill_window})


class SignalStream:
    """The daemon's handle on the signals: one closed bar in, one output row out; the
    backtester's `run_all` is the same kernel over a matrix. Checkpoint with `snapshot`,
    resume with `restore`."""

    def __init__(self, brackets: Brackets, interval_ms: int, first_close: float,
                 **params: Any) -> None:
        """`params`: p (HeatmapParams), levs, weights, near, crowding, detector,
        fill_window, as in `config`."""
        self.brackets = brackets
        self.interval_ms = int(interval_ms)
        self.config = config(self.interval_ms, brackets, **params)
        self.state = new_state(first_close, self.interval_ms, brackets, **params)

    @property
    def bars(self) -> int:
        """Bars stepped so far."""
        return int(self.state.pos[ps.PS_T])

    def step(self, x_row: np.ndarray | Mapping[str, Any]) -> np.ndarray:
        """Step one closed bar (an (N_X,) row or a bar dict) and return its (N_OUT,) row."""
        x = bar_row(x_row) if isinstance(x_row, Mapping) else \
            np.ascontiguousarray(x_row, dtype=np.float64)
        if x.shape != (N_X,):
            raise ValueError(f"SignalStream.step: expected a row of shape ({N_X},), got {x.shape}")
        out = np.empty(N_OUT)
        step(self.state, self.config, x, out)
        return out

    def run(self, X: np.ndarray) -> np.ndarray:
        """Step every row of X (n, N_X); returns the (n, N_OUT) output rows."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != N_X:
            raise ValueError(f"SignalStream.run: expected shape (n, {N_X}), got {X.shape}")
        return run_all(self.state, self.config, X)

    def mass(self) -> np.ndarray:
        """True notional per bin (2, n_bins), long row 0, short row 1 (state untouched)."""
        mass, _ = self._materialized()
        return mass

    @property
    def meta(self) -> np.ndarray:
        """The heatmap's meta (hm.M_*: grid origin, bin width, totals) matching `mass()`."""
        _, meta = self._materialized()
        return meta

    def _materialized(self) -> tuple[np.ndarray, np.ndarray]:
        mass, meta = self.state.mass.copy(), self.state.meta.copy()
        hm.materialize(mass, meta)
        return mass, meta

    def snapshot(self) -> bytes:
        """Everything needed to resume (state arrays, parameters, a copy of the brackets
        to check against at restore) as npz bytes."""
        c = self.config
        buf = io.BytesIO()
        np.savez(buf, interval_ms=np.int64(self.interval_ms), params=np.array(_params_json(c)),
                 levs=c.levs, weights=c.weights, br_floor=c.floor, br_cap=c.cap, br_mmr=c.mmr,
                 br_cum=c.cum, br_max_leverage=self.brackets.max_leverage,
                 **{"s_" + k: v for k, v in self.state._asdict().items()})
        return buf.getvalue()

    @classmethod
    def restore(cls, blob: bytes, brackets: Brackets,
                on_changed: Callable[[list[str]], None] | None = None) -> SignalStream:
        """A stream continuing exactly where `snapshot` left it; `brackets` must be the
        ones it ran with, unless `on_changed` accepts others (the exchange changed its tiers
        between two lives of a run: the levels placed so far stay where the old tiers put
        them, new ones use `brackets`); it is called with the fields that differ."""
        try:
            z = np.load(io.BytesIO(blob), allow_pickle=False)
            d = {k: z[k] for k in z.files}
        except (OSError, ValueError) as exc:
            raise LiqbotError(f"signal stream snapshot is not readable: {exc}") from exc
        missing = [f"s_{k}" for k in StreamState._fields if f"s_{k}" not in d]
        if missing or "params" not in d:
            raise LiqbotError(f"signal stream snapshot lacks {missing or ['params']}")
        sizes = {"heat": N_HS, "pos": ps.N_PS, "det": dt.N_DS, "risk": ri.N_RS, "fill": fl.N_FS,
                 "meta": hm.N_META}
        for k, n in sizes.items():
            if d["s_" + k].shape != (n,):
                raise LiqbotError(f"signal stream snapshot was written by another liqbot "
                                  f"version: its {k} state holds {d['s_' + k].size} values, "
                                  f"this version's {n}")
        # the positioning rings' lengths are its windows (bars in 24 h and 4 h): a snapshot
        # from before they were hours (2026-12-06) holds 24 + 1 and 4 bars on 4h data
        want = new_state(1.0, int(d["interval_ms"]), brackets)
        for k in ("pos_day", "pos_h4"):
            if d["s_" + k].shape[1:] != getattr(want, k).shape[1:]:
                raise LiqbotError(f"signal stream snapshot was written by another liqbot "
                                  f"version: its {k} ring holds {d['s_' + k].shape[-1]} bars, "
                                  f"this version's {getattr(want, k).shape[-1]}")
        # max_leverage: the leverage the run sets (live.leverage) closes tiers and caps the
        # position (`brackets.at_leverage`); snapshots before 2026-12-06 lack it
        changed = [k for k in ("floor", "cap", "mmr", "cum", "max_leverage")
                   if "br_" + k in d and not np.array_equal(d["br_" + k], getattr(brackets, k))]
        if changed and on_changed is None:
            raise LiqbotError(f"signal stream snapshot was taken with other leverage "
                              f"brackets than {brackets.symbol}'s ({changed[0]} differs)")
        if changed and on_changed is not None:
            on_changed(changed)
        js = json.loads(str(d["params"]))
        self = cls.__new__(cls)
        self.brackets = brackets
        self.interval_ms = int(d["interval_ms"])
        self.config = config(self.interval_ms, brackets, hm.HeatmapParams(**js["p"]),
                             d["levs"], d["weights"], js["near"],
                             ps.CrowdingWeights(**js["crowding"]),
                             dt.DetectorParams(**js["detector"]), js["fill_window"])
        self.state = StreamState(*(np.ascontiguousarray(d["s_" + k], dtype=np.float64)
                                   for k in StreamState._fields))
        return self
