"""Portfolio backtests (`backtests/portfolio.py`): one cross account over several symbols.

Hand cases use a one-tier bracket (mmr 1%, cum 0), no slippage, taker 0.05% and the
Binance liquidation fee 1.25%, so every number below follows from the Binance cross
liquidation formula LP = (WB - TMM1 + UPNL1 + cum - side q E) / (q mmr - side q).
"""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from backtests import engine as eg
from backtests import portfolio as pf
from backtests import runner as rn
from backtests.scenarios import load_scenario
from bot.config import FillsConfig
from bot.data.bars import Bars
from bot.errors import LiqbotError
from bot.execution import broker as bk
from bot.execution import kernel as kn
from bot.mechanics import account as ac
from bot.mechanics import brackets as br
from bot.mechanics.brackets import Brackets
from bot.mechanics.fees import VenueFees
from bot.risk import engine as en
from bot.risk.policy import load_policy, off_policy
from bot.runtime.daemon import Daemon
from bot.runtime.replay import ReplayFeed
from bot.store import Store
from strategies import find

W0 = 10_000.0
TAKER, LIQ_FEE, MMR = 0.0005, 0.0125, 0.01
SETTINGS = rn.RunSettings(wallet=W0, fills=FillsConfig(impact_coef=0.0, half_spread_bps=0.0),
                          fees=VenueFees(0.0002, TAKER, LIQ_FEE))
FP = kn.fill_params(SETTINGS.fills, SETTINGS.fees, 0.05, "entry")


def _one_tier(symbol: str) -> Brackets:
    return Brackets(symbol, np.array([0.0]), np.array([1e12]), np.array([MMR]),
                    np.array([0.0]), np.array([100.0]))


def _pin(marks: dict[str, list[tuple[float, float, float, float]]],
         has: dict[str, list[int]] | None = None) -> pf.PortfolioInputs:
    """Hand-made inputs: per symbol and bar (open, high, low, close) used for both the
    last and the mark price; no funding; risk signals: the mark, nothing else."""
    syms = list(marks)
    n_t = len(next(iter(marks.values())))
    shape = (len(syms), n_t)
    m = {k: np.zeros(shape) for k in ("open", "close", "mark_open", "mark_high", "mark_low",
                                      "mark_close")}
    m["funding"] = np.full(shape, np.nan)
    m["window"] = np.zeros((*shape, 3))
    sig = np.full((*shape, en.N_SIG), np.nan)
    for s, sym in enumerate(syms):
        o, h, lo, c = np.array(marks[sym]).T
        m["open"][s], m["mark_open"][s], m["mark_high"][s] = o, o, h
        m["mark_low"][s], m["close"][s], m["mark_close"][s] = lo, c, c
        sig[s, :, en.S_MARK] = c
        sig[s, :, en.S_STALE_BARS] = 0.0
        sig[s, :, en.S_CASCADE] = 0.0
        sig[s, :, en.S_CASCADE_BLOCK] = 0.0
    hv = np.ones(shape, dtype=np.uint8)
    if has:
        for s, sym in enumerate(syms):
            hv[s] = has.get(sym, hv[s])
    rows = np.where(hv > 0, np.cumsum(hv, axis=1) - 1, -1)
    return pf.PortfolioInputs(syms, syms, 60_000, np.arange(n_t, dtype=np.int64) * 60_000,
                              hv, rows, m, sig, [], [_one_tier(s) for s in syms])


def _targets(pin: pf.PortfolioInputs, levs: list[float]) -> np.ndarray:
    return np.repeat(np.array(levs, dtype=float)[:, None], len(pin.ts), axis=1)


