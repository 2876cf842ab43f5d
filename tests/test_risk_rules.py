"""The risk rules with memory, on hand-built inputs: liquidation-distance hysteresis, halt
cool-downs, estimator warm-ups and the cascade detector's onset response."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.errors import ConfigError
from bot.risk import engine as en
from bot.risk import inputs as ri
from bot.risk.policy import RiskPolicy, load_policy
from bot.risk.reasons import render
from bot.signals import detectors as dt

H = 3_600_000.0


def _sig(mark: float, atr: float) -> np.ndarray:
    sig = np.full(en.N_SIG, np.nan)
    sig[en.S_MARK], sig[en.S_ATR] = mark, atr
    sig[en.S_CROWD_LONG] = sig[en.S_CROWD_SHORT] = 0.0
    sig[en.S_CASCADE] = sig[en.S_CASCADE_BLOCK] = sig[en.S_STALE_BARS] = 0.0
    return sig


def _acct(equity: float, notional: float, liq: float, day_start: float = 10_000.0,
          peak: float = 10_000.0) -> np.ndarray:
    """An account view (A_* layout), no hedge; the strategy's target unknown (NaN)."""
    v = np.full(en.N_ACCT_VIEW, np.nan)
    v[[en.A_EQUITY, en.A_NOTIONAL, en.A_LIQ_PRICE, en.A_DAY_START_EQUITY, en.A_PEAK_EQUITY,
       en.A_HEDGE_NOTIONAL]] = equity, notional, liq, day_start, peak, 0.0
    return v


def _lev(liq: float, mark: float = 100.0, mmr: float = 0.005) -> float:
    """Long leverage whose liquidation sits at `liq` (1/L = 1 + liq (mmr - 1) / mark)."""
    return 1.0 / (1.0 + liq * (mmr - 1.0) / mark)


POL = RiskPolicy(min_liq_atr=4.0, liq_release_atr=8.0, mmr=0.005, max_leverage=125.0,
                 lev_base=125.0, lev_min=125.0, cascade_mode=False, hedge=False,
                 daily_loss=1.0, max_drawdown=1.0).to_array()


def test_liquidation_distance_trips_holds_and_releases_at_the_right_bars():
    rs = en.new_risk_state()
    out = np.zeros(en.N_DECISION)
    # bar 0: 10x long, liquidation 9.5 below the mark, ATR 1: 9.5 ATRs away, no action
    en.evaluate_state(_sig(100.0, 1.0), _acct(10_000.0, 100_000.0, 90.5), POL, rs, 0.0, out)
    assert out[en.D_STATE] == en.ACTIVE and rs[en.RK_LIQ_TRIP] == 0.0
    # bar 1: ATR 2.5 -> 3.8 ATRs < 4: trips, caps at the leverage liquidated 8 ATRs (20) away
    en.evaluate_state(_sig(100.0, 2.5), _acct(10_000.0, 100_000.0, 90.5), POL, rs, 1.0, out)
    assert out[en.D_STATE] == en.REDUCING and int(out[en.D_REASONS]) & en.R_LIQ_DISTANCE
    assert rs[en.RK_LIQ_TRIP] == 1.0 and rs[en.RK_LIQ_LEV] == pytest.approx(10.0)
    assert out[en.D_MAX_LEV_LONG] == pytest.approx(_lev(80.0)) == pytest.approx(1 / 0.204)
    assert out[en.D_LIQ_DISTANCE_ATR] == pytest.approx(3.8)
    assert en.allowed_target(100_000.0, 100_000.0, out, POL) == pytest.approx(10_000 / 0.204)
    # bar 2: reduced to 4.9x (liquidation 80.0), ATR back to 2: 10 ATRs away, outside the
    # trip line but the 10x that tripped would sit at 16 ATRs (cap 6.09x < 10x): held, and
    # the strategy's 10x target cannot re-lever inside the band
    en.evaluate_state(_sig(100.0, 2.0), _acct(10_000.0, 49_000.0, 80.0), POL, rs, 2.0, out)
    assert out[en.D_STATE] == en.REDUCING and rs[en.RK_LIQ_TRIP] == 1.0
    assert out[en.D_MAX_LEV_LONG] == pytest.approx(_lev(84.0))
    # the explanation says it is the latch holding, not a distance that is close now
    assert render(out) == ("REDUCING: liquidation-distance rule tripped: leverage capped at "
                           "6.1x (own liquidation 10.0 ATR away)")
    assert en.allowed_target(100_000.0, 49_000.0, out, POL) == 49_000.0
    # bar 3: ATR 1.2: 10x would now sit 9.6 away, inside 8 ATRs (9.6 = 8 x 1.2) exactly ->
    # cap == _lev(90.4) = 9.58x < 10x: still held
    en.evaluate_state(_sig(100.0, 1.2), _acct(10_000.0, 49_000.0, 80.0), POL, rs, 3.0, out)
    assert rs[en.RK_LIQ_TRIP] == 1.0 and out[en.D_MAX_LEV_LONG] == pytest.approx(_lev(90.4))
    # bar 4: ATR 1.1: the tripping 10x sits 8.8 / 1.1 = 8 ATRs... cap _lev(91.2) = 10.80x
    # >= 10x: released, no cap of this rule, ACTIVE
    en.evaluate_state(_sig(100.0, 1.1), _acct(10_000.0, 49_000.0, 80.0), POL, rs, 4.0, out)
    assert rs[en.RK_LIQ_TRIP] == 0.0 and out[en.D_STATE] == en.ACTIVE
    assert not int(out[en.D_REASONS]) & en.R_LIQ_DISTANCE
    assert en.allowed_target(100_000.0, 49_000.0, out, POL) == 100_000.0


