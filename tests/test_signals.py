"""Heatmap bookkeeping, causality, clusters, crowding and detectors."""

import numpy as np
import pytest

from bot.data.bars import MINUTE_MS, Bars
from bot.data.synthetic import SynthSpec, generate
from bot.mechanics.brackets import shipped
from bot.signals import clusters as cl
from bot.signals import detectors as dt
from bot.signals import heatmap as hm
from bot.signals import pipeline
from bot.signals import positioning as ps
from bot.signals.validation import score_at

BTC = shipped("binance", "BTCUSDT")


def _bookkeeping_gap(meta, mass):
    expect = (meta[hm.M_ADDED] - meta[hm.M_REMOVED] - meta[hm.M_CONSUMED_LONG]
              - meta[hm.M_CONSUMED_SHORT] - meta[hm.M_DECAYED])
    return abs(mass.sum() - expect) / max(meta[hm.M_ADDED], 1.0)


def _trend_bars(n=3000, drift=0.0003, seed=0):
    """A strongly trending market with rising OI, to force grid re-centring."""
    rng = np.random.default_rng(seed)
    close = 50_000 * np.exp(np.cumsum(drift + rng.normal(0, 0.001, n)))
    opn = np.r_[close[0], close[:-1]]
    high = np.maximum(opn, close) * (1 + rng.uniform(0, 0.001, n))
    low = np.minimum(opn, close) * (1 - rng.uniform(0, 0.001, n))
    vol = rng.uniform(50, 150, n)
    oi = 80_000 + np.cumsum(rng.normal(2, 10, n))
    return Bars("BTCUSDT", MINUTE_MS, {
        "ts": np.arange(n, dtype=np.int64) * MINUTE_MS, "open": opn, "high": high, "low": low,
        "close": close, "volume": vol, "quote_volume": vol * close,
        "taker_buy_volume": vol * rng.uniform(0.3, 0.7, n), "open_interest": oi})


def test_mass_bookkeeping_exact_through_recentring():
    bars = _trend_bars()
    assert bars.close[-1] / bars.close[0] > 2.0          # far beyond the initial grid margin
    run = hm.run(bars, BTC)
    assert run.meta[hm.M_LO] > np.log(bars.close[0]) - 1000 * 0.001   # the grid moved
    assert _bookkeeping_gap(run.meta, run.mass) < 1e-9
    assert run.meta[hm.M_REMOVED] > 0 and run.meta[hm.M_DECAYED] > 0
    assert run.meta[hm.M_CONSUMED_LONG] + run.meta[hm.M_CONSUMED_SHORT] > 0


def test_bookkeeping_on_a_synthetic_cascade():
    run = hm.run(generate(SynthSpec(seed=4, days=3)).bars, BTC)
    assert _bookkeeping_gap(run.meta, run.mass) < 1e-9


def test_recentre_folds_edge_mass_instead_of_losing_it():
    mass, meta = hm.new_state(100.0, hm.HeatmapParams(n_bins=100, recenter_margin=10))
    mass[0, :] = 1.0
    mass[1, 3] = 5.0
    lo0 = meta[hm.M_LO]
    hm._recenter(mass, meta, 100.0 * np.exp(0.0455), 10)  # close 45.5 bins up: shift 45 bins
    assert mass.sum() == pytest.approx(105.0)
    assert meta[hm.M_LO] == pytest.approx(lo0 + 45 * 0.001)
    assert mass[0, 0] == pytest.approx(46.0) and mass[1, 0] == 5.0


def test_recentre_down_moves_levels_up_and_folds_the_top():
    """Close in bin 1 of 10 (margin 2): shift k = 1 - 5 = -4, every level moves up 4 bins;
    old bins 5..9 (6+7+8+9+10 = 40) fold into bin 9, bins 0..3 empty, the total kept."""
    mass, meta = hm.new_state(100.0, hm.HeatmapParams(n_bins=10, recenter_margin=2))
    mass[0, :] = np.arange(1.0, 11.0)
    lo0, w = meta[hm.M_LO], meta[hm.M_WIDTH]
    hm._recenter(mass, meta, float(np.exp(lo0 + 1.5 * w)), 2)
    np.testing.assert_array_equal(mass[0], [0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 40.0])
    assert mass[1].sum() == 0.0
    assert meta[hm.M_LO] == pytest.approx(lo0 - 4 * w)


