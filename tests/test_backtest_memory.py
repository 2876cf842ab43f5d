"""The backtester's memory-saving paths give the same numbers as the plain ones, bit for bit:
market columns shared with the Bars, the chunked signal kernel, the signal rows streamed
beside the loop, signals computed on first use, and Parquet columns read one at a time."""

import mmap
import pickle

import numpy as np
import pyarrow as pa
import pytest

from backtests import runner as rn
from bot.data.arrow import column_to_numpy
from bot.data.bars import MINUTE_MS, Bars
from bot.data.synthetic import SynthSpec, generate
from bot.mechanics.brackets import shipped
from bot.risk import engine as en
from bot.risk.policy import load_policy
from bot.signals import pipeline
from bot.signals import stream as sm
from strategies import find

BTC = shipped("binance", "BTCUSDT")


@pytest.fixture(scope="module")
def bars() -> Bars:
    return generate(SynthSpec(seed=3, days=2, crowding="long")).bars


def test_bar_column_shares_valid_columns_and_falls_back_by_hand():
    o = np.array([100.0, 101.0, 102.0])
    mark_open = np.array([100.5, np.nan, 101.5])
    mark_close = np.array([99.0, 100.0, 101.0])
    b = Bars("BTCUSDT", MINUTE_MS, {
        "ts": np.array([0, 60_000, 120_000], dtype=np.int64), "open": o,
        "high": np.array([103.0, 104.0, 105.0]), "low": np.array([98.0, 97.0, 96.0]),
        "close": np.array([101.0, 102.0, 103.0]), "volume": np.array([2.0, 4.0, 0.0]),
        "mark_open": mark_open, "mark_close": mark_close})
    assert sm.bar_column(b, sm.X_OPEN) is b["open"]              # no copy
    assert sm.bar_column(b, sm.X_MARK_CLOSE) is b["mark_close"]  # all finite: no copy
    np.testing.assert_array_equal(sm.bar_column(b, sm.X_MARK_OPEN), [100.5, 101.0, 101.5])
    np.testing.assert_array_equal(sm.bar_column(b, sm.X_MARK_HIGH), [103.0, 104.0, 105.0])
    np.testing.assert_array_equal(sm.bar_column(b, sm.X_QUOTE_VOLUME), [202.0, 408.0, 0.0])
    np.testing.assert_array_equal(sm.bar_column(b, sm.X_TAKER_BUY), [1.0, 2.0, 0.0])
    np.testing.assert_array_equal(sm.bar_column(b, sm.X_TS), [0.0, 60_000.0, 120_000.0])
    np.testing.assert_array_equal(sm.bar_column(b, sm.X_FILLED), [0.0, 0.0, 0.0])
    assert np.isnan(sm.bar_column(b, sm.X_FUNDING)).all()
    x = sm.bar_matrix(b)
    for j in range(sm.N_X):
        np.testing.assert_array_equal(x[:, j], sm.bar_column(b, j))
    with pytest.raises(ValueError, match="no input column 21"):
        sm.bar_column(b, sm.N_X)