def test_the_distance_scale_goes_below_1x_on_both_sides():
    """Farther than the mark, a long's cap is mark / distance (a short's own formula tends
    to it): at ATR 5% the 28-ATR release leverage of a tripped 1x long is 1 / 1.4."""
    assert en._lev_at_distance(1.0, 100.0, 100.0, 0.005) == pytest.approx(1.0)
    assert en._lev_at_distance(1.0, 100.0, 200.0, 0.005) == pytest.approx(0.5)
    # short, liquidation at 300: 1 / L = -1 + 300 x 1.005 / 100 = 2.015
    assert en._lev_at_distance(-1.0, 100.0, 200.0, 0.005) == pytest.approx(1 / 2.015)
    # continuous at the mark: just inside it, the bracket formula gives ~1x
    assert en._lev_at_distance(1.0, 100.0, 99.999, 0.005) == pytest.approx(1.0, rel=1e-4)
    pol = RiskPolicy(min_liq_atr=8.0, liq_release_atr=28.0, mmr=0.005, lev_base=125.0,
                     lev_min=125.0, cascade_mode=False, hedge=False, daily_loss=1.0,
                     max_drawdown=1.0).to_array()
    rs = en.new_risk_state()
    rs[en.RK_LIQ_TRIP], rs[en.RK_LIQ_LEV], rs[en.RK_LIQ_REF] = 1.0, 2.0, 9.0
    out = np.zeros(en.N_DECISION)
    en.evaluate_state(_sig(100.0, 5.0), _acct(10_000.0, 10_000.0, 0.5), pol, rs, 0.0, out)
    assert out[en.D_STATE] == en.REDUCING and int(out[en.D_REASONS]) & en.R_LIQ_DISTANCE
    assert out[en.D_MAX_LEV_LONG] == pytest.approx(100.0 / 140.0)
    assert en.allowed_target(10_000.0, 10_000.0, out, pol) == pytest.approx(10_000 / 1.4)


def test_liquidation_rule_waits_for_the_atr_warm_up():
    rs = en.new_risk_state()
    out = np.zeros(en.N_DECISION)
    # liquidation 0.5 below the mark, but no ATR yet: the rule takes no action
    en.evaluate_state(_sig(100.0, np.nan), _acct(10_000.0, 190_000.0, 99.5), POL, rs, 0.0, out)
    assert out[en.D_STATE] == en.ACTIVE and rs[en.RK_LIQ_TRIP] == 0.0
    assert np.isnan(out[en.D_LIQ_DISTANCE_ATR])


def test_drawdown_halt_cools_down_then_the_peak_resets():
    pol = RiskPolicy(max_drawdown=0.30, drawdown_cooldown_hours=24.0, daily_loss=1.0,
                     min_liq_atr=0.0, cascade_mode=False, hedge=False).to_array()
    rs = en.new_risk_state()
    out = np.zeros(en.N_DECISION)
    t0 = 1_760_000_000_000.0
    en.evaluate_state(_sig(100.0, 1.0), _acct(12_000.0, 0.0, np.nan), pol, rs, t0 - H, out)
    assert rs[en.RK_PEAK] == 12_000.0 and out[en.D_STATE] == en.ACTIVE
    en.evaluate_state(_sig(100.0, 1.0), _acct(8_400.0, 0.0, np.nan), pol, rs, t0, out)
    assert out[en.D_STATE] == en.HALTED and out[en.D_DRAWDOWN] == pytest.approx(0.30)
    assert rs[en.RK_DD_SINCE] == t0 and out[en.D_MAX_LEV_LONG] == 0.0
    # a recovery inside the cool-down does not release it
    en.evaluate_state(_sig(100.0, 1.0), _acct(9_000.0, 0.0, np.nan), pol, rs,
                      t0 + 24 * H - 60_000.0, out)
    assert out[en.D_STATE] == en.HALTED
    # 24 hours after the trip: released, the peak is the equity at release
    en.evaluate_state(_sig(100.0, 1.0), _acct(8_500.0, 0.0, np.nan), pol, rs, t0 + 24 * H, out)
    assert out[en.D_STATE] == en.ACTIVE and rs[en.RK_PEAK] == 8_500.0
    assert rs[en.RK_DD_SINCE] == -1.0 and out[en.D_DRAWDOWN] == 0.0
    # a fresh 30% budget from 8,500: 5,950 trips again
    en.evaluate_state(_sig(100.0, 1.0), _acct(5_950.0, 0.0, np.nan), pol, rs, t0 + 25 * H, out)
    assert out[en.D_STATE] == en.HALTED and rs[en.RK_DD_SINCE] == t0 + 25 * H


def test_daily_loss_halt_releases_with_the_next_day_start():
    pol = RiskPolicy(daily_loss=0.15, max_drawdown=1.0, min_liq_atr=0.0).to_array()
    rs = en.new_risk_state()
    out = np.zeros(en.N_DECISION)
    en.evaluate_state(_sig(100.0, 1.0), _acct(8_500.0, 0.0, np.nan), pol, rs, 0.0, out)
    assert out[en.D_STATE] == en.HALTED and int(out[en.D_REASONS]) & en.R_DAILY_LOSS
    # next UTC day: the kernel's day-start equity is the previous close's equity
    en.evaluate_state(_sig(100.0, 1.0), _acct(8_500.0, 0.0, np.nan, day_start=8_500.0), pol,
                      rs, 86_400_000.0, out)
    assert out[en.D_STATE] == en.ACTIVE and out[en.D_DAY_LOSS] == 0.0


def test_risk_inputs_warm_up_atr_and_crowding():
    bph = 60
    st = ri.new_risk_state()
    out = np.zeros(en.N_SIG)
    clusters = np.full(6, np.nan)
    for t in range(24 * bph):
        ri.risk_step(st, 100.0, 100.5, 99.5, 1.0, 0.0, 100.0, 0.9, 0.1, 0.0, 0.0, clusters,
                     bph, 4 * bph, out)
        if t == bph - 2:
            assert np.isnan(out[en.S_ATR])                 # 59 bars: no ATR yet
        if t == bph - 1:
            # every true range is 1.0 from the first bar on (no ramp from zero)
            assert out[en.S_ATR] == pytest.approx(np.sqrt(60.0))
        if t == 24 * bph - 2:
            assert np.isnan(out[en.S_CROWD_LONG])          # 24h warm-up of crowding
    assert out[en.S_CROWD_LONG] == 0.9 and out[en.S_CROWD_SHORT] == 0.1



