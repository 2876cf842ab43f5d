"""Which leverage brackets each command trades a symbol on (`brackets.for_symbol`,
`--tiers FILE`), and a live run's brackets read from the exchange (the emulator here)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from backtests.runner import RunSettings
from bot.config import Config, Credentials
from bot.data import dataset as ds_io
from bot.data.synthetic import SynthSpec, generate, spec_with
from bot.errors import DataError, LiqbotError
from bot.mechanics import brackets as br
from strategies import find

# A hand-built alt-style table (tighter than BTC's: 5x above 250k notional), in ccxt
# `fetch_leverage_tiers` form; cum follows Binance's recurrence:
# 0, 0 + 5k x 0.005 = 25, 25 + 25k x 0.015 = 400, 400 + 100k x 0.025 = 2,900,
# 2,900 + 250k x 0.05 = 15,400, 15,400 + 1M x 0.025 = 40,400
ROWS = [(0, 5_000, 0.005, 75, 0), (5_000, 25_000, 0.01, 50, 25),
        (25_000, 100_000, 0.025, 20, 400), (100_000, 250_000, 0.05, 10, 2_900),
        (250_000, 1_000_000, 0.10, 5, 15_400), (1_000_000, 5_000_000, 0.125, 4, 40_400)]
SOL = "SOL/USDT:USDT"


def _tiers_file(tmp_path: Path) -> Path:
    tiers = [{"tier": i + 1, "currency": "USDT", "minNotional": lo, "maxNotional": hi,
              "maintenanceMarginRate": mmr, "maxLeverage": lev, "info": {"cum": str(cum)}}
             for i, (lo, hi, mmr, lev, cum) in enumerate(ROWS)]
    p = tmp_path / "tiers.json"
    p.write_text(json.dumps({SOL: tiers, "BTC/USDT:USDT": tiers[:2]}))
    return p


def _sol(start_price: float = 150.0):
    return generate(spec_with(SynthSpec(seed=7, days=1, symbol="SOLUSDT"),
                              start_price=start_price))


def test_a_symbol_resolves_to_its_file_its_shipped_table_or_the_announced_stand_in(
        tmp_path) -> None:
    for s in ("BTCUSDT", "ETHUSDT"):
        b = br.for_symbol(s)
        assert b.symbol == s and br.stand_in_note(s, b) is None
    b = br.for_symbol("SOLUSDT")
    assert b.symbol == "BTCUSDT" and b.source.startswith("stand-in for SOLUSDT")
    np.testing.assert_array_equal(b.mmr, br.shipped("binance", "BTCUSDT").mmr)
    note = br.stand_in_note("SOLUSDT", b)
    assert note is not None and "SOLUSDT" in note and "BTCUSDT" in note and "--tiers" in note
    f = _tiers_file(tmp_path)
    b = br.for_symbol("SOLUSDT", f)
    assert br.stand_in_note("SOLUSDT", b) is None
    assert b.cum.tolist() == [r[4] for r in ROWS] and b.max_leverage.tolist()[-1] == 4
    with pytest.raises(DataError, match="no tiers for symbol 'AVAXUSDT'") as err:
        br.for_symbol("AVAXUSDT", f)
    assert str(f) in str(err.value)


def test_backtest_of_an_alt_warns_and_trades_on_the_given_tiers(cli, tmp_path) -> None:
    d = tmp_path / "sol"
    ds_io.save(_sol(), d)
    out = tmp_path / "r.json"
    args = ("backtest", d, "--strategy", "hold", "--param", "side=long", "--param",
            "leverage=10", "--risk", "off", "--json", out)
    r = cli(*args)
    assert r.code == 0, r.err
    assert "SOLUSDT: no leverage-bracket table" in " ".join(r.err.split())
    res = json.loads(out.read_text())
    assert res["meta"]["brackets"] == ("BTCUSDT shipped table, a stand-in for SOLUSDT (no "
                                       "table of its own), leverage set to 20x (live.leverage)")
    stand_in_lev = res["runs"]["off"]["max_leverage_used"]
    stand_in_fees = res["runs"]["off"]["fees"]
    assert stand_in_lev > 9.5                 # BTC's tiers allow 10x of 100k (1M at 50x)
    # at the account's leverage setting (live.leverage, 20x by default) as paper and live
    # trade: the tiers allowing 20x end at 100k, so the 10x entry buys 100k (fees at 5 bp:
    # 50 + top-ups)
    r = cli(*args, "--tiers", _tiers_file(tmp_path))
    assert r.code == 0, r.err
    assert "no leverage-bracket table" not in r.err
    res = json.loads(out.read_text())
    assert res["meta"]["brackets"] == (f"{SOL} from --tiers {_tiers_file(tmp_path)} (ccxt "
                                       "leverage tiers), leverage set to 20x (live.leverage)")
    assert 50.0 <= res["runs"]["off"]["fees"] < 60.0
    assert res["meta"]["bracket_limit_leverage"] == pytest.approx(1.0)
    # set to 5x: the largest notional 100k of equity may open on this table is tier 5's,
    # min(100k x 5, 1M) = 500k (tier 6 would need 1M at 4x), so the entry buys 500k, not
    # 1M; the quantity is topped up later only as the equity grows (fees 250 + top-ups)
    cfg = tmp_path / "lev5.toml"
    cfg.write_text("[live]\nleverage = 5\n")
    r = cli("--config", cfg, *args, "--tiers", _tiers_file(tmp_path))
    assert r.code == 0, r.err
    res = json.loads(out.read_text())
    b = br.at_leverage(br.for_symbol("SOLUSDT", _tiers_file(tmp_path)), 5)
    assert br.order_limit(1e6, 0.0, 1e5, b.cap, b.max_leverage) == 5e5
    assert stand_in_fees == pytest.approx(1e6 * 5e-4, rel=1e-3)
    assert 250.0 < res["runs"]["off"]["fees"] < 300.0
    assert res["runs"]["off"]["max_leverage_used"] < 0.6 * stand_in_lev
    r = cli(*args, "--tiers", tmp_path / "nope.json")
    assert r.code == 2 and "nope.json" in r.err


def test_live_reads_its_brackets_from_the_exchange_and_refuses_tiers(cli, tmp_path) -> None:
    from bot.cli.run import _exchange_brackets
    from bot.emulator.server import Emulator, EmulatorConfig

    key, secret = "tierKEY0123456789abcdefgh", "t" * 40
    sol = br.for_symbol("SOLUSDT", _tiers_file(tmp_path))

    async def main() -> None:
        emu = Emulator([_sol()], {key: secret}, EmulatorConfig(paused=True),
                       {"SOLUSDT": sol})
        await emu.start()
        try:
            cfg = Config.model_validate({"mode": "live", "exchange": {"symbols": ["SOLUSDT"]},
                                         "live": {"max_order_notional": 1000.0,
                                                  "max_day_notional": 5000.0,
                                                  "rest_url": emu.rest_url,
                                                  "ws_url": emu.ws_url}})
            got = await _exchange_brackets(cfg, Credentials(key, secret), ["SOLUSDT"])
            b, want = got["SOLUSDT"], br.at_leverage(sol, 20)    # live.leverage = 20
            for k in ("floor", "cap", "mmr", "cum", "max_leverage"):
                np.testing.assert_array_equal(getattr(b, k), getattr(want, k))
            high = cfg.model_copy(update={"live": cfg.live.model_copy(update={"leverage": 100})})
            with pytest.raises(LiqbotError, match=r"live.leverage: 100x: SOLUSDT's brackets "
                                                  r"allow 1x to 75x \(lower live.leverage\)"):
                await _exchange_brackets(high, Credentials(key, secret), ["SOLUSDT"])
            with pytest.raises(LiqbotError, match="could not read the leverage brackets") as e:
                await _exchange_brackets(cfg, Credentials(key, "x" * 40), ["SOLUSDT"])
            assert "x" * 40 not in str(e.value) and "liqbot does not trade live" in str(e.value)
        finally:
            await emu.stop()

    asyncio.run(main())
    p = tmp_path / "live.toml"
    p.write_text('mode = "live"\n[live]\nmax_order_notional = 1000.0\n'
                 'max_day_notional = 5000.0\n')
    r = cli("--config", p, "run", "--live", "--tiers", _tiers_file(tmp_path))
    assert r.code == 2 and "exchange's own" in r.err


def test_the_drill_daemon_trades_on_the_tiers_the_venue_answers(tmp_path) -> None:
    from bot.cli.drill import run_drill

    bars = _sol().bars.take(slice(0, 180))     # lots of 0.1 SOL (`account.rules_for`)
    strat = find("hold").from_strings({"side": "long", "leverage": "10"})
    rep = asyncio.run(run_drill(bars, strat, "balanced", RunSettings(), 0.0,
                                tiers=_tiers_file(tmp_path)))
    # the venue's table as the account may use it at its leverage setting (20x, the
    # default): tiers 4..6 closed, so the 10x of 100k (1M) is held to tier 3's 100k cap
    assert [(r["floor"], r["cap"], r["mmr"], r["max_leverage"], r["cum"])
            for r in rep["brackets"]] == [
                tuple(float(x) for x in (lo, hi, mmr, 20 if lev >= 20 else 0, cum))
                for lo, hi, mmr, lev, cum in ROWS]
    assert rep["parity"] is True and rep["duplicate_orders"] == 0 and rep["lost_fills"] == 0
    assert rep["positions"]["live"] * float(bars.close[0]) == pytest.approx(1e5, rel=0.01)


def test_at_leverage_closes_the_tiers_above_the_setting(tmp_path) -> None:
    b = br.at_leverage(br.for_symbol("SOLUSDT", _tiers_file(tmp_path)), 20)
    assert b.max_leverage.tolist() == [20, 20, 20, 0, 0, 0]
    # at 20x the venue lets 100k of equity hold at most tier 3's cap (-2027 beyond it)
    assert br.order_limit(1e6, 0.0, 1e5, b.cap, b.max_leverage) == 1e5
    assert br.order_limit(1e6, 0.0, 2e3, b.cap, b.max_leverage) == 4e4      # 2k x 20
    with pytest.raises(DataError, match="80x: SOLUSDT's brackets allow 1x to 20x"):
        br.at_leverage(b, 80)


def test_an_order_over_the_position_limit_is_refused_at_once(tmp_path) -> None:
    """-2027 is final: the broker books the refusal without looking the order up or waiting
    for the recvWindow (a paused venue clock would never let that wait end)."""
    import ccxt.pro as ccxt_pro

    from bot.emulator.server import Emulator, EmulatorConfig, point_ccxt
    from bot.execution.broker import Order
    from bot.execution.live import LiveBroker, LiveSettings
    from bot.execution.venues import VENUES

    key, secret = "refuseKEY0123456789abcdef", "r" * 40
    bars = _sol(100_000.0).bars.take(slice(0, 30))
    sol = br.for_symbol("SOLUSDT", _tiers_file(tmp_path))

    async def main() -> tuple[dict[str, int], int, list[str]]:
        emu = Emulator([_sol(100_000.0)], {key: secret},
                       EmulatorConfig(paused=True, start_ms=int(bars.ts[10]),
                                      weight_limit=10**9), {"SOLUSDT": sol})
        await emu.start()
        try:
            ex = point_ccxt(ccxt_pro.binanceusdm({"apiKey": key, "secret": secret,
                                                  "enableRateLimit": False}),
                            emu.rest_url, emu.ws_url)
            b = LiveBroker(ex, VENUES["binanceusdm"], ["SOLUSDT"], [sol], bars.interval_ms,
                           LiveSettings(leverage=20, use_ws=False))
            await b.start()
            b.set_mark("SOLUSDT", float(bars.close[9]))
            b.submit(Order("lqrefuse-0", "SOLUSDT", 0, 5.0, False, (0.0, 0.0, 0.0)))  # ~500k
            await asyncio.wait_for(b.flush(), 30.0)
            kinds = [(e["kind"], "-2027" in e["message"]) for e in b.drain_events()]
            await b.close()
            return dict(b.stats), len(emu.venue.accounts[key].orders), kinds
        finally:
            await emu.stop()

    stats, orders, kinds = asyncio.run(main())
    assert stats["rejected"] == 1 and stats["unknown"] == 0 and stats["lookups"] == 0
    assert orders == 0 and kinds == [("reject_exchange", True)]


def _resume_on(tmp_path, old, new):  # noqa: ANN001, ANN202
    """A hold 3x run on SOL for 120 bars on `old` brackets, halted, checkpointed, then
    resumed for 60 bars on `new`: (the first daemon, the store's events)."""
    from backtests.runner import RunSettings as RS
    from bot.execution import kernel as kn
    from bot.mechanics.fees import venue_fees
    from bot.risk.policy import load_policy
    from bot.runtime.daemon import Daemon
    from bot.runtime.replay import ReplayFeed
    from bot.store import Store

    bars = _sol(100_000.0).bars
    strat = find("hold").from_strings({"side": "long", "leverage": "3"})
    store = Store(f"sqlite:///{tmp_path}/t.db")
    run_ = store.open_run("live", "live:binance", ["SOLUSDT"], strat.name, strat.params,
                          "balanced", 100_000.0)
    s = RS()
    fp = kn.fill_params(s.fills, venue_fees("binance"), s.band, strat.sizing)

    def daemon(part, b) -> Daemon:  # noqa: ANN001
        return Daemon(run_id=run_.run_id, feed=ReplayFeed({"SOLUSDT": part}, 0.0),
                      store=store, strategy=strat, policy=load_policy("balanced").to_array(),
                      fp=fp, brackets={"SOLUSDT": b}, wallet=100_000.0)

    d1 = daemon(bars.take(slice(0, 120)), old)
    asyncio.run(d1.run(simulated=True))
    d1.halted = True                                        # the operator's kill switch
    blob = d1.checkpoint()
    d2 = daemon(bars.take(slice(120, 180)), new)
    d2.restore(blob)
    assert d2.halted and d2.state["SOLUSDT"].stream is not None
    asyncio.run(d2.run(simulated=True))
    events = [e for e in store.events(run_.run_id) if e.kind == "brackets_changed"]
    store.close()
    return d1, events


def test_a_run_resumes_on_changed_tiers_keeping_its_halt_and_says_so(tmp_path) -> None:
    """Binance changes tiers without notice: a restart must not lose the run (its operator
    halt, risk latches, positions) over it. The run resumes on the new table and records a
    `brackets_changed` event; the stream's levels stored so far keep the old placement."""
    old = br.for_symbol("SOLUSDT")                          # BTC's table as the stand-in
    new = br.for_symbol("SOLUSDT", _tiers_file(tmp_path))   # the venue's, published later
    d1, [ev] = _resume_on(tmp_path, old, new)
    assert ev.data == {"symbol": "SOLUSDT",
                       "changed": ["floor", "cap", "mmr", "cum", "max_leverage"]}
    # a stream restored by hand on other tiers still refuses (a wrong table is a bug there)
    from bot.signals.stream import SignalStream
    with pytest.raises(LiqbotError, match="other leverage brackets"):
        SignalStream.restore(d1.state["SOLUSDT"].stream.snapshot(), new)


def test_a_run_resumed_at_another_live_leverage_says_so(tmp_path) -> None:
    """`live.leverage` closes tiers and so sets the position limit (`at_leverage`): a paper
    run resumed after the setting changed from 20x to 10x continued on the smaller limit
    without a word, since only floor, cap, mmr and cum were compared."""
    b = br.for_symbol("SOLUSDT", _tiers_file(tmp_path))
    _, [ev] = _resume_on(tmp_path, br.at_leverage(b, 20.0), br.at_leverage(b, 10.0))
    assert ev.data == {"symbol": "SOLUSDT", "changed": ["max_leverage"]}
    assert "live.leverage" in ev.message and "position limit" in ev.message
    assert ev.message.count("max_leverage") == 1        # named once, with its reason
    (tmp_path / "again").mkdir()
    _, same = _resume_on(tmp_path / "again", br.at_leverage(b, 10.0), br.at_leverage(b, 10.0))
    assert same == []


def test_a_tiers_file_is_used_only_for_the_symbol_it_holds(tmp_path) -> None:
    f = _tiers_file(tmp_path)
    tiers = json.loads(f.read_text())[SOL]
    # a list (fetch_market_leverage_tiers) names its symbol in each tier
    lst = tmp_path / "list.json"
    lst.write_text(json.dumps([{**t, "symbol": SOL} for t in tiers]))
    assert br.for_symbol("SOLUSDT", lst).cum.tolist()[-1] == 40_400
    with pytest.raises(DataError, match="the tiers are SOL/USDT:USDT's, not BTCUSDT's"):
        br.for_symbol("BTCUSDT", lst)
    # our shipped format names its symbol too
    with pytest.raises(DataError, match="the table is BTCUSDT's, not SOLUSDT's"):
        br.for_symbol("SOLUSDT", br.SHIPPED_DIR / "binance_BTCUSDT.json")
    # a full fetch_leverage_tiers dump holds dated contracts: never taken for the perpetual
    dump = tmp_path / "dump.json"
    dump.write_text(json.dumps({"SOL/USDT:USDT-260327": tiers[:2], SOL: tiers}))
    assert len(br.for_symbol("SOLUSDT", dump)) == 6
    assert br.plain_symbol("BTC/USDT:USDT-250328") == "BTCUSDT-250328"
    assert br.plain_symbol("btc/usdt:usdt") == br.plain_symbol("BTCUSDT") == "BTCUSDT"
    # a positions file given as --tiers: said to be no tiers (it read "the tiers are
    # ETHUSDT's, not BTCUSDT's", from the positions' own symbol)
    pos = tmp_path / "pos.json"
    pos.write_text(json.dumps([{"side": "long", "qty": 1, "entry": 100, "mark": 100,
                                "symbol": "ETHUSDT"}]))
    with pytest.raises(DataError, match=r"expected ccxt leverage tiers \(objects with "
                                        r"maintenanceMarginRate, maxLeverage, maxNotional, "
                                        r"minNotional\); these objects have none of them \(keys: "
                                        r"entry, mark, qty, side, symbol\)"):
        br.for_symbol("BTCUSDT", pos)


@pytest.mark.parametrize("lev", [-5, 0, 0.5, 1e6])
def test_a_tier_max_leverage_outside_1_to_1000_is_refused_naming_file_and_tier(
        cli, tmp_path, lev: float) -> None:
    """A maxLeverage of -5 was accepted: calc then said "10x is above the -5x ..." and a
    backtest ran on it."""
    f = _tiers_file(tmp_path)
    payload = json.loads(f.read_text())
    payload[SOL][2]["maxLeverage"] = lev
    f.write_text(json.dumps(payload))
    import re
    with pytest.raises(DataError, match=re.escape(f"tier 3: max leverage {lev:g} not in [1, 1000]")):
        br.for_symbol("SOLUSDT", f)
    r = cli("calc", "liquidation", "--exchange", "binance", "--symbol", "SOLUSDT", "--side",
            "long", "--entry", "150", "--qty", "10", "--leverage", "10", "--tiers", f)
    assert r.code == 2 and str(f) in r.err and "tier 3: max leverage" in r.err, r.err


def test_a_paper_run_trades_within_the_position_limit_of_live_leverage(cli, tmp_path) -> None:
    """Paper rehearses live: it trades on the brackets a live start would use, at the
    leverage `live.leverage` sets (Binance refuses a position above the largest cap among
    the tiers allowing it, -2027). Hand table: at 10x the tiers up to 250k allow it, so the
    10x hold of a 100k wallet buys 250k, not the 500k the table allows at 5x; at the
    default 20x, 100k."""
    from bot.store import Store

    d = tmp_path / "sol"
    ds_io.save(_sol(), d)
    f = _tiers_file(tmp_path)
    b = br.for_symbol("SOLUSDT", f)
    assert (br.position_limit(b, 10), br.position_limit(b, 20)) == (250_000.0, 100_000.0)
    bought = {}
    for lev in (10, 20):
        cfg = tmp_path / f"paper{lev}.toml"
        cfg.write_text(f"[live]\nleverage = {lev}\n")
        url = f"sqlite:///{tmp_path}/p{lev}.db"
        r = cli("--config", cfg, "run", "--replay", d, "--strategy", "hold", "--param",
                "side=long", "--param", "leverage=10", "--tiers", f, "--store", url)
        assert r.code == 0, r.err
        st = Store(url)
        run_ = st.latest_run()
        assert run_ is not None
        fills = st.fills(run_.run_id)
        st.close()
        assert fills and all(x.qty > 0 for x in fills)
        bought[lev] = sum(x.qty * x.price for x in fills)
        # a backtest with the same config trades what paper traded (until 2026-12-07 it
        # ignored live.leverage and bought 500k at either setting)
        out = tmp_path / f"bt{lev}.json"
        r = cli("--config", cfg, "backtest", d, "--strategy", "hold", "--param", "side=long",
                "--param", "leverage=10", "--tiers", f, "--preset", "balanced",
                "--risk", "on", "--json", out)
        assert r.code == 0, r.err
        got = json.loads(out.read_text())["runs"]["on"]
        assert got["n_trades"] == len(fills)
        assert got["fees"] == pytest.approx(sum(x.fee for x in fills), rel=1e-9)
    # sized at the decision bar's close, filled at the next open with slippage
    assert bought[10] == pytest.approx(250_000.0, rel=0.01)
    assert bought[20] == pytest.approx(100_000.0, rel=0.01)
    cfg = tmp_path / "paper100.toml"
    cfg.write_text("[live]\nleverage = 100\n")
    r = cli("--config", cfg, "run", "--replay", d, "--tiers", f,
            "--store", f"sqlite:///{tmp_path}/p100.db")
    assert r.code == 2 and "live.leverage" in r.err and "75x" in r.err