@pytest.mark.parametrize("a_stale", [False, True])
def test_crash_in_b_liquidates_the_whole_cross_account(a_stale: bool) -> None:
    """With `a_stale`, A has no bar 2: it is checked at its last mark (100) all the same."""
    flat_a = [(100.0, 100.0, 100.0, 100.0)] * 4
    b = [(50.0, 50.0, 50.0, 50.0), (50.0, 50.0, 50.0, 50.0), (50.0, 50.0, 40.0, 42.0),
         (42.0, 42.0, 42.0, 42.0)]
    pin = _pin({"AUSDT": flat_a, "BUSDT": b}, has={"AUSDT": [1, 1, 0, 1]} if a_stale else None)
    res = pf.run_targets(pin, _targets(pin, [5.0, 5.0]), off_policy().to_array(), FP,
                         SETTINGS, "off")
    # bar 0 close: 5x each of 10,000 -> 500 A at 100 and 1,000 B at 50; they fill at bar 1's
    # open with 25 + 25 fee: wallet 9,950
    fills = res.trades[res.trades[:, 6] == 0.0]
    assert fills[:, [0, 1, 2, 3]].tolist() == [[1, 0, 500.0, 100.0], [1, 2, 1000.0, 50.0]]
    assert fills[:, 4] == pytest.approx([25.0, 25.0], rel=1e-12)
    wallet = W0 - 50.0
    assert res.port[1, pf.PR_WALLET] == pytest.approx(wallet, rel=1e-12)
    # bar 2: B's mark falls to 40. A is checked first (B at its open, 50): TMM1 = B's
    # maintenance 1,000 x 50 x 1% = 500, LP_A = (9,950 - 500 - 50,000) / (5 - 500) = 81.92:
    # A survives. B (A at 100, TMM1 = 500 x 100 x 1% = 500):
    lp_b = (wallet - 500.0 - 1000.0 * 50.0) / (1000.0 * MMR - 1000.0)
    assert lp_b == pytest.approx(40.959596, abs=1e-6)
    acct, pos = ac.new_account(wallet, 4)
    pos[0, ac.P_QTY], pos[0, ac.P_ENTRY] = 500.0, 100.0
    pos[2, ac.P_QTY], pos[2, ac.P_ENTRY] = 1000.0, 50.0
    marks = np.array([100.0, 100.0, 40.0, 40.0])
    floor, cap, mmr, cum, _ = ac.stack_brackets([_one_tier("X")] * 4)
    assert ac.liquidation_price(acct, pos, 2, marks, floor, cap, mmr, cum) == \
        pytest.approx(lp_b, rel=1e-12)
    # B closes at LP_B with the clearance fee; the wallet left is far below A's maintenance
    wallet_b = wallet + 1000.0 * (lp_b - 50.0) - LIQ_FEE * 1000.0 * lp_b
    assert wallet_b == pytest.approx(397.601, abs=1e-3)
    # so A, re-checked in the same bar against the new wallet, is past its liquidation
    # price (100.21) while its marks never left 100: it closes at 100, the price its bar
    # traded (until 2026-12-06 at 100.21, a price A never reached)
    lp_a = (wallet_b - 500.0 * 100.0) / (500.0 * MMR - 500.0)
    assert lp_a == pytest.approx(100.206866, abs=1e-6)
    pos[2, ac.P_QTY] = pos[2, ac.P_ENTRY] = 0.0
    acct[ac.A_WALLET] = wallet_b
    assert ac.liquidation_price(acct, pos, 0, marks, floor, cap, mmr, cum) == \
        pytest.approx(lp_a, rel=1e-12)
    liq = res.trades[res.trades[:, 6] == 1.0]
    assert liq[:, [0, 1, 7]].tolist() == [[2, 2, 1], [2, 0, 0]]      # bar 2: B, then A
    assert liq[:, 2].tolist() == [-1000.0, -500.0]
    assert liq[:, 3] == pytest.approx([lp_b, 100.0], rel=1e-12)
    # A's fee takes what is left (capped at the equity): the account ends at zero; each
    # liquidation's trade row carries the clearance fee it was charged
    assert liq[:, 4] == pytest.approx([LIQ_FEE * 1000.0 * lp_b, wallet_b], rel=1e-9)
    assert res.port[2, pf.PR_WALLET] == pytest.approx(0.0, abs=1e-9)
    assert res.port[2, pf.PR_LIQUIDATIONS] == 2.0
    m = res.metrics
    assert m["portfolio"]["liquidations"] == 2 and m["portfolio"]["bust"]
    assert m["symbols"]["AUSDT"]["liquidations"] == 1
    assert m["symbols"]["AUSDT"]["liquidation_events"][0]["price"] == 100.0
    assert m["symbols"]["BUSDT"]["liquidation_events"][0]["bar"] == 2
    assert m["portfolio"]["final_equity"] == pytest.approx(0.0, abs=1e-9)
    # A alone on its own account never comes near its liquidation price
    alone = pf.run_targets(_pin({"AUSDT": flat_a}), np.full((1, 4), 5.0),
                           off_policy().to_array(), FP, SETTINGS, "off")
    assert alone.metrics["portfolio"]["liquidations"] == 0
    assert alone.metrics["portfolio"]["final_equity"] == pytest.approx(W0 - 25.0, rel=1e-12)


