"""The per-bar signal stream: one step kernel, bit-identical to the batch paths.

The references are independent batch runs: `heatmap.run` (its own `run_kernel` loop) for
the heatmap, and the batch wrappers `positioning_kernel`, `detector_kernel`, `risk_inputs`,
`window_inputs` fed with the arrays the backtester builds. Equality is exact
(np.array_equal, NaN == NaN): the daemon and the backtester see the same numbers.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.data.bars import MINUTE_MS, Bars
from bot.data.synthetic import SynthSpec, generate
from bot.errors import LiqbotError
from bot.mechanics.brackets import shipped
from bot.mechanics.fills import window_inputs
from bot.risk import engine as en
from bot.risk.inputs import risk_inputs
from bot.signals import detectors as dt
from bot.signals import heatmap as hm
from bot.signals import pipeline
from bot.signals import positioning as ps
from bot.signals import stream as sm
from tests.conftest import shared_file

BTC = shipped("binance", "BTCUSDT")
ETH = shipped("binance", "ETHUSDT")


def _dicts(bars: Bars) -> list[dict[str, float]]:
    """What a live feed delivers: one dict per bar with the columns it has."""
    cols = {k: bars[k].tolist() for k in bars.names}
    return [{k: v[t] for k, v in cols.items()} for t in range(len(bars))]


def _batch(bars: Bars, crowding: ps.CrowdingWeights = ps.CrowdingWeights(),
           detector: dt.DetectorParams = dt.DetectorParams(), fill_window: int = 60,
           ) -> np.ndarray:
    """The (n, N_OUT) matrix assembled from the batch functions, wired as `pipeline` and
    `backtests.runner.prepare` wired them before the stream existed."""
    n = len(bars)
    nan = np.full(n, np.nan)

    def col(name: str) -> np.ndarray:
        return np.ascontiguousarray(bars[name], dtype=np.float64) if bars.has(name) else nan

    run = hm.run(bars, BTC)
    x = hm.bar_inputs(bars)
    bph = 3_600_000 / bars.interval_ms                  # bars an hour: 0.25 on 4h bars
    pos = ps.positioning_kernel(bars.ts, x["close"], x["funding"], col("premium_close"), x["oi"],
                                x["ls_ratio"], col("top_long_short_ratio"), x["taker_buy"],
                                x["volume"], run.near_long, run.near_short, crowding, bph,
                                col("funding_rate_avg"))
    liq = x["liq_long"] + x["liq_short"] if bars.has("liq_long_notional") else nan
    det = dt.detector_kernel(x["close"], x["quote_volume"], liq,
                             run.consumed_long + run.consumed_short,
                             run.long_total + run.short_total, x["oi"], x["funding"], detector)
    close = col("close")
    mark = col("mark_close")
    mark = np.where(np.isfinite(mark), mark, close)
    filled = bars["filled"] if bars.has("filled") else np.zeros(n, dtype=np.bool_)
    sig = risk_inputs(close, col("high"), col("low"), col("volume"), filled, mark,
                      pos[:, ps.C_LONG_SCORE], pos[:, ps.C_SHORT_SCORE],
                      det[:, dt.D_CASCADE_STATE], det[:, dt.D_EXHAUSTION_STATE], run.clusters,
                      bph, max(1, int(np.floor(4 * bph + 0.5))))
    lq = np.nan_to_num(col("liq_long_notional")) + np.nan_to_num(col("liq_short_notional"))
    fill = window_inputs(close, x["quote_volume"], lq, fill_window)
    heat = np.column_stack([run.long_total, run.short_total, run.consumed_long,
                            run.consumed_short, run.near_long, run.near_short, run.confidence,
                            run.clusters])
    return np.column_stack([heat, pos, det, sig, *fill])


def _stream_by_dicts(bars: Bars, **params: object) -> np.ndarray:
    stream = sm.SignalStream(BTC, bars.interval_ms, float(bars.close[0]), **params)
    return np.array([stream.step(sm.bar_row(d)) for d in _dicts(bars)])


def _run_all(bars: Bars, **params: object) -> np.ndarray:
    x = sm.bar_matrix(bars)
    c = sm.config(bars.interval_ms, BTC, **params)
    s = sm.new_state(float(x[0, sm.X_CLOSE]), bars.interval_ms, BTC, **params)
    return sm.run_all(s, c, x)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.array_equal(a, b, equal_nan=True)


def test_output_layout_covers_every_part_once():
    assert sm.N_OUT == sm.N_HEAT + ps.N_COMPONENTS + dt.N_DETECTOR + en.N_SIG + sm.N_FILL == 55
    assert (sm.O_POS, sm.O_DET, sm.O_SIG, sm.O_FILL) == (13, 27, 38, 52)


def test_bar_row_fallbacks_by_hand():
    bar = {"ts": 1_760_000_000_000, "open": 100.0, "high": 110.0, "low": 90.0, "close": 105.0,
           "volume": 4.0, "mark_high": float("nan"), "mark_low": 91.0, "open_interest": None}
    x = sm.bar_row(bar)
    assert x[sm.X_TS] == 1_760_000_000_000.0
    assert x[sm.X_QUOTE_VOLUME] == 420.0             # volume x close
    assert x[sm.X_TAKER_BUY] == 2.0                  # half the volume
    assert x[sm.X_MARK_OPEN] == 100.0 and x[sm.X_MARK_CLOSE] == 105.0   # absent: trade
    assert x[sm.X_MARK_HIGH] == 110.0                # NaN mark: trade price of the same bar
    assert x[sm.X_MARK_LOW] == 91.0
    assert x[sm.X_FILLED] == 0.0
    for j in (sm.X_FUNDING, sm.X_PREMIUM, sm.X_OI, sm.X_LS_RATIO, sm.X_TOP_RATIO,
              sm.X_LIQ_LONG, sm.X_LIQ_SHORT):
        assert np.isnan(x[j])
    with pytest.raises(LiqbotError, match="close"):
        sm.bar_row({k: v for k, v in bar.items() if k != "close"})


def _minimal_bars(n: int = 50) -> Bars:
    rng = np.random.default_rng(3)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    opn = np.r_[close[0], close[:-1]]
    mark_high = np.maximum(opn, close) * 1.001
    mark_high[[4, 9]] = np.nan                       # a mark feed with holes
    return Bars("BTCUSDT", MINUTE_MS, {
        "ts": np.arange(n, dtype=np.int64) * MINUTE_MS, "open": opn,
        "high": np.maximum(opn, close) * 1.002, "low": np.minimum(opn, close) * 0.998,
        "close": close, "volume": rng.uniform(0, 5, n), "mark_high": mark_high,
        "filled": np.arange(n) % 7 == 0})


@pytest.mark.parametrize("which", ["synthetic", "minimal"])
def test_bar_row_equals_bar_matrix_row(which):
    bars = generate(SynthSpec(seed=7, days=1)).bars if which == "synthetic" else _minimal_bars()
    x = sm.bar_matrix(bars)
    rows = np.array([sm.bar_row(d) for d in _dicts(bars)])
    assert _same(rows, x)
    if which == "minimal":
        assert np.isnan(x[:, sm.X_LIQ_LONG]).all() and np.isnan(x[:, sm.X_OI]).all()
        assert x[4, sm.X_MARK_HIGH] == bars["high"][4]
        assert x[5, sm.X_MARK_HIGH] == bars["mark_high"][5]
        assert x[0, sm.X_FILLED] == 1.0 and x[1, sm.X_FILLED] == 0.0


def test_synthetic_stream_equals_run_all_and_batch():
    bars = generate(SynthSpec(seed=7, days=3, crowding="long")).bars
    streamed = _stream_by_dicts(bars)
    assert _same(streamed, _run_all(bars))
    assert _same(streamed, _batch(bars))
    _, out = pipeline.compute_stream(bars, BTC)
    assert _same(out, streamed)
    # the stream carries real signals, not a degenerate all-NaN / all-zero row
    assert np.isfinite(streamed[-1, sm.O_SIG + en.S_ATR]) and streamed[-1, sm.O_FILL] > 0.0
    assert (streamed[:, sm.O_DET + dt.D_CASCADE_STATE] != 0.0).any()


def test_real_file_stream_equals_run_all_and_batch():
    from bot.data.importer import build_dataset
    klines = shared_file("binance_um", "klines_1m", "BTCUSDT-1m-2025-10-08_to_2025-10-12.csv")
    funding = shared_file("binance_um", "funding", "BTCUSDT_funding_2020-2026.csv")
    bars = build_dataset([klines, funding]).bars
    streamed = _stream_by_dicts(bars)
    assert _same(streamed, _run_all(bars))
    assert _same(streamed, _batch(bars))
    # no open interest in klines: the heatmap runs on its volume proxy at confidence 0.5,
    # and without a liquidation feed the detector's liquidation flow is absent
    assert (streamed[:, sm.O_HEAT + sm.H_CONFIDENCE] == 0.5).all()
    assert np.isnan(streamed[:, sm.O_DET + dt.D_LIQ_FLOW]).all()
    assert (streamed[:, sm.O_FILL + sm.F_LIQ_W] == 0.0).all()


def _vendor_only(bars: Bars, with_settlement: bool) -> Bars:
    """`bars` as a vendor-only dataset reads: no open_interest / taker_buy_volume, the
    stablecoin OI and aggregated taker notionals instead, an OI-weighted funding state with a
    hole; Binance settlements from bar 300 on when `with_settlement`."""
    n = len(bars)
    rng = np.random.default_rng(5)
    fa = np.full(n, 1e-4) + rng.normal(0, 2e-5, n)
    fa[:3] = np.nan
    fa[40:45] = np.nan                                  # a coverage hole
    cols = {k: v for k, v in bars.columns.items()
            if k not in ("open_interest", "taker_buy_volume", "funding_rate")}
    cols.update(oi_stablecoin=bars["open_interest"] * 7.0,
                agg_taker_buy_notional=bars["taker_buy_volume"] * bars.close,
                agg_taker_sell_notional=(bars["volume"] - bars["taker_buy_volume"]) * bars.close,
                funding_rate_avg=fa)
    if with_settlement:
        f = np.full(n, np.nan)
        f[300::480] = 3e-4
        cols["funding_rate"] = f
    return Bars(bars.symbol, bars.interval_ms, cols)


@pytest.mark.parametrize("settled", [False, True])
def test_vendor_only_stream_equals_batch(settled):
    """Vendor columns through the one set of fallbacks: stream (bar dicts), run_all and the
    batch functions agree bit for bit, and the map reads them (OI at full confidence, the
    taker split from the notionals, the OI-weighted funding until a settlement)."""
    bars = _vendor_only(generate(SynthSpec(seed=7, days=2, crowding="long")).bars, settled)
    streamed = _stream_by_dicts(bars)
    assert _same(streamed, _run_all(bars))
    assert _same(streamed, _batch(bars))
    assert (streamed[3:, sm.O_HEAT + sm.H_CONFIDENCE] == 1.0).all()    # OI, not the proxy
    x = hm.bar_inputs(bars)
    np.testing.assert_allclose(x["taker_buy"], generate(SynthSpec(
        seed=7, days=2, crowding="long")).bars["taker_buy_volume"], rtol=1e-12)
    fund = x["map_funding"]
    assert np.isnan(fund[:3]).all() and fund[10] == bars["funding_rate_avg"][10]
    assert np.isnan(fund[41])                              # the hole: not carried
    if settled:
        assert fund[299] == bars["funding_rate_avg"][299]
        assert (fund[300:] == 3e-4).all()                  # the last settled rate from then on
    # the map differs from one read without the vendor columns (they are not ignored)
    bare = Bars(bars.symbol, bars.interval_ms, {k: v for k, v in bars.columns.items()
                                                if not k.startswith(("oi_", "agg_"))})
    assert not _same(hm.run(bare, BTC).long_total, hm.run(bars, BTC).long_total)


def test_snapshot_restore_midway_continues_exactly():
    bars = generate(SynthSpec(seed=5, days=2, crowding="short")).bars
    x = sm.bar_matrix(bars)
    full = _run_all(bars)
    stream = sm.SignalStream(BTC, bars.interval_ms, float(bars.close[0]))
    k = 1777
    first = stream.run(x[:k])
    mass_before = stream.mass()
    blob = stream.snapshot()
    assert _same(stream.mass(), mass_before)          # reading the map leaves the state alone
    resumed = sm.SignalStream.restore(blob, BTC)
    assert resumed.bars == k
    rest = np.array([resumed.step(row) for row in x[k:]])
    assert _same(np.vstack([first, rest]), full)
    # the uninterrupted stream (mass() read mid-way) ends on the same map as the batch run
    stream.run(x[k:])
    ref = hm.run(bars, BTC)                  # the heatmap's own batch run, not the stream
    assert _same(stream.mass(), ref.mass) and _same(stream.meta, ref.meta)
    assert _same(resumed.mass(), ref.mass)
    with pytest.raises(LiqbotError, match="brackets"):
        sm.SignalStream.restore(blob, ETH)
    with pytest.raises(LiqbotError, match="not readable"):
        sm.SignalStream.restore(b"not a snapshot", BTC)
    # a snapshot of an older layout (the risk inputs held 7 values before the cascade run)
    z = np.load(io.BytesIO(blob))
    old = {k: z[k] for k in z.files}
    old["s_risk"] = old["s_risk"][:7]
    buf = io.BytesIO()
    np.savez(buf, **old)
    with pytest.raises(LiqbotError, match="another liqbot version: its risk state holds 7"):
        sm.SignalStream.restore(buf.getvalue(), BTC)



def test_a_4h_snapshot_with_the_old_bar_counted_rings_is_refused():
    """Before 2026-12-06 the positioning rings of 4h data held 24 + 1 and 4 bars (96 h and
    16 h); restored, their lengths would have kept those windows beside the new hour-based
    warm-up and block. Refused as another version's; a 4h snapshot of this one restores."""
    stream = sm.SignalStream(BTC, 14_400_000, 100.0)
    blob = stream.snapshot()
    assert sm.SignalStream.restore(blob, BTC).state.pos_day.shape == (2, 7)
    z = np.load(io.BytesIO(blob))
    old = {k: z[k] for k in z.files}
    old["s_pos_day"] = np.full((2, 25), np.nan)
    buf = io.BytesIO()
    np.savez(buf, **old)
    with pytest.raises(LiqbotError, match="another liqbot version: its pos_day ring holds 25 "
                                          "bars, this version's 7"):
        sm.SignalStream.restore(buf.getvalue(), BTC)


