"""Tick replay: hand-computed ticks (fill price, liquidation on the exact tick, decisions
every N ticks, liquidation-flow impact), bar vs tick replay of the same synthetic days,
and `liqbot backtest --ticks`."""

import json
from typing import ClassVar

import numpy as np
import pytest

from backtests import engine as eg
from backtests.runner import RunSettings, prepare, run
from backtests.tick_runner import prepare_ticks, run_ticks, ticks_of
from bot.config import FillsConfig
from bot.data import dataset as ds_io
from bot.data.bars import MINUTE_MS, Trades
from bot.data.synthetic import SynthSpec, generate, spec_with
from bot.data.synthetic_ticks import add_ticks
from bot.data.trades import Ticks, no_liquidations
from bot.mechanics.brackets import Brackets, shipped
from bot.mechanics.fees import VenueFees
from bot.risk.policy import load_policy, off_policy
from strategies import find
from strategies.base import Param, Strategy

T0 = 1767225600000
ONE_TIER = Brackets("BTCUSDT", np.array([0.0]), np.array([np.inf]), np.array([0.02]),
                    np.array([0.0]), np.array([125.0]))
FEES = VenueFees(0.0, 0.0005, 0.0125)
NO_IMPACT = RunSettings(wallet=10_000.0, fills=FillsConfig(impact_coef=0.0, half_spread_bps=0.0),
                        fees=FEES)


class Fixed(Strategy):
    """Target leverage given as an array (tests only)."""

    name = "fixed"
    PARAMS: ClassVar[dict[str, Param]] = {"leverage": Param(float, 1.0, "unused")}

    def __init__(self, levels) -> None:
        super().__init__()
        self.levels = np.asarray(levels, dtype=float)

    def targets(self, bars, signals):
        return self.levels[: len(bars)]


def make_ticks(prices, liq=None, qty=1.0):
    """Bar k holds the ticks prices[k], one a second from the minute's open."""
    ts, px = [], []
    for k, ps in enumerate(prices):
        for j, p in enumerate(ps):
            ts.append(T0 + k * MINUTE_MS + j * 1000)
            px.append(p)
    n = len(ts)
    tr = Trades("BTCUSDT", np.array(ts), np.array(px), np.full(n, qty), np.ones(n, np.int8))
    if liq is None:
        return Ticks(tr, *no_liquidations())
    lts, lside, lpx, lq = (np.asarray(v) for v in zip(*liq, strict=True))
    return Ticks(tr, lts.astype(np.int64), lside.astype(np.int8), lpx.astype(float),
                 lq.astype(float))


# bar 0 closes at 100; bar 1 opens at 100 and falls through 92.0 to 91.88
CRASH = [[100.0, 100.5, 99.5, 100.0], [100.0, 95.0, 92.0, 91.88, 93.0], [93.0, 94.0]] + \
    [[94.0, 94.5]] * 8


def test_fill_at_first_tick_and_liquidation_on_the_exact_tick():
    ti = prepare_ticks(make_ticks(CRASH), None, ONE_TIER, NO_IMPACT)
    levels = np.r_[10.0, np.zeros(len(CRASH) - 1)]
    r = run_ticks(ti, Fixed(levels), off_policy(), ONE_TIER, NO_IMPACT, "off")
    # bar 0's close: 10 x 10,000 / 100 = 1,000 base, bought at bar 1's first tick (index 4)
    # at 100, fee 0.05% of 100,000 = 50. Cross liquidation price with one tier (mmr 2%):
    # (q x entry - wallet) / (q x (1 - mmr)) = (100,000 - 9,950) / 980 = 91.887755...
    lp = 90_050.0 / 980.0
    assert r.trades[:, :4].tolist() == [[1, 0, 1000.0, 100.0], [1, 0, -1000.0, lp]]
    assert r.trades[0, 4] == pytest.approx(50.0)
    # 92.0 (tick 6) stays above it; 91.88 (tick 7, 00:01:03) reaches it
    assert r.trade_ticks.tolist() == [4, 7]
    assert r.metrics["liquidated_at"] == "2026-01-01T00:01:03Z"
    # closed at the liquidation price; the clearance fee (1.25% of 91,887.76 = 1,148.60)
    # is within the equity left (2% of it = 1,837.76): wallet 9,950 - 9,112.24 - 1,148.60
    wallet = 9_950.0 + 1000.0 * (lp - 100.0) - 0.0125 * 1000.0 * lp
    assert r.metrics["final_equity"] == pytest.approx(wallet, rel=1e-12)
    assert wallet == pytest.approx(689.158163, abs=1e-6)
    # the liquidation's trade row carries that clearance fee (the report's trade list)
    assert r.trades[1, 4] == pytest.approx(0.0125 * 1000.0 * lp, rel=1e-12)
    assert r.trades[:, 4].sum() == pytest.approx(r.metrics["fees"], rel=1e-12)
    # the bar replay of the same bars liquidates in the same bar at the same price
    rb = run(ti.inputs, Fixed(levels), off_policy(), ONE_TIER, NO_IMPACT, "off")
    assert rb.trades.tolist() == r.trades.tolist()
    assert rb.metrics["liquidated_at"] == "2026-01-01T00:01:00Z"


