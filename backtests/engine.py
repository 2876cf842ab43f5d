"""The backtest loop: one numba kernel over the bars of one symbol.

Each bar runs the shared trading step of `bot.execution.kernel` (the paper broker and the
daemon call the same functions): the open phase fills the orders decided at the previous
close, settles funding and checks mark-price liquidation; the close phase marks to market,
asks the risk engine and sizes the next orders. Slot 0 is the strategy's position, slot 1
the hedge leg (hedge mode on the same symbol). Signals come from the causal signal step
kernel run over the same bars beforehand: they depend on market data only, never on our
orders, so this equals stepping them inside the loop. This module only adds what a
backtest keeps: per-bar records, the trade list and the decision timeline. State lives in
arrays so the loop can run in chunks (for a progress bar) without Python inside a chunk.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from bot.execution import kernel as kn
from bot.jit import lean
from bot.mechanics import account as ac
from bot.risk import engine as en

# loop state (st[...]): the kernel's close-phase state, then the pending orders and counters
ST_PEND_MAIN = kn.N_K
ST_PEND_HEDGE = kn.N_K + 1
ST_N_TRADES = kn.N_K + 2
ST_N_DEC = kn.N_K + 3
N_STATE = kn.N_K + 4
# per-bar records (rec[t, ...]): first the N_REC_CORE columns the metrics, the decision rows
# and the report read; a record array of only those columns (rec.shape[1] == N_REC_CORE)
# gets only those written (the `liqbot backtest` command keeps 4 of 13 columns: 17 MB, not
# 55 MB, for a year of 1m bars)
(R_EQUITY, R_QTY, R_LEVERAGE, R_CLIPPED, R_WALLET, R_HEDGE_QTY, R_TARGET_LEV, R_ALLOWED_LEV,
 R_STATE, R_REASONS, R_LIQ_PRICE, R_FEES, R_FUNDING) = range(13)
N_REC_CORE = 4
N_REC = 13
# trades (trd[k, ...]): bar, slot, qty, price, fee, slippage cost, liquidation flag
N_TRD = 7
# decisions that changed something (dcs[k, ...]): bar, target, allowed, the decision row
N_DCS = 3 + en.N_DECISION


@njit(cache=True)
def record_trade(trd: np.ndarray, cnt: np.ndarray, k_cnt: int, t: int, slot: int, qty: float,
                 price: float, fee: float, slip: float, liq: float) -> int:
    """Write trade row `cnt[k_cnt]` (bar, slot, qty, price, fee, slippage cost, liquidation
    flag; the N_TRD layout) and count it. Returns the row written, or -1 when `trd` is full
    (counted anyway, so the caller can tell). The bar, tick and portfolio loops share it;
    a loop with extra columns writes them at the returned row."""
    k = int(cnt[k_cnt])
    cnt[k_cnt] += 1.0
    if k >= trd.shape[0]:
        return -1
    trd[k, 0] = t
    trd[k, 1] = slot
    trd[k, 2] = qty
    trd[k, 3] = price
    trd[k, 4] = fee
    trd[k, 5] = slip
    trd[k, 6] = liq
    return k


@njit(cache=True)
def run_chunk(t0: int, t1: int, ts: np.ndarray, opn: np.ndarray, close: np.ndarray,
              mark_open: np.ndarray, mark_high: np.ndarray, mark_low: np.ndarray,
              mark_close: np.ndarray, funding: np.ndarray, window: np.ndarray,
              sig: np.ndarray, targets: np.ndarray, pol: np.ndarray, fp: np.ndarray,
              floor: np.ndarray, cap: np.ndarray, mmr: np.ndarray, cum: np.ndarray,
              tier_cap: np.ndarray, max_lev: np.ndarray, acct: np.ndarray, pos: np.ndarray,
              st: np.ndarray, rec: np.ndarray, trd: np.ndarray, dcs: np.ndarray) -> None:
    """Run bars [t0, t1); every array is updated in place. `window` is (n, 3): the fill
    model's trailing quote volume, sigma and liquidation notional at each close.
    floor/cap/mmr/cum are per-slot bracket rows (`account.stack_brackets`), tier_cap and
    max_lev the symbol's tier caps and max leverages for the exchange's own limit.
    Allocates the scratch rows once, then runs the bars through the lean compilation of
    `run_bars` (`bot.jit`: same source, no per-call reference counting)."""
    _run_bars_lean(t0, t1, ts, opn, close, mark_open, mark_high, mark_low, mark_close,
                   funding, window, sig, targets, pol, fp, floor, cap, mmr, cum, tier_cap,
                   max_lev, acct, pos, st, rec, trd, dcs, np.zeros(en.N_ACCT_VIEW),
                   np.zeros(en.N_DECISION), np.zeros(kn.N_DECIDE), np.zeros(2))


@njit(cache=True)
def run_bars(t0: int, t1: int, ts: np.ndarray, opn: np.ndarray, close: np.ndarray,
             mark_open: np.ndarray, mark_high: np.ndarray, mark_low: np.ndarray,
             mark_close: np.ndarray, funding: np.ndarray, window: np.ndarray,
             sig: np.ndarray, targets: np.ndarray, pol: np.ndarray, fp: np.ndarray,
             floor: np.ndarray, cap: np.ndarray, mmr: np.ndarray, cum: np.ndarray,
             tier_cap: np.ndarray, max_lev: np.ndarray, acct: np.ndarray, pos: np.ndarray,
             st: np.ndarray, rec: np.ndarray, trd: np.ndarray, dcs: np.ndarray,
             view: np.ndarray, dec: np.ndarray, out: np.ndarray, marks: np.ndarray) -> None:
    """`run_chunk`'s bar loop over caller-owned scratch rows (view: en.N_ACCT_VIEW,
    dec: en.N_DECISION, out: kn.N_DECIDE, marks: 2); allocates nothing."""
    for t in range(t0, t1):
        # open phase: funding (on the position held at the settlement, the bar's open
        # instant), fills, liquidation
        if funding[t] == funding[t]:      # a settlement in this bar (NaN elsewhere)
            for slot in range(2):
                kn.settle_funding(acct, pos, slot, mark_open[t], funding[t])
        if t > 0 and st[kn.K_BUST] == 0.0:
            for slot in range(2):
                dq = st[ST_PEND_MAIN + slot]
                if dq != 0.0:
                    px, fee, slip = kn.fill_order(acct, pos, slot, dq, opn[t], window[t - 1, 0],
                                                  window[t - 1, 1], window[t - 1, 2], fp)
                    if px > 0.0:
                        record_trade(trd, st, ST_N_TRADES, t, slot, dq, px, fee, slip, 0.0)
        st[ST_PEND_MAIN] = 0.0
        st[ST_PEND_HEDGE] = 0.0
        for slot in range(2):
            adverse = kn.adverse_mark(pos, slot, mark_low[t], mark_high[t])
            marks[0] = adverse
            marks[1] = adverse
            q, lp, fee = kn.liquidate(acct, pos, slot, mark_low[t], mark_high[t], marks, floor,
                                      cap, mmr, cum, fp)
            if lp == lp:
                record_trade(trd, st, ST_N_TRADES, t, slot, q, lp, fee, 0.0, 1.0)
                kn.end_entry(st, pos, slot)
        # close phase: mark to market, risk decision, next orders
        marks[0] = mark_close[t]
        marks[1] = mark_close[t]
        kn.decide(acct, pos, 0, 1, st, float(ts[t]), close[t], marks, sig[t], targets[t], pol,
                  fp, floor, cap, mmr, cum, tier_cap, max_lev, view, dec, out)
        st[ST_PEND_MAIN] = out[kn.O_ORDER_MAIN]
        st[ST_PEND_HEDGE] = out[kn.O_ORDER_HEDGE]
        eq = out[kn.O_EQUITY]
        rec[t, R_EQUITY] = eq
        rec[t, R_QTY] = pos[0, ac.P_QTY]
        rec[t, R_LEVERAGE] = ac.leverage(pos[0, ac.P_QTY], mark_close[t], eq)
        rec[t, R_CLIPPED] = out[kn.O_CLIPPED]
        if rec.shape[1] == N_REC:            # every column (else only the N_REC_CORE first)
            rec[t, R_WALLET] = acct[ac.A_WALLET]
            rec[t, R_HEDGE_QTY] = pos[1, ac.P_QTY]
            rec[t, R_TARGET_LEV] = targets[t]
            rec[t, R_ALLOWED_LEV] = out[kn.O_ALLOWED] / eq if eq > 0.0 else 0.0
            rec[t, R_STATE] = dec[en.D_STATE]
            rec[t, R_REASONS] = dec[en.D_REASONS]
            rec[t, R_LIQ_PRICE] = out[kn.O_LIQ_PRICE]
            rec[t, R_FEES] = acct[ac.A_FEES]
            rec[t, R_FUNDING] = acct[ac.A_FUNDING]
        if out[kn.O_CHANGED] > 0.0:
            k = int(st[ST_N_DEC])
            if k < dcs.shape[0]:
                dcs[k, 0] = t
                dcs[k, 1] = out[kn.O_TARGET]
                dcs[k, 2] = out[kn.O_ALLOWED]
                for j in range(en.N_DECISION):
                    dcs[k, 3 + j] = dec[j]
            st[ST_N_DEC] += 1.0


_run_bars_lean = lean(run_bars)
