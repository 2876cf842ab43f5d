"""The tick replay loop: one numba kernel over the trade ticks of one symbol, bar by bar.

It calls the same trading step as the bar loop (`bot.execution.kernel`: `fill_order`,
`settle_funding`, `liquidate`, `decide`) on a finer clock:
- orders fill at the price of the first tick after the decision, with the fill model's
  window known at the decision (quote volume, sigma and liquidation notional over the
  trailing bars) plus, for decisions inside a bar, the quote volume and liquidation ticks
  of the bar so far: the liquidation-flow term thins the book as forced orders arrive;
- funding settles at the first tick of the bar that carries the settlement, at the mark of
  the settlement (the bar's mark open; for a settlement whose minute had no trade, its own
  minute's mark open: `tick_runner.funding_marks`), before the orders decided at the
  previous close fill (as the bar loop does);
- mark-price liquidation is checked on EVERY tick: the tick's mark is its trade price
  clipped into the bar's mark range (the mark klines; without them the trade price
  itself), and a position is closed at its liquidation price on the first tick whose mark
  reaches it, on the path from the previous tick's mark; a fill starts the path afresh at
  its own tick (the position it leaves never had the marks before it). A bar whose mark
  range reaches past every tick's clipped mark (the mark klines' low below the trades'
  low, say) is checked over that range at its last tick, as the bar loop checks it, so a
  liquidation the mark klines show is not missed; except in a bar where an order filled
  after its first tick (`every_n` > 0): the range then holds marks from before that
  position, and which side of the fill an extreme no tick reached fell on is unknown, so
  only the ticks after the fill are checked. Between fills and funding a lone
  position's liquidation price does not move, so it is computed once
  (`bot.mechanics.account.liquidation_price`) and each tick costs two comparisons; with
  both slots open in cross margin every tick runs the full check;
- the risk engine and the strategy decide at every bar close (`every_n = 0`: the bars are
  the ticks' own aggregation, signals and targets of bar k known at its close), or every
  `every_n` ticks with the signals and target of the last closed bar and the account
  marked at that tick.
Per-bar records, trades and decisions use the bar loop's layouts (`backtests.engine`), so
the metrics and the report are the same; each trade also keeps its tick index. State
lives in arrays, so the loop runs in chunks of bars (a progress bar) without Python inside.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from backtests import engine as eg
from bot.execution import kernel as kn
from bot.mechanics import account as ac
from bot.risk import engine as en

# loop state (st[...]): the kernel's close-phase state, then the tick loop's own slots
# TS_PREV_MARK: the mark of the last tick (NaN before the first, and after a fill): a
# liquidation closes on the path from it to this tick's mark, as a bar's does inside its range
(TS_PEND_MAIN, TS_PEND_HEDGE, TS_PENDING, TS_N_TRADES, TS_N_DEC, TS_COUNT, TS_LO, TS_HI,
 TS_LIQ_PTR, TS_TARGET, TS_PREV_MARK) = range(kn.N_K, kn.N_K + 11)
N_STATE = kn.N_K + 11


def new_state(wallet: float, every_n: int) -> np.ndarray:
    """Fresh loop state for an account of `wallet` quote."""
    st = np.zeros(N_STATE)
    st[: kn.N_K] = kn.new_state(wallet)
    st[TS_COUNT] = float(every_n)
    st[TS_LO] = -np.inf
    st[TS_HI] = np.inf
    st[TS_PREV_MARK] = np.nan
    return st


@njit(cache=True)
def triggers(acct: np.ndarray, pos: np.ndarray, marks: np.ndarray, floor: np.ndarray,
             cap: np.ndarray, mmr: np.ndarray, cum: np.ndarray) -> tuple[float, float]:
    """(lo, hi): a tick whose mark is <= lo or >= hi needs the full liquidation check.
    Long slots put their liquidation price in lo, short slots in hi; flat: (-inf, inf).
    Two open slots sharing cross margin depend on each other's mark: (inf, -inf), always."""
    q0 = pos[0, ac.P_QTY]
    q1 = pos[1, ac.P_QTY]
    if q0 != 0.0 and q1 != 0.0 and (pos[0, ac.P_ISOLATED] != ac.ISOLATED
                                    or pos[1, ac.P_ISOLATED] != ac.ISOLATED):
        return np.inf, -np.inf
    lo = -np.inf
    hi = np.inf
    for slot in range(2):
        q = pos[slot, ac.P_QTY]
        if q == 0.0:
            continue
        lp = ac.liquidation_price(acct, pos, slot, marks, floor, cap, mmr, cum)
        if lp != lp:
            continue
        if q > 0.0:
            lo = max(lo, lp)
        else:
            hi = min(hi, lp)
    return lo, hi