def test_no_liquidation_when_the_mark_range_stops_above():
    # with mark klines whose low (92.0) stays above the liquidation price, the tick at
    # 91.88 is clipped to the mark range: no liquidation (bar replay agrees)
    ti0 = prepare_ticks(make_ticks(CRASH), None, ONE_TIER, NO_IMPACT)
    b = ti0.bars
    base = b.with_columns(mark_open=b["open"], mark_high=b["high"],
                          mark_low=np.where(np.arange(len(b)) == 1, 92.0, b["low"]),
                          mark_close=b.close)
    ti = prepare_ticks(make_ticks(CRASH), base, ONE_TIER, NO_IMPACT)
    levels = np.r_[10.0, np.zeros(len(CRASH) - 1)]
    r = run_ticks(ti, Fixed(levels), off_policy(), ONE_TIER, NO_IMPACT, "off")
    assert r.metrics["liquidations"] == 0 and r.trades[1, 3] == 93.0  # closed at bar 2's open


def test_funding_settles_at_the_first_tick_at_the_mark_open():
    prices = [[100.0, 101.0]] * 12
    ti0 = prepare_ticks(make_ticks(prices), None, ONE_TIER, NO_IMPACT)
    b = ti0.bars
    funding = np.full(len(b), np.nan)
    funding[3] = 0.001
    base = b.with_columns(funding_rate=funding, mark_open=np.full(len(b), 100.5),
                          mark_high=b["high"], mark_low=b["low"], mark_close=b.close)
    ti = prepare_ticks(make_ticks(prices), base, ONE_TIER, NO_IMPACT)
    r = run_ticks(ti, Fixed(np.r_[5.0, np.full(11, 5.0)]), off_policy(), ONE_TIER, NO_IMPACT,
                  "off")
    # 5 x 10,000 / 101 base held from bar 1; pays 0.1% of qty x mark open 100.5 at bar 3
    qty = 50_000.0 / 101.0
    assert r.trades[0, 2] == pytest.approx(qty)
    assert r.metrics["funding"] == pytest.approx(qty * 100.5 * 0.001, rel=1e-12)
    assert r.records[2, eg.R_FUNDING] == 0.0 and r.records[3, eg.R_FUNDING] > 0.0


def test_decisions_every_n_ticks_fill_at_the_next_tick():
    prices = [[100.0, 101.0, 102.0, 103.0, 104.0]] * 12
    s = RunSettings(wallet=10_000.0, fills=FillsConfig(impact_coef=0.0, half_spread_bps=2.0),
                    fees=FEES)
    ti = prepare_ticks(make_ticks(prices), None, ONE_TIER, s)
    r = run_ticks(ti, Fixed(np.full(12, 2.0)), off_policy(), ONE_TIER, s, "off", every_n=7)
    # ticks 6 (bar 1, price 101) is the 7th: the first decision once bar 0 has closed;
    # 2 x 10,000 / 101 base filled at tick 7 (102) plus the 2 bp half spread
    assert r.trade_ticks[0] == 7
    assert r.trades[0, 2] == pytest.approx(20_000.0 / 101.0)
    assert r.trades[0, 3] == pytest.approx(102.0 * 1.0002)
    assert r.every_n == 7 and r.events == 60
    # later decisions (ticks 13, 20, ...) keep the quantity (entry sizing): one trade
    assert len(r.trades) == 1


def test_liquidation_ticks_thin_the_book_for_fills_inside_the_bar():
    prices = [[100.0 + 0.3 * k * (k % 2) + 0.5 * (j % 2) for j in range(10)] for k in range(12)]
    fills = FillsConfig(impact_coef=0.7, half_spread_bps=0.0, liq_multiplier=2.0)
    s = RunSettings(wallet=10_000.0, fills=fills, fees=FEES)
    # a forced sale of 5,000 quote in bar 3, second 2 (before the decision at tick 34)
    liq = [(T0 + 3 * MINUTE_MS + 2000, 1, 100.0, 50.0)]

    def slip(ticks):
        ti = prepare_ticks(ticks, None, ONE_TIER, s)
        r = run_ticks(ti, Fixed(np.full(12, 1.0)), off_policy(), ONE_TIER, s, "off",
                      every_n=35)
        i = int(r.trade_ticks[0])
        return abs(r.trades[0, 3] / ti.ticks.trades.price[i] - 1.0), ti, i

    s0, ti, i = slip(make_ticks(prices, qty=10.0))
    s1, _, _ = slip(make_ticks(prices, liq=liq, qty=10.0))
    assert i == 35                 # decided at tick 34 (bar 3), filled at tick 35
    assert s0 > 0.0
    # s = coef x sigma x sqrt(n / V) x (1 + liq_mult x L / V): V = the quote volume of bars
    # 0-2 (the window at bar 2's close) + bar 3's ticks 30..34; L = the 5,000 forced sale
    q = ti.ticks.trades.price * 10.0
    v = q[:35].sum()
    assert s1 / s0 == pytest.approx(1.0 + 2.0 * 5_000.0 / v, rel=1e-9)


# Bar vs tick replay of the same synthetic days. Stated tolerance: at bar closes the tick
# replay does what the bar loop does (orders fill at the bar's first tick = its open, funding
# at the mark open, a liquidation at the first tick whose mark reaches the liquidation price,
# which exists exactly when the bar's mark range reaches it, closed at that price), and its
# bars are the ticks' aggregation, equal to the dataset's. So records, trades and metrics
# must agree to float rounding: final equity within 1e-9 relative, the same trades, the
# same liquidations (bar and price). Tick replays only refine WHEN inside the bar.
PARITY = spec_with(SynthSpec(seed=2, days=2, crowding="long"), base_trades=200.0)


@pytest.fixture(scope="module")
def parity():
    ds = add_ticks(generate(PARITY))
    br, s = shipped("binance", "BTCUSDT"), RunSettings()
    ticks, base = ticks_of(ds, "synthetic")
    return ds, br, s, prepare_ticks(ticks, base, br, s), prepare(ds.bars, br, s)