def _paper_run(pin: pf.PortfolioInputs, orders: np.ndarray, order: list[int],
               restart: str | None = None) -> tuple[bk.PaperBroker, list[bk.Fill]]:
    """The daemon's paper venue over `pin`'s bars, one symbol's bar at a time in `order` at
    each open time (as the daemon receives them): the open (`on_bar_open`), the mark close
    (`set_mark`), then the orders the portfolio decided at that symbol's close (`orders`:
    its trade rows, each submitted at the close before the bar it filled in). `restart`
    ("new" or "old"): after the first symbol's bar 2 the broker is replaced by a new one
    restored from its snapshot ("old": without the per-symbol bar fields, as a checkpoint
    written before they existed)."""
    m = pin.market
    broker = bk.PaperBroker(pin.symbols, pin.brackets, W0, FP)
    fills: list[bk.Fill] = []
    for t, ts in enumerate(pin.ts.tolist()):
        for s in order:
            if not pin.has[s, t]:
                continue
            sym = pin.symbols[s]
            f, _ = broker.on_bar_open(sym, ts, m["open"][s, t], m["mark_open"][s, t],
                                      m["mark_high"][s, t], m["mark_low"][s, t],
                                      m["funding"][s, t])
            fills += f
            broker.set_mark(sym, m["mark_close"][s, t])
            fills += broker.at_close(sym, ts)
            for row in orders[(orders[:, 0] == t + 1) & (orders[:, eg.N_TRD] == s)]:
                broker.submit(bk.Order(f"o-{t}-{int(row[1])}", sym, int(row[1]), row[2], False,
                                       (0.0, 0.0, 0.0)))
            if restart is not None and t == 2 and s == order[0]:
                snap = broker.snapshot()
                if restart == "old":
                    snap = {k: v for k, v in snap.items() if k not in ("bar_ts", "bar_range")}
                broker = bk.PaperBroker(pin.symbols, pin.brackets, W0, FP)
                broker.restore(snap)
                if restart == "old":
                    assert (broker.bar_ts == bk.NO_BAR).all()
                else:
                    assert broker.bar_ts[s] == ts
    return broker, fills


@pytest.mark.parametrize("restart", [None, "new", "old"])
@pytest.mark.parametrize("order", [[0, 1], [1, 0]])
def test_paper_broker_liquidates_another_symbol_in_the_same_bar(order: list[int],
                                                                 restart: str | None) -> None:
    """The crash of `test_crash_in_b_liquidates_the_whole_cross_account` on the paper broker:
    B's liquidation at bar 2 takes A (flat at 100) past its cross liquidation price, and A
    is liquidated at bar 2, as in the portfolio backtest, whichever symbol's bar comes first.
    A then B: A's bar 2 was already processed (it survived), so B's liquidation re-checks A
    over A's bar-2 mark range (until 2026-12-06 A was liquidated only at its bar 3). B then
    A: A's bar 2 has not arrived, A is re-checked at its last mark close. The re-check
    survives a restart between the two symbols' bars."""
    flat_a = [(100.0, 100.0, 100.0, 100.0)] * 4
    b = [(50.0, 50.0, 50.0, 50.0), (50.0, 50.0, 50.0, 50.0), (50.0, 50.0, 40.0, 42.0),
         (42.0, 42.0, 42.0, 42.0)]
    pin = _pin({"AUSDT": flat_a, "BUSDT": b})
    res = pf.run_targets(pin, _targets(pin, [5.0, 5.0]), off_policy().to_array(), FP,
                         SETTINGS, "off")
    # the hand numbers of that test: fills at bar 1 (500 A at 100, 1,000 B at 50, 25 + 25
    # fee), B closes at LP_B = (9,950 - 500 - 50,000) / (10 - 1,000) = 40.9596, the wallet
    # left (9,950 + 1,000 x (LP_B - 50) - 1.25% x 1,000 x LP_B = 397.60) puts A's LP at
    # 100.21, above its whole bar (100): A closes at 100 and its fee takes what is left
    wallet = W0 - 50.0
    lp_b = (wallet - 500.0 - 1000.0 * 50.0) / (1000.0 * MMR - 1000.0)
    wallet_b = wallet + 1000.0 * (lp_b - 50.0) - LIQ_FEE * 1000.0 * lp_b
    liq = res.trades[res.trades[:, 6] == 1.0]
    assert liq[:, [0, 1, eg.N_TRD]].tolist() == [[2, 2, 1], [2, 0, 0]]
    assert liq[:, 3] == pytest.approx([lp_b, 100.0], rel=1e-12)

    orders = res.trades[res.trades[:, 6] == 0.0]
    broker, fills = _paper_run(pin, orders, order, restart)
    assert sorted((f.symbol, f.slot, f.ts, f.qty, f.price) for f in fills
                  if not f.liquidation) == [("AUSDT", 0, 60_000, 500.0, 100.0),
                                            ("BUSDT", 2, 60_000, 1000.0, 50.0)]
    liqs = [f for f in fills if f.liquidation]
    # both in B's call at bar 2 (ts 120,000): B's own, then A's, named A with A's slot
    assert [(f.fill_id, f.client_id, f.symbol, f.slot, f.ts, f.qty) for f in liqs] == [
        ("liq-BUSDT-120000-2", "", "BUSDT", 2, 120_000, -1000.0),
        ("liq-AUSDT-120000-0-after-BUSDT", "", "AUSDT", 0, 120_000, -500.0)]
    np.testing.assert_allclose([f.price for f in liqs], liq[:, 3], rtol=1e-9, atol=0)
    np.testing.assert_allclose([f.price for f in liqs], [lp_b, 100.0], rtol=1e-12, atol=0)
    np.testing.assert_allclose([f.fee for f in liqs], liq[:, 4], rtol=1e-9, atol=0)
    assert liqs[1].fee == pytest.approx(wallet_b, rel=1e-9)
    # the same account afterwards: bust, both flat, two liquidations
    assert broker.acct[ac.A_WALLET] == pytest.approx(res.port[-1, pf.PR_WALLET], abs=1e-9)
    assert broker.acct[ac.A_WALLET] == pytest.approx(0.0, abs=1e-9)
    assert broker.acct[ac.A_LIQUIDATIONS] == res.port[-1, pf.PR_LIQUIDATIONS] == 2.0
    assert not broker.pos[:, ac.P_QTY].any()


