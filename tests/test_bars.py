import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.data.align import align_asof, place_events
from bot.data.bars import MINUTE_MS, Bars, Trades
from bot.data.resample import resample
from bot.data.validate import fill_gaps, find_gaps


def _bars(n: int, seed: int, start: int = 1_700_000_040_000) -> Bars:
    rng = np.random.default_rng(seed)
    o = 100 + rng.normal(0, 1, n).cumsum()
    c = o + rng.normal(0, 0.5, n)
    h = np.maximum(o, c) + rng.uniform(0, 1, n)
    lo = np.minimum(o, c) - rng.uniform(0, 1, n)
    v = rng.uniform(0, 10, n)
    fr = np.full(n, np.nan)
    fr[::7] = rng.normal(0, 1e-4, len(fr[::7]))
    return Bars("T", MINUTE_MS, {
        "ts": start + np.arange(n, dtype=np.int64) * MINUTE_MS, "open": o, "high": h,
        "low": lo, "close": c, "volume": v, "quote_volume": v * c,
        "trades": rng.integers(0, 50, n), "taker_buy_volume": v * rng.uniform(0, 1, n),
        "taker_buy_quote_volume": v * c * 0.5, "funding_rate": fr,
        "open_interest": rng.uniform(1, 2, n)})


def test_resample_hand_case():
    b = Bars("T", MINUTE_MS, {"ts": np.array([0, 60_000, 120_000, 180_000, 240_000]) + 3_600_000,
                              "open": [10., 11, 12, 13, 14], "high": [11., 15, 13, 14, 16],
                              "low": [9., 10, 8, 12, 13], "close": [11., 12, 13, 14, 15],
                              "volume": [1., 2, 3, 4, 5], "trades": [1, 1, 1, 1, 1]})
    r = resample(b, 3 * MINUTE_MS)
    # 3,600,000 is a multiple of 180,000: first bucket holds minutes 0..2
    assert r.ts.tolist() == [3_600_000, 3_780_000]
    assert r["open"].tolist() == [10, 13]
    assert r["high"].tolist() == [15, 16]
    assert r["low"].tolist() == [8, 12]
    assert r["close"].tolist() == [13, 15]
    assert r["volume"].tolist() == [6, 9]
    assert r["trades"].tolist() == [3, 2]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 400), seed=st.integers(0, 10_000), k=st.sampled_from([2, 3, 5, 15, 60]),
       offset=st.integers(0, 59))
def test_resample_conserves_volume_trades_and_bounds(n, seed, k, offset):
    b = _bars(n, seed, start=1_700_000_000_000 + offset * MINUTE_MS)
    r = resample(b, k * MINUTE_MS)
    assert np.isclose(r["volume"].sum(), b["volume"].sum(), rtol=1e-12)
    assert r["trades"].sum() == b["trades"].sum()
    assert np.isclose(np.nansum(r["funding_rate"]), np.nansum(b["funding_rate"]), atol=1e-15)
    assert r["high"].max() == b["high"].max() and r["low"].min() == b["low"].min()
    assert np.all(r["high"] >= np.maximum(r["open"], r["close"]))
    assert np.all(r["low"] <= np.minimum(r["open"], r["close"]))
    assert np.all(r.ts % (k * MINUTE_MS) == 0)
    assert r["open"][0] == b["open"][0] and r["close"][-1] == b["close"][-1]


def test_align_asof_visibility_boundary():
    bar_ts = np.array([0, 60_000, 120_000, 180_000])
    # a value published at 60,000 (the open of bar 1) is not visible at bar 0's close
    out = align_asof(bar_ts, 60_000, np.array([59_999, 60_000, 150_000]), np.array([1., 2, 3]))
    assert out[0] == 1.0 and out[1] == 2.0 and out[2] == 3.0 and out[3] == 3.0
    out = align_asof(bar_ts, 60_000, np.array([60_000]), np.array([7.0]), delay_ms=60_000)
    assert np.isnan(out[0]) and np.isnan(out[1]) and out[2] == 7.0


@settings(max_examples=80, deadline=None)
@given(pub=st.lists(st.integers(0, 10_000_000), min_size=1, max_size=50),
       n=st.integers(1, 200), step=st.sampled_from([60_000, 300_000]))