@pytest.mark.parametrize(("strategy", "params", "risk"), [
    ("hold", {"side": "long", "leverage": "20"}, "off"),      # liquidated 01-02 18:44
    ("hold", {"side": "long", "leverage": "10"}, "on"),
    ("trend", {"leverage": "5", "sizing": "rebalance"}, "on"),
    ("hold", {"side": "short", "leverage": "25"}, "off"),
])
def test_bar_and_tick_replay_agree(parity, strategy, params, risk):
    ds, br, s, ti, inputs = parity
    for c in ds.bars.names:
        assert np.array_equal(ds.bars[c], ti.bars[c], equal_nan=True), c
    strat = find(strategy).from_strings(params)
    pol = off_policy() if risk == "off" else load_policy("balanced")
    rb = run(inputs, strat, pol, br, s, risk)
    rt = run_ticks(ti, strat, pol, br, s, risk)
    mb, mt = rb.metrics, rt.metrics
    assert mt["final_equity"] == pytest.approx(mb["final_equity"], rel=1e-9)
    assert mt["n_trades"] == mb["n_trades"] and mt["liquidations"] == mb["liquidations"]
    assert mt["liquidation_price"] == mb["liquidation_price"]
    np.testing.assert_allclose(rt.trades, rb.trades, rtol=1e-9)
    np.testing.assert_allclose(rt.records, rb.records, rtol=1e-9, equal_nan=True)
    if mb["liquidated_at"] is not None:
        # the tick time lies inside the bar the bar replay names
        assert mt["liquidated_at"][:16] == mb["liquidated_at"][:16]
    if strategy == "hold" and params["leverage"] == "20":
        assert mb["liquidated_at"] == "2026-01-02T18:44:00Z"


@pytest.mark.parametrize(("strategy", "params", "risk"), [
    ("hold", {"side": "long", "leverage": "20"}, "off"),
    ("trend", {"leverage": "5", "sizing": "rebalance"}, "on"),
])
def test_an_account_opened_at_bar_k_agrees_with_the_bar_replay(parity, strategy, params, risk):
    """`--from` on ticks: the account opens at bar k, the bars before it only warm the
    signals (as `runner.run(start=k)`; until 2026-12-06 the ticks were cut at --from)."""
    _, br, s, ti, inputs = parity
    k = 1_440 + 600                         # 2026-01-02 10:00, before the 18:44 liquidation
    strat = find(strategy).from_strings(params)
    pol = off_policy() if risk == "off" else load_policy("balanced")
    rb = run(inputs, strat, pol, br, s, risk, start=k)
    rt = run_ticks(ti, strat, pol, br, s, risk, start=k)
    assert rt.metrics["final_equity"] == pytest.approx(rb.metrics["final_equity"], rel=1e-9)
    np.testing.assert_allclose(rt.trades, rb.trades, rtol=1e-9)
    np.testing.assert_allclose(rt.records, rb.records, rtol=1e-9, equal_nan=True)
    assert len(rt.trades) and rt.trades[:, 0].min() >= k
    assert (rt.records[:k, eg.R_EQUITY] == s.wallet).all()
    assert rt.events == len(ti.ticks) - int(ti.starts[k])
    assert rt.metrics["liquidated_at"] == rb.metrics["liquidated_at"] or \
        rt.metrics["liquidated_at"][:16] == rb.metrics["liquidated_at"][:16]


def test_every_n_replay_of_the_same_day(parity):
    _, br, s, ti, _ = parity
    strat = find("hold").from_strings({"side": "long", "leverage": "20"})
    never = run_ticks(ti, strat, off_policy(), br, s, "off", every_n=len(ti.ticks) + 1)
    assert never.metrics["n_trades"] == 0 and never.metrics["final_equity"] == s.wallet
    # decisions every 50,000 ticks (about every 2 hours here): the position is entered in
    # bar 160 and liquidated in the same minute of the cascade as the bar replay's, 9 s in
    often = run_ticks(ti, strat, off_policy(), br, s, "off", every_n=50_000)
    assert int(often.trade_ticks[0]) == 50_000 and int(often.trades[0, 0]) == 160
    assert often.metrics["liquidations"] == 1
    assert often.metrics["liquidated_at"] == "2026-01-02T18:44:09Z"


def test_cli_backtest_ticks_matches_bar_backtest(cli, tmp_path):
    d = tmp_path / "ticks"
    ds_io.save(add_ticks(generate(spec_with(SynthSpec(seed=2, days=1), base_trades=60.0))), d)
    args = ["backtest", d, "--strategy", "hold", "--param", "side=long", "--param",
            "leverage=20", "--risk", "compare"]
    a = cli(*args, "--ticks", "--json", tmp_path / "t.json")
    assert a.code == 0, a.err
    assert "tick replay:" in a.out and "decisions at bar closes" in a.out
    b = cli(*args, "--json", tmp_path / "b.json")
    assert b.code == 0, b.err
    jt = json.loads((tmp_path / "t.json").read_text())
    jb = json.loads((tmp_path / "b.json").read_text())
    assert jt["meta"]["ticks"] > 0 and jt["meta"]["risk_every"] == 0
    for name in ("off", "on"):
        assert jt["runs"][name]["final_equity"] == pytest.approx(
            jb["runs"][name]["final_equity"], rel=1e-9)
        assert jt["runs"][name].keys() == jb["runs"][name].keys()
    c = cli(*args, "--ticks", "--risk-every", "1000")
    assert c.code == 0 and "every 1,000 ticks" in c.out
    # --from: the account opens there on both replays, the bars before it warm the signals
    frm = ["--from", "2026-01-01T12:00"]
    a = cli(*args, *frm, "--ticks", "--json", tmp_path / "t.json")
    b = cli(*args, *frm, "--json", tmp_path / "b.json")
    assert a.code == 0 and b.code == 0, a.err + b.err
    jt = json.loads((tmp_path / "t.json").read_text())
    jb = json.loads((tmp_path / "b.json").read_text())
    assert jt["meta"]["warm_up_bars"] == jb["meta"]["warm_up_bars"] == 720
    assert jt["meta"]["bars"] == jb["meta"]["bars"] == 720
    assert "warm on the 720 bars before --from" in " ".join(a.out.split())
    for name in ("off", "on"):
        assert jt["runs"][name]["final_equity"] == pytest.approx(
            jb["runs"][name]["final_equity"], rel=1e-9)
    r = cli(*args, "--from", "2026-01-01T23:55", "--ticks")
    assert r.code == 2 and "make 5 bar(s)" in r.err


