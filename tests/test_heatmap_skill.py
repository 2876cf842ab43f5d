"""Frozen-map estimates (`heatmap.timeline`), their causality, and `skill.bucket_skill`."""

import numpy as np
import pytest

from bot.data.bars import MINUTE_MS, Bars
from bot.data.synthetic import SynthSpec, generate
from bot.mechanics.brackets import shipped
from bot.signals import heatmap as hm
from bot.signals import skill

BTC = shipped("binance", "BTCUSDT")
ONE_TIER = (np.array([10.0]), np.array([1.0]))


def _tiny(low2: float, high2: float = 100.0) -> Bars:
    """Bar 0 sets OI 1,000 BTC at 100; bar 1 adds 2 BTC at close 100, all taker buys (so all
    new positions are longs); bar 2 opens at 100 and trades down to `low2` (up to `high2`)."""
    return Bars("BTCUSDT", MINUTE_MS, {
        "ts": np.arange(3, dtype=np.int64) * MINUTE_MS,
        "open": np.array([100.0, 100.0, 100.0]), "high": np.array([100.0, 100.0, high2]),
        "low": np.array([100.0, 100.0, low2]), "close": np.array([100.0, 100.0, 100.0]),
        "volume": np.array([1.0, 1.0, 1.0]), "taker_buy_volume": np.array([1.0, 1.0, 1.0]),
        "open_interest": np.array([1000.0, 1002.0, 1002.0])})


def test_est_long_hand_computed():
    # 10x long of 10k USDT at 100: qty 100, wallet 1,000, Binance tier 1 (mmr 0.4%, cum 0):
    # liq = (1000 - 100 x 100) / (100 x 0.004 - 100) = 90.3614...; the bar-1 add is
    # 2 BTC x 100 = 200 USDT, undecayed when read at bar 2's open (decay precedes the add)
    for low, expect in ((90.0, 200.0), (90.3, 200.0), (90.5, 0.0)):
        tl = hm.timeline(_tiny(low), BTC, hm.HeatmapParams(), *ONE_TIER)
        assert np.isnan(tl["est_long"][0])               # no map before the first bar
        assert tl["est_long"][1] == 0.0                   # nothing added yet at bar 1's open
        assert tl["est_long"][2] == pytest.approx(expect, rel=1e-12), low
        assert tl["est_short"][2] == 0.0
    # the same level seen as near mass at bar 1's close: within 10% below, not within 5%
    tl = hm.timeline(_tiny(90.0), BTC, hm.HeatmapParams(), *ONE_TIER, nears=(0.05, 0.1))
    assert tl["long_mass_5pct"][1] == 0.0
    assert tl["long_mass_10pct"][1] == pytest.approx(200.0, rel=1e-12)   # decay precedes add