@pytest.mark.parametrize("order", [[0, 1], [1, 0]])
def test_two_symbols_falling_together_liquidate_the_account_at_the_close(
        order: list[int]) -> None:
    """A 5x long in A and one in B (10x together, 9,950 after fees). In bar 2 both fall
    10% and close at their lows. Each open-range check sees one symbol's low against the
    other's open (equity 4,950, maintenance 950: safe), but at the close the account is at
    -50 under a maintenance of 900. Until 2026-12-06 nothing was liquidated in bar 2."""
    pin = _pin({"AUSDT": [(100.0,) * 4, (100.0,) * 4, (100.0, 100.0, 90.0, 90.0),
                          (90.0,) * 4],
                "BUSDT": [(50.0,) * 4, (50.0,) * 4, (50.0, 50.0, 45.0, 45.0), (45.0,) * 4]})
    res = pf.run_targets(pin, _targets(pin, [5.0, 5.0]), off_policy().to_array(), FP,
                         SETTINGS, "off")
    # A first (symbol order), at its close 90 with B at 45: 500 x (90 - 100) = -5,000
    # leaves the account at -50, so the loss stops at the 4,950 it had (bankruptcy price
    # 100 - 4,950 / 500 = 90.1, no fee); then B on the 5,000 left: its price
    # (5,000 - 50,000) / (10 - 1,000) = 45.45 is above its close 45: closed at 45,
    # -5,000, nothing left for the fee
    liq = res.trades[res.trades[:, 6] == 1.0]
    assert liq[:, [0, 1, eg.N_TRD]].tolist() == [[2, 0, 0], [2, 2, 1]]
    assert liq[:, 3] == pytest.approx([90.1, 45.0], rel=1e-12)
    assert liq[:, 4].tolist() == [0.0, 0.0]
    assert res.port[2, pf.PR_WALLET] == pytest.approx(0.0, abs=1e-9)
    # the paper broker, whichever symbol's bar comes first: at the second close
    orders = res.trades[res.trades[:, 6] == 0.0]
    broker, fills = _paper_run(pin, orders, order, None)
    last = pin.symbols[order[1]]
    got = [(f.fill_id, f.price) for f in fills if f.liquidation]
    assert [g[0] for g in got] == [f"liq-AUSDT-120000-0-close-{last}",
                                   f"liq-BUSDT-120000-2-close-{last}"]
    np.testing.assert_allclose([g[1] for g in got], liq[:, 3], rtol=1e-12, atol=0)
    assert broker.acct[ac.A_WALLET] == pytest.approx(0.0, abs=1e-9)


def test_a_reduce_only_order_never_opens_a_position_after_a_liquidation() -> None:
    """A's close queued a reduce of 100 (reduce-only); B's crash then took A in B's bar.
    The order, filled as sent at A's next open, opened a 100 short; the venue rejects a
    reduce-only order with nothing to reduce, and clips one larger than the position."""
    pin = _pin({"AUSDT": [(100.0,) * 4] * 3, "BUSDT": [(50.0,) * 4] * 3})
    b = bk.PaperBroker(pin.symbols, pin.brackets, W0, FP)
    for sym, slot, qty, px in (("AUSDT", 0, 500.0, 100.0), ("BUSDT", 2, 1000.0, 50.0)):
        b.submit(bk.Order(f"o-{sym}", sym, slot, qty, False, (0.0, 0.0, 0.0)))
        b.on_bar_open(sym, 0, px, px, px, px, np.nan)
        b.set_mark(sym, px)
    b.on_bar_open("AUSDT", 60_000, 100.0, 100.0, 100.0, 100.0, np.nan)
    b.set_mark("AUSDT", 100.0)
    b.submit(bk.Order("reduce-A", "AUSDT", 0, -100.0, True, (0.0, 0.0, 0.0)))
    f, _ = b.on_bar_open("BUSDT", 60_000, 50.0, 50.0, 50.0, 40.0, np.nan)
    assert [x.fill_id for x in f] == ["liq-BUSDT-60000-2", "liq-AUSDT-60000-0-after-BUSDT"]
    b.acct[ac.A_WALLET] += 1000.0                  # a deposit: the account can trade again
    f, _ = b.on_bar_open("AUSDT", 120_000, 100.0, 100.0, 100.0, 100.0, np.nan)
    assert f == [] and b.pos[0, ac.P_QTY] == 0.0 and b.pending() == []   # rejected
    # why, for the store's intent (it was closed 'rejected' with no reason), read once
    assert b.rejections() == {"reduce-A": "reduce-only: no position on its side left to "
                                          "reduce at the open"}
    assert b.rejections() == {}
    assert bk.reduce_only_qty(bk.Order("c", "AUSDT", 0, -7.0, True, (0.0, 0.0, 0.0)),
                              5.0) == -5.0          # clipped to the position
    assert bk.reduce_only_qty(bk.Order("c", "AUSDT", 0, 3.0, True, (0.0, 0.0, 0.0)),
                              5.0) == 0.0           # would grow it
    assert bk.reduce_only_qty(bk.Order("c", "AUSDT", 0, 3.0, False, (0.0, 0.0, 0.0)),
                              5.0) == 3.0


