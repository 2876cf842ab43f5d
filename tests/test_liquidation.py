"""Liquidation prices against the exchanges' published examples, plus properties."""

import json

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bot.errors import DataError
from bot.mechanics import brackets as br
from bot.mechanics import liquidation as lq

WB = 1535443.01
ETH = (3683.979, 1456.84, 1335.18)   # qty, entry, mark
BTC = (109.488, 32481.98, 31967.27)


def test_binance_published_example_isolated_exact_to_the_cent():
    eth, btc = br.shipped("binance", "ETHUSDT"), br.shipped("binance", "BTCUSDT")
    p, t = lq.binance_liquidation_price_bracketed(1.0, ETH[0], ETH[1], WB, eth.floor, eth.cap,
                                                  eth.mmr, eth.cum)
    assert round(p, 2) == 1114.78 and eth.mmr[t] == 0.10 and eth.cum[t] == 135365
    p, t = lq.binance_liquidation_price_bracketed(1.0, BTC[0], BTC[1], WB, btc.floor, btc.cap,
                                                  btc.mmr, btc.cum)
    assert round(p, 2) == 18778.73 and btc.mmr[t] == 0.025 and btc.cum[t] == 16300
    # the single-bracket kernel with the example's own rate and amount gives the same
    assert round(lq.binance_liquidation_price(1.0, ETH[0], ETH[1], WB, 0.10, 135365), 2) == 1114.78


def test_binance_published_example_cross_exact_to_the_cent():
    eth, btc = br.shipped("binance", "ETHUSDT"), br.shipped("binance", "BTCUSDT")
    mm_btc = lq.position_maintenance(BTC[0], BTC[2], btc.floor, btc.cap, btc.mmr, btc.cum)
    up_btc = BTC[0] * (BTC[2] - BTC[1])
    mm_eth = lq.position_maintenance(ETH[0], ETH[2], eth.floor, eth.cap, eth.mmr, eth.cum)
    up_eth = ETH[0] * (ETH[2] - ETH[1])
    assert round(mm_btc, 2) == 71200.81 and round(up_btc, 2) == -56354.57
    p, _ = lq.binance_liquidation_price_bracketed(1.0, ETH[0], ETH[1], WB, eth.floor, eth.cap,
                                                  eth.mmr, eth.cum, mm_btc, up_btc)
    assert round(p, 2) == 1153.26
    p, _ = lq.binance_liquidation_price_bracketed(1.0, BTC[0], BTC[1], WB, btc.floor, btc.cap,
                                                  btc.mmr, btc.cum, mm_eth, up_eth)
    assert round(p, 2) == 26316.89


def test_bybit_published_examples():
    # Bybit Help Center, "Liquidation Price (USDT Contract)": 1 BTC at 20,000, 50x, MMR 0.5%
    assert lq.bybit_liquidation_price_isolated(1.0, 1.0, 20000.0, 50.0, 0.005) == 19700.0
    assert lq.bybit_liquidation_price_isolated(-1.0, 1.0, 20000.0, 50.0, 0.005) == 20300.0
    # extra margin of 100 USDT moves it 100 further away
    assert lq.bybit_liquidation_price_isolated(1.0, 1.0, 20000.0, 50.0, 0.005, 0.0, 100.0) == 19600.0


def test_okx_hand_computed():
    # long 2 BTC at 30,000 with 6,000 margin (10x), MMR 0.4%, taker 0.05%:
    # (6000 - 60000) / (2 x (0.004 + 0.0005 - 1)) = -54000 / -1.991 = 27121.045...
    assert lq.okx_liquidation_price_isolated(1.0, 2.0, 30000.0, 6000.0, 0.004, 0.0005) == \
        pytest.approx(54000 / 1.991, rel=1e-12)
    assert lq.okx_liquidation_price_isolated(-1.0, 2.0, 30000.0, 6000.0, 0.004, 0.0005) == \
        pytest.approx(66000 / 2.009, rel=1e-12)  # 2 x (1 + 0.0045)


def test_bankruptcy_and_margin_ratio():
    # 1 BTC long at 100,000 with 10,000 margin: equity zero at 90,000
    assert lq.bankruptcy_price(1.0, 1.0, 100000.0, 10000.0) == 90000.0
    assert lq.bankruptcy_price(-1.0, 1.0, 100000.0, 10000.0) == 110000.0
    assert lq.margin_ratio(500.0, 1000.0) == 0.5 and lq.margin_ratio(1.0, 0.0) == np.inf


BTC_TIERS = br.shipped("binance", "BTCUSDT")


@settings(max_examples=300, deadline=None)
@given(entry=st.floats(100, 200_000), notional=st.floats(10, 5e8), lev=st.floats(1.01, 125))
def test_long_liq_below_entry_below_short_liq(entry, notional, lev):
    assume(lev <= BTC_TIERS.max_leverage[BTC_TIERS.tier(notional)])   # an openable position
    qty = notional / entry
    margin = notional / lev
    b = BTC_TIERS
    long_p, _ = lq.binance_liquidation_price_bracketed(1.0, qty, entry, margin, b.floor, b.cap,
                                                       b.mmr, b.cum)
    short_p, _ = lq.binance_liquidation_price_bracketed(-1.0, qty, entry, margin, b.floor, b.cap,
                                                        b.mmr, b.cum)
    assert long_p < entry < short_p


@settings(max_examples=200, deadline=None)
@given(entry=st.floats(100, 200_000), notional=st.floats(10, 2e7), lev=st.floats(1.5, 60),
       bump=st.floats(1.01, 2.0), side=st.sampled_from([1.0, -1.0]))