def test_cli_ticks_errors(cli, tmp_path):
    r = cli("backtest", "--scenario", "calm", "--risk-every", "5")
    assert r.code == 2 and "--risk-every" in r.err and "without --ticks" in r.err
    plain = tmp_path / "plain"
    ds_io.save(ds_io.Dataset(generate(SynthSpec(seed=2, days=1)).bars), plain)
    r = cli("backtest", plain, "--ticks")
    assert r.code == 2 and "no trades table" in r.err
    bad = tmp_path / "BTCUSDT-trades-2025-10-10.csv"
    bad.write_text("id,price,qty,quote_qty,time,is_buyer_maker\n1,100,1,100,1760054400000,true\n"
                   "2,oops,1,100,1760054400001,true\n")
    r = cli("backtest", bad, "--ticks")
    assert r.code == 2 and "row 3" in r.err and "price" in r.err and "Traceback" not in r.err


def test_cli_backtest_on_a_vision_trades_file(cli, tmp_path):
    # 12 minutes of aggTrades (no header row), a tick every 10 s rising 1.0 a tick
    t0 = 1760054400000
    rows = [f"{i + 1},{100_000.0 + i},0.5,{i + 1},{i + 1},{t0 + i * 10_000},{'true' if i % 3 else 'false'}"
            for i in range(72)]
    p = tmp_path / "BTCUSDT-aggTrades-2025-10-10.csv"
    p.write_text("\n".join(rows) + "\n")
    r = cli("backtest", p, "--ticks", "--strategy", "hold", "--param", "side=long",
            "--param", "leverage=2", "--risk", "off", "--json", "-")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert out["meta"]["ticks"] == 72 and out["meta"]["bars"] == 12
    m = out["runs"]["off"]
    # bar 0 closes at 100,005: 2 x 100,000 / 100,005 base, bought at bar 1's first tick
    # (100,006) plus the half spread (0.5 bp; one closed bar has no sigma, so no impact),
    # 0.05% taker fee, marked at the last tick 100,071
    qty = 200_000.0 / 100_005.0
    fill = 100_006.0 * (1.0 + 0.5e-4)
    equity = 100_000.0 - 0.0005 * qty * fill + qty * (100_071.0 - fill)
    assert m["n_trades"] == 1 and m["liquidations"] == 0
    assert m["final_equity"] == pytest.approx(equity, rel=1e-12)


def test_tick_bars_join_the_dataset_columns():
    from backtests.tick_runner import tick_bars
    from bot.data.bars import Bars

    # trades in minutes 0, 1 and 3 (none in minute 2); a liquidation tick in minute 2
    ts = np.array([T0 + 5, T0 + MINUTE_MS, T0 + 3 * MINUTE_MS + 7])
    tr = Trades("BTCUSDT", ts, np.array([100.0, 101.0, 99.0]), np.ones(3),
                np.array([1, -1, 1], np.int8))
    ticks = Ticks(tr, np.array([T0 + 2 * MINUTE_MS + 30_000]), np.array([1], np.int8),
                  np.array([99.5]), np.array([2.0]))
    bts = T0 + np.arange(-1, 4) * MINUTE_MS                 # base bars: minutes -1 .. 3
    base = Bars("BTCUSDT", MINUTE_MS, {
        "ts": bts, "open": np.full(5, 100.0), "high": np.full(5, 102.0),
        "low": np.full(5, 98.0), "close": np.full(5, 100.0), "volume": np.ones(5),
        "mark_close": np.array([1.0, 2.0, 3.0, 4.0, 5.0]),
        "funding_rate": np.array([0.5, np.nan, np.nan, 0.001, np.nan])})
    bars, starts = tick_bars(ticks, base)
    assert bars.ts.tolist() == [T0, T0 + MINUTE_MS, T0 + 3 * MINUTE_MS]
    assert starts.tolist() == [0, 1, 2, 3]
    assert bars["mark_close"].tolist() == [2.0, 3.0, 5.0]   # state: by bar time
    # minute 2's settlement lands on the next bar with trades; minute -1's is before them
    assert np.isnan(bars["funding_rate"][:2]).all() and bars["funding_rate"][2] == 0.001
    # the liquidation tick of minute 2 (no bar of its own) counts on minute 3, never earlier
    assert bars["liq_long_notional"].tolist() == [0.0, 0.0, 199.0]
    assert bars["liq_short_notional"].tolist() == [0.0, 0.0, 0.0]