def test_a_slot_liquidated_twice_in_one_bar_keeps_both_fills() -> None:
    """B's bar comes first and its liquidation takes A at A's last mark; A's own bar at the
    same open time then fills an order decided before (it reopens A) and its crash
    liquidates A again. Both fills had the id liq-AUSDT-TS-0, and the store keeps one fill
    per id: the second was lost."""
    pin = _pin({"AUSDT": [(100.0, 100.0, 100.0, 100.0)] * 2,
                "BUSDT": [(50.0, 50.0, 50.0, 50.0)] * 2})
    broker = bk.PaperBroker(pin.symbols, pin.brackets, W0, FP)
    for sym, slot, qty, px in (("AUSDT", 0, 500.0, 100.0), ("BUSDT", 2, 1000.0, 50.0)):
        broker.submit(bk.Order(f"o-{sym}", sym, slot, qty, False, (0.0, 0.0, 0.0)))
        broker.on_bar_open(sym, 0, px, px, px, px, np.nan)
        broker.set_mark(sym, px)
    broker.submit(bk.Order("o-again", "AUSDT", 0, 10.0, False, (0.0, 0.0, 0.0)))
    first, _ = broker.on_bar_open("BUSDT", 60_000, 40.0, 40.0, 40.0, 40.0, np.nan)
    assert [(f.fill_id, f.qty) for f in first] == [("liq-BUSDT-60000-2", -1000.0),
                                                    ("liq-AUSDT-60000-0-after-BUSDT", -500.0)]
    broker.acct[ac.A_WALLET] = 50.0             # a deposit: the reopened 10 A at 20x
    second, _ = broker.on_bar_open("AUSDT", 60_000, 100.0, 100.0, 100.0, 1.0, np.nan)
    assert [(f.fill_id, f.qty, f.liquidation) for f in second] == [
        ("o-again-f", 10.0, False), ("liq-AUSDT-60000-0", -10.0, True)]


def _ohlc_bars(symbol: str, rows: list[tuple[float, float, float, float]]) -> Bars:
    """1m bars from 2026-01-01 of (open, high, low, close): last and mark prices alike."""
    o, h, lo, c = np.array(rows, dtype=float).T
    ts = 1_767_225_600_000 + np.arange(len(rows), dtype=np.int64) * 60_000
    return Bars(symbol, 60_000, {"ts": ts, "open": o, "high": h, "low": lo, "close": c,
                                 "volume": np.ones(len(rows))})