def test_new_positions_land_at_mechanics_liquidation_prices():
    p = hm.HeatmapParams()
    mass, meta = hm.new_state(100_000.0, p)
    levs, w = np.array([10.0]), np.array([1.0])
    # OI 100 -> 101 BTC at 100,000 with all taker flow buying: 100,000 quote of new longs
    hm.update(mass, meta, p, levs, w, BTC.floor, BTC.cap, BTC.mmr, BTC.cum, 100_000.0,
              100_000.0, 100_000.0, 100.0, 1.0, 1.0, 1e6, np.nan, np.nan, np.nan, np.nan)
    hm.update(mass, meta, p, levs, w, BTC.floor, BTC.cap, BTC.mmr, BTC.cum, 100_000.0,
              100_000.0, 100_000.0, 101.0, 1.0, 1.0, 1e6, np.nan, np.nan, np.nan, np.nan)
    hm.materialize(mass, meta)
    b = int(np.flatnonzero(mass[0])[0])
    # 10x long, 10,000 notional (tier 1, mmr 0.4%): 100000 x 0.9 / 0.996 = 90,361.4
    price = hm.bin_prices(meta, mass.shape[1])[b]
    assert abs(np.log(price / (90_000 / 0.996))) < 0.001
    assert mass[0].sum() == pytest.approx(100_000.0) and mass[1].sum() == 0.0


def test_signals_are_causal_on_prefixes():
    bars = generate(SynthSpec(seed=2, days=2)).bars
    full = pipeline.compute(bars, BTC)
    for k in (100, 1500, 2600):
        part = pipeline.compute(bars.take(slice(0, k)), BTC)
        assert np.array_equal(part.heatmap.long_total, full.heatmap.long_total[:k])
        assert np.array_equal(part.heatmap.near_short, full.heatmap.near_short[:k])
        assert np.array_equal(part.positioning, full.positioning[:k], equal_nan=True)
        assert np.array_equal(part.detectors, full.detectors[:k], equal_nan=True)


def test_clusters_hand_case():
    mass, meta = hm.new_state(100.0, hm.HeatmapParams(n_bins=200))
    centers = hm.bin_prices(meta, 200)
    for b, m in ((50, 10.0), (52, 8.0), (80, 3.0), (81, 1.0)):
        mass[0, b] = m                       # long levels below 100
    for b in range(60, 70):
        mass[0, b] = 0.1                     # a thin floor, below the 90th percentile
    out = cl.find_clusters(mass, meta, 100.0, atr=1.0, percentile=90.0, merge_pct=0.003)
    longs = [c for c in out if c.side == "long"]
    assert len(longs) == 1                   # 50 and 52 merge (2 bins apart); 80 is too thin
    c = longs[0]
    assert c.notional == pytest.approx(18.0)
    assert c.low <= centers[50] and c.high >= centers[52]
    assert c.far_edge == c.low
    assert c.distance_pct == pytest.approx(100 * (c.price / 100.0 - 1))


def _shock_index(ds):
    t = np.datetime64(ds.meta["generator"]["shock"][:-1], "ms").astype(np.int64)
    return int(np.searchsorted(ds.bars.ts, t))


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_crowding_rises_before_the_cascade_and_detectors_fire(seed):
    ds = generate(SynthSpec(seed=seed, days=3, crowding="long"))
    sig = pipeline.compute(ds.bars, BTC)
    score = sig.positioning[:, ps.C_LONG_SCORE]
    si = _shock_index(ds)
    before = score[si - 120:si].mean()
    assert before > 0.45 and before > score[:1440].mean() + 0.3
    st = sig.detectors[:, dt.D_CASCADE_STATE]
    assert (st[si:si + 15] == 1.0).any()     # a long cascade is seen within 15 minutes


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_crowding_stays_low_without_crowding(seed):
    ds = generate(SynthSpec(seed=seed, days=3, crowding="none"))
    sig = pipeline.compute(ds.bars, BTC)
    si = _shock_index(ds)
    pre = sig.positioning[1440:si, [ps.C_LONG_SCORE, ps.C_SHORT_SCORE]]
    assert np.percentile(pre, 90) < 0.35


