"""The backtest loop: one numba kernel over the bars of one symbol.

Per bar t (times are bar opens; a decision at the close of t acts at the open of t+1):
1. the orders decided at the close of t-1 (sized in base at that close) fill at t's open
   through the fill model (square-root impact thinned by liquidation flow,
   `bot.mechanics.fills`), taker fee;
2. funding settles if t's interval holds a settlement (mark at the open);
3. mark-price liquidation inside the bar, the position's adverse extreme first (a long is
   checked against the mark low), closed at its liquidation price with the clearance fee;
4. mark to market at the close;
5. the risk engine evaluates signals known at t's close, the account and the policy; the
   strategy's target leverage is clipped by the decision and by the exchange's brackets;
   the difference becomes the order for t+1 (skipped inside a rebalance band).
Slot 0 is the strategy's position, slot 1 the hedge leg (hedge mode on the same symbol).
Signals come from the causal signal kernels run over the same bars beforehand: they depend
on market data only, never on our orders, so this equals stepping them inside the loop.
State lives in arrays so the loop can run in chunks (for a progress bar) without Python
inside any chunk.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from bot.mechanics import account as ac
from bot.mechanics.brackets import max_notional_for_equity
from bot.mechanics.fills import market_slippage
from bot.risk import engine as en

# state scalars (st[...])
(ST_DAY, ST_DAY_START, ST_PEAK, ST_PEND_MAIN, ST_PEND_HEDGE, ST_N_TRADES, ST_N_DEC,
 ST_PREV_REASONS, ST_PREV_STATE, ST_BUST, ST_PREV_CLIPPED) = range(11)
N_STATE = 11
# per-bar records (rec[t, ...])
(R_EQUITY, R_WALLET, R_QTY, R_HEDGE_QTY, R_LEVERAGE, R_TARGET_LEV, R_ALLOWED_LEV, R_STATE,
 R_REASONS, R_LIQ_PRICE, R_FEES, R_FUNDING) = range(12)
N_REC = 12
# trades (trd[k, ...]): bar, slot, qty, price, fee, slippage cost, liquidation flag
N_TRD = 7
# decisions that changed something (dcs[k, ...]): bar, then the decision row, target, allowed
N_DCS = 3 + en.N_DECISION

# fill / fee parameters (fp[...])
(F_COEF, F_HALF_SPREAD, F_LIQ_MULT, F_MAX_IMPACT, F_TAKER, F_LIQ_FEE, F_BAND) = range(7)
N_FP = 7


@njit(cache=True)
def _execute(acct: np.ndarray, pos: np.ndarray, slot: int, dq: float, t: int,
             open_px: float, vol_w: float, sig_w: float, liq_w: float, fp: np.ndarray,
             st: np.ndarray, trd: np.ndarray) -> None:
    """Fill `dq` base (sized at the decision bar's close) at this bar's open + slippage."""
    if dq == 0.0 or open_px <= 0.0:
        return
    side = 1.0 if dq > 0.0 else -1.0
    s = market_slippage(abs(dq) * open_px, vol_w, sig_w, liq_w, fp[F_COEF], fp[F_HALF_SPREAD],
                        fp[F_LIQ_MULT], fp[F_MAX_IMPACT])
    px = open_px * (1.0 + side * s)
    fees_before = acct[ac.A_FEES]
    ac.apply_fill(acct, pos, slot, dq, px, fp[F_TAKER])
    k = int(st[ST_N_TRADES])
    if k < trd.shape[0]:
        trd[k, 0] = t
        trd[k, 1] = slot
        trd[k, 2] = dq
        trd[k, 3] = px
        trd[k, 4] = acct[ac.A_FEES] - fees_before
        trd[k, 5] = abs(dq) * abs(px - open_px)
        trd[k, 6] = 0.0
    st[ST_N_TRADES] += 1.0


@njit(cache=True)
def run_chunk(t0: int, t1: int, ts: np.ndarray, opn: np.ndarray, high: np.ndarray,
              low: np.ndarray, close: np.ndarray, mark_open: np.ndarray,
              mark_high: np.ndarray, mark_low: np.ndarray, mark_close: np.ndarray,
              funding: np.ndarray, vol_w: np.ndarray, sig_w: np.ndarray, liq_w: np.ndarray,
              sig: np.ndarray, targets: np.ndarray, pol: np.ndarray, fp: np.ndarray,
              floor: np.ndarray, cap: np.ndarray, mmr: np.ndarray, cum: np.ndarray,
              tier_cap: np.ndarray, max_lev: np.ndarray, acct: np.ndarray, pos: np.ndarray,
              st: np.ndarray,
              rec: np.ndarray, trd: np.ndarray, dcs: np.ndarray) -> None:
    """Run bars [t0, t1) (module docstring); every array is updated in place.

    floor/cap/mmr/cum are per-slot bracket rows (`account.stack_brackets`), tier_cap and
    max_lev the symbol's tier caps and max leverages for the exchange's own limit."""
    view = np.zeros(en.N_ACCT_VIEW)
    dec = np.zeros(en.N_DECISION)
    marks = np.zeros(2)
    for t in range(t0, t1):
        # 1. fills at the open
        if t > 0 and st[ST_BUST] == 0.0:
            _execute(acct, pos, 0, st[ST_PEND_MAIN], t, opn[t], vol_w[t - 1], sig_w[t - 1],
                     liq_w[t - 1], fp, st, trd)
            _execute(acct, pos, 1, st[ST_PEND_HEDGE], t, opn[t], vol_w[t - 1], sig_w[t - 1],
                     liq_w[t - 1], fp, st, trd)
        st[ST_PEND_MAIN] = 0.0
        st[ST_PEND_HEDGE] = 0.0
        # 2. funding at a settlement
        if funding[t] == funding[t]:
            for slot in range(2):
                if pos[slot, ac.P_QTY] != 0.0:
                    ac.apply_funding(acct, pos, slot, mark_open[t], funding[t])
        # 3. liquidation, adverse extreme first
        for slot in range(2):
            q = pos[slot, ac.P_QTY]
            if q == 0.0:
                continue
            adverse = mark_low[t] if q > 0.0 else mark_high[t]
            marks[0] = adverse
            marks[1] = adverse
            lp = ac.check_liquidation(acct, pos, slot, mark_low[t], mark_high[t], marks,
                                      floor, cap, mmr, cum, fp[F_LIQ_FEE])
            if lp == lp:
                k = int(st[ST_N_TRADES])
                if k < trd.shape[0]:
                    trd[k, 0] = t
                    trd[k, 1] = slot
                    trd[k, 2] = -q
                    trd[k, 3] = lp
                    trd[k, 4] = 0.0
                    trd[k, 5] = 0.0
                    trd[k, 6] = 1.0
                st[ST_N_TRADES] += 1.0
        # 4. mark to market
        marks[0] = mark_close[t]
        marks[1] = mark_close[t]
        eq = ac.equity(acct, pos, marks)
        if eq <= 0.0 and st[ST_BUST] == 0.0:
            st[ST_BUST] = 1.0
        day = float(ts[t] // 86_400_000)
        if day != st[ST_DAY]:
            st[ST_DAY] = day
            st[ST_DAY_START] = rec[t - 1, R_EQUITY] if t > 0 else eq
        if eq > st[ST_PEAK]:
            st[ST_PEAK] = eq
        # 5. risk decision and the next orders
        main_n = pos[0, ac.P_QTY] * mark_close[t]
        hedge_n = pos[1, ac.P_QTY] * mark_close[t]
        view[en.A_EQUITY] = eq
        view[en.A_NOTIONAL] = main_n
        view[en.A_LIQ_PRICE] = ac.liquidation_price(acct, pos, 0, marks, floor, cap, mmr, cum)
        view[en.A_DAY_START_EQUITY] = st[ST_DAY_START]
        view[en.A_PEAK_EQUITY] = st[ST_PEAK]
        view[en.A_HEDGE_NOTIONAL] = hedge_n
        en.evaluate(sig[t], view, pol, dec)
        target = targets[t] * max(eq, 0.0)
        allowed = en.allowed_target(target, main_n, dec, pol)
        lim = max_notional_for_equity(max(eq, 0.0), tier_cap, max_lev)
        if allowed > lim:
            allowed = lim
        elif allowed < -lim:
            allowed = -lim
        if st[ST_BUST] > 0.0:
            allowed = main_n
        order = allowed - main_n
        band = fp[F_BAND] * max(abs(allowed), abs(main_n))
        # orders are sized in base at this close; a target of zero closes exactly
        # the band only damps rebalancing: entries from flat, exits and flips always trade
        if abs(order) > band or (allowed == 0.0 and main_n != 0.0) or allowed * main_n < 0.0 \
                or (main_n == 0.0 and allowed != 0.0):
            st[ST_PEND_MAIN] = -pos[0, ac.P_QTY] if allowed == 0.0 else order / close[t]
        hedge_order = dec[en.D_HEDGE_NOTIONAL] - hedge_n
        if st[ST_BUST] == 0.0 and (abs(hedge_order) > fp[F_BAND] * max(
                abs(hedge_n), abs(dec[en.D_HEDGE_NOTIONAL])) or
                (dec[en.D_HEDGE_NOTIONAL] == 0.0 and hedge_n != 0.0)):
            st[ST_PEND_HEDGE] = -pos[1, ac.P_QTY] if dec[en.D_HEDGE_NOTIONAL] == 0.0 \
                else hedge_order / close[t]
        # records
        rec[t, R_EQUITY] = eq
        rec[t, R_WALLET] = acct[ac.A_WALLET]
        rec[t, R_QTY] = pos[0, ac.P_QTY]
        rec[t, R_HEDGE_QTY] = pos[1, ac.P_QTY]
        rec[t, R_LEVERAGE] = main_n / eq if eq > 0.0 else 0.0
        rec[t, R_TARGET_LEV] = targets[t]
        rec[t, R_ALLOWED_LEV] = allowed / eq if eq > 0.0 else 0.0
        rec[t, R_STATE] = dec[en.D_STATE]
        rec[t, R_REASONS] = dec[en.D_REASONS]
        rec[t, R_LIQ_PRICE] = view[en.A_LIQ_PRICE]
        rec[t, R_FEES] = acct[ac.A_FEES]
        rec[t, R_FUNDING] = acct[ac.A_FUNDING]
        # a decision is recorded when it starts or stops altering the target, or when its
        # state or reasons change: the timeline of what the risk engine did
        clipped = 1.0 if abs(allowed - target) > 1e-6 * max(1.0, abs(target)) else 0.0
        if dec[en.D_REASONS] != st[ST_PREV_REASONS] or dec[en.D_STATE] != st[ST_PREV_STATE] \
                or clipped != st[ST_PREV_CLIPPED]:
            k = int(st[ST_N_DEC])
            if k < dcs.shape[0]:
                dcs[k, 0] = t
                dcs[k, 1] = target
                dcs[k, 2] = allowed
                dcs[k, 3:] = dec
            st[ST_N_DEC] += 1.0
        st[ST_PREV_REASONS] = dec[en.D_REASONS]
        st[ST_PREV_STATE] = dec[en.D_STATE]
        st[ST_PREV_CLIPPED] = clipped