def test_risk_inputs_on_4h_bars_count_hours_not_bars():
    """Windows are hours of data: on 4h bars (0.25 bars an hour) the ATR is there from the
    first bar, scaled to an hour (true range 4 / sqrt(4 h) = 2), crowding is read from the
    6th bar (24 h) and a cascade block lasts one bar (4 h). They counted 24 and 4 BARS."""
    bph = 0.25
    assert ri.crowding_warm_bar(bph) == 5 and ri.block_bars_for(bph) == 1
    st = ri.new_risk_state()
    out = np.zeros(en.N_SIG)
    clusters = np.full(6, np.nan)
    crowd = []
    for t in range(8):
        cascade = 1.0 if t == 1 else 0.0
        ri.risk_step(st, 100.0, 102.0, 98.0, 1.0, 0.0, 100.0, 0.9, 0.1, cascade, 0.0, clusters,
                     bph, ri.block_bars_for(bph), out)
        if t == 0:
            assert out[en.S_ATR] == pytest.approx(2.0)
        crowd.append(out[en.S_CROWD_LONG])
        if t in (1, 2):
            assert out[en.S_CASCADE_BLOCK] == 1.0          # the cascade bar and 4 h after it
        if t == 3:
            assert out[en.S_CASCADE_BLOCK] == 0.0
    assert np.isnan(crowd[:5]).all() and crowd[5:] == [0.9, 0.9, 0.9]

def _det(closes: np.ndarray, qv: np.ndarray) -> np.ndarray:
    nan = np.full(len(closes), np.nan)
    return dt.detector_kernel(closes, qv, nan, np.zeros(len(closes)), np.zeros(len(closes)),
                              nan, nan, dt.DetectorParams())


def test_cascade_warm_up_and_onset_response():
    # 300 bars alternating +-0.1% (1-bar sigma 0.1%), then -0.5% per bar on 10x volume
    up = np.tile([1.001, 1 / 1.001], 150)
    drop = np.full(10, 0.995)
    closes = 100.0 * np.cumprod(np.r_[1.0, up, drop])
    qv = np.r_[np.ones(301), np.full(10, 10.0)]
    det = _det(closes, qv)
    fired = np.flatnonzero(det[:, dt.D_CASCADE_STATE] == 1.0)
    # bar 301 is the first falling bar (5-bar velocity 2.3 sigma); bar 302 (4.5 sigma) fires
    assert fired[0] == 302 and det[301, dt.D_CASCADE_STATE] == 0.0
    # the same crash in the first bars of a file: nothing before the 60-bar warm-up
    early = 100.0 * np.cumprod(np.r_[1.0, up[:20], drop, np.ones(60)])
    det = _det(early, np.r_[np.ones(21), np.full(10, 10.0), np.ones(60)])
    assert not (det[:60, dt.D_CASCADE_STATE] != 0.0).any()


def test_balanced_preset_has_the_documented_rules():
    p = load_policy("balanced")
    assert (p.min_liq_atr, p.liq_release_atr, p.drawdown_cooldown_hours) == (8.0, 28.0, 24.0)
    assert p.cascade_reach_atr == 24.0 and p.to_array()[en.P_CASCADE_REACH_ATR] == 24.0
    assert (p.min_cut, p.liq_shrink) == (0.0, 0.75)
    arr = p.to_array()
    assert (arr[en.P_MIN_CUT], arr[en.P_LIQ_SHRINK]) == (0.0, 0.75)
    # the model defaults keep the rules as they were before these knobs existed
    assert (RiskPolicy().min_cut, RiskPolicy().liq_shrink) == (0.0, 0.0)
    assert (p.cascade_near_atr, p.cascade_confirm_atr) == (16.0, 1.0)
    assert (arr[en.P_CASCADE_NEAR_ATR], arr[en.P_CASCADE_CONFIRM_ATR]) == (16.0, 1.0)
    assert RiskPolicy().cascade_near_atr == 0.0          # off: every reachable side cut at once
    assert p.cascade_flat_atr == 3.0 and arr[en.P_CASCADE_FLAT_ATR] == 3.0
    assert RiskPolicy().cascade_flat_atr == 0.0          # off: no cascade closes a side


def test_a_rising_schedule_or_a_hedge_without_hysteresis_is_a_config_error(tmp_path):
    """lev_min above lev_base raised the cap as crowding built; hedge_unwind at or above
    hedge_threshold opened and closed the hedge on the same readings. Both loaded."""
    bad = tmp_path / "p.toml"
    bad.write_text("[risk]\nlev_base = 10\nlev_min = 50\nhedge_threshold = 0.3\n"
                   "hedge_unwind = 0.9\n")
    with pytest.raises(ConfigError) as exc:
        load_policy(str(bad))
    assert exc.value.problems == [
        "risk.lev_min: expected at most lev_base = 10 (the schedule falls from lev_base to "
        "lev_min as crowding rises), got 50",
        "risk.hedge_unwind: expected below hedge_threshold = 0.3 (hedge at the threshold, unwind "
        "below this: the gap is the hysteresis), got 0.9"]
    bad.write_text("[risk]\nlev_base = 10\nlev_min = 10\nhedge_threshold = 0.6\n"
                   "hedge_unwind = 0.59\n")               # equal caps, a narrow band: fine
    assert load_policy(str(bad)).lev_min == 10.0
    bad.write_text("[risk]\nhedge = \"no\"\ncascade_mode = 1\n")   # lax: True and True
    with pytest.raises(ConfigError) as exc:
        load_policy(str(bad))
    assert exc.value.problems == ["risk.cascade_mode: expected true or false, got 1",
                                  "risk.hedge: expected true or false, got 'no'"]