def test_near_layer_hand_computed():
    # flow_weight 0, no account ratio: the layer splits 50/50. After bar 1 (OI 1,002 BTC,
    # close 100) each side's layer is 1e-3 x 1,002 x 100 / 2 = 50.1 USDT; the share within
    # log distance x is (x / 0.05) ** 1.5. Bar 2 opens at 100, trades 99 .. 100.5
    p = hm.HeatmapParams(flow_weight=0.0, near_frac=1e-3, near_pow=1.5, near_max=0.05,
                         intra_weight=0.2)
    layer = 50.1
    down, up, span = np.log(100 / 99), np.log(100.5 / 100), np.log(100.5 / 99)
    tl = hm.timeline(_tiny(99.0, 100.5), BTC, p, *ONE_TIER, nears=(0.01, 0.1))
    # the stored 10x level (90.36) is outside the bar's range: only the layer counts
    assert tl["est_long"][2] == pytest.approx(layer * (down / 0.05) ** 1.5
                                              + 0.2 * layer * (span / 0.05) ** 1.5, rel=1e-12)
    assert tl["est_short"][2] == pytest.approx(layer * (up / 0.05) ** 1.5
                                               + 0.2 * layer * (span / 0.05) ** 1.5, rel=1e-12)
    # bar 1 has no range (open = high = low = 100): nothing from the layer
    assert tl["est_long"][1] == 0.0 and tl["est_short"][1] == 0.0
    # near masses after bar 1's close: the layer within 1% (x = -ln 0.99); within 10% the
    # whole layer (capped at near_max) plus the stored 10x long level at 90.36, which holds
    # half of bar 1's 200 USDT (flow_weight 0 splits even all-buy flow 50/50)
    x1 = -np.log(0.99)
    assert tl["long_mass_1pct"][1] == pytest.approx(layer * (x1 / 0.05) ** 1.5, rel=1e-12)
    assert tl["short_mass_1pct"][1] == pytest.approx(layer * (np.log(1.01) / 0.05) ** 1.5,
                                                     rel=1e-12)
    assert tl["long_mass_10pct"][1] == pytest.approx(layer + 100.0, rel=1e-12)
    # the layer is an overlay: off by default, and the stored book does not change with it
    base = hm.run(_tiny(99.0, 100.5), BTC, p._replace(near_frac=0.0), *ONE_TIER)
    with_layer = hm.run(_tiny(99.0, 100.5), BTC, p, *ONE_TIER)
    np.testing.assert_array_equal(base.mass, with_layer.mass)
    assert hm.HeatmapParams().near_frac == 0.0 and hm.HeatmapParams().intra_weight == 0.0


@pytest.fixture(scope="module")
def synth():
    return generate(SynthSpec(seed=3, days=1)).bars


def test_timeline_no_lookahead_and_chunking(synth):
    full = hm.timeline(synth, BTC)
    for t in (10, 700, len(synth) - 2):
        part = hm.timeline(synth.take(slice(0, t + 1)), BTC)
        for k in ("est_long", "est_short", "long_mass_3pct", "short_mass_1pct", "confidence"):
            assert part[k][t] == full[k][t], (k, t)
    chunked = hm.timeline(synth, BTC, chunk=97, progress=lambda done: None)
    for k in full:
        np.testing.assert_array_equal(chunked[k], full[k])
    assert np.nanmax(full["est_long"]) > 0 and np.nanmax(full["est_short"]) > 0


def test_near_layer_no_lookahead(synth):
    """The layer and the in-bar term read nothing of bar t but its high/low: prefixes of the
    data give the same row t as the whole file, chunked runs the same as one run."""
    p = hm.HeatmapParams(near_frac=1e-3, near_pow=2.0, near_max=0.05, intra_weight=0.3)
    full = hm.timeline(synth, BTC, p)
    for t in (10, 700, len(synth) - 2):
        part = hm.timeline(synth.take(slice(0, t + 1)), BTC, p)
        for k in ("est_long", "est_short", "long_mass_1pct", "short_mass_3pct"):
            assert part[k][t] == full[k][t], (k, t)
    # a later bar's extremes change nothing before it
    b = synth.take(slice(0, 800))
    bumped = b.with_columns(mark_high=np.r_[b["mark_high"][:-1], b["mark_high"][-1] * 1.05],
                            mark_low=np.r_[b["mark_low"][:-1], b["mark_low"][-1] * 0.95])
    a1, a2 = hm.timeline(b, BTC, p), hm.timeline(bumped, BTC, p)
    for k in ("est_long", "est_short"):
        np.testing.assert_array_equal(a1[k][:-1], a2[k][:-1])
        assert a2[k][-1] > a1[k][-1]
    chunked = hm.timeline(synth, BTC, p, chunk=97)
    for k in full:
        np.testing.assert_array_equal(chunked[k], full[k])
    default = hm.timeline(synth, BTC)
    assert np.nansum(full["est_long"]) > np.nansum(default["est_long"])


