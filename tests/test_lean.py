"""The lean compilations (`bot.jit`) of the backtest loop and the signal step equal the
public compilations of the same source bit for bit, and the kernel's shortcuts equal the
formulas they skip."""

import numpy as np
import pytest

from backtests import engine as eg
from backtests.runner import RunSettings, fill_params, prepare
from bot.data.synthetic import SynthSpec, generate
from bot.execution import kernel as kn
from bot.jit import lean
from bot.mechanics import account as ac
from bot.mechanics.brackets import max_notional_for_equity, shipped
from bot.risk import engine as en
from bot.risk.policy import load_policy, off_policy
from bot.signals import heatmap as hm
from bot.signals import stream as sm

BTC = shipped("binance", "BTCUSDT")


@pytest.fixture(scope="module")
def cascade():
    """Three synthetic days with a crowded-long cascade: fills, funding, liquidations."""
    bars = generate(SynthSpec(seed=7, days=3, crowding="long")).bars
    return bars, prepare(bars, BTC, RunSettings())


def _loop(fn, inputs, targets, policy):
    n = len(targets)
    settings = RunSettings()
    acct, pos = ac.new_account(settings.wallet, 2, leverage=125.0)
    st = np.zeros(eg.N_STATE)
    st[: kn.N_K] = kn.new_state(settings.wallet)
    rec = np.zeros((n, eg.N_REC))
    trd = np.zeros((2 * n + 16, eg.N_TRD))
    dcs = np.zeros((n + 16, eg.N_DCS))
    floor, cap, mmr, cum, _ = ac.stack_brackets([BTC, BTC])
    m = inputs.market
    fn(0, n, m["ts"], m["open"], m["close"], m["mark_open"], m["mark_high"], m["mark_low"],
       m["mark_close"], m["funding"], m["window"], inputs.sig, targets, policy.to_array(),
       fill_params(settings, "entry"), floor, cap, mmr, cum, BTC.cap, BTC.max_leverage, acct,
       pos, st, rec, trd, dcs, np.zeros(en.N_ACCT_VIEW), np.zeros(en.N_DECISION),
       np.zeros(kn.N_DECIDE), np.zeros(2))
    return rec, trd, dcs, st, acct, pos


@pytest.mark.parametrize("policy", [off_policy(), load_policy("balanced")],
                         ids=["risk-off", "balanced"])
def test_lean_loop_equals_public_loop_bit_for_bit(cascade, policy):
    bars, inputs = cascade
    n = len(bars)
    # long 10x, a flip to short 5x, an exit, long 10x again through the crowded-long days
    t = np.arange(n)
    targets = np.where((t >= 100) & (t < 200), -5.0, np.where((t >= 200) & (t < 300), 0.0, 10.0))
    a = _loop(eg.run_bars, inputs, targets, policy)
    assert lean(eg.run_bars) is eg._run_bars_lean          # memoised: one variant
    b = _loop(eg._run_bars_lean, inputs, targets, policy)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)      # NaN == NaN, otherwise exact
    _, trd, _, st, acct, _ = a
    assert int(st[eg.ST_N_TRADES]) >= 4 and (trd[:4, 2] < 0.0).any()
    assert acct[ac.A_FUNDING] > 0.0                # crowded longs paid funding


def test_lean_signal_steps_equal_public_step_bit_for_bit(cascade):
    bars, _ = cascade
    x = sm.bar_matrix(bars)
    c = sm.config(bars.interval_ms, BTC)
    s1 = sm.new_state(float(x[0, sm.X_CLOSE]), bars.interval_ms, BTC)
    s2 = sm.new_state(float(x[0, sm.X_CLOSE]), bars.interval_ms, BTC)
    ref = np.empty((len(x), sm.N_OUT))
    for t in range(len(x)):                    # the daemon's path: the public `step`
        sm.step(s1, c, x[t], ref[t])
    got = sm.run_all(s2, c, x)                 # the batch path: lean `run_steps`
    np.testing.assert_array_equal(got, ref)
    for a, b in zip(s1, s2, strict=True):
        np.testing.assert_array_equal(a, b)