def test_near_tier_outside_the_reach_is_a_config_error(tmp_path):
    bad = tmp_path / "p.toml"
    bad.write_text("[risk]\ncascade_reach_atr = 10\ncascade_near_atr = 16\n")
    with pytest.raises(ConfigError) as exc:
        load_policy(str(bad))
    assert exc.value.problems == ["risk.cascade_near_atr: expected at most cascade_reach_atr "
                                  "= 10 (0: no near tier), got 16"]
    bad.write_text("cascade_near_atr = 16\n")      # no reach: the tier would be ignored
    with pytest.raises(ConfigError, match="cascade_near_atr: expected 0 while "
                                          "cascade_reach_atr is 0"):
        load_policy(str(bad))
    assert RiskPolicy(cascade_reach_atr=24.0, cascade_near_atr=24.0).cascade_near_atr == 24.0


def test_preset_problems_are_named_by_their_key_path(cli, tmp_path):
    """A preset's problems said `crowd_start: ...` where the key is `risk.crowd_start`
    (README: every problem as `key.path: expected X, got Y`); a file of bare keys has no
    table, so its paths are the bare keys."""
    bad = tmp_path / "p.toml"
    bad.write_text("[risk]\ncrowd_start = 1.5\nbogus = 1\n")
    with pytest.raises(ConfigError) as exc:
        load_policy(str(bad))
    assert exc.value.problems == ["risk.crowd_start: expected less than 1, got 1.5",
                                  "risk.bogus: expected a known key, got unknown key 'bogus'"]
    r = cli("config", "check", bad)
    assert r.code == 2 and r.out.splitlines() == [f"{bad}: 2 problems (risk preset):",
                                                  *exc.value.problems]
    flat = tmp_path / "flat.toml"
    flat.write_text("crowd_start = 1.5\n")
    with pytest.raises(ConfigError) as exc:
        load_policy(str(flat))
    assert exc.value.problems == ["crowd_start: expected less than 1, got 1.5"]


REACH = RiskPolicy(cascade_reach_atr=24.0, cascade_max_leverage=2.0, mmr=0.005,
                   min_liq_atr=0.0, hedge=False, daily_loss=1.0, max_drawdown=1.0).to_array()


def _cascade_sig(atr: float, cascade: float, block: float) -> np.ndarray:
    sig = _sig(100.0, atr)
    sig[en.S_CASCADE], sig[en.S_CASCADE_BLOCK] = cascade, block
    return sig


def test_cascade_reach_spares_a_position_it_cannot_liquidate():
    out = np.zeros(en.N_DECISION)
    safe = _lev(100.0 - 24.0)                 # long liquidated 24 ATRs (ATR 1) below: 4.10x
    assert safe == pytest.approx(1 / 0.2438)
    # 3x long (liquidation 33.5 below, beyond 24 ATRs): a long cascade does not cut it and
    # entries on the long side stay allowed up to 4.10x
    en.evaluate(_cascade_sig(1.0, 1.0, 1.0), _acct(10_000.0, 30_000.0, 66.5), REACH, out)
    assert out[en.D_STATE] == en.ACTIVE and not int(out[en.D_REASONS]) & en.R_CASCADE
    assert int(out[en.D_REASONS]) & en.R_CASCADE_BLOCK and out[en.D_BLOCK_LONG] == 0.0
    assert out[en.D_MAX_LEV_LONG] == pytest.approx(safe) and out[en.D_MAX_LEV_SHORT] == 20.0
    assert en.allowed_target(30_000.0, 30_000.0, out, REACH) == 30_000.0
    assert en.allowed_target(50_000.0, 30_000.0, out, REACH) == pytest.approx(10_000 * safe)
    # 10x long (liquidation 9.5 below, within reach): REDUCING to the 4.10x liquidated 24
    # ATRs away
    en.evaluate(_cascade_sig(1.0, 1.0, 1.0), _acct(10_000.0, 100_000.0, 90.5), REACH, out)
    assert out[en.D_STATE] == en.REDUCING and int(out[en.D_REASONS]) & en.R_CASCADE
    assert en.allowed_target(100_000.0, 100_000.0, out, REACH) == pytest.approx(10_000 * safe)
    # ATR 5: 24 ATRs is beyond zero, only 1x is that far; the cut stops at 2x
    en.evaluate(_cascade_sig(5.0, 1.0, 1.0), _acct(10_000.0, 30_000.0, 66.5), REACH, out)
    assert out[en.D_STATE] == en.REDUCING and out[en.D_MAX_LEV_LONG] == 2.0
    assert en.allowed_target(30_000.0, 30_000.0, out, REACH) == 20_000.0
    # after the cascade (block only), a 3x long held above the reachable 1x keeps its size
    # but cannot grow
    en.evaluate(_cascade_sig(5.0, 0.0, 1.0), _acct(10_000.0, 30_000.0, 66.5), REACH, out)
    assert out[en.D_STATE] == en.ACTIVE and out[en.D_MAX_LEV_LONG] == pytest.approx(3.0)
    assert en.allowed_target(40_000.0, 30_000.0, out, REACH) == pytest.approx(30_000.0)
    # no ATR yet (warm-up): the plain rule (cut to 2x, entries blocked)
    en.evaluate(_cascade_sig(np.nan, 1.0, 1.0), _acct(10_000.0, 30_000.0, 66.5), REACH, out)
    assert out[en.D_STATE] == en.REDUCING and out[en.D_BLOCK_LONG] == 1.0


GRADED = RiskPolicy(cascade_reach_atr=24.0, cascade_near_atr=16.0, cascade_confirm_atr=1.0,
                    cascade_max_leverage=2.0, mmr=0.005, min_liq_atr=0.0, hedge=False,
                    daily_loss=1.0, max_drawdown=1.0).to_array()