def test_liq_moves_toward_entry_as_leverage_rises(entry, notional, lev, bump, side):
    assume(lev * bump <= BTC_TIERS.max_leverage[BTC_TIERS.tier(notional)])
    qty = notional / entry
    b = BTC_TIERS
    p1 = lq.binance_liquidation_price_bracketed(side, qty, entry, notional / lev, b.floor, b.cap,
                                                b.mmr, b.cum)[0]
    p2 = lq.binance_liquidation_price_bracketed(side, qty, entry, notional / (lev * bump),
                                                b.floor, b.cap, b.mmr, b.cum)[0]
    assume(p1 > 0)
    assert abs(p2 - entry) <= abs(p1 - entry) + 1e-9 * entry


@settings(max_examples=200, deadline=None)
@given(entry=st.floats(100, 200_000), notional=st.floats(10, 5e8), lev=st.floats(1.01, 125),
       side=st.sampled_from([1.0, -1.0]))
def test_single_cross_position_equals_isolated(entry, notional, lev, side):
    from bot.mechanics import account as ac
    assume(lev <= BTC_TIERS.max_leverage[BTC_TIERS.tier(notional)])
    qty = notional / entry
    b = BTC_TIERS
    iso = lq.binance_liquidation_price_bracketed(side, qty, entry, notional / lev, b.floor, b.cap,
                                                 b.mmr, b.cum)[0]
    acct, pos = ac.new_account(notional / lev, 1, leverage=lev, isolated=False)
    pos[0, ac.P_QTY] = side * qty
    pos[0, ac.P_ENTRY] = entry
    floor, cap, mmr, cum, _ = ac.stack_brackets([b])
    cross = ac.liquidation_price(acct, pos, 0, np.array([entry]), floor, cap, mmr, cum)
    assert cross == pytest.approx(iso, rel=1e-12, abs=1e-9)


def test_bracket_lookup_at_every_boundary():
    b = BTC_TIERS
    for i in range(len(b)):
        assert b.tier(b.cap[i]) == i                      # cap is inclusive
        if i + 1 < len(b):
            assert b.tier(np.nextafter(b.cap[i], np.inf)) == i + 1
        assert b.tier(np.nextafter(b.floor[i], np.inf)) == i
    assert b.tier(0.0) == 0 and b.tier(1e12) == len(b) - 1


def test_shipped_cum_follow_the_recurrence_and_published_amounts():
    assert BTC_TIERS.cum[:4].tolist() == [0, 50, 1300, 16300]
    assert br.shipped("binance", "ETHUSDT").cum[5] == 135365


def test_broken_cum_names_the_tier(tmp_path):
    tiers = [{"minNotional": 0, "maxNotional": 50000, "maintenanceMarginRate": 0.004,
              "maxLeverage": 125, "info": {"cum": "0.0"}},
             {"minNotional": 50000, "maxNotional": 250000, "maintenanceMarginRate": 0.005,
              "maxLeverage": 100, "info": {"cum": "50.0"}},
             {"minNotional": 250000, "maxNotional": 1000000, "maintenanceMarginRate": 0.01,
              "maxLeverage": 50, "info": {"cum": "1200.0"}}]
    f = tmp_path / "tiers.json"
    f.write_text(json.dumps({"BTC/USDT:USDT": tiers}))
    with pytest.raises(DataError) as err:
        br.load_file(f, "BTCUSDT")
    assert str(err.value) == (
        f"{f}: tier 3: maintenance amount 1200 breaks cum_i = cum_(i-1) + floor_i x "
        "(mmr_i - mmr_(i-1)); expected 1300 (cum_2 50 + floor 250000 x (mmr 0.01 - 0.005))")
    tiers[2]["info"]["cum"] = "1300.0"
    f.write_text(json.dumps({"BTC/USDT:USDT": tiers}))
    b = br.load_file(f, "BTCUSDT")
    assert b.cum.tolist() == [0, 50, 1300] and b.max_leverage.tolist() == [125, 100, 50]


def test_batch_matches_scalar():
    rng = np.random.default_rng(0)
    n = 1000
    side = np.where(rng.uniform(size=n) < 0.5, 1.0, -1.0)
    entry = rng.uniform(20_000, 120_000, n)
    qty = rng.uniform(0.001, 200, n)
    lev = rng.choice([5.0, 10.0, 25.0, 50.0, 100.0], n)
    b = BTC_TIERS
    out = lq.batch_isolated_liquidation_prices(side, qty, entry, lev, b.floor, b.cap, b.mmr, b.cum)
    scalar = [lq.binance_liquidation_price_bracketed(side[k], qty[k], entry[k],
                                                     qty[k] * entry[k] / lev[k], b.floor, b.cap,
                                                     b.mmr, b.cum)[0] for k in range(n)]
    np.testing.assert_array_equal(out, scalar)
    ok = lev <= b.max_leverage[[b.tier(x) for x in qty * entry]]      # openable positions
    assert ok.sum() > 300
    assert (out[ok & (side > 0)] < entry[ok & (side > 0)]).all()
    assert (out[ok & (side < 0)] > entry[ok & (side < 0)]).all()


def test_leverage_for_liquidation_inverts_the_formula():
    for side in (1.0, -1.0):
        for lev in (3.0, 10.0, 50.0):
            lp = lq.binance_liquidation_price(side, 2.0, 100.0, 2.0 * 100.0 / lev, 0.005, 0.0)
            assert lq.leverage_for_liquidation_at(side, 100.0, lp, 0.005) == pytest.approx(lev)
    assert lq.leverage_for_liquidation_at(1.0, 100.0, 101.0, 0.005) == np.inf