def _same(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape and a.dtype == b.dtype
    assert np.array_equal(a, b, equal_nan=True)


@pytest.mark.parametrize("chunk", [7, 1000, 100_000])
def test_compute_chunked_equals_compute_stream(bars, chunk):
    full, out = pipeline.compute_stream(bars, BTC, fill_window=30)
    sig_full, sig, win = pipeline.compute_chunked(bars, BTC, fill_window=30, chunk=chunk)
    _same(sig, out[:, sm.O_SIG:sm.O_SIG + en.N_SIG])
    _same(win, out[:, sm.O_FILL:sm.O_FILL + sm.N_FILL])
    for a, b in zip(sig_full.heatmap, full.heatmap, strict=True):
        _same(a, b)
    _same(sig_full.positioning, full.positioning)
    _same(sig_full.detectors, full.detectors)
    only, none_sig, none_win = pipeline.compute_chunked(bars, BTC, signals=False, chunk=chunk)
    assert only is None and none_sig.shape == (len(bars), en.N_SIG)
    assert none_win.shape == (len(bars), sm.N_FILL)
    assert pipeline.compute_chunked(bars, BTC, risk=False)[1].shape == (0, en.N_SIG)


@pytest.mark.parametrize("strategy, start", [("trend", 0), ("trend", 777),
                                              ("cascade_fade", 0)])
def test_run_with_streamed_signal_rows_equals_kept_rows(bars, monkeypatch, strategy, start):
    monkeypatch.setattr(pipeline, "CHUNK", 500)       # several chunks, pages released
    s = rn.RunSettings()
    pol = load_policy("balanced")
    kept = rn.run(rn.prepare(bars, BTC, s), find(strategy)(), pol, BTC, s, "k", start=start)
    lean_inputs = rn.prepare(bars, BTC, s, risk_rows=False)
    assert lean_inputs.sig.shape == (0, en.N_SIG)
    streamed = rn.run(lean_inputs, find(strategy)(), pol, BTC, s, "s", start=start)
    for a, b in ((kept.records, streamed.records), (kept.trades, streamed.trades),
                 (kept.decisions, streamed.decisions), (kept.targets, streamed.targets)):
        _same(a, b)
    assert len(kept.trades) > 0
    assert kept.metrics == streamed.metrics


def test_rows_release_drops_whole_pages_below_and_keeps_the_rest():
    rows = rn._Rows(10_000, 3)                       # 24 bytes a row
    rows.a[:] = np.arange(30_000, dtype=np.float64).reshape(10_000, 3)
    rows.release(5_000)       # 120,000 bytes: pages up to byte 118,784 (row 4,949) go back
    if hasattr(mmap, "MADV_DONTNEED"):
        assert rows.a[1, 0] == 0.0                  # returned to the OS: reads zero
    np.testing.assert_array_equal(rows.a[4_950:], np.arange(14_850, 30_000).reshape(5_050, 3))
    rows.release(100)                                # behind what is released: no-op
    assert rows.a[4_999, 2] == 14_999.0


def test_signals_are_computed_only_when_read_and_only_the_fields_read(bars):
    s = rn.RunSettings()
    inputs = rn.prepare(bars, BTC, s)
    lazy = inputs.signals
    assert isinstance(lazy, pipeline.LazySignals) and lazy.computed == ()
    rn.run(inputs, find("trend")(), load_policy("balanced"), BTC, s, "t")
    assert lazy.computed == ()                        # trend reads closes only
    rn.run(inputs, find("cascade_fade")(), load_policy("balanced"), BTC, s, "c")
    assert lazy.computed == ("detectors",)            # the one field it reads
    ref = pipeline.compute_stream(bars, BTC, fill_window=s.fills.window_bars)[0]
    _same(lazy.detectors, ref.detectors)
    assert lazy.computed == ("detectors",)            # a second read computes nothing
    _same(lazy.positioning, ref.positioning)          # a later field: all the rest
    assert lazy.computed == ("heatmap", "positioning", "detectors")
    heat, pos, det = lazy                             # unpacks like the NamedTuple
    _same(pos, ref.positioning)
    _same(lazy[2], ref.detectors)
    for x, y in zip(heat, ref.heatmap, strict=True):
        _same(x, y)
    assert len(lazy) == 3 and lazy._fields == ("heatmap", "positioning", "detectors")
    assert lazy._asdict()["detectors"] is lazy.detectors
    back = pickle.loads(pickle.dumps(lazy))
    assert type(back) is pipeline.Signals
    _same(back.detectors, ref.detectors)
    only_heat = pipeline.LazySignals(bars, BTC, s.fills.window_bars)
    _same(only_heat.heatmap.clusters, ref.heatmap.clusters)
    _same(only_heat.heatmap.mass, ref.heatmap.mass)
    assert only_heat.computed == ("heatmap",)
    _same(pipeline.heatmap_clusters(bars, BTC, s.fills.window_bars), ref.heatmap.clusters)
    kept = rn.prepare(bars, BTC, s, keep_signals=True).signals
    assert type(kept) is pipeline.Signals
    _same(kept.positioning, ref.positioning)


def test_compute_uses_the_chunked_kernel_with_the_same_result(bars):
    a = pipeline.compute(bars, BTC)
    b = pipeline.compute_stream(bars, BTC)[0]
    for x, y in zip(a.heatmap, b.heatmap, strict=True):
        _same(x, y)
    _same(a.detectors, b.detectors)


@pytest.mark.parametrize("col", [
    pa.chunked_array([pa.array([1.5, -2.0]), pa.array([3.25, 4.0, 5.0]).slice(1)]),
    pa.chunked_array([pa.array([7, 8, 9], type=pa.int64()).slice(1)]),
    pa.chunked_array([pa.array([1, 2], type=pa.int32())]),
    pa.chunked_array([pa.array([1.0, None, 3.0])]),
    pa.chunked_array([pa.array([True, False, True])]),
    pa.chunked_array([pa.array([True, False, True, True, False, True, True, False, True]).slice(3)]),
    pa.chunked_array([], type=pa.float64()),
])
def test_parquet_column_to_numpy_matches_pyarrow(col):
    _same(column_to_numpy(col), col.to_numpy())