def _run_sig(atr: float, run: float) -> np.ndarray:
    sig = _cascade_sig(atr, 1.0, 1.0)
    sig[en.S_CASCADE_RUN] = run
    return sig


def test_cascade_cut_is_graded_by_distance_and_follow_through():
    out = np.zeros(en.N_DECISION)
    # ATR 1.2 at mark 100: 24 ATRs (28.8) below is 3.43x, 16 ATRs (19.2) below is 5.10x
    safe, near = _lev(100.0 - 28.8), _lev(100.0 - 19.2)
    assert (safe, near) == (pytest.approx(3.4298, abs=1e-4), pytest.approx(5.1010, abs=1e-4))
    # 4x long (liquidation 75.38, 20.5 ATRs away): between the tiers. The cascade has run
    # 0.5 ATR past its first close: not cut, but it may not grow
    en.evaluate(_run_sig(1.2, 0.5), _acct(10_000.0, 40_000.0, 75.38), GRADED, out)
    assert out[en.D_STATE] == en.ACTIVE and not int(out[en.D_REASONS]) & en.R_CASCADE
    assert int(out[en.D_REASONS]) & en.R_CASCADE_BLOCK
    assert out[en.D_MAX_LEV_LONG] == pytest.approx(4.0)
    assert en.allowed_target(40_000.0, 40_000.0, out, GRADED) == pytest.approx(40_000.0)
    assert en.allowed_target(50_000.0, 40_000.0, out, GRADED) == pytest.approx(40_000.0)
    # ... it has run 1 ATR on: confirmed, cut to the 3.43x liquidated 24 ATRs away
    en.evaluate(_run_sig(1.2, 1.0), _acct(10_000.0, 40_000.0, 75.38), GRADED, out)
    assert out[en.D_STATE] == en.REDUCING and int(out[en.D_REASONS]) & en.R_CASCADE
    assert out[en.D_CASCADE_RUN] == 1.0
    assert render(out) == ("REDUCING: cascade running against the position (+1.0 ATR on since "
                           "it fired): reducing")
    assert en.allowed_target(40_000.0, 40_000.0, out, GRADED) == pytest.approx(10_000 * safe)
    # no run known (NaN): not confirmed
    en.evaluate(_run_sig(1.2, np.nan), _acct(10_000.0, 40_000.0, 75.38), GRADED, out)
    assert out[en.D_STATE] == en.ACTIVE
    # 6x long (liquidation 83.75, 13.5 ATRs away): within the near tier, cut at the first bar
    en.evaluate(_run_sig(1.2, 0.0), _acct(10_000.0, 60_000.0, 83.75), GRADED, out)
    assert out[en.D_STATE] == en.REDUCING
    assert en.allowed_target(60_000.0, 60_000.0, out, GRADED) == pytest.approx(10_000 * safe)
    # without the near tier (cascade_near_atr 0) the 4x long is cut at once, as before
    en.evaluate(_run_sig(1.2, 0.0), _acct(10_000.0, 40_000.0, 75.38), REACH, out)
    assert out[en.D_STATE] == en.REDUCING
    assert en.allowed_target(40_000.0, 40_000.0, out, REACH) == pytest.approx(10_000 * safe)


FLAT = RiskPolicy(cascade_reach_atr=24.0, cascade_near_atr=16.0, cascade_confirm_atr=1.0,
                  cascade_flat_atr=3.0, cascade_max_leverage=2.0, mmr=0.005, min_liq_atr=0.0,
                  hedge=False, daily_loss=1.0, max_drawdown=1.0).to_array()


def test_a_cascade_that_ran_far_closes_the_side_until_it_ends():
    rs = en.new_risk_state()
    out = np.zeros(en.N_DECISION)
    acct = _acct(10_000.0, 40_000.0, 75.38)       # 4x long, liquidation 20.5 ATRs (ATR 1.2)
    safe = _lev(100.0 - 28.8)                     # 3.43x: liquidated 24 ATRs below
    # run 2.9 ATRs: the graded cut (to the 24-ATR leverage), not closed
    en.evaluate_state(_run_sig(1.2, 2.9), acct, FLAT, rs, 0.0, out)
    assert out[en.D_STATE] == en.REDUCING and rs[en.RK_CASC_FLAT] == 0.0
    assert out[en.D_MAX_LEV_LONG] == pytest.approx(safe)
    # run 3 ATRs: the long side is closed
    en.evaluate_state(_run_sig(1.2, 3.0), acct, FLAT, rs, 1.0, out)
    assert out[en.D_STATE] == en.REDUCING and out[en.D_MAX_LEV_LONG] == 0.0
    assert rs[en.RK_CASC_FLAT] == 1.0 and out[en.D_MAX_LEV_SHORT] == 20.0
    assert en.allowed_target(40_000.0, 40_000.0, out, FLAT) == 0.0
    assert render(out) == ("REDUCING: cascade running against the position (+3.0 ATR on since "
                           "it fired): closing the side until it ends")
    # flat now, the cascade bounces back to 1.5 ATRs: still closed (latched), entries blocked
    flat_acct = _acct(10_000.0, 0.0, np.nan)
    en.evaluate_state(_run_sig(1.2, 1.5), flat_acct, FLAT, rs, 2.0, out)
    assert out[en.D_MAX_LEV_LONG] == 0.0 and int(out[en.D_REASONS]) & en.R_CASCADE_BLOCK
    assert en.allowed_target(40_000.0, 0.0, out, FLAT) == 0.0
    # the cascade is over (block only): the latch clears, entries up to the 24-ATR leverage
    en.evaluate_state(_cascade_sig(1.2, 0.0, 1.0), flat_acct, FLAT, rs, 3.0, out)
    assert rs[en.RK_CASC_FLAT] == 0.0 and out[en.D_MAX_LEV_LONG] == pytest.approx(safe)
    # a short cascade that ran far closes the short side only; without the reach (the plain
    # rule) the same latch closes the position's side
    rs = en.new_risk_state()
    short = _cascade_sig(1.2, -1.0, -1.0)
    short[en.S_CASCADE_RUN] = 4.0
    en.evaluate_state(short, acct, FLAT, rs, 4.0, out)
    assert rs[en.RK_CASC_FLAT] == -1.0 and out[en.D_MAX_LEV_SHORT] == 0.0
    assert out[en.D_MAX_LEV_LONG] > 0.0
    plain = RiskPolicy(cascade_flat_atr=3.0, hedge=False, daily_loss=1.0,
                       max_drawdown=1.0).to_array()
    rs = en.new_risk_state()
    en.evaluate_state(_run_sig(1.2, 3.5), acct, plain, rs, 5.0, out)
    assert out[en.D_STATE] == en.REDUCING and out[en.D_MAX_LEV_LONG] == 0.0
    # off (0, the model default): a run of any length cuts to the 24-ATR leverage only
    rs = en.new_risk_state()
    en.evaluate_state(_run_sig(1.2, 50.0), acct, GRADED, rs, 6.0, out)
    assert out[en.D_MAX_LEV_LONG] == pytest.approx(safe) and rs[en.RK_CASC_FLAT] == 0.0