def test_daemon_books_another_symbols_liquidation_in_the_same_bar(tmp_path) -> None:  # noqa: ANN001
    """The paper daemon (AUSDT's bar, then BUSDT's, at each open time) and the portfolio
    backtest on the same crash: B falls to 40 at bar 5, its liquidation takes A (flat at
    100) with it in the same bar, booked under A's name and slot (A's entry ended: nothing
    bought back), at the portfolio's prices; the checkpoint carries the broker's last bars."""
    n = 8
    a = _ohlc_bars("AUSDT", [(100.0, 100.0, 100.0, 100.0)] * n)
    b = _ohlc_bars("BUSDT", [(50.0, 50.0, 50.0, 50.0)] * 5 + [(50.0, 50.0, 40.0, 42.0)] +
                   [(42.0, 42.0, 42.0, 42.0)] * (n - 6))
    brackets = {"AUSDT": _one_tier("AUSDT"), "BUSDT": _one_tier("BUSDT")}
    strat = find("hold").from_strings({"side": "long", "leverage": "5", "sizing": "entry"})
    pin = pf.prepare_portfolio([a, b], list(brackets.values()), SETTINGS)
    res = pf.run_portfolio(pin, strat, off_policy(), SETTINGS, "x")
    tr = res.trades
    # as the hand case above: 500 A at 100 and 1,000 B at 50 at bar 1; B at 40.9596 and A at
    # 100 at bar 5 (bar, slot, qty, price)
    assert tr[:, [0, 1, 2]].tolist() == [[1, 0, 500.0], [1, 2, 1000.0], [5, 2, -1000.0],
                                         [5, 0, -500.0]]
    lp_b = (W0 - 50.0 - 500.0 - 1000.0 * 50.0) / (1000.0 * MMR - 1000.0)
    assert tr[:, 3] == pytest.approx([100.0, 50.0, lp_b, 100.0], rel=1e-12)
    store = Store(f"sqlite:///{tmp_path}/x.db")
    feed = ReplayFeed({"AUSDT": a, "BUSDT": b}, 0.0)
    run_ = store.open_run("paper", "paper:binance", list(feed.symbols), strat.name,
                          strat.params, "off", W0)
    fp = kn.fill_params(SETTINGS.fills, SETTINGS.fees, SETTINGS.band, strat.sizing)

    def daemon() -> Daemon:
        return Daemon(run_id=run_.run_id, feed=feed, store=store, strategy=strat,
                      policy=off_policy().to_array(), fp=fp, brackets=brackets, wallet=W0)

    d = daemon()
    asyncio.run(d.run(simulated=True))
    fills = store.fills(d.run_id)
    bar_of = {int(t): i for i, t in enumerate(a.ts)}
    got = sorted([bar_of[f.ts], 2 * ("AUSDT", "BUSDT").index(f.symbol), f.qty, f.price]
                 for f in fills)
    want = sorted(tr[:, [0, 1, 2, 3]].tolist())
    assert [g[:3] for g in got] == [w[:3] for w in want]
    np.testing.assert_allclose([g[3] for g in got], [w[3] for w in want], rtol=1e-9, atol=0)
    liq = {f.fill_id: f for f in fills if f.liquidation}
    ts5 = int(a.ts[5])
    assert sorted(liq) == [f"liq-AUSDT-{ts5}-0-after-BUSDT", f"liq-BUSDT-{ts5}-2"]
    assert d.state["AUSDT"].st[kn.K_DESIRED_QTY] == 0.0
    assert not d.broker.pos[:, ac.P_QTY].any()
    assert d.equity()[0] == pytest.approx(res.metrics["portfolio"]["final_equity"], abs=1e-9)
    # a restart restores the last bar of each symbol; an older checkpoint without them too
    blob = d.checkpoint()
    d2 = daemon()
    d2.restore(blob)
    assert d2.broker.bar_ts.tolist() == [int(a.ts[-1])] * 2
    np.testing.assert_array_equal(d2.broker.bar_range, d.broker.bar_range)
    old = {k: v for k, v in bk.from_bytes(blob).items() if k not in ("bar_ts", "bar_range")}
    d3 = daemon()
    d3.restore(bk.to_bytes(old))
    assert (d3.broker.bar_ts == bk.NO_BAR).all()
    store.close()


def test_stale_symbol_keeps_its_order_until_its_next_bar() -> None:
    flat_a = [(100.0, 100.0, 100.0, 100.0)] * 4
    flat_b = [(50.0, 50.0, 50.0, 50.0)] * 4
    pin = _pin({"AUSDT": flat_a, "BUSDT": flat_b}, has={"BUSDT": [1, 0, 1, 1]})
    res = pf.run_targets(pin, _targets(pin, [1.0, 1.0]), off_policy().to_array(), FP,
                         SETTINGS, "off")
    # A's order from bar 0 fills at bar 1; B has no bar 1, so its order fills at bar 2
    assert res.trades[:, [0, 1, 2]].tolist() == [[1, 0, 100.0], [2, 2, 200.0]]
    assert res.records[1, 1, pf.R_HAS_BAR] == 0.0
    assert res.records[1, 1, eg.R_QTY] == 0.0
    assert res.metrics["symbols"]["BUSDT"]["bars"] == 3


