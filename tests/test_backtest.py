"""Backtest engine: hand-computed cases, an independent replay, and risk properties."""

import json
from typing import ClassVar

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backtests import engine as eg
from backtests.runner import RunSettings, prepare, run
from bot.config import FillsConfig
from bot.data.bars import MINUTE_MS, Bars
from bot.mechanics.brackets import from_tiers, max_notional_for_equity, shipped
from bot.mechanics.fees import VenueFees
from bot.risk import engine as en
from bot.risk.policy import RiskPolicy, off_policy
from strategies.base import Param, Strategy

BTC = shipped("binance", "BTCUSDT")
NO_IMPACT = FillsConfig(impact_coef=0.0, half_spread_bps=0.0)
FEES = VenueFees(0.0, 0.0005, 0.0125)


class Fixed(Strategy):
    """Target leverage given as an array (tests only)."""

    name = "fixed"
    PARAMS: ClassVar[dict[str, Param]] = {"leverage": Param(float, 1.0, "unused")}

    def __init__(self, levels: np.ndarray) -> None:
        super().__init__()
        self.levels = np.asarray(levels, dtype=float)

    def targets(self, bars, signals):
        return self.levels[: len(bars)]


def _bars(o, h, lo, c, funding=None):
    n = len(c)
    cols = {"ts": np.arange(n, dtype=np.int64) * MINUTE_MS, "open": o, "high": h, "low": lo,
            "close": c, "volume": np.full(n, 10.0), "quote_volume": np.full(n, 1e9),
            "taker_buy_volume": np.full(n, 5.0)}
    if funding is not None:
        cols["funding_rate"] = funding
    return Bars("BTCUSDT", MINUTE_MS, cols)


def _run(bars, levels, policy=None, fills=NO_IMPACT, fees=FEES, wallet=10_000.0):
    s = RunSettings(wallet=wallet, fills=fills, fees=fees)
    inputs = prepare(bars, BTC, s)
    return run(inputs, Fixed(levels), policy or off_policy(), BTC, s, "t")


def test_three_bar_long_with_funding_and_slippage_exact_equity():
    # bar 0 closes at 100 -> order 2x equity; fills at bar 1's open 101 plus 10 bps half spread;
    # bar 2 holds a funding settlement of 0.01% at mark 102 (its open), paid by the position
    # held at that instant; closes 102, then 99
    bars = _bars(o=np.array([100.0, 101.0, 102.0]), h=np.array([100.5, 102.5, 102.5]),
                 lo=np.array([99.5, 100.5, 98.5]), c=np.array([100.0, 102.0, 99.0]),
                 funding=np.array([np.nan, np.nan, 0.0001]))
    r = _run(bars, [2.0, 2.0, 2.0], fills=FillsConfig(impact_coef=0.0, half_spread_bps=10.0))
    qty = 2 * 10_000.0 / 100.0                       # sized at the decision close: 200
    px = 101.0 * 1.001                               # 101.101
    fee = qty * px * 0.0005                          # 10.1101
    funding = qty * 102.0 * 0.0001                   # 2.04
    eq1 = 10_000.0 - fee + qty * (102.0 - px)
    eq2 = 10_000.0 - fee - funding + qty * (99.0 - px)
    rec = r.records
    assert r.trades.shape[0] == 1 and r.trades[0, 2] == pytest.approx(qty)
    assert r.trades[0, 3] == pytest.approx(px, rel=1e-15)
    assert rec[0, eg.R_EQUITY] == 10_000.0
    assert rec[1, eg.R_EQUITY] == pytest.approx(eq1, rel=1e-13)
    assert rec[2, eg.R_EQUITY] == pytest.approx(eq2, rel=1e-13)
    assert r.metrics["funding"] == pytest.approx(funding)
    assert r.metrics["slippage"] == pytest.approx(qty * 101.0 * 0.001)
    assert r.metrics["final_equity"] == pytest.approx(eq2, rel=1e-13)