@settings(max_examples=400, deadline=None)
@given(mark=st.floats(1.0, 1e5), atr_frac=st.floats(1e-4, 0.1), lev=st.floats(0.0, 20.0),
       side=st.sampled_from([1.0, -1.0]), cascade=st.sampled_from([-1.0, 0.0, 1.0]),
       block=st.sampled_from([-1.0, 0.0, 1.0]),
       run=st.one_of(st.floats(-5.0, 5.0), st.just(float("nan"))))
def test_graded_cut_is_the_old_cut_once_confirmed_and_never_stricter_before(
        mark, atr_frac, lev, side, cascade, block, run):
    sig = _sig(mark, mark * atr_frac)
    sig[en.S_CASCADE], sig[en.S_CASCADE_BLOCK] = cascade, block
    acct = _acct(10_000.0, side * lev * 10_000.0, np.nan)
    old, new = np.zeros(en.N_DECISION), np.zeros(en.N_DECISION)
    sig[en.S_CASCADE_RUN] = 1.0                          # confirmed: exactly the old rule
    en.evaluate(sig, acct, REACH, old)
    en.evaluate(sig, acct, GRADED, new)
    assert np.array_equal(old, new, equal_nan=True)
    sig[en.S_CASCADE_RUN] = min(run, 0.999) if run == run else run     # not confirmed
    en.evaluate(sig, acct, GRADED, new)
    k = en.D_MAX_LEV_LONG if side > 0 else en.D_MAX_LEV_SHORT
    assert new[en.D_STATE] <= old[en.D_STATE] and new[k] >= old[k]


def test_risk_inputs_measure_the_cascade_run_from_its_first_bar():
    st = ri.new_risk_state()
    out = np.zeros(en.N_SIG)
    clusters = np.full(6, np.nan)

    def bar(close: float, high: float, low: float, cascade: float) -> float:
        ri.risk_step(st, close, high, low, 1.0, 0.0, close, 0.0, 0.0, cascade, 0.0, clusters,
                     1, 4, out)
        return out[en.S_CASCADE_RUN]

    for _ in range(3):                      # true range 2 on every bar: ATR 2 (1 bar/hour)
        assert np.isnan(bar(100.0, 101.0, 99.0, 0.0))
    assert bar(100.0, 101.0, 99.0, 1.0) == 0.0          # fires: reference 100, ATR 2
    assert bar(98.0, 100.0, 97.5, 1.0) == pytest.approx(1.0)   # 2 lower = 1 ATR of the first bar
    assert bar(101.0, 101.5, 98.0, 1.0) == pytest.approx(-0.5)  # a re-fire keeps the reference
    assert np.isnan(bar(101.0, 102.0, 100.0, 0.0))      # no cascade held: no run
    assert bar(101.0, 102.0, 100.0, -1.0) == 0.0        # a short cascade: new reference
    atr = out[en.S_ATR]
    assert bar(103.0, 103.5, 101.0, -1.0) == pytest.approx(2.0 / atr)   # up = its direction


SHRINK = RiskPolicy(min_liq_atr=8.0, liq_release_atr=16.0, liq_shrink=0.75, mmr=0.005,
                    max_leverage=125.0, lev_base=125.0, lev_min=125.0, cascade_mode=False,
                    hedge=False, daily_loss=1.0, max_drawdown=1.0).to_array()


def _with_target(acct: np.ndarray, target: float) -> np.ndarray:
    out = acct.copy()
    out[en.A_TARGET_NOTIONAL] = target
    return out