def test_risk_sees_portfolio_leverage() -> None:
    """Hard cap 5x: 3x + 3x is under the cap per symbol but 6x for the account."""
    flat = {"AUSDT": [(100.0, 100.0, 100.0, 100.0)] * 3,
            "BUSDT": [(50.0, 50.0, 50.0, 50.0)] * 3}
    pol = off_policy().model_copy(update={"max_leverage": 5.0}).to_array()
    pin = _pin(flat)
    res = pf.run_targets(pin, _targets(pin, [3.0, 3.0]), pol, FP, SETTINGS, "on")
    # budgets 5 x 3/6 = 2.5x each: A 25,000 / 100 = 250, B 25,000 / 50 = 500
    assert res.trades[:, [0, 1, 2]].tolist() == [[1, 0, 250.0], [1, 2, 500.0]]
    for s in range(2):
        assert res.records[s, 0, eg.R_CLIPPED] == 1.0
        assert res.records[s, 0, eg.R_ALLOWED_LEV] == pytest.approx(2.5, rel=1e-12)
    d = res.decisions[res.decisions[:, 0] == 0]
    assert d[:, 3 + en.D_MAX_NOTIONAL_LONG] == pytest.approx([25_000.0, 25_000.0], rel=1e-12)
    # the account holds 50,000 notional on 10,000 - 25 fees: 5x but for the fees (the
    # rebalance band leaves that 0.25% alone)
    assert res.port[1:, pf.PR_LEVERAGE] == pytest.approx([50_000.0 / 9_975.0] * 2, rel=1e-12)
    assert res.metrics["portfolio"]["n_risk_actions"] == 2
    rows = [r for r in pf.portfolio_decisions(res, pin) if r["bar"] == 0]
    assert [(r["symbol"], r["target_notional"], r["allowed_notional"]) for r in rows] == \
        [("AUSDT", 30_000.0, 25_000.0), ("BUSDT", 30_000.0, 25_000.0)]
    # unequal targets share the cap in proportion: 6x and 2x -> 3.75x and 1.25x
    res2 = pf.run_targets(pin, _targets(pin, [6.0, 2.0]), pol, FP, SETTINGS, "on")
    assert res2.records[:, 0, eg.R_ALLOWED_LEV] == pytest.approx([3.75, 1.25], rel=1e-12)
    # 3x + 1x fits the cap (budgets 3.75x and 1.25x): nothing clips
    res3 = pf.run_targets(pin, _targets(pin, [3.0, 1.0]), pol, FP, SETTINGS, "on")
    assert res3.records[:, :, eg.R_CLIPPED].max() == 0.0
    assert res3.records[:, 0, eg.R_ALLOWED_LEV] == pytest.approx([3.0, 1.0], rel=1e-12)
    # either symbol alone at 3x is under the cap: the single account does not clip
    alone = pf.run_targets(_pin({"AUSDT": flat["AUSDT"]}), np.full((1, 3), 3.0), pol, FP,
                           SETTINGS, "on")
    assert alone.records[0, :, eg.R_CLIPPED].max() == 0.0
    assert alone.trades[0, 2] == 300.0


@pytest.mark.parametrize(("strategy", "params", "preset", "wallet"), [
    ("hold", {"side": "long", "leverage": "10"}, "balanced", 100_000.0),
    ("hold", {"side": "short", "leverage": "50"}, "off", 1_000.0),      # liquidated
    ("trend", {"leverage": "5"}, "conservative", 100_000.0),
])
def test_one_symbol_portfolio_equals_the_single_backtest(strategy: str, params: dict[str, str],
                                                         preset: str, wallet: float) -> None:
    bars = load_scenario("cascade-long").bars
    b = br.shipped("binance", "BTCUSDT")
    settings = rn.RunSettings(wallet=wallet)
    strat = find(strategy).from_strings(params)
    policy = off_policy() if preset == "off" else load_policy(preset)
    single = rn.run(rn.prepare(bars, b, settings), strat, policy, b, settings, "x")
    port = pf.run_portfolio(pf.prepare_portfolio([bars], [b], settings), strat, policy,
                            settings, "x")
    assert np.array_equal(single.records, port.records[0, :, :eg.N_REC], equal_nan=True)
    assert np.array_equal(single.trades, port.trades[:, :eg.N_TRD])
    assert np.array_equal(single.decisions, port.decisions[:, :eg.N_DCS], equal_nan=True)
    assert single.metrics["final_equity"] == port.metrics["portfolio"]["final_equity"]
    assert single.metrics["liquidations"] == port.metrics["portfolio"]["liquidations"]
    if preset == "off":
        assert single.metrics["liquidations"] >= 1
    assert port.port[:, pf.PR_EQUITY].tolist() == single.records[:, eg.R_EQUITY].tolist()
    # opened late (`start`, `--from`): the same account as the single run's, warm signals
    k = len(bars) // 2
    single = rn.run(rn.prepare(bars, b, settings), strat, policy, b, settings, "x", start=k)
    port = pf.run_portfolio(pf.prepare_portfolio([bars], [b], settings), strat, policy,
                            settings, "x", start=k)
    assert np.array_equal(single.records[k:], port.records[0, k:, :eg.N_REC], equal_nan=True)
    assert port.port[:k, pf.PR_EQUITY].tolist() == [wallet] * k
    assert np.array_equal(single.trades, port.trades[:, :eg.N_TRD])
    for key in ("final_equity", "total_return", "max_drawdown", "sharpe", "liquidations",
                "n_risk_actions", "max_leverage_used"):
        assert single.metrics[key] == port.metrics["portfolio"][key], key


def _bars(symbol: str, start: int, n: int, interval: int = 60_000) -> Bars:
    ts = start + np.arange(n, dtype=np.int64) * interval
    px = np.full(n, 100.0)
    return Bars(symbol, interval, {"ts": ts, "open": px, "high": px, "low": px, "close": px,
                                   "volume": np.ones(n)})