def test_align_never_exposes_a_value_before_publication(pub, n, step):
    pub_ts = np.array(sorted(pub), dtype=np.int64)
    vals = np.arange(len(pub_ts), dtype=float)  # value i identifies publication i
    bar_ts = np.arange(n, dtype=np.int64) * step
    out = align_asof(bar_ts, step, pub_ts, vals)
    for i, v in enumerate(out):
        close = bar_ts[i] + step
        if np.isnan(v):
            assert not (pub_ts < close).any()
        else:
            j = int(v)
            assert pub_ts[j] < close                       # published before the close
            assert not (pub_ts[j + 1:] < close).any() or pub_ts[j + 1] == pub_ts[j]


def test_place_events_in_containing_bar():
    bar_ts = np.array([0, 60_000, 120_000])
    out = place_events(bar_ts, 60_000, np.array([60_000, 119_999, 500_000, -5]),
                       np.array([1e-4, 2e-4, 9.0, 9.0]))
    assert np.isnan(out[0]) and out[1] == pytest.approx(3e-4) and np.isnan(out[2])


def test_gaps_found_and_filled_with_flags():
    b = _bars(10, 1).take(np.array([0, 1, 2, 6, 7, 8, 9]))
    gaps = find_gaps(b.ts, MINUTE_MS)
    assert [(g.missing, g.start_ms - b.ts[0]) for g in gaps] == [(3, 3 * MINUTE_MS)]
    f = fill_gaps(b)
    assert len(f) == 10 and f["filled"].tolist() == [False] * 3 + [True] * 3 + [False] * 4
    assert np.all(f["open"][3:6] == b.close[2]) and np.all(f["volume"][3:6] == 0)
    assert np.all(np.isnan(f["funding_rate"][3:6]))
    assert np.all(f["open_interest"][3:6] == b["open_interest"][2])
    assert f["volume"].sum() == pytest.approx(b["volume"].sum())


def test_trades_to_bars():
    t = Trades("T", np.array([0, 10, 59_999, 60_000]), np.array([10., 12, 11, 9]),
               np.array([1., 2, 3, 4]), np.array([1, -1, 1, -1]))
    b = t.to_bars()
    assert b["open"].tolist() == [10, 9] and b["high"].tolist() == [12, 9]
    assert b["volume"].tolist() == [6, 4] and b["taker_buy_volume"].tolist() == [4, 0]
    assert b["trades"].tolist() == [3, 1]


def test_bars_reject_unknown_and_ragged_columns():
    with pytest.raises(ValueError, match="unknown column"):
        Bars("T", MINUTE_MS, {"ts": [0], "open": [1.], "high": [1.], "low": [1.],
                              "close": [1.], "volume": [1.], "colour": [1.]})
    with pytest.raises(ValueError, match="shape"):
        Bars("T", MINUTE_MS, {"ts": [0, 1], "open": [1.], "high": [1.], "low": [1.],
                              "close": [1.], "volume": [1.]})


def test_mark_prices_say_what_the_liquidations_ran_on():
    """Mark columns present but NaN where the mark klines were missing ran those bars on
    trade prices while the run said "mark klines"."""
    from bot.data.bars import MARKS_FROM_TRADES, mark_coverage, mark_prices

    n = 4
    c = {"ts": np.arange(n, dtype=np.int64) * 60_000, "open": np.ones(n), "high": np.ones(n),
         "low": np.ones(n), "close": np.ones(n), "volume": np.ones(n)}
    assert mark_prices(Bars("X", 60_000, c)) == MARKS_FROM_TRADES
    part = Bars("X", 60_000, {**c, "mark_high": np.array([1.0, 1.0, np.nan, 1.0]),
                              "mark_low": np.ones(n)})
    assert mark_coverage(part) == 0.75
    assert mark_prices(part).startswith("mark klines on 75.0% of the bars, last-trade prices")
    assert mark_prices(Bars("X", 60_000, {**c, "mark_high": np.ones(n),
                                          "mark_low": np.ones(n)})) == "mark klines"
    m = 10_000                                  # one bar in 10,000 without marks: 99.9%
    big = {k: np.resize(v, m) for k, v in c.items()}
    big["ts"] = np.arange(m, dtype=np.int64) * 60_000
    hi = np.ones(m)
    hi[5] = np.nan
    assert "on 99.9% of the bars" in mark_prices(Bars("X", 60_000, {**big, "mark_high": hi,
                                                                     "mark_low": np.ones(m)}))