def test_an_entry_that_would_trip_at_once_enters_tripped():
    out = np.zeros(en.N_DECISION)
    # flat, the strategy wants 10x long (liquidation 90.45: 9.55 below); ATR 1.7: 5.62 ATRs,
    # inside the 6-ATR floor a new position trips at: capped now at the release leverage
    # (16 ATRs, liquidation 72.8: 3.63x), with 10x as the tripping leverage
    release = _lev(100.0 - 16 * 1.7)
    assert release == pytest.approx(3.6279, abs=1e-4)
    rs = en.new_risk_state()
    flat = _with_target(_acct(10_000.0, 0.0, np.nan), 100_000.0)
    en.evaluate_state(_sig(100.0, 1.7), flat, SHRINK, rs, 0.0, out)
    assert out[en.D_MAX_LEV_LONG] == pytest.approx(release) and out[en.D_STATE] == en.ACTIVE
    assert int(out[en.D_REASONS]) & en.R_LIQ_DISTANCE
    assert (rs[en.RK_LIQ_TRIP], rs[en.RK_LIQ_LEV]) == (1.0, pytest.approx(10.0))
    assert en.allowed_target(100_000.0, 0.0, out, SHRINK) == pytest.approx(10_000 * release)
    assert render(out) == ("ACTIVE: entry capped where a trip would cut it: the target's "
                           "liquidation would sit inside the distance the liquidation-distance "
                           "rule trips at")
    # the next bar holds at the release leverage (hysteresis, as after a trip): no 10x bought
    # and cut
    held = _with_target(_acct(10_000.0, 10_000 * release, 72.8), 100_000.0)
    en.evaluate_state(_sig(100.0, 1.7), held, SHRINK, rs, 1.0, out)
    assert rs[en.RK_LIQ_TRIP] == 1.0 and out[en.D_MAX_LEV_LONG] == pytest.approx(release)
    # ATR 1.5: 6.37 ATRs, outside the floor: the entry is bought in full (not tripped)
    rs = en.new_risk_state()
    en.evaluate_state(_sig(100.0, 1.5), flat, SHRINK, rs, 0.0, out)
    assert out[en.D_MAX_LEV_LONG] == 125.0 and rs[en.RK_LIQ_TRIP] == 0.0
    # a 3x long opened 19.4 ATRs from its liquidation wants to grow to 10x: a grown position
    # trips below min(8, 75% of 19.4) = 8 ATRs; 10x sits 5.62 away: capped at 3.63x, kept
    rs = en.new_risk_state()
    three = _acct(10_000.0, 30_000.0, 100.0 * (2.0 / 3.0) / 0.995)
    en.evaluate_state(_sig(100.0, 1.7), _with_target(three, 30_000.0), SHRINK, rs, 0.0, out)
    assert rs[en.RK_LIQ_TRIP] == 0.0 and rs[en.RK_LIQ_REF] > 19.0
    en.evaluate_state(_sig(100.0, 1.7), _with_target(three, 100_000.0), SHRINK, rs, 1.0, out)
    assert out[en.D_STATE] == en.ACTIVE and out[en.D_MAX_LEV_LONG] == pytest.approx(release)
    assert rs[en.RK_LIQ_LEV] == pytest.approx(10.0)
    # unknown target (NaN), no target (flat wanted) and the rule off: no entry cap
    for acct, pol in ((_acct(10_000.0, 0.0, np.nan), SHRINK),
                      (_with_target(_acct(10_000.0, 0.0, np.nan), 0.0), SHRINK),
                      (flat, RiskPolicy(min_liq_atr=0.0, max_leverage=125.0, lev_base=125.0,
                                        lev_min=125.0, cascade_mode=False, hedge=False,
                                        daily_loss=1.0, max_drawdown=1.0).to_array())):
        rs = en.new_risk_state()
        en.evaluate_state(_sig(100.0, 1.7), acct, pol, rs, 0.0, out)
        assert out[en.D_MAX_LEV_LONG] == 125.0 and rs[en.RK_LIQ_TRIP] == 0.0


def test_liquidation_rule_trips_on_a_shrinking_distance_not_on_the_opening_one():
    rs = en.new_risk_state()
    out = np.zeros(en.N_DECISION)
    # opened: 10x long, liquidation 9.5 below, ATR 1.3: 7.31 ATRs, inside 8 but it is the
    # distance the position was opened at (a volatile coin at its normal volatility): no trip
    en.evaluate_state(_sig(100.0, 1.3), _acct(10_000.0, 100_000.0, 90.5), SHRINK, rs, 0.0, out)
    assert rs[en.RK_LIQ_REF] == pytest.approx(9.5 / 1.3)
    assert out[en.D_STATE] == en.ACTIVE and rs[en.RK_LIQ_TRIP] == 0.0
    # ATR 1.55: 6.13 ATRs, below 8 but 84% of the opening 7.31 (> 75%) and above 6: no trip
    en.evaluate_state(_sig(100.0, 1.55), _acct(10_000.0, 100_000.0, 90.5), SHRINK, rs, 1.0,
                      out)
    assert out[en.D_LIQ_DISTANCE_ATR] == pytest.approx(9.5 / 1.55)
    assert rs[en.RK_LIQ_TRIP] == 0.0 and out[en.D_STATE] == en.ACTIVE
    # a position opened at ATR 1 (9.5 ATRs away) whose ATR grows to 1.5: 6.33 ATRs, above the
    # floor 6 but 67% of its opening distance: trips, cap at 16 ATRs (24 below)
    rs2 = en.new_risk_state()
    en.evaluate_state(_sig(100.0, 1.0), _acct(10_000.0, 100_000.0, 90.5), SHRINK, rs2, 0.0,
                      out)
    assert rs2[en.RK_LIQ_REF] == pytest.approx(9.5) and rs2[en.RK_LIQ_TRIP] == 0.0
    en.evaluate_state(_sig(100.0, 1.5), _acct(10_000.0, 100_000.0, 90.5), SHRINK, rs2, 1.0,
                      out)
    assert out[en.D_STATE] == en.REDUCING and rs2[en.RK_LIQ_TRIP] == 1.0
    assert out[en.D_MAX_LEV_LONG] == pytest.approx(_lev(100.0 - 16 * 1.5))
    # flat: the memory of the opening distance is cleared
    en.evaluate_state(_sig(100.0, 1.8), _acct(10_000.0, 0.0, np.nan), SHRINK, rs, 3.0, out)
    assert rs[en.RK_LIQ_REF] == 0.0 and rs[en.RK_LIQ_TRIP] == 0.0


def test_liquidation_rule_trips_below_the_floor_whatever_the_opening_distance():
    rs = en.new_risk_state()
    out = np.zeros(en.N_DECISION)
    # opened already close: 10x long at 9.5 / 1.7 = 5.59 ATRs, below the floor 0.75 x 8 = 6
    en.evaluate_state(_sig(100.0, 1.7), _acct(10_000.0, 100_000.0, 90.5), SHRINK, rs, 0.0, out)
    assert rs[en.RK_LIQ_TRIP] == 1.0 and out[en.D_STATE] == en.REDUCING


