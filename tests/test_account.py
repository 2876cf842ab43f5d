"""Account kernels: fills, funding, liquidation, margin checks; conservation properties."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.mechanics import account as ac
from bot.mechanics import brackets as br
from bot.mechanics.funding import (
    estimate_funding_rate,
    funding_rate_from_premium,
    interest_per_interval,
    settlement_times,
    weighted_average_premium,
)

BTC = br.shipped("binance", "BTCUSDT")
FLOOR, CAP, MMR, CUM, MAXLEV = ac.stack_brackets([BTC])
FLOOR2, CAP2, MMR2, CUM2, MAXLEV2 = ac.stack_brackets([BTC, br.shipped("binance", "ETHUSDT")])


def test_open_add_reduce_flip_by_hand():
    acct, pos = ac.new_account(10_000.0, 1, leverage=10.0)
    ac.apply_fill(acct, pos, 0, 1.0, 100.0, 0.001)          # open long 1 @ 100, fee 0.1
    ac.apply_fill(acct, pos, 0, 1.0, 110.0, 0.001)          # add 1 @ 110, fee 0.11
    assert pos[0, ac.P_QTY] == 2.0 and pos[0, ac.P_ENTRY] == pytest.approx(105.0)
    r = ac.apply_fill(acct, pos, 0, -0.5, 120.0, 0.0)       # reduce 0.5 @ 120: +7.5
    assert r == pytest.approx(7.5) and pos[0, ac.P_ENTRY] == pytest.approx(105.0)
    r = ac.apply_fill(acct, pos, 0, -3.5, 90.0, 0.0)        # close 1.5 (-22.5), open short 2
    assert r == pytest.approx(-22.5)
    assert pos[0, ac.P_QTY] == -2.0 and pos[0, ac.P_ENTRY] == 90.0
    assert acct[ac.A_WALLET] == pytest.approx(10_000 - 0.1 - 0.11 + 7.5 - 22.5)
    assert acct[ac.A_FEES] == pytest.approx(0.21)


def test_funding_three_settlements_by_hand():
    acct, pos = ac.new_account(50_000.0, 2, leverage=10.0)
    ac.apply_fill(acct, pos, 0, 2.0, 100_000.0, 0.0)        # long 2 BTC
    ac.apply_fill(acct, pos, 1, -1.0, 100_000.0, 0.0)       # short 1 BTC
    paid_long = [ac.apply_funding(acct, pos, 0, m, r) for m, r in
                 ((100_000.0, 0.0001), (101_000.0, -0.0002), (99_000.0, 0.0003))]
    paid_short = [ac.apply_funding(acct, pos, 1, m, r) for m, r in
                  ((100_000.0, 0.0001), (101_000.0, -0.0002), (99_000.0, 0.0003))]
    # long: pays 2*100000*0.0001 = 20, receives 2*101000*0.0002 = 40.4, pays 2*99000*0.0003 = 59.4
    assert paid_long == pytest.approx([20.0, -40.4, 59.4])
    assert paid_short == pytest.approx([-10.0, 20.2, -29.7])   # shorts mirror it
    assert acct[ac.A_FUNDING] == pytest.approx(39.0 - 19.5)
    assert acct[ac.A_WALLET] == pytest.approx(50_000.0 - 19.5)


def test_settlement_schedule_and_estimator():
    day = 1_760_054_400_000  # 2025-10-10T00:00Z
    t = settlement_times(day - 1, day + 86_400_000, 8)
    assert ((t - day) // 3_600_000).tolist() == [0, 8, 16]
    assert len(settlement_times(day, day + 86_400_000, 4)) == 6
    assert len(settlement_times(day, day + 86_400_000, 1)) == 24
    assert interest_per_interval(8) == pytest.approx(0.0001)
    assert interest_per_interval(4) == pytest.approx(0.00005)
    # premium within the clamp band around interest -> exactly the interest rate
    assert funding_rate_from_premium(0.0003) == pytest.approx(0.0001)
    assert funding_rate_from_premium(0.0008) == pytest.approx(0.0003)      # 0.0008 - 0.0005
    assert funding_rate_from_premium(-0.0008) == pytest.approx(-0.0003)
    assert funding_rate_from_premium(0.02) == 0.003                         # capped
    # weights 1, 2, 3: (1*0.001 + 2*0.002 + 3*0.003) / 6
    assert weighted_average_premium(np.array([0.001, 0.002, 0.003])) == pytest.approx(0.014 / 6)
    assert estimate_funding_rate(np.array([0.001, 0.002, 0.003])) == pytest.approx(
        0.014 / 6 - 0.0005)


def _isolated_long(wallet=10_000.0, lev=10.0, qty=1.0, entry=100_000.0):
    acct, pos = ac.new_account(wallet, 1, leverage=lev, isolated=True)
    ac.apply_fill(acct, pos, 0, qty, entry, 0.0)
    return acct, pos


def test_ten_x_long_liquidated_at_the_right_price_with_margin_lost():
    acct, pos = _isolated_long()
    marks = np.array([100_000.0])
    lp = ac.liquidation_price(acct, pos, 0, marks, FLOOR, CAP, MMR, CUM)
    # margin 10,000; tier 2 at the liquidation notional: (10000 + 50 - 100000) / (0.005 - 1)
    assert lp == pytest.approx(89_950 / 0.995)
    assert np.isnan(ac.check_liquidation(acct, pos, 0, lp + 0.01, 101_000.0, marks, FLOOR, CAP,
                                         MMR, CUM, 0.0125))
    got = ac.check_liquidation(acct, pos, 0, 88_000.0, 100_500.0, marks, FLOOR, CAP, MMR, CUM,
                               0.0125)
    assert got == pytest.approx(lp)
    assert pos[0, ac.P_QTY] == 0.0 and acct[ac.A_LIQUIDATIONS] == 1
    assert acct[ac.A_WALLET] == pytest.approx(0.0, abs=1e-6)       # lost exactly its margin
    assert acct[ac.A_REALIZED] == pytest.approx(lp - 100_000.0)
    assert acct[ac.A_FEES] == pytest.approx(10_000.0 + (lp - 100_000.0))


def test_cross_liquidation_charges_clearance_fee():
    acct, pos = ac.new_account(10_000.0, 1, leverage=10.0, isolated=False)
    ac.apply_fill(acct, pos, 0, 1.0, 100_000.0, 0.0)
    marks = np.array([95_000.0])
    lp = ac.check_liquidation(acct, pos, 0, 80_000.0, 95_000.0, marks, FLOOR, CAP, MMR, CUM, 0.0125)
    fee_cap = 10_000.0 + (lp - 100_000.0)          # equity left at the liquidation price
    assert acct[ac.A_FEES] == pytest.approx(min(0.0125 * lp, fee_cap))
    assert acct[ac.A_WALLET] >= -1e-9


def test_a_range_wholly_past_the_liquidation_price_closes_at_its_nearest_mark():
    # cross 10x long of 1 BTC at 100,000 on 10,000: liquidation price ~90,400; marks that
    # span only 80,000..85,000 (the position was past it before they traded) close it at
    # 85,000, the best of them, not at a price the range never reached
    acct, pos = ac.new_account(10_000.0, 1, leverage=10.0, isolated=False)
    ac.apply_fill(acct, pos, 0, 1.0, 100_000.0, 0.0)
    marks = np.array([80_000.0])
    assert ac.liquidation_price(acct, pos, 0, marks, FLOOR, CAP, MMR, CUM) > 90_000.0
    got = ac.check_liquidation(acct, pos, 0, 80_000.0, 85_000.0, marks, FLOOR, CAP, MMR, CUM,
                               0.0125)
    # 15,000 lost on a 10,000 wallet at 85,000: past bankruptcy the insurance fund takes the
    # position at the bankruptcy price 90,000 and the other 5,000; the account ends at zero,
    # no clearance fee, and the trade reads 90,000, the price whose PnL is the -10,000
    # booked (at 85,000 a ledger booking it as a fill would have gone to -5,000)
    assert got == 90_000.0 and pos[0, ac.P_QTY] == 0.0
    assert acct[ac.A_REALIZED] == -10_000.0 and acct[ac.A_FEES] == 0.0
    assert acct[ac.A_WALLET] == 0.0
    # a short: marks wholly above its liquidation price, past bankruptcy too; isolated, the
    # loss stops at its margin (10,000 at 10x): closed at its bankruptcy price 110,000
    acct, pos = ac.new_account(10_000.0, 1, leverage=10.0, isolated=True)
    ac.apply_fill(acct, pos, 0, -1.0, 100_000.0, 0.0)
    got = ac.check_liquidation(acct, pos, 0, 115_000.0, 120_000.0, np.array([120_000.0]), FLOOR,
                               CAP, MMR, CUM, 0.0125)
    assert got == 110_000.0 and acct[ac.A_REALIZED] == -10_000.0
    assert acct[ac.A_WALLET] == 0.0 and acct[ac.A_FEES] == 0.0
    # a range wholly past the liquidation price but short of bankruptcy: its nearest mark,
    # the 200 of margin left goes with it (isolated)
    acct, pos = ac.new_account(10_000.0, 1, leverage=10.0, isolated=True)
    ac.apply_fill(acct, pos, 0, 1.0, 100_000.0, 0.0)
    got = ac.check_liquidation(acct, pos, 0, 89_000.0, 90_200.0, np.array([90_000.0]), FLOOR,
                               CAP, MMR, CUM, 0.0125)
    assert got == 90_200.0 and acct[ac.A_REALIZED] == pytest.approx(-9_800.0)
    assert acct[ac.A_WALLET] == pytest.approx(0.0, abs=1e-9)
    assert acct[ac.A_FEES] == pytest.approx(200.0)


def test_initial_margin_check_reasons():
    acct, pos = ac.new_account(1_000.0, 1, leverage=10.0)
    marks = np.array([100_000.0])
    args = (marks, 0.0005, FLOOR, CAP, MMR, CUM, MAXLEV)
    assert ac.initial_margin_check(acct, pos, 0, 0.0, 100_000.0, *args) == ac.REJECT_ZERO_QTY
    assert ac.initial_margin_check(acct, pos, 0, 0.09, 100_000.0, *args) == ac.OK   # 900 + 4.5
    assert ac.initial_margin_check(acct, pos, 0, 0.1, 100_000.0, *args) == \
        ac.REJECT_INSUFFICIENT_MARGIN
    acct2, pos2 = ac.new_account(1e9, 1, leverage=50.0)
    # 2M notional sits in the 20x tier: 50x is refused whatever the balance
    assert ac.initial_margin_check(acct2, pos2, 0, 20.0, 100_000.0, *args) == \
        ac.REJECT_BRACKET_LEVERAGE
    ac.apply_fill(acct, pos, 0, 0.09, 100_000.0, 0.0005)
    assert ac.initial_margin_check(acct, pos, 0, -0.05, 100_000.0, *args) == ac.OK  # reduce


ops = st.lists(st.tuples(st.sampled_from(["fill", "funding", "liq"]), st.integers(0, 1),
                         st.floats(-3, 3), st.floats(0.5, 1.5), st.floats(-0.003, 0.003)),
               min_size=1, max_size=40)


@settings(max_examples=150, deadline=None)
@given(seq=ops, isolated=st.booleans(), lev=st.sampled_from([2.0, 5.0, 10.0, 20.0]))
def test_equity_is_conserved(seq, isolated, lev):
    acct, pos = ac.new_account(1e6, 2, leverage=lev, isolated=isolated)
    w0 = acct[ac.A_WALLET]
    base = np.array([50_000.0, 3_000.0])
    for op, i, x, scale, rate in seq:
        price = base[i] * scale
        marks = base * scale
        if op == "fill" and x != 0.0:
            ac.apply_fill(acct, pos, i, x, price, 0.0005)
        elif op == "funding":
            ac.apply_funding(acct, pos, i, price, rate)
        else:
            ac.check_liquidation(acct, pos, i, price * 0.9, price * 1.1, marks, FLOOR2, CAP2,
                                 MMR2, CUM2, 0.0125)
        lhs = acct[ac.A_WALLET] - w0
        rhs = acct[ac.A_REALIZED] - acct[ac.A_FEES] - acct[ac.A_FUNDING]
        assert lhs == pytest.approx(rhs, abs=1e-6 * (1 + abs(rhs)))
        # per-position books add up to the account
        assert pos[:, ac.P_FEES].sum() == pytest.approx(acct[ac.A_FEES], abs=1e-6)


@settings(max_examples=200, deadline=None)
@given(lev=st.floats(1.5, 125), notional=st.floats(100, 4e7), side=st.sampled_from([1.0, -1.0]),
       move=st.floats(-0.9, 3.0), funding=st.floats(-0.003, 0.003), extra=st.floats(0, 5e5))
def test_liquidated_isolated_position_never_leaves_negative_wallet(lev, notional, side, move,
                                                                    funding, extra):
    entry = 50_000.0
    qty = notional / entry
    acct, pos = ac.new_account(notional / lev + extra + notional * 0.0005, 1, leverage=lev,
                               isolated=True)
    marks = np.array([entry])
    code = ac.initial_margin_check(acct, pos, 0, side * qty, entry, marks, 0.0005, FLOOR, CAP,
                                   MMR, CUM, MAXLEV)
    if code != ac.OK:
        return
    ac.apply_fill(acct, pos, 0, side * qty, entry, 0.0005)
    ac.apply_funding(acct, pos, 0, entry, funding)
    mark = entry * (1 + move)
    ac.check_liquidation(acct, pos, 0, min(entry, mark), max(entry, mark), np.array([mark]),
                         FLOOR, CAP, MMR, CUM, 0.0125)
    assert acct[ac.A_WALLET] >= -1e-6