def test_new_params_keep_bookkeeping(synth):
    """Entries spread over the bar's range and churn still satisfy
    mass = added - removed - consumed - decayed."""
    p = hm.HeatmapParams(entry_points=5, churn_frac=0.01, flow_weight=0.5)
    run = hm.run(synth, BTC, p)
    m = run.meta
    expect = (m[hm.M_ADDED] - m[hm.M_REMOVED] - m[hm.M_CONSUMED_LONG]
              - m[hm.M_CONSUMED_SHORT] - m[hm.M_DECAYED])
    assert abs(run.mass.sum() - expect) / m[hm.M_ADDED] < 1e-9
    assert m[hm.M_REMOVED] > 0


def test_bucket_skill_perfect_and_blind(synth):
    est = skill.frozen_estimates(synth, BTC)
    # realised = a monotone function of the frozen estimate: Spearman exactly 1
    bars = synth.with_columns(liq_long_notional=np.sqrt(np.nan_to_num(est[0])) + 0.0,
                              liq_short_notional=2.0 * np.nan_to_num(est[1]))
    ok = np.isfinite(est[0])
    bars = bars.take(slice(0, len(bars)))
    r = skill.bucket_skill(bars, BTC)
    assert r["map"]["long"] == pytest.approx(1.0) and r["map"]["short"] == pytest.approx(1.0)
    assert r["n"]["long"] == ok.sum()
    exc = (bars["open"] - bars["low"]) / bars["open"]
    assert r["excursion"]["long"] == pytest.approx(
        skill.spearman(exc[ok], bars["liq_long_notional"][ok]))
    # the map never sees the realised columns: other realised values, same estimates
    other = bars.with_columns(liq_long_notional=np.zeros(len(bars)) + 5e6)
    np.testing.assert_array_equal(skill.frozen_estimates(other, BTC)[0], est[0])
    # a window selects buckets; without realised data a side scores NaN
    half = int(bars.ts[len(bars) // 2])
    assert skill.bucket_skill(bars, BTC, start_ms=half)["n"]["long"] == len(bars) - len(bars) // 2
    r2 = skill.bucket_skill(synth.take(slice(0, 50)).with_columns(
        liq_short_notional=np.full(50, np.nan)), BTC)
    assert np.isnan(r2["map"]["short"]) and r2["beats_baselines"]["short"] is False


def test_params_for_interval():
    p = hm.params_for_interval(4 * 3_600_000, half_life_hours=336.0)
    assert p.half_life_bars == pytest.approx(84.0)
    assert hm.params_for_interval(MINUTE_MS).half_life_bars == hm.HeatmapParams().half_life_bars


def test_calibrated_skill_on_real_liquidations():
    """The figures docs/heatmap.md reports (BTC 4h, realised liquidations, held-out months)."""
    import sys
    from pathlib import Path

    from tests.conftest import shared_file
    cal = shared_file("coinglass_4h", "4h_2024-11-13_to_2025-05-12")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import heatmap_skill as hs
    bars = hs.load_bars(cal)
    r = skill.bucket_skill(bars, BTC, hm.CALIBRATED_4H, hm.CALIBRATED_4H_LEVERAGES,
                           hm.CALIBRATED_4H_WEIGHTS, start_ms=hs.SPLIT_MS)
    assert r["n"] == {"long": 365, "short": 365}
    assert r["map"]["long"] == pytest.approx(0.834, abs=0.002)
    assert r["map"]["short"] == pytest.approx(0.800, abs=0.002)
    for side in skill.SIDES:                  # above volume, range AND the side's excursion
        assert r["beats_baselines"][side]
    ins = skill.bucket_skill(bars, BTC, hm.CALIBRATED_4H, hm.CALIBRATED_4H_LEVERAGES,
                             hm.CALIBRATED_4H_WEIGHTS, end_ms=hs.SPLIT_MS)
    assert ins["map"]["long"] == pytest.approx(0.852, abs=0.002)
    assert ins["map"]["short"] == pytest.approx(0.803, abs=0.002)