CUT = RiskPolicy(cascade_reach_atr=24.0, cascade_max_leverage=2.0, mmr=0.005, min_cut=0.2,
                 min_liq_atr=0.0, hedge=False, daily_loss=1.0, max_drawdown=1.0).to_array()


def test_min_cut_leaves_a_position_a_small_trim_would_touch():
    out = np.zeros(en.N_DECISION)
    # ATR 1.45: a long liquidated 24 ATRs (34.8) below is 2.85x; a 3x long (liquidation 33.5
    # below) is reachable. The cut to 2.85x is 5% of its leverage (< 20%): left as it is
    safe = _lev(100.0 - 24 * 1.45)
    assert safe == pytest.approx(2.8469, abs=1e-4)
    en.evaluate(_cascade_sig(1.45, 1.0, 1.0), _acct(10_000.0, 30_000.0, 66.5), CUT, out)
    assert out[en.D_STATE] == en.ACTIVE and not int(out[en.D_REASONS]) & en.R_CASCADE
    assert int(out[en.D_REASONS]) & en.R_CASCADE_BLOCK
    assert out[en.D_MAX_LEV_LONG] == pytest.approx(3.0)
    assert en.allowed_target(30_000.0, 30_000.0, out, CUT) == 30_000.0   # not binding
    assert en.allowed_target(40_000.0, 30_000.0, out, CUT) == 30_000.0   # no growth
    # without the materiality band the same bar trims to 2.85x
    en.evaluate(_cascade_sig(1.45, 1.0, 1.0), _acct(10_000.0, 30_000.0, 66.5), REACH, out)
    assert en.allowed_target(30_000.0, 30_000.0, out, REACH) == pytest.approx(10_000 * safe)
    # ATR 2: 24 ATRs = 48 below is 2.07x, a 31% cut: it binds
    en.evaluate(_cascade_sig(2.0, 1.0, 1.0), _acct(10_000.0, 30_000.0, 66.5), CUT, out)
    assert _lev(52.0) == pytest.approx(2.0722, abs=1e-4)
    assert en.allowed_target(30_000.0, 30_000.0, out, CUT) == pytest.approx(10_000 * _lev(52.0))


def test_a_binding_intervention_is_a_cap_that_changes_the_order():
    """A long of 3.26x (entry sizing: the strategy keeps its quantity) under a hard cap of
    3.20x is a 1.8% trim, inside the 5% rebalance band: no order either way, so the cap does
    not bind. A cap of 2x cuts the position to 2x (order -1.26 x equity / close): binding."""
    from backtests.runner import RunSettings, fill_params
    from bot.execution import kernel as kn
    from bot.mechanics import account as ac
    from bot.mechanics.brackets import shipped
    from bot.risk.policy import off_policy

    btc = shipped("binance", "BTCUSDT")
    floor, cap, mmr, cum, _ = ac.stack_brackets([btc, btc])
    wallet, px = 10_000.0, 100.0
    for hard, clipped, order in ((3.20, 0.0, 0.0), (2.0, 1.0, (2.0 - 3.26) * wallet / px)):
        acct, pos = ac.new_account(wallet, 2, leverage=125.0)
        qty = 3.26 * wallet / px
        ac.apply_fill(acct, pos, 0, qty, px, 0.0)          # no fee: equity stays 10,000
        st = kn.new_state(wallet)
        st[kn.K_PREV_TARGET] = 3.0                         # the strategy's target is old:
        st[kn.K_DESIRED_QTY] = qty                         # entry sizing keeps the quantity
        sig = np.full(en.N_SIG, np.nan)
        sig[en.S_MARK] = px
        sig[en.S_STALE_BARS] = 0.0
        out = np.zeros(kn.N_DECIDE)
        kn.decide(acct, pos, 0, 1, st, 0.0, px, np.array([px, px]), sig, 3.0,
                  off_policy().model_copy(update={"max_leverage": hard}).to_array(),
                  fill_params(RunSettings(), "entry"), floor, cap, mmr, cum, btc.cap,
                  btc.max_leverage, np.zeros(en.N_ACCT_VIEW), np.zeros(en.N_DECISION), out)
        assert out[kn.O_TARGET] == pytest.approx(3.26 * wallet)
        assert out[kn.O_ALLOWED] == pytest.approx(hard * wallet)
        assert out[kn.O_CLIPPED] == clipped
        assert out[kn.O_ORDER_MAIN] == pytest.approx(order)


def test_reason_text_names_no_cap_while_halted():
    dec = np.zeros(en.N_DECISION)
    dec[en.D_REASONS] = en.R_CROWDING | en.R_DAILY_LOSS
    dec[en.D_CROWD], dec[en.D_DAY_LOSS], dec[en.D_CASCADE_RUN] = 0.45, 0.154, np.nan
    dec[en.D_STATE] = en.HALTED                 # the caps are the halt's zeros
    assert render(dec) == ("HALTED: crowding 0.45 lowers the side's max leverage; daily loss "
                           "15.4%: halted for the day")
    dec[en.D_STATE], dec[en.D_REASONS], dec[en.D_MAX_LEV_LONG] = en.REDUCING, en.R_CROWDING, 6.0
    assert render(dec) == "REDUCING: crowding 0.45 lowers the side's max leverage to 6.0x"


def test_the_kill_switch_is_a_named_reason():
    """The daemon ORs the operator's kill switch into a decision's reasons; its bit had no
    name, so /api/status and `status --json` said reasons [] and the text read "HALTED: no
    rule binding; operator kill switch"."""
    from bot.risk.reasons import R_KILL_SWITCH, reason_names

    dec = np.zeros(en.N_DECISION)
    dec[en.D_CASCADE_RUN] = np.nan
    dec[en.D_STATE], dec[en.D_REASONS] = en.HALTED, R_KILL_SWITCH
    assert render(dec) == "HALTED: operator kill switch"
    assert reason_names(R_KILL_SWITCH | en.R_DAILY_LOSS) == ["daily_loss", "kill_switch"]