def test_funding_is_paid_by_the_position_held_at_the_settlement_instant():
    """Settlements fall on bar opens, before an order decided at the previous close reaches
    the venue. Until 2026-12-06 the fill came first: a position opened at a settlement
    bar's open paid that settlement, and one closed there did not."""
    o = np.array([100.0, 101.0, 102.0, 103.0])
    bars = _bars(o=o, h=o + 0.5, lo=o - 0.5, c=o + 1.0,
                 funding=np.array([np.nan, 0.0001, np.nan, 0.0001]))
    # opened at bar 1's open (the settlement's instant), closed at bar 3's (another one)
    r = _run(bars, [2.0, 2.0, 0.0, 0.0])
    qty = 2 * 10_000.0 / 101.0                       # sized at bar 0's close, 101
    assert r.trades[:, [0, 2]].tolist() == [[1, pytest.approx(qty)], [3, pytest.approx(-qty)]]
    assert r.metrics["funding"] == pytest.approx(qty * 103.0 * 0.0001, rel=1e-12)


def test_ten_x_long_through_a_minus_12pct_bar_is_liquidated_at_its_price():
    bars = _bars(o=np.array([100.0, 100.0, 88.5]), h=np.array([100.0, 100.0, 89.0]),
                 lo=np.array([100.0, 88.0, 88.0]), c=np.array([100.0, 88.5, 88.5]))
    r = _run(bars, [10.0, 10.0, 10.0])
    qty = 10 * 10_000.0 / 100.0                      # 1,000 at 100: notional 100,000
    fee = qty * 100.0 * 0.0005                       # 50
    wallet = 10_000.0 - fee
    # cross, one position, tier 2 (mmr 0.5%, cum 50) at the liquidation notional:
    lp = (wallet + 50.0 - qty * 100.0) / (qty * 0.005 - qty)
    assert lp == pytest.approx(90.45226130653266)
    liq = r.trades[r.trades[:, 6] == 1.0]
    assert len(liq) == 1 and liq[0, 0] == 1 and liq[0, 3] == pytest.approx(lp)
    left = wallet + qty * (lp - 100.0)               # equity left at the liquidation price
    clearance = min(0.0125 * qty * lp, left)         # capped at what is left: all of it
    assert r.metrics["fees"] == pytest.approx(fee + clearance)
    assert r.metrics["liquidation_fees"] == pytest.approx(clearance)
    assert r.metrics["liquidations"] == 1
    assert r.records[1, eg.R_EQUITY] == pytest.approx(0.0, abs=1e-6)
    assert r.metrics["bust"] and r.metrics["n_trades"] == 1   # nothing traded afterwards


# two tiers: up to 50,000 at 20x (mmr 0.4%), up to 1,000,000 at 10x (mmr 0.5%, cum 50)
SMALL_TIERS = from_tiers("BTCUSDT", [
    {"floor": 0.0, "cap": 50_000.0, "mmr": 0.004, "max_leverage": 20.0},
    {"floor": 50_000.0, "cap": 1_000_000.0, "mmr": 0.005, "max_leverage": 10.0}])


def test_bracket_limit_caps_what_an_order_adds_never_what_is_held():
    # wallet 10,000: the limit is 100,000 (tier 2 at 10x). A 20x target enters at 10x
    # (1,000 at 100). The fall to 95 halves the equity (about 4,950), which margins only
    # 50,000 (tier 1 at 20x; tier 2 starts above 50,000): the 95,000 held is over the limit.
    # The exchange does not cut it (it liquidates at maintenance: 90.45 here), so neither
    # do we: one trade, the quantity held through the fall and the rebound.
    c = np.array([100.0, 100.0, 99.0, 97.0, 95.0, 95.0, 96.0, 98.0])
    bars = _bars(o=np.r_[100.0, c[:-1]], h=np.maximum(np.r_[100.0, c[:-1]], c),
                 lo=np.minimum(np.r_[100.0, c[:-1]], c), c=c)
    s = RunSettings(wallet=10_000.0, fills=NO_IMPACT, fees=FEES)
    r = run(prepare(bars, SMALL_TIERS, s), Fixed(np.full(len(c), 20.0)), off_policy(),
            SMALL_TIERS, s, "t")
    assert r.trades.shape[0] == 1 and r.trades[0, 2] == pytest.approx(1_000.0)
    assert np.all(r.records[1:, eg.R_QTY] == pytest.approx(1_000.0))
    eq = r.records[4, eg.R_EQUITY]
    assert eq == pytest.approx(10_000.0 - 50.0 - 5_000.0)
    assert max_notional_for_equity(eq, SMALL_TIERS.cap, SMALL_TIERS.max_leverage) == 50_000.0
    assert r.metrics["liquidations"] == 0 and r.metrics["n_risk_actions"] == 0