def test_imported_vision_files_replay_with_marks_and_funding(tmp_path):
    from bot.data.importer import build_dataset

    t0 = 1760054400000                                    # 2025-10-10T00:00Z
    head = ("open_time,open,high,low,close,volume,close_time,quote_volume,count,"
            "taker_buy_volume,taker_buy_quote_volume,ignore")
    kl = [f"{t0 + i * 60_000},100,101,99,100,4,{t0 + i * 60_000 + 59_999},400,4,2,200,0"
          for i in range(12)]
    mk = [f"{t0 + i * 60_000},100.2,100.6,99.4,100.1,0,{t0 + i * 60_000 + 59_999},0,0,0,0,0"
          for i in range(12)]
    (tmp_path / "markPriceKlines").mkdir()
    files = [tmp_path / "BTCUSDT-1m-2025-10-10.csv",
             tmp_path / "markPriceKlines" / "BTCUSDT-1m-2025-10-10.csv",
             tmp_path / "BTCUSDT-fundingRate-2025-10.csv",
             tmp_path / "BTCUSDT-aggTrades-2025-10-10.csv"]
    files[0].write_text("\n".join([head, *kl]) + "\n")
    files[1].write_text("\n".join(mk) + "\n")
    files[2].write_text(f"calc_time,funding_interval_hours,last_funding_rate\n"
                        f"{t0 + 5 * 60_000 + 3},8,0.0002\n")
    px = [100, 101, 99, 100]                              # each minute: open, high, low, close
    files[3].write_text("".join(f"{4 * i + j + 1},{px[j]},1.0,{4 * i + j + 1},{4 * i + j + 1},"
                                f"{t0 + i * 60_000 + j * 15_000},{'false' if j % 2 else 'true'}\n"
                                for i in range(12) for j in range(4)))
    ds = build_dataset(files)
    ticks, base = ticks_of(ds, str(tmp_path))
    s = RunSettings(wallet=10_000.0, fills=FillsConfig(impact_coef=0.0, half_spread_bps=0.0),
                    fees=FEES)
    ti = prepare_ticks(ticks, base, ONE_TIER, s)
    b = ti.bars
    assert len(ticks) == 48 and len(b) == 12 and b["mark_low"][0] == 99.4
    assert b["funding_rate"][5] == 0.0002 and np.isfinite(b["funding_rate"]).sum() == 1
    r = run_ticks(ti, Fixed(np.full(12, 10.0)), off_policy(), ONE_TIER, s, "off")
    # 10 x 10,000 / 100 = 1,000 base from bar 1's first tick (100); the settlement at
    # 00:05:00.003 lands on bar 00:05 and is paid on its mark open 100.2
    assert r.trades[:, 2].tolist() == [1000.0] and r.trades[0, 3] == 100.0
    assert r.metrics["funding"] == pytest.approx(1000.0 * 100.2 * 0.0002)
    assert r.metrics["liquidations"] == 0
    rb = run(ti.inputs, Fixed(np.full(12, 10.0)), off_policy(), ONE_TIER, s, "off")
    assert r.metrics["final_equity"] == pytest.approx(rb.metrics["final_equity"], rel=1e-12)


def test_cli_data_synth_ticks(cli, tmp_path):
    r = cli("data", "synth", "--ticks", "--days", "1", "--seed", "2", "--out", tmp_path / "s")
    assert r.code == 0, r.err
    assert "ticks: 4,564,759 trades, 81 liquidation ticks" in r.out
    back = ds_io.load(tmp_path / "s")
    assert len(back.tables["trades"]["ts"]) == int(back.bars["trades"].sum()) == 4_564_759
    assert back.meta["ticks"]["model"] == "liqbot.synthetic_ticks/1"


def test_a_liquidated_entry_is_not_bought_back_on_what_equity_is_left():
    """`hold`-like constant target: the 10x long is liquidated at bar 1 with 689 quote of
    equity left (clearance fee within the maintenance margin); before 2026-12-06 `entry`
    sizing bought its quantity back on it at bar 2's open (a liquidated holder buys nothing
    back). Bar and tick replays agree."""
    levels = np.full(len(CRASH), 10.0)
    ti = prepare_ticks(make_ticks(CRASH), None, ONE_TIER, NO_IMPACT)
    for r in (run(ti.inputs, Fixed(levels), off_policy(), ONE_TIER, NO_IMPACT, "off"),
              run_ticks(ti, Fixed(levels), off_policy(), ONE_TIER, NO_IMPACT, "off")):
        assert r.trades[:, [0, 6]].tolist() == [[1, 0.0], [1, 1.0]]     # entry, liquidation
        assert r.metrics["final_equity"] == pytest.approx(689.158163, abs=1e-6)
        assert r.metrics["n_trades"] == 1 and r.metrics["liquidations"] == 1
    # a target that changes afterwards opens a new entry on the equity left
    levels2 = np.r_[np.full(4, 10.0), np.full(len(CRASH) - 4, 2.0)]
    r = run(ti.inputs, Fixed(levels2), off_policy(), ONE_TIER, NO_IMPACT, "off")
    assert r.trades[:, [0, 6]].tolist() == [[1, 0.0], [1, 1.0], [5, 0.0]]   # decided at 4
    assert r.trades[2, 2] * r.trades[2, 3] == pytest.approx(2.0 * 689.158163, rel=1e-2)