@njit(cache=True)
def _trade(trd: np.ndarray, trd_tick: np.ndarray, st: np.ndarray, k: int, i: int, slot: int,
           qty: float, price: float, fee: float, slip: float, liq: float) -> None:
    """The engine's trade row at bar k, plus the tick index i."""
    j = eg.record_trade(trd, st, TS_N_TRADES, k, slot, qty, price, fee, slip, liq)
    if j >= 0:
        trd_tick[j] = i


@njit(cache=True)
def _decision(dcs: np.ndarray, st: np.ndarray, k: int, out: np.ndarray,
              dec: np.ndarray) -> None:
    if out[kn.O_CHANGED] > 0.0:
        j = int(st[TS_N_DEC])
        if j < dcs.shape[0]:
            dcs[j, 0] = k
            dcs[j, 1] = out[kn.O_TARGET]
            dcs[j, 2] = out[kn.O_ALLOWED]
            dcs[j, 3:] = dec
        st[TS_N_DEC] += 1.0


@njit(cache=True)
def run_chunk(k0: int, k1: int, every_n: int, tick_ts: np.ndarray, price: np.ndarray,
              qty: np.ndarray, starts: np.ndarray, bar_ts: np.ndarray, close: np.ndarray,
              fund_mark: np.ndarray, mark_high: np.ndarray, mark_low: np.ndarray,
              mark_close: np.ndarray, funding: np.ndarray, window: np.ndarray,
              sig: np.ndarray, targets: np.ndarray, liq_ts: np.ndarray,
              liq_notional: np.ndarray, pol: np.ndarray, fp: np.ndarray, floor: np.ndarray,
              cap: np.ndarray, mmr: np.ndarray, cum: np.ndarray, tier_cap: np.ndarray,
              max_lev: np.ndarray, acct: np.ndarray, pos: np.ndarray, st: np.ndarray,
              dec: np.ndarray, out: np.ndarray, rec: np.ndarray, trd: np.ndarray,
              trd_tick: np.ndarray, dcs: np.ndarray) -> None:
    """Run bars [k0, k1): the ticks starts[k] .. starts[k+1] - 1 of each bar k, then its
    close. Arrays are updated in place; `dec` / `out` hold the last decision (the kernel's
    layouts). `window` is (n_bars, 3): trailing quote volume, sigma, liquidation notional
    at each close; `liq_ts` / `liq_notional` the liquidation ticks (may be empty);
    `fund_mark` the mark the funding of each bar settles at (`tick_runner.funding_marks`)."""
    view = np.zeros(en.N_ACCT_VIEW)
    marks = np.zeros(2)
    lo = st[TS_LO]
    hi = st[TS_HI]
    for k in range(k0, k1):
        s = starts[k]
        e = starts[k + 1]
        mlo = mark_low[k]
        mhi = mark_high[k]
        while st[TS_LIQ_PTR] < len(liq_ts) and liq_ts[int(st[TS_LIQ_PTR])] < bar_ts[k]:
            st[TS_LIQ_PTR] += 1.0
        pq = 0.0                      # quote volume of this bar's ticks before tick i
        fill_mid = False              # an order filled after the bar's first tick
        for i in range(s, e):
            p = price[i]
            # funding at the bar's first tick, on the position held at the settlement
            # (before the orders decided at the previous close fill)
            if i == s and funding[k] == funding[k]:
                for slot in range(2):
                    kn.settle_funding(acct, pos, slot, fund_mark[k], funding[k])
                marks[0] = p
                marks[1] = p
                lo, hi = triggers(acct, pos, marks, floor, cap, mmr, cum)
            if st[TS_PENDING] > 0.0:
                # orders decided at the previous close (or tick) fill at this tick
                if k > 0 and st[kn.K_BUST] == 0.0:
                    vol_w = window[k - 1, 0] + pq
                    liq_w = window[k - 1, 2]
                    if i > s:
                        j = int(st[TS_LIQ_PTR])
                        while j < len(liq_ts) and liq_ts[j] <= tick_ts[i - 1]:
                            liq_w += liq_notional[j]
                            j += 1
                    for slot in range(2):
                        dq = st[TS_PEND_MAIN + slot]
                        if dq != 0.0:
                            px, fee, slip = kn.fill_order(acct, pos, slot, dq, p, vol_w,
                                                          window[k - 1, 1], liq_w, fp)
                            if px > 0.0:
                                _trade(trd, trd_tick, st, k, i, slot, dq, px, fee, slip, 0.0)
                                # the filled position's path starts here: a liquidation on
                                # this tick closes at its mark, never at an earlier tick's
                                st[TS_PREV_MARK] = np.nan
                                fill_mid = fill_mid or i > s
                st[TS_PEND_MAIN] = 0.0
                st[TS_PEND_HEDGE] = 0.0
                st[TS_PENDING] = 0.0
                marks[0] = p
                marks[1] = p
                lo, hi = triggers(acct, pos, marks, floor, cap, mmr, cum)
            m = p
            if m < mlo:
                m = mlo
            elif m > mhi:
                m = mhi
            if m <= lo or m >= hi:
                marks[0] = m
                marks[1] = m
                prev = st[TS_PREV_MARK] if st[TS_PREV_MARK] == st[TS_PREV_MARK] else m
                for slot in range(2):
                    q, lp, fee = kn.liquidate(acct, pos, slot, min(m, prev), max(m, prev),
                                              marks, floor, cap, mmr, cum, fp)
                    if lp == lp:
                        _trade(trd, trd_tick, st, k, i, slot, q, lp, fee, 0.0, 1.0)
                        kn.end_entry(st, pos, slot)
                lo, hi = triggers(acct, pos, marks, floor, cap, mmr, cum)
            st[TS_PREV_MARK] = m
            if every_n > 0:
                pq += p * qty[i]
                st[TS_COUNT] -= 1.0
                if st[TS_COUNT] <= 0.0:
                    st[TS_COUNT] = every_n
                    if k > 0:         # the signals of the last closed bar, marked here
                        marks[0] = m
                        marks[1] = m
                        kn.decide(acct, pos, 0, 1, st, float(tick_ts[i]), p, marks,
                                  sig[k - 1], targets[k - 1], pol, fp, floor, cap, mmr, cum,
                                  tier_cap, max_lev, view, dec, out)
                        st[TS_TARGET] = targets[k - 1]
                        st[TS_PEND_MAIN] = out[kn.O_ORDER_MAIN]
                        st[TS_PEND_HEDGE] = out[kn.O_ORDER_HEDGE]
                        if out[kn.O_ORDER_MAIN] != 0.0 or out[kn.O_ORDER_HEDGE] != 0.0:
                            st[TS_PENDING] = 1.0
                        _decision(dcs, st, k, out, dec)
        # a mark extreme no tick reached (mark klines whose range reaches past the trades'):
        # checked over the bar's mark range, as the bar loop checks it, at the bar's last
        # tick (when inside the bar is unknown); without mark klines the ticks span the range.
        # Not after a fill inside the bar (`--risk-every`): the range holds marks from before
        # that position existed (a dip the ticks before the fill made would liquidate it)
        if e > s and not fill_mid and (mlo <= lo or mhi >= hi):
            for slot in range(2):
                if pos[slot, ac.P_QTY] == 0.0:
                    continue
                adverse = kn.adverse_mark(pos, slot, mlo, mhi)
                marks[0] = adverse
                marks[1] = adverse
                q, lp, fee = kn.liquidate(acct, pos, slot, mlo, mhi, marks, floor, cap, mmr,
                                          cum, fp)
                if lp == lp:
                    _trade(trd, trd_tick, st, k, e - 1, slot, q, lp, fee, 0.0, 1.0)
                    kn.end_entry(st, pos, slot)
            marks[0] = st[TS_PREV_MARK]
            marks[1] = st[TS_PREV_MARK]
            lo, hi = triggers(acct, pos, marks, floor, cap, mmr, cum)
        # the bar's close
        marks[0] = mark_close[k]
        marks[1] = mark_close[k]
        if every_n == 0:
            kn.decide(acct, pos, 0, 1, st, float(bar_ts[k]), close[k], marks, sig[k],
                      targets[k], pol, fp, floor, cap, mmr, cum, tier_cap, max_lev, view, dec,
                      out)
            st[TS_TARGET] = targets[k]
            st[TS_PEND_MAIN] = out[kn.O_ORDER_MAIN]
            st[TS_PEND_HEDGE] = out[kn.O_ORDER_HEDGE]
            st[TS_PENDING] = 1.0
            _decision(dcs, st, k, out, dec)
            eq = out[kn.O_EQUITY]
            liq_price = out[kn.O_LIQ_PRICE]
        else:
            eq = ac.equity(acct, pos, marks)
            liq_price = ac.liquidation_price(acct, pos, 0, marks, floor, cap, mmr, cum)
        rec[k, eg.R_EQUITY] = eq
        rec[k, eg.R_WALLET] = acct[ac.A_WALLET]
        rec[k, eg.R_QTY] = pos[0, ac.P_QTY]
        rec[k, eg.R_HEDGE_QTY] = pos[1, ac.P_QTY]
        rec[k, eg.R_LEVERAGE] = ac.leverage(pos[0, ac.P_QTY], mark_close[k], eq)
        rec[k, eg.R_TARGET_LEV] = st[TS_TARGET]
        rec[k, eg.R_ALLOWED_LEV] = out[kn.O_ALLOWED] / eq if eq > 0.0 else 0.0
        rec[k, eg.R_STATE] = dec[en.D_STATE]
        rec[k, eg.R_REASONS] = dec[en.D_REASONS]
        rec[k, eg.R_LIQ_PRICE] = liq_price
        rec[k, eg.R_FEES] = acct[ac.A_FEES]
        rec[k, eg.R_FUNDING] = acct[ac.A_FUNDING]
        rec[k, eg.R_CLIPPED] = out[kn.O_CLIPPED]
    st[TS_LO] = lo
    st[TS_HI] = hi