def test_exhaustion_follows_crowded_cascades():
    fired = 0
    for seed in (1, 2, 4, 5):
        ds = generate(SynthSpec(seed=seed, days=3, crowding="long"))
        det = pipeline.compute(ds.bars, BTC).detectors
        si = _shock_index(ds)
        ex = np.flatnonzero(det[:, dt.D_EXHAUSTION_STATE] == 1.0)
        fired += bool(len(ex)) and 30 < ex[0] - si < 600
    assert fired == 4



def test_positioning_windows_are_hours_on_4h_bars():
    """On 4h bars the 24h OI change spans 6 bars, the 4h taker imbalance one bar, and the 1h
    OI change is unknown (a bar is longer than the window). They spanned 24, 4 and 1 bars:
    "OI +x% in 24h" read four days. Hand-built: OI grows 1% a bar."""
    n = 10
    oi = 1000.0 * 1.01 ** np.arange(n)
    close = np.full(n, 100.0)
    nan = np.full(n, np.nan)
    tb = np.array([3.0, 1.0] * 5)
    out = ps.positioning_kernel(np.arange(n) * 14_400_000.0, close, nan, nan, oi, nan, nan,
                                tb, np.full(n, 4.0), np.zeros(n), np.zeros(n),
                                ps.CrowdingWeights(), 0.25)
    assert np.isnan(out[:, ps.C_OI_1H]).all()
    assert out[1, ps.C_OI_4H] == pytest.approx(0.01)
    assert np.isnan(out[5, ps.C_OI_24H])
    assert out[6, ps.C_OI_24H] == pytest.approx(1.01 ** 6 - 1.0)
    assert out[6, ps.C_DIVERGENCE] == pytest.approx(1.01 ** 6 - 1.0)   # flat price: +
    # taker imbalance of the bar alone: 3 of 4 bought -> +0.5, 1 of 4 -> -0.5
    assert out[8, ps.C_TAKER_IMB] == pytest.approx(0.5)
    assert out[9, ps.C_TAKER_IMB] == pytest.approx(-0.5)
    one_min = ps.positioning_kernel(np.arange(n) * 60_000.0, close, nan, nan, oi, nan, nan,
                                    tb, np.full(n, 4.0), np.zeros(n), np.zeros(n),
                                    ps.CrowdingWeights(), 60.0)
    assert np.isnan(one_min[:, ps.C_OI_24H]).all()        # 1m bars: 1,440 bars for 24 h
    # a window shorter than one bar is unknown, not the bar's own change: 1h on 2h bars,
    # 4h on 6h and 8h bars (they rounded half a bar up to one)
    for bph, unknown in ((0.5, ps.C_OI_1H), (1 / 6, ps.C_OI_4H), (0.125, ps.C_OI_4H)):
        got = ps.positioning_kernel(np.arange(n) / bph * 3_600_000.0, close, nan, nan, oi, nan,
                                    nan, tb, np.full(n, 4.0), np.zeros(n), np.zeros(n),
                                    ps.CrowdingWeights(), bph)
        assert np.isnan(got[:, unknown]).all(), bph
    assert ps.change_bars(4.0, 0.5) == 2 and ps.change_bars(1.0, 0.5) == 0

def test_explain_line():
    row = np.full(ps.N_COMPONENTS, np.nan)
    row[ps.C_LONG_SCORE] = 0.82
    row[ps.C_FUNDING] = 0.0005
    row[ps.C_FUNDING_Z] = 2.9
    row[ps.C_OI_24H] = 0.14
    row[ps.C_HEAT_ASYM] = 0.61
    assert ps.explain(row, "long") == ("longs crowded 0.82: funding +0.0500%, funding z 2.9, "
                                       "OI +14% in 24h, 61% of near liq mass within 3% below")


def test_validation_beats_random_by_far():
    scores = [score_at(generate(SynthSpec(seed=s, days=3)), BTC, 2 * 1440) for s in (1, 2, 3)]
    caps = [s.capture_top10 for s in scores]
    assert min(caps) > 0.5                       # random baseline ~0.10
    assert np.mean(caps) >= np.mean([s.oracle_capture_top10 for s in scores]) - 0.02
    assert all(s.raw_mass_capture_top10 < s.capture_top10 for s in scores)