def test_a_partial_liquidation_leaves_the_rest_held_and_a_whole_one_nothing():
    """A venue liquidates a large position in steps (the live daemon books each as a
    liquidation fill): `end_entry` keeps what is left as the entry quantity. Before
    2026-12-06 the first step set it to 0 and the next decision sold the rest at market.
    A hedge slot's liquidation leaves the main entry alone."""
    from backtests.runner import fill_params
    from bot.execution import kernel as kn
    from bot.mechanics import account as ac
    from bot.risk import engine as en

    btc = shipped("binance", "BTCUSDT")
    floor, cap, mmr, cum, _ = ac.stack_brackets([btc, btc])
    acct, pos = ac.new_account(10_000.0, 2, leverage=125.0)
    st = kn.new_state(10_000.0)
    sig = np.full(en.N_SIG, np.nan)
    sig[en.S_MARK] = 100.0
    sig[en.S_STALE_BARS] = 0.0
    pol, fp = off_policy().to_array(), fill_params(RunSettings(), "entry")

    def order(px: float, lev: float) -> float:
        out = np.zeros(kn.N_DECIDE)
        kn.decide(acct, pos, 0, 1, st, 0.0, px, np.array([px, px]), sig, lev, pol, fp, floor,
                  cap, mmr, cum, btc.cap, btc.max_leverage, np.zeros(en.N_ACCT_VIEW),
                  np.zeros(en.N_DECISION), out)
        return float(out[kn.O_ORDER_MAIN])

    q = order(100.0, 10.0)
    assert q == pytest.approx(1_000.0)                    # 10x of 10,000 at 100
    ac.apply_fill(acct, pos, 0, q, 100.0, 0.0)
    kn.end_entry(st, pos, 1)                              # the (empty) hedge slot: no effect
    assert order(99.0, 10.0) == 0.0
    ac.apply_fill(acct, pos, 0, -q / 2, 92.0, 0.0)        # the venue's first step: half
    kn.end_entry(st, pos, 0)
    assert order(92.0, 10.0) == 0.0 and pos[0, ac.P_QTY] == pytest.approx(500.0)
    ac.apply_fill(acct, pos, 0, -q / 2, 91.5, 0.0)        # the rest
    kn.end_entry(st, pos, 0)
    assert order(91.5, 10.0) == 0.0 and pos[0, ac.P_QTY] == 0.0
    assert order(91.5, 3.0) > 0.0                         # a new target opens a new entry


# --- hand-built tick datasets (2026-01-01 07:55 .. 08:07, three ticks a minute at :00, :20
# and :40, 1 base each) through `liqbot backtest DIR --ticks` and the bar replay of the same
# data: figures computed on paper with the default fill model and Binance's BTCUSDT table
T755 = T0 + (7 * 60 + 55) * MINUTE_MS
HAND = [[100.0, 100.4, 100.2], [100.0, 100.6, 100.5], [100.5, 100.8, 101.0],
        [101.0, 100.9, 101.2], [101.2, 101.5, 101.4], [101.6, 101.8, 101.7],
        [101.7, 102.0, 101.9], [101.9, 101.5, 101.6], [101.6, 101.3, 101.4],
        [101.4, 101.9, 102.1], [102.1, 102.3, 102.2], [102.2, 102.0, 102.5]]
SETTLE = 5                                   # the 08:00 minute carries the settlement


def hand_ticks(prices: list[list[float]], skip: tuple[int, ...] = ()) -> Trades:
    """Three ticks a minute from 07:55 (minutes in `skip` have none), sides alternating."""
    ts = [T755 + k * MINUTE_MS + j * 20_000 for k, ps in enumerate(prices) if k not in skip
          for j in range(len(ps))]
    px = [p for k, ps in enumerate(prices) if k not in skip for p in ps]
    n = len(ts)
    return Trades("BTCUSDT", np.array(ts, np.int64), np.array(px), np.ones(n),
                  np.where(np.arange(n) % 2 == 0, 1, -1).astype(np.int8))


def hand_dataset(path, tr: Trades, rate: float = 0.0001, **cols: np.ndarray):
    """A dataset of the ticks' 1m bars (plus `cols`) with a settlement at 08:00 and its
    trades table, saved as `liqbot data import` writes one."""
    from bot.data.trades import bars_of
    bars, _ = bars_of(tr, MINUTE_MS)
    f = np.where(bars.ts == T755 + SETTLE * MINUTE_MS, rate, np.nan)
    bars = bars.with_columns(funding_rate=f, **cols)
    ds_io.save(ds_io.Dataset(bars, tables={"trades": {"ts": tr.ts, "price": tr.price,
                                                      "qty": tr.qty, "side": tr.side}}), path)
    return path


def hold20(cli, path, *extra):
    """`liqbot backtest PATH --strategy hold side=long leverage=20 --risk off --json -`."""
    r = cli("backtest", path, *extra, "--strategy", "hold", "--param", "side=long", "--param",
            "leverage=20", "--risk", "off", "--json", "-")
    assert r.code == 0, r.err
    return json.loads(r.out)["runs"]["off"]


# bar 0 closes at 100.2: 20 x 100,000 / 100.2 base, bought at bar 1's first tick (100.0)
# plus the 0.5 bp half spread (one closed bar: no sigma, no impact), 0.05% taker fee
Q20 = 2_000_000.0 / 100.2
FILL20 = 100.0 * (1.0 + 0.5e-4)
FEE20 = 0.0005 * Q20 * FILL20
# the 08:00 settlement: its first tick trades at 08:00:00.000 at 101.6 (no mark klines:
# the mark is the trade price), on the position held then: 0.01% x qty x 101.6
FUND20 = 0.0001 * Q20 * 101.6