def test_bracket_limit_holds_a_short_above_it_too():
    # the mirror: a 20x short enters at -1,000 (10x), the rise to 105 halves the equity and
    # the -105,000 held is over the 50,000 limit; held to the end, one trade
    c = np.array([100.0, 100.0, 101.0, 103.0, 105.0, 105.0, 104.0, 102.0])
    bars = _bars(o=np.r_[100.0, c[:-1]], h=np.maximum(np.r_[100.0, c[:-1]], c),
                 lo=np.minimum(np.r_[100.0, c[:-1]], c), c=c)
    s = RunSettings(wallet=10_000.0, fills=NO_IMPACT, fees=FEES)
    r = run(prepare(bars, SMALL_TIERS, s), Fixed(np.full(len(c), -20.0)), off_policy(),
            SMALL_TIERS, s, "t")
    assert r.trades.shape[0] == 1 and r.trades[0, 2] == pytest.approx(-1_000.0)
    assert np.all(r.records[1:, eg.R_QTY] == pytest.approx(-1_000.0))
    assert r.metrics["n_risk_actions"] == 0


@pytest.mark.parametrize(("target", "held", "want"), [
    (99e3, 20e3, 50e3),       # growth from below the limit: up to the limit
    (99e3, 95e3, 95e3),       # above the limit: no growth, what is held stays
    (70e3, 95e3, 70e3),       # a reduction goes through, even to a level above the limit
    (-99e3, -95e3, -95e3),    # the same for a short
    (-70e3, -95e3, -70e3),
    (-99e3, 95e3, -50e3),     # a flip: the new side capped at the limit
    (99e3, -95e3, 50e3),
    (30e3, 95e3, 30e3),       # under the limit: untouched
    (99e3, float("nan"), 50e3),  # no mark for what is held: the limit
])
def test_bracket_limit_caps_additions_only(target, held, want):
    from bot.mechanics.brackets import order_limit

    # equity 2,500: tier 1 margins 50,000 at 20x; tier 2 (10x) would need 5,000
    assert order_limit(target, held, 2_500.0, SMALL_TIERS.cap,
                       SMALL_TIERS.max_leverage) == pytest.approx(want)


def _replay(bars, r, taker=0.0005):
    """Wallet and position rebuilt in plain Python from the trade list and funding."""
    wallet = 10_000.0
    qty = np.zeros(2)
    entry = np.zeros(2)
    trades = r.trades
    eq = []
    k = 0
    for t in range(len(bars)):
        while k < len(trades) and trades[k, 0] == t and trades[k, 6] == 0.0:
            slot, dq, px, fee = int(trades[k, 1]), trades[k, 2], trades[k, 3], trades[k, 4]
            assert fee == pytest.approx(abs(dq) * px * taker)
            q = qty[slot]
            if q == 0 or q * dq > 0:
                entry[slot] = (q * entry[slot] + dq * px) / (q + dq)
                qty[slot] = q + dq
            else:
                closed = min(abs(dq), abs(q))
                wallet += np.sign(q) * closed * (px - entry[slot])
                rest = abs(dq) - abs(q)
                if rest > 0:
                    qty[slot], entry[slot] = -np.sign(q) * rest, px
                else:
                    qty[slot] = q + dq
                    if abs(qty[slot]) < 1e-12 * abs(q):
                        qty[slot], entry[slot] = 0.0, 0.0
            wallet -= fee
            k += 1
        f = bars["funding_rate"][t] if bars.has("funding_rate") else np.nan
        if np.isfinite(f):
            wallet -= (qty * bars["open"][t] * f).sum()
        assert not (k < len(trades) and trades[k, 0] == t and trades[k, 6] == 1.0), \
            "no liquidations expected in the replay cases"
        eq.append(wallet + (qty * (bars.close[t] - entry)).sum())
    return np.array(eq)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), lev=st.floats(-5, 5), flips=st.integers(1, 6))
