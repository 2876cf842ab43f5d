"""The backtester's memory-saving paths give the same numbers as the plain ones, bit for bit:
market columns shared with the Bars, the chunked signal kernel, the signal rows streamed
beside the loop, signals computed on first use, and Parquet columns read one at a time."""

import mmap
import pickle

import numpy as np
import pyarrow as pa
import pytest

from backtests import engine as eg
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


# --- compact records, trimmed columns, shared columns, chunked metrics, lean process ---


def _old_max_drawdown(equity: np.ndarray) -> float:
    """The whole-array drawdown the chunked one replaced (reference)."""
    if len(equity) == 0:
        return 0.0
    dd = np.maximum(equity, 0.0)
    peak = np.maximum.accumulate(dd)
    with np.errstate(divide="ignore", invalid="ignore"):
        np.divide(dd, peak, out=dd)
    np.subtract(1.0, dd, out=dd)
    dd[~(peak > 0)] = 0.0
    return float(dd.max())


def _old_ratios(equity: np.ndarray, bars_per_year: float) -> tuple[float, float]:
    """The whole-array Sharpe / Sortino the chunked, in-place one replaced (reference)."""
    e = np.maximum(equity, 1e-12)
    r = np.diff(e)
    r /= e[:-1]
    if len(r) < 2 or r.std() == 0:
        return 0.0, 0.0
    sharpe = r.mean() / r.std() * np.sqrt(bars_per_year)
    down = r[r < 0]
    dstd = np.sqrt((down ** 2).sum() / len(r)) if len(down) else 0.0
    sortino = r.mean() / dstd * np.sqrt(bars_per_year) if dstd > 0 else 0.0
    return float(sharpe), float(sortino)


def _curves() -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    out = []
    for n in (0, 1, 2, 3, 17, 1000, 4099):
        out.append(1e5 * np.cumprod(1 + rng.normal(0, 2e-3, n)))
        out.append(rng.normal(0, 1, n))                       # negative and zero peaks
    return out + [np.full(50, 7.0), np.zeros(40), np.r_[np.zeros(30), 1.0, 0.5, 2.0],
                  np.r_[1.0, np.nan, 2.0, 1.5], np.r_[1.0, np.inf, 2.0], np.r_[-1.0, -2, 3, 1]]


@pytest.mark.parametrize("chunk", [1, 7, 65_536])
def test_chunked_metrics_equal_the_whole_array_ones_bit_for_bit(monkeypatch, chunk):
    from backtests import metrics as mt

    monkeypatch.setattr(mt, "CHUNK", chunk)
    for c in _curves():
        rec = np.zeros((len(c), eg.N_REC_CORE))
        rec[:, eg.R_EQUITY] = c
        col = rec[:, eg.R_EQUITY]                           # strided, as runner.metrics
        for first in (None, 100.0, 0.0):
            curve = c if first is None else np.r_[first, c]
            with np.errstate(all="ignore"):
                want = (_old_max_drawdown(curve.copy()), *_old_ratios(curve, 525_600.0))
                got = (mt.max_drawdown(col, first=first), *mt.ratios(col, 525_600.0, first))
                plain = (mt.max_drawdown(curve), *mt.ratios(curve, 525_600.0))
            assert np.array(got).tobytes() == np.array(want).tobytes(), (len(c), first)
            assert np.array(plain).tobytes() == np.array(want).tobytes(), (len(c), first)


def test_compact_records_give_the_same_run(bars):
    s = rn.RunSettings()
    inputs = rn.prepare(bars, BTC, s)
    pol = load_policy("balanced")
    full = rn.run(inputs, find("cascade_fade")(), pol, BTC, s, "f", start=300)
    lean = rn.run(inputs, find("cascade_fade")(), pol, BTC, s, "l", start=300,
                  record_columns=eg.N_REC_CORE)
    assert full.records.shape == (len(bars), eg.N_REC)
    assert lean.records.shape == (len(bars), eg.N_REC_CORE)
    assert lean.records.nbytes * eg.N_REC == full.records.nbytes * eg.N_REC_CORE
    _same(lean.records, full.records[:, :eg.N_REC_CORE])
    for a, b in ((full.trades, lean.trades), (full.decisions, lean.decisions),
                 (full.targets, lean.targets)):
        _same(a, b)
    assert len(full.trades) > 0 and full.metrics == lean.metrics
    assert rn.decision_rows(full, bars) == rn.decision_rows(lean, bars)
    with pytest.raises(ValueError, match="record_columns"):
        rn.run(inputs, find("hold")(), pol, BTC, s, "x", record_columns=5)


class _Noting(dict):
    """A Bars column dict that notes every name looked up or tested."""

    def __init__(self, cols):
        super().__init__(cols)
        self.read = set()

    def __getitem__(self, name):
        self.read.add(name)
        return super().__getitem__(name)

    def __contains__(self, name):
        self.read.add(name)
        return super().__contains__(name)


def columns_read(bars, read):
    """The Bars columns `read(bars')` looks up or tests for, on a copy of `bars`."""
    probe = Bars(bars.symbol, bars.interval_ms, bars.columns)
    noting = _Noting(dict(probe.columns))
    object.__setattr__(probe, "columns", noting)
    read(probe)
    return noting.read