def test_hand_built_hold_20x_ticks_and_bars_agree_on_every_figure(cli, tmp_path):
    d = hand_dataset(tmp_path / "a", hand_ticks(HAND))
    t, b = hold20(cli, d, "--ticks"), hold20(cli, d)
    fee, fund = FEE20, FUND20
    assert (fee, fund) == pytest.approx((998.053892, 202.794411), abs=1e-6)
    final = 100_000.0 - FEE20 - FUND20 + Q20 * (102.5 - FILL20)
    assert final == pytest.approx(148_599.550898, abs=1e-6)
    closes = [p[-1] for p in HAND]
    eq = [100_000.0] + [100_000.0 - FEE20 + Q20 * (c - FILL20) - (FUND20 if k >= SETTLE else 0)
                        for k, c in enumerate(closes) if k]
    peak = np.maximum.accumulate(eq)
    for m in (t, b):
        assert m["final_equity"] == pytest.approx(final, rel=1e-12)
        assert m["fees"] == pytest.approx(FEE20, rel=1e-12)
        assert m["funding"] == pytest.approx(FUND20, rel=1e-12)
        assert m["slippage"] == pytest.approx(Q20 * (FILL20 - 100.0), rel=1e-9)
        assert m["max_drawdown"] == pytest.approx((1 - np.array(eq) / peak).max(), rel=1e-12)
        assert m["max_leverage_used"] == pytest.approx(
            max(Q20 * c / e for c, e in zip(closes[1:], eq[1:], strict=True)), rel=1e-12)
        assert m["n_trades"] == 1 and m["liquidations"] == 0
    assert t == b
    # --risk-every 1: decided at bar 1's first tick (tick 3, 100.0) on the wallet:
    # 20 x 100,000 / 100.0 = 20,000 base, filled at tick 4 (100.6) + 0.5 bp; later
    # decisions keep the entry quantity; the 08:00 settlement on 20,000 x 101.6
    e = hold20(cli, d, "--ticks", "--risk-every", "1")
    fill = 100.6 * (1.0 + 0.5e-4)
    assert e["n_trades"] == 1 and e["funding"] == pytest.approx(20_000 * 101.6e-4, rel=1e-12)
    assert e["fees"] == pytest.approx(0.0005 * 20_000 * fill, rel=1e-12)
    assert e["final_equity"] == pytest.approx(
        100_000.0 - 0.0005 * 20_000 * fill - 20_000 * 101.6e-4 + 20_000 * (102.5 - fill),
        rel=1e-12)


def _liq20(wallet_after: float) -> float:
    """The cross liquidation price of the Q20 long at FILL20 on `wallet_after`: the 2.5%
    tier (1M..10M, cum 16,300), (q x entry - wallet - cum) / (q x (1 - mmr))."""
    return (Q20 * FILL20 - wallet_after - 16_300.0) / (Q20 * 0.975)


def test_hand_built_liquidation_tick_price_and_clearance_fee(cli, tmp_path):
    crash = [list(p) for p in HAND]
    crash[6] = [99.0, 96.7, 96.6]
    crash[7:] = [[97.0, 97.5, 98.0]] * 5
    d = hand_dataset(tmp_path / "c", hand_ticks(crash))
    # after the settlement the liquidation price is 96.6549...: 96.7 (08:01:20) stays
    # above, 96.6 (08:01:40) reaches it; closed there, 1.25% clearance fee within the equity
    lp = _liq20(100_000.0 - FEE20 - FUND20)
    assert lp == pytest.approx(96.654905, abs=1e-6)
    left = 100_000.0 - FEE20 - FUND20 + Q20 * (lp - FILL20)
    clear = 0.0125 * Q20 * lp
    assert left == pytest.approx(31_930.990583, abs=1e-6) and clear < left
    t, b = hold20(cli, d, "--ticks"), hold20(cli, d)
    assert t["liquidated_at"] == "2026-01-01T08:01:40Z"
    assert b["liquidated_at"] == "2026-01-01T08:01:00Z"
    for m in (t, b):
        assert m["liquidation_price"] == pytest.approx(lp, rel=1e-12)
        assert m["liquidation_fees"] == pytest.approx(clear, rel=1e-12)
        assert m["fees"] == pytest.approx(FEE20 + clear, rel=1e-12)
        assert m["final_equity"] == pytest.approx(left - clear, rel=1e-12)
    # the same crash with 08:01's ticks all at one instant: the same tick liquidates
    tr = hand_ticks(crash)
    same = tr.ts.copy()
    same[18:21] = T755 + 6 * MINUTE_MS + 7
    d2 = hand_dataset(tmp_path / "c2", Trades("BTCUSDT", same, tr.price, tr.qty, tr.side))
    t2 = hold20(cli, d2, "--ticks")
    assert t2["liquidated_at"] == "2026-01-01T08:01:00Z"
    assert t2["final_equity"] == pytest.approx(left - clear, rel=1e-12)


def test_a_settlement_in_a_minute_without_trades_is_paid_on_its_own_mark(cli, tmp_path):
    """No trade in the 08:00 minute: the settlement lands on the 08:01 tick bar, but is
    paid on the 08:00 minute's mark open (101.45), as the bar replay of the dataset's
    klines pays it; until 2026-12-06 the tick replay paid on 08:01's (101.65)."""
    from bot.data.bars import Bars

    tr = hand_ticks(HAND, skip=(SETTLE,))
    n = len(HAND)
    o, c = np.array([p[0] for p in HAND]), np.array([p[-1] for p in HAND])
    h, lo = np.array([max(p) for p in HAND]), np.array([min(p) for p in HAND])
    v = np.full(n, 3.0)
    o[SETTLE] = h[SETTLE] = lo[SETTLE] = c[SETTLE] = c[SETTLE - 1]      # a flat kline
    v[SETTLE] = 0.0
    mark_open = o - 0.05
    mark_open[SETTLE] = 101.45
    bars = Bars("BTCUSDT", MINUTE_MS, {
        "ts": T755 + np.arange(n) * MINUTE_MS, "open": o, "high": h, "low": lo, "close": c,
        "volume": v, "funding_rate": np.where(np.arange(n) == SETTLE, 0.0001, np.nan),
        "mark_open": mark_open, "mark_high": h, "mark_low": lo, "mark_close": c})
    d = tmp_path / "b"
    ds_io.save(ds_io.Dataset(bars, tables={"trades": {"ts": tr.ts, "price": tr.price,
                                                      "qty": tr.qty, "side": tr.side}}), d)
    t, b = hold20(cli, d, "--ticks"), hold20(cli, d)
    fund = 0.0001 * Q20 * 101.45
    assert fund == pytest.approx(202.495010, abs=1e-6)
    for m in (t, b):
        assert m["funding"] == pytest.approx(fund, rel=1e-12)
        assert m["final_equity"] == pytest.approx(
            100_000.0 - FEE20 - fund + Q20 * (102.5 - FILL20), rel=1e-12)