def test_lean_snapshots_follow_the_stride(cascade):
    bars, _ = cascade
    x = sm.bar_matrix(bars)[:1000]
    c = sm.config(bars.interval_ms, BTC)
    s = sm.new_state(float(x[0, sm.X_CLOSE]), bars.interval_ms, BTC)
    out, snaps, lo = sm.run_snapshots(s, c, x, 300)
    assert snaps.shape[0] == 4 and lo.shape == (4,)
    s2 = sm.new_state(float(x[0, sm.X_CLOSE]), bars.interval_ms, BTC)
    np.testing.assert_array_equal(out, sm.run_all(s2, c, x))
    s3 = sm.new_state(float(x[0, sm.X_CLOSE]), bars.interval_ms, BTC)
    sm.run_all(s3, c, x[:601])                 # the third snapshot is taken after bar 600
    np.testing.assert_array_equal(snaps[2, 0], s3.mass[hm.LONG] * s3.meta[hm.M_SCALE_LONG])


def test_exchange_limit_shortcut_equals_the_tier_scan():
    """`decide` skips the tier scan when the target is under the first tier's limit; the
    allowed notional is the scan's clip in both regimes (10x: no clip; 120x of 50M: clip)."""
    for wallet, lev in ((10_000.0, 10.0), (50_000_000.0, 120.0)):
        acct, pos = ac.new_account(wallet, 2, leverage=125.0)
        st = kn.new_state(wallet)
        floor, cap, mmr, cum, _ = ac.stack_brackets([BTC, BTC])
        sig = np.full(en.N_SIG, np.nan)
        sig[en.S_MARK] = 100.0
        sig[en.S_STALE_BARS] = 0.0
        out = np.zeros(kn.N_DECIDE)
        dec = np.zeros(en.N_DECISION)
        kn.decide(acct, pos, 0, 1, st, 0.0, 100.0, np.array([100.0, 100.0]), sig, lev,
                  off_policy().to_array(), fill_params(RunSettings(), "entry"), floor, cap,
                  mmr, cum, BTC.cap, BTC.max_leverage, np.zeros(en.N_ACCT_VIEW), dec, out)
        lim = max_notional_for_equity(wallet, BTC.cap, BTC.max_leverage)
        assert out[kn.O_ALLOWED] == min(lev * wallet, lim)
    assert out[kn.O_ALLOWED] == lim < 120.0 * 50_000_000.0     # the limit bound there


@pytest.mark.parametrize("ts", [0.0, 86_399_999.0, 86_400_000.0, -1.0, -86_400_001.0,
                                1.7e12 + 0.5, 1_767_225_600_000.0])
def test_day_of_a_timestamp_equals_float_floor_division(ts):
    """`decide` starts a new UTC day where `ts // 86_400_000` does (integer division)."""
    st = kn.new_state(1000.0)
    acct, pos = ac.new_account(1000.0, 2)
    floor, cap, mmr, cum, _ = ac.stack_brackets([BTC, BTC])
    sig = np.full(en.N_SIG, np.nan)
    sig[en.S_MARK] = 100.0
    kn.decide(acct, pos, 0, 1, st, ts, 100.0, np.array([100.0, 100.0]), sig, 0.0,
              off_policy().to_array(), fill_params(RunSettings(), "entry"), floor, cap, mmr,
              cum, BTC.cap, BTC.max_leverage, np.zeros(en.N_ACCT_VIEW),
              np.zeros(en.N_DECISION), np.zeros(kn.N_DECIDE))
    assert st[kn.K_DAY] == float(ts // 86_400_000)


def test_an_inlined_step_function_is_refused_as_a_lean_root():
    """The trading step's lean variants are inlined into lean callers and have no Python
    entry point: `lean` refuses them as roots (a call would crash the process)."""
    with pytest.raises(ValueError, match="decide: its lean variant is inlined"):
        lean(kn.decide)
    assert lean(eg.run_bars) is lean(eg.run_bars)      # a loop is a root: memoised