def test_input_columns_are_what_bar_matrix_reads(bars):
    wide = bars.with_columns(filled=np.ones(len(bars), dtype=bool),
                             quote_volume=bars.close * bars["volume"],
                             taker_buy_volume=bars["volume"] / 2)
    # a vendor-only dataset: no open_interest or taker_buy_volume, their fallbacks are read
    vendor = bars.with_columns(oi_stablecoin=bars.close * 0 + 5.0,
                               agg_taker_buy_notional=bars.close * 3.0,
                               agg_taker_sell_notional=bars.close)
    vendor = type(bars)(bars.symbol, bars.interval_ms,
                        {k: v for k, v in vendor.columns.items()
                         if k not in ("open_interest", "taker_buy_volume")})
    read = columns_read(wide, sm.bar_matrix) | columns_read(vendor, sm.bar_matrix)
    assert read == sm.INPUT_COLUMNS
    x = sm.bar_matrix(vendor)
    assert np.all(x[:, sm.X_OI] == 5.0)
    np.testing.assert_allclose(x[:, sm.X_TAKER_BUY], 0.75 * vendor["volume"])


def test_trim_columns_keeps_what_the_builtin_strategies_and_the_signals_read(bars):
    from strategies import BUILTIN, Strategy

    wide = bars.with_columns(trades=np.arange(len(bars)), open_interest_value=bars.close * 2,
                             taker_buy_quote_volume=bars.close / 2)
    s = rn.RunSettings()
    for name, cls in BUILTIN.items():
        trimmed = rn.trim_columns(wide, cls())
        assert not {"trades", "open_interest_value", "taker_buy_quote_volume"} & \
            set(trimmed.columns), name
        for k, v in trimmed.columns.items():
            assert v is wide[k]                              # no copies
        signals = pipeline.LazySignals(bars, BTC, s.fills.window_bars)
        read = columns_read(wide, lambda b: cls().targets(b, signals)) & set(wide.names)  # noqa: B023
        assert read <= set(trimmed.columns), (name, read - set(trimmed.columns))
    inputs = columns_read(wide, sm.bar_matrix) & set(wide.names)
    assert inputs == set(rn.trim_columns(wide, find("hold")()).columns)

    class Custom(Strategy):              # not a built-in: may read anything, keeps it all
        name = "custom"

        def targets(self, bars, signals):
            return np.zeros(len(bars))

    assert rn.trim_columns(wide, Custom()) is wide
    narrow = rn.trim_columns(wide, find("trend")())
    assert rn.trim_columns(narrow, find("trend")()) is narrow   # nothing to drop: as it is
    pol = load_policy("balanced")
    one = rn.run(rn.prepare(wide, BTC, s), find("trend")(), pol, BTC, s, "w")
    two = rn.run(rn.prepare(rn.trim_columns(wide, find("trend")()), BTC, s), find("trend")(),
                 pol, BTC, s, "t")
    _same(one.records, two.records)
    assert one.metrics == two.metrics


def test_dataset_load_keeps_bit_identical_columns_once(bars, tmp_path):
    from bot.data import dataset as ds_io

    assert np.array_equal(bars["mark_close"], bars["close"])          # synthetic: mark = trade
    ds_io.save(ds_io.Dataset(bars), tmp_path / "d")
    back = ds_io.load(tmp_path / "d").bars
    assert back["mark_close"] is back["close"] and back["mark_open"] is back["open"]
    assert back["high"] is not back["mark_high"]                      # differs somewhere
    for k in bars.names:
        _same(back[k], bars[k])
        assert not back[k].flags.writeable
    z, nz = np.zeros(3), np.array([0.0, -0.0, 0.0])
    for a in (z, nz):
        a.flags.writeable = False
    got = ds_io.share_repeats({"a": z, "b": nz, "c": z.copy(), "d": np.zeros(3)})
    assert got["b"] is nz                             # -0.0 is not 0.0 bit for bit
    assert got["d"] is not z and got["d"].flags.writeable   # writeable arrays: left alone
    c = got["c"]
    assert c is not z                                 # a writeable copy is not shared either
    ro = z.copy()
    ro.flags.writeable = False
    assert ds_io.share_repeats({"a": z, "e": ro})["e"] is z


LEAN_PROBE = """
import sys
from bot import lean_process
print(lean_process.skip_scipy_linalg(), lean_process.skip_scipy_linalg())
import numpy as np
from numba import njit

@njit(cache=False)
def f(a):
    return np.dot(a, a), np.linalg.inv(a)[0, 0]

a = np.array([[2.0, 1.0], [0.0, 4.0]])
d, inv = f(a)
print("scipy.linalg" in sys.modules, float(d[0, 1]), inv)
import scipy.linalg
print(float(scipy.linalg.inv(a)[0, 0]))
from scipy.linalg import cython_blas
import scipy.linalg.cython_lapack as cl
print(cython_blas.__name__, cl.__name__)
"""


def test_numba_runs_blas_without_importing_scipy_linalg():
    pytest.importorskip("scipy")
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", LEAN_PROBE], capture_output=True, text=True,
                         check=True).stdout.split("\n")
    assert out[0] == "True False"                          # once; the second call: loaded
    assert out[1] == "False 6.0 0.5"                       # BLAS / LAPACK through numba
    assert out[2] == "0.5"                                 # the real scipy.linalg later
    assert out[3] == "scipy.linalg.cython_blas scipy.linalg.cython_lapack"


BACKTEST_PROBE = """
import sys
from bot.cli import main
try:
    main(["backtest", "--scenario", "calm", "--strategy", "trend", "--risk", "on"])
except SystemExit as exc:
    assert not exc.code, exc.code
print(sorted(m for m in ("scipy.linalg", "pandas", "numpy.f2py", "matplotlib")
             if m in sys.modules))
"""


def test_backtest_command_leaves_heavy_modules_unimported():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", BACKTEST_PROBE], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