def test_equity_matches_an_independent_replay(seed, lev, flips):
    rng = np.random.default_rng(seed)
    n = 240
    c = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    o = np.r_[c[0], c[:-1]] * (1 + rng.normal(0, 0.0005, n))
    h = np.maximum(o, c) * 1.001
    lo = np.minimum(o, c) * 0.999
    fund = np.full(n, np.nan)
    fund[::60] = rng.normal(0, 0.0003, len(fund[::60]))
    levels = np.repeat(rng.uniform(-abs(lev), abs(lev) + 0.1, flips), n // flips + 1)[:n]
    bars = _bars(o, h, lo, c, fund)
    r = _run(bars, levels, fills=FillsConfig(impact_coef=0.5, half_spread_bps=1.0))
    assert r.metrics["liquidations"] == 0
    np.testing.assert_allclose(r.records[:, eg.R_EQUITY], _replay(bars, r), rtol=1e-9,
                               atol=1e-6)


def test_no_order_after_halted_except_reductions():
    rng = np.random.default_rng(3)
    n = 600
    c = 100 * np.exp(np.cumsum(np.r_[np.zeros(100), np.full(200, -0.002), rng.normal(0, 0.002,
                                                                                      300)]))
    o = np.r_[c[0], c[:-1]]
    bars = _bars(o, np.maximum(o, c) * 1.0005, np.minimum(o, c) * 0.9995, c)
    pol = RiskPolicy(max_drawdown=0.10, daily_loss=1.0, cascade_mode=False, hedge=False,
                     min_liq_atr=0.0, cluster_k_atr=0.0)
    r = _run(bars, np.full(n, 5.0), policy=pol)
    rec = r.records
    halted = np.flatnonzero(rec[:, eg.R_STATE] == en.HALTED)
    assert len(halted) > 0 and r.metrics["max_drawdown"] < 0.2
    for t in r.trades:
        bar = int(t[0])
        if bar - 1 in set(halted.tolist()):
            before = rec[bar - 1, eg.R_QTY]
            assert abs(before + t[2]) <= abs(before) + 1e-12       # only reductions


@settings(max_examples=300, deadline=None)
@given(sig=st.lists(st.one_of(st.floats(-10, 1e6), st.just(float("nan"))), min_size=en.N_SIG,
                    max_size=en.N_SIG),
       acct=st.lists(st.floats(-1e7, 1e7), min_size=en.N_ACCT_VIEW, max_size=en.N_ACCT_VIEW),
       hard=st.floats(1, 125), target=st.floats(-1e9, 1e9))
def test_risk_engine_never_exceeds_the_hard_leverage(sig, acct, hard, target):
    pol = RiskPolicy(max_leverage=hard, lev_base=125.0, lev_min=50.0,
                     cascade_max_leverage=125.0).to_array()
    out = np.zeros(en.N_DECISION)
    a = np.array(acct)
    en.evaluate(np.array(sig), a, pol, out)
    assert out[en.D_MAX_LEV_LONG] <= hard + 1e-12 and out[en.D_MAX_LEV_SHORT] <= hard + 1e-12
    eq = max(a[en.A_EQUITY], 0.0)
    allowed = en.allowed_target(target, a[en.A_NOTIONAL], out, pol)
    assert abs(allowed) <= max(abs(a[en.A_NOTIONAL]), hard * eq) + 1e-6


def test_cascade_against_the_position_forces_reducing():
    pol = RiskPolicy().to_array()
    sig = np.full(en.N_SIG, np.nan)
    sig[en.S_MARK], sig[en.S_ATR] = 100.0, 1.0
    sig[en.S_CROWD_LONG] = sig[en.S_CROWD_SHORT] = 0.0
    sig[en.S_CASCADE], sig[en.S_CASCADE_BLOCK], sig[en.S_STALE_BARS] = 1.0, 1.0, 0.0
    acct = np.array([10_000.0, 50_000.0, 50.0, 10_000.0, 10_000.0, 0.0, np.nan])
    out = np.zeros(en.N_DECISION)
    en.evaluate(sig, acct, pol, out)
    assert out[en.D_STATE] == en.REDUCING
    assert int(out[en.D_REASONS]) & en.R_CASCADE and int(out[en.D_REASONS]) & en.R_CASCADE_BLOCK
    assert out[en.D_MAX_LEV_LONG] == 2.0 and out[en.D_BLOCK_LONG] == 1.0
    assert en.allowed_target(80_000.0, 50_000.0, out, pol) == 20_000.0   # 2x of 10,000 equity
    # a short is not the cascade's victim: it may stay, but a long cannot be added
    acct[en.A_NOTIONAL] = -30_000.0
    en.evaluate(sig, acct, pol, out)
    assert out[en.D_STATE] == en.ACTIVE
    assert en.allowed_target(10_000.0, -30_000.0, out, pol) == 0.0


def test_cluster_guard_puts_our_liquidation_beyond_the_cluster():
    # min_liq_atr 3 (the balanced default became 8): our liquidation 6.7 ATRs away must not
    # trip the liquidation-distance rule, so the cluster guard alone is measured
    pol = RiskPolicy(cluster_buffer=0.005, mmr=0.005, min_liq_atr=3.0).to_array()
    sig = np.full(en.N_SIG, np.nan)
    sig[en.S_MARK], sig[en.S_ATR] = 100.0, 1.5
    sig[en.S_CROWD_LONG] = sig[en.S_CROWD_SHORT] = 0.0
    sig[en.S_CASCADE] = sig[en.S_CASCADE_BLOCK] = sig[en.S_STALE_BARS] = 0.0
    # a dense long-liquidation cluster 5% below (3.3 ATR): 20x would liquidate us above it
    sig[en.S_CLUSTER_BELOW], sig[en.S_CLUSTER_BELOW_EDGE] = 95.0, 94.5
    sig[en.S_CLUSTER_BELOW_SHARE] = 0.2
    acct = np.array([10_000.0, 100_000.0, 90.0, 10_000.0, 10_000.0, 0.0, np.nan])
    out = np.zeros(en.N_DECISION)
    en.evaluate(sig, acct, pol, out)
    cap = out[en.D_MAX_LEV_LONG]
    liq = 100.0 * (1 - 1 / cap) / (1 - 0.005)        # our liquidation at that leverage
    assert cap < 20.0 and liq == pytest.approx(94.5 * 0.995)
    assert int(out[en.D_REASONS]) & en.R_CLUSTER and out[en.D_CLUSTER_PRICE] == 95.0


def test_from_opens_the_account_there_with_signals_warm_on_the_bars_before(cli, tmp_path):
    """`--from` cut the data: crowding idle for a day, the first order paying only the
    half-spread. Now the bars before it warm everything, as `runner.run(..., start=k)`
    (the efficacy script's fresh account) does: the CLI's figures are that run's."""
    import json

    from bot.data import dataset
    from bot.data.synthetic import SynthSpec, generate
    from bot.mechanics import brackets as br
    from bot.risk.policy import load_policy
    from strategies import find

    ds = generate(SynthSpec(seed=3, days=2, crowding="long"))
    d = tmp_path / "ds"
    dataset.save(ds, d)
    k = 1500                                       # 01:00 on the second day
    at = int(ds.bars.ts[k])
    from bot.data.dataset import iso
    r = cli("backtest", d, "--strategy", "hold", "--param", "side=long", "--param",
            "leverage=10", "--risk", "on", "--from", iso(at), "--json", tmp_path / "b.json",
            "--report", tmp_path / "r.html")
    assert r.code == 0, r.err
    assert "signals and strategy warm on the 1,500 bars before --from" in " ".join(r.out.split())
    out = json.loads((tmp_path / "b.json").read_text())
    assert out["meta"]["from"] == iso(at) and out["meta"]["bars"] == len(ds.bars) - k
    assert out["meta"]["warm_up_bars"] == k
    b = br.for_symbol(ds.bars.symbol)
    s = RunSettings()
    want = run(prepare(ds.bars, b, s), find("hold").from_strings({"side": "long",
                                                                  "leverage": "10"}),
               load_policy("balanced"), b, s, "on", start=k).metrics
    got = out["runs"]["on"]
    for key in ("total_return", "max_drawdown", "fees", "slippage", "n_trades", "sharpe"):
        assert got[key] == pytest.approx(want[key], rel=1e-12), key
    # the first order's impact reads the warm window: more than the bare half-spread
    half_spread = 10.0 * 100_000.0 * s.fills.half_spread_bps / 1e4
    assert got["slippage"] > 1.5 * half_spread
    assert all(d["ts"] >= iso(at) for d in out["decisions"])
    # the report draws the account's span only
    assert f"{iso(at)[5:10]} {iso(at)[11:16]}" in (tmp_path / "r.html").read_text()


def test_notes_say_when_no_funding_is_charged_and_what_the_rules_read_off_1m(cli, tmp_path):
    """A 4h dataset of vendor exports (no settled rates) charged 0.00 funding and ran rules
    measured on 1m bars without a word. The notes say both; a 1m dataset with funding
    settlements prints neither, and risk off skips the rules' note."""
    from bot.data import dataset
    from bot.data.bars import Bars
    from bot.data.resample import resample
    from bot.data.synthetic import SynthSpec, generate

    ds = generate(SynthSpec(seed=3, days=2, crowding="long"))
    dataset.save(ds, tmp_path / "m1")
    h4 = resample(ds.bars, 4 * 3_600_000)
    cols = {k: h4[k] for k in h4.names if k != "funding_rate"}
    dataset.save(dataset.Dataset(Bars(h4.symbol, h4.interval_ms, cols)), tmp_path / "h4")
    args = ("--strategy", "hold", "--param", "side=long", "--param", "leverage=10")
    out = " ".join(cli("backtest", tmp_path / "h4", *args, "--risk", "compare").out.split())
    assert "funding: none charged (the data holds no funding settlements;" in out
    assert ("risk rules: measured on 1m bars (docs/risk.md); on 4h bars positioning and the "
            "risk inputs read hours, but the cascade detector counts bars (its 5- and 15-bar "
            "moves span 20 h and 60 h here, its 30-bar hold 120 h)") in out
    out = " ".join(cli("backtest", tmp_path / "h4", *args, "--risk", "off").out.split())
    assert "funding: none charged" in out and "risk rules:" not in out
    out = cli("backtest", tmp_path / "m1", *args, "--risk", "compare").out
    assert "funding:" not in out and "risk rules:" not in out and "brackets:" not in out


def test_a_dataset_with_gaps_is_said_to_have_them(cli, tmp_path):
    """A dataset imported with --allow-gaps backtested without a word of its gaps (`data
    info` showed them)."""
    from bot.data import dataset
    from bot.data.bars import Bars
    from bot.data.synthetic import SynthSpec, generate

    bars = generate(SynthSpec(seed=3, days=1)).bars
    keep = np.ones(len(bars), bool)
    keep[[100, 101, 700]] = False               # two gaps, 3 bars missing
    cols = {k: v[keep] for k, v in bars.columns.items()}
    dataset.save(dataset.Dataset(Bars(bars.symbol, bars.interval_ms, cols)), tmp_path / "g")
    r = cli("backtest", tmp_path / "g", "--strategy", "hold", "--risk", "off")
    assert r.code == 0, r.err
    first = dataset.iso(int(bars.ts[100]))
    assert (f"gaps: 2 in the data (3 bars missing, the first at {first}); the run steps over "
            "each: nothing inside a gap is known (no fill and no liquidation check there)") \
        in " ".join(r.out.split())
    r = cli("backtest", tmp_path / "g", "--strategy", "hold", "--risk", "off", "--from",
            dataset.iso(int(bars.ts[800])))
    assert r.code == 0 and "gaps:" not in r.out      # none after --from


def test_a_target_above_the_brackets_is_said_to_be_capped(cli, tmp_path):
    """`hold` 125x on a 100,000 wallet traded exactly as 20x (BTCUSDT's shipped brackets let
    100,000 open at most 2,000,000: the 20x tier up to 5M), with no word of it. The note
    says so, and --json holds the largest target and the limit at the start."""
    args = ("backtest", "--scenario", "cascade-long", "--strategy", "hold", "--param",
            "side=long", "--risk", "off", "--json", tmp_path / "b.json")
    r = cli(*args, "--param", "leverage=125")
    assert r.code == 0, r.err
    assert ("brackets: the target 125x (12,500,000 quote on the 100,000 wallet) is more than "
            "BTCUSDT's brackets let an order open at the account's leverage setting "
            "(live.leverage = 20): 20x (2,000,000); orders stop at that "
            "limit, as on the exchange (it moves with equity)") in " ".join(r.out.split())
    meta = json.loads((tmp_path / "b.json").read_text())["meta"]
    assert (meta["max_target_leverage"], meta["bracket_limit_leverage"]) == (125.0, 20.0)
    r = cli(*args, "--param", "leverage=20")
    assert r.code == 0 and "brackets:" not in r.out