def test_a_position_liquidated_on_its_fill_tick_closes_at_that_tick(cli, tmp_path):
    """--risk-every 15: decided at tick 14 (07:59:40, 103.0), filled at tick 15 (08:00:00,
    101.6) at the 5% impact cap (the window's volume is 1,500 quote for a 2M order), whose
    mark is already below the liquidation price (103.33). Closed at that tick's mark 101.6,
    the nearest the position saw; until 2026-12-06 at 103.0, tick 14's price, from before
    the position existed (2,507.96 left)."""
    prices = [list(p) for p in HAND]
    prices[4] = [101.2, 101.5, 103.0]
    d = hand_dataset(tmp_path / "e", hand_ticks(prices))
    q = 2_000_000.0 / 103.0
    fill = 101.6 * 1.05
    fee = 0.0005 * q * fill
    wallet = 100_000.0 - fee                  # the settlement came first: nothing held
    lp = (q * fill - wallet - 16_300.0) / (q * 0.975)
    assert lp == pytest.approx(103.327067, abs=1e-6) and lp > 103.0 > 101.6
    left = wallet + q * (101.6 - fill)        # 323.50: the clearance fee takes it all
    assert left == pytest.approx(323.495146, abs=1e-6) and left < 0.0125 * q * 101.6
    m = hold20(cli, d, "--ticks", "--risk-every", "15")
    assert m["funding"] == 0.0 and m["liquidated_at"] == "2026-01-01T08:00:00Z"
    assert m["liquidation_price"] == 101.6
    assert m["liquidation_fees"] == pytest.approx(left, rel=1e-12)
    assert m["fees"] == pytest.approx(fee + left, rel=1e-12)
    assert m["final_equity"] == pytest.approx(0.0, abs=1e-6)


def test_a_mark_low_below_every_trade_still_liquidates(cli, tmp_path):
    """Mark klines whose 08:01 low (96.5) reaches the liquidation price (96.6549) while the
    trades stop at 96.7: the bar replay liquidates, and so does the tick replay (at the
    bar's last tick, 08:01:40, at the liquidation price); until 2026-12-06 it never did
    (clipped trade prices cannot leave the trades' range) and ended at 58,779.19."""
    prices = [list(p) for p in HAND]
    prices[6] = [99.0, 96.7, 96.8]
    prices[7:] = [[97.0, 97.5, 98.0]] * 5
    tr = hand_ticks(prices)
    from bot.data.trades import bars_of
    bars, _ = bars_of(tr, MINUTE_MS)
    low = bars["low"].copy()
    low[6] = 96.5
    d = hand_dataset(tmp_path / "m", tr, mark_open=bars["open"], mark_high=bars["high"],
                     mark_low=low, mark_close=bars.close)
    lp = _liq20(100_000.0 - FEE20 - FUND20)
    left = 100_000.0 - FEE20 - FUND20 + Q20 * (lp - FILL20)
    t, b = hold20(cli, d, "--ticks"), hold20(cli, d)
    assert t["liquidated_at"] == "2026-01-01T08:01:40Z"
    for m in (t, b):
        assert m["liquidations"] == 1
        assert m["liquidation_price"] == pytest.approx(lp, rel=1e-12)
        assert m["final_equity"] == pytest.approx(left - 0.0125 * Q20 * lp, rel=1e-12)


def test_a_trades_table_not_in_ms_is_refused(cli, tmp_path):
    """A trades table written in microseconds: exit 2 naming the table, row and column
    (until 2026-12-06 an unexpected ValueError: year 57972 is out of range)."""
    tr = hand_ticks(HAND)
    d = hand_dataset(tmp_path / "u", Trades("BTCUSDT", tr.ts, tr.price, tr.qty, tr.side))
    us = tmp_path / "us"
    back = ds_io.load(d)
    ds_io.save(ds_io.Dataset(back.bars, tables={"trades": {**back.tables["trades"],
                                                           "ts": tr.ts * 1000}}), us)
    r = cli("backtest", us, "--ticks")
    assert r.code == 2 and "trades.parquet" in r.err and "row 1" in r.err and "ts" in r.err
    assert "Traceback" not in r.err and "us value" in r.err


def test_a_dip_before_a_mid_bar_fill_does_not_liquidate_the_new_position(cli, tmp_path):
    """--risk-every 1 without mark klines: bar 1 opens with a tick at 95.0, the decision
    there buys 20 x 100,000 / 95 base, filled at the next tick (100.6), whose liquidation
    price (about 98.3) lies above that first tick. The position never saw 95.0: the
    end-of-bar check over the bar's range must not liquidate it (it did, in the first
    version of that check)."""
    prices = [list(p) for p in HAND]
    prices[1] = [95.0, 100.6, 100.5]
    d = hand_dataset(tmp_path / "f", hand_ticks(prices))
    m = hold20(cli, d, "--ticks", "--risk-every", "1")
    assert m["liquidations"] == 0 and m["n_trades"] >= 1
    assert m["final_equity"] > 100_000.0          # long from 100.6 to 102.5, no liquidation