def test_alignment_errors_name_the_file() -> None:
    a = _bars("BTCUSDT", 0, 20)
    with pytest.raises(LiqbotError, match="eth_dir: 300000 ms bars"):
        pf.check_alignment([a, _bars("ETHUSDT", 0, 20, 300_000)], ["btc_dir", "eth_dir"])
    with pytest.raises(LiqbotError, match="eth_dir: bar open times are off the grid"):
        pf.check_alignment([a, _bars("ETHUSDT", 30_000, 20)], ["btc_dir", "eth_dir"])
    with pytest.raises(LiqbotError, match="eth_dir .* does not overlap btc_dir"):
        pf.check_alignment([a, _bars("ETHUSDT", 60_000 * 20, 20)], ["btc_dir", "eth_dir"])
    with pytest.raises(LiqbotError, match="b2: symbol BTCUSDT is already in the portfolio"):
        pf.check_alignment([a, _bars("BTCUSDT", 0, 20)], ["b1", "b2"])
    pf.check_alignment([a, _bars("ETHUSDT", 60_000 * 5, 20)], ["btc_dir", "eth_dir"])


def _save(path, symbol: str, seed: int, start_price: float = 100_000.0) -> None:  # noqa: ANN001
    from bot.data import dataset as ds_io
    from bot.data.synthetic import SynthSpec, generate, spec_with

    ds = generate(spec_with(SynthSpec(seed=seed, days=1, symbol=symbol),
                            start_price=start_price))
    ds_io.save(ds, path)


def test_cli_portfolio(cli, tmp_path) -> None:  # noqa: ANN001
    _save(tmp_path / "btc", "BTCUSDT", 3)
    _save(tmp_path / "eth", "ETHUSDT", 4, 3000.0)
    _save(tmp_path / "sol", "SOLUSDT", 5, 150.0)
    out = tmp_path / "p.json"
    r = cli("backtest", tmp_path / "btc", tmp_path / "eth", "--portfolio", "--strategy", "hold",
            "--param", "side=long", "--param", "leverage=8", "--risk", "on", "--json", out)
    assert r.code == 0, r.err
    assert "BTCUSDT" in r.out and "ETHUSDT" in r.out and "portfolio" in r.out
    res = json.loads(out.read_text())["runs"]["on"]
    # the account's Sharpe and Sortino in the table as in the JSON (they were JSON only),
    # with the short-span warning the single-symbol table prints
    for name, key in (("Sharpe", "sharpe"), ("Sortino", "sortino")):
        row = next(ln for ln in r.out.splitlines() if f" {name} " in ln)
        assert f"{res['portfolio'][key]:.2f}" in row and row.count(" - ") == 2
    assert "Sharpe and Sortino are annualised from" in r.out
    assert set(res["symbols"]) == {"BTCUSDT", "ETHUSDT"}
    p = res["portfolio"]
    # the portfolio's fees and funding are its symbols' (every fee belongs to one slot)
    assert p["fees"] == pytest.approx(sum(s["fees"] for s in res["symbols"].values()))
    assert p["funding"] == pytest.approx(sum(s["funding"] for s in res["symbols"].values()))
    assert p["final_equity"] == pytest.approx(
        100_000.0 + sum(s["pnl"] for s in res["symbols"].values()), rel=1e-9)
    assert {d["symbol"] for d in json.loads(out.read_text())["decisions"]} == \
        {"BTCUSDT", "ETHUSDT"}
    assert json.loads(out.read_text())["meta"]["brackets"] == {
        s: f"{s} shipped table (Binance's tiers of 2021; today's differ: --tiers), leverage "
           "set to 20x (live.leverage)" for s in ("BTCUSDT", "ETHUSDT")}
    assert json.loads(out.read_text())["meta"]["preset"] == "balanced"
    r = cli("backtest", tmp_path / "btc", tmp_path / "eth", "--portfolio", "--risk", "off",
            "--json", out)
    assert r.code == 0 and json.loads(out.read_text())["meta"]["preset"] is None  # no preset ran
    # --from: the account opens there, the bars before it warm the signals
    r = cli("backtest", tmp_path / "btc", tmp_path / "eth", "--portfolio", "--risk", "off",
            "--from", "2026-01-01T12:00Z", "--json", out)
    meta = json.loads(out.read_text())["meta"]
    assert r.code == 0 and "warm on the 720 bars before --from" in " ".join(r.out.split())
    assert (meta["from"], meta["bars"], meta["warm_up_bars"]) == ("2026-01-01T12:00:00Z", 720,
                                                                  720)
    # a symbol without a bracket table runs on BTCUSDT's, announced (`--tiers` for its own)
    r = cli("backtest", tmp_path / "btc", tmp_path / "sol", "--portfolio")
    assert r.code == 0 and "SOLUSDT: no leverage-bracket table" in " ".join(r.err.split())
    # bad input exits 2 and names the file
    r = cli("backtest", tmp_path / "btc", tmp_path / "btc", "--portfolio")
    assert r.code == 2 and "already in the portfolio" in r.err
    r = cli("backtest", tmp_path / "btc", tmp_path / "nope", "--portfolio")
    assert r.code == 2 and "nope" in r.err
    r = cli("backtest", tmp_path / "btc", tmp_path / "eth")
    assert r.code == 2 and "--portfolio" in r.err