def test_snapshot_keeps_non_default_parameters():
    bars = _minimal_bars(80)
    params = dict(near=0.01, crowding=ps.CrowdingWeights(z_window=4),
                  detector=dt.DetectorParams(hold=3), fill_window=7)
    x = sm.bar_matrix(bars)
    stream = sm.SignalStream(BTC, bars.interval_ms, float(bars.close[0]), **params)
    head = stream.run(x[:30])
    resumed = sm.SignalStream.restore(stream.snapshot(), BTC)
    assert resumed.config.fill_window == 7 and resumed.config.crowding.z_window == 4
    assert _same(np.vstack([head, resumed.run(x[30:])]), _run_all(bars, **params))


def test_heatmap_snapshots_match_the_heatmap_run():
    bars = generate(SynthSpec(seed=2, days=1)).bars
    sig = pipeline.compute(bars, BTC, stride=240)
    ref = hm.run(bars, BTC, stride=240)
    assert sig.heatmap.snapshots.shape == (6, 2, 2000)
    assert _same(sig.heatmap.snapshots, ref.snapshots)
    assert _same(sig.heatmap.snapshot_lo, ref.snapshot_lo)


@st.composite
def _random_bars(draw):
    n = draw(st.integers(2, 40))
    interval = draw(st.sampled_from([MINUTE_MS, 3_600_000, 14_400_000]))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    close = 30_000.0 * np.exp(np.cumsum(rng.normal(0, draw(st.sampled_from([0.001, 0.02])), n)))
    opn = np.r_[close[0], close[:-1]]
    high = np.maximum(opn, close) * (1 + rng.uniform(0, 0.01, n))
    low = np.minimum(opn, close) * (1 - rng.uniform(0, 0.01, n))
    vol = np.where(rng.uniform(size=n) < 0.1, 0.0, rng.uniform(1, 100, n))
    cols = {"ts": np.arange(n, dtype=np.int64) * interval, "open": opn, "high": high,
            "low": low, "close": close, "volume": vol}
    if draw(st.booleans()):
        cols["taker_buy_volume"] = vol * rng.uniform(0, 1, n)
        cols["quote_volume"] = vol * close
    if draw(st.booleans()):
        oi = 1e4 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
        oi[rng.uniform(size=n) < 0.2] = np.nan
        cols["open_interest"] = oi
    if draw(st.booleans()):
        f = np.full(n, np.nan)
        f[:: draw(st.integers(1, 8))] = rng.normal(1e-4, 3e-4)
        cols["funding_rate"] = f
        cols["premium_close"] = rng.normal(0, 1e-4, n)
    if draw(st.booleans()):
        cols["mark_high"] = high * 0.9995
        cols["mark_low"] = low * 1.0005
        cols["mark_close"] = close
    if draw(st.booleans()):
        cols["liq_long_notional"] = rng.exponential(1e4, n)
        cols["liq_short_notional"] = rng.exponential(1e4, n)
    if draw(st.booleans()):
        cols["long_short_ratio"] = rng.uniform(0.5, 2.5, n)
    if draw(st.booleans()):
        cols["filled"] = rng.uniform(size=n) < 0.2
    params = dict(crowding=ps.CrowdingWeights(z_window=draw(st.integers(1, 5))),
                  detector=dt.DetectorParams(hold=draw(st.integers(0, 5)),
                                             lookback=draw(st.integers(1, 20)), fire=0.2,
                                             min_velocity=0.5),
                  fill_window=draw(st.integers(1, 6)))
    return Bars("BTCUSDT", interval, cols), params


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_random_bars())
def test_step_equals_batch_on_random_bars(case):
    bars, params = case
    streamed = _stream_by_dicts(bars, **params)
    assert _same(streamed, _batch(bars, **params))
    assert _same(streamed, _run_all(bars, **params))
