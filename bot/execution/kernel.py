"""The per-bar trading step, shared by the backtester, the paper broker and the daemon.

One bar t of one symbol, in two phases (times are bar opens; a decision at the close of t
acts at the open of t+1):

OPEN phase (`settle_funding`, `fill_order`, `liquidate`), what the venue does:
1. funding settles if t's interval holds a settlement (mark at the open), on the position
   held at that instant: settlements fall on bar opens (every 8, 4 or 1 hours), before an
   order decided at t-1's close reaches the venue (until 2026-12-06 the fill came first:
   a position opened at a settlement bar's open paid that settlement, one closed there
   did not);
2. the orders decided at the close of t-1 (sized in base at that close) fill at t's open
   through the fill model (square-root impact thinned by liquidation flow, measured over
   the window known at t-1's close), taker fee;
3. mark-price liquidation inside the bar, the position's adverse extreme first.

CLOSE phase (`decide`), what we do:
4. mark to market at the close; day and peak equity for the halts;
5. the risk engine evaluates the signals known at t's close, the account and the policy;
   the strategy's target is sized (`entry`: quantity fixed when the target changes;
   `rebalance`: constant leverage), clipped by the decision and the exchange's brackets;
   the difference becomes the order for t+1 (skipped inside a rebalance band).

Slots: each symbol has a main slot (the strategy's position) and a hedge slot (hedge mode
on the same symbol). `st` holds the per-symbol state of the close phase (K_* indices).
Everything is arrays and scalars, so the backtester's numba loop and the daemon's Python
loop call the same compiled functions: parity by construction.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from bot.config import FillsConfig
from bot.mechanics import account as ac
from bot.mechanics.brackets import order_limit
from bot.mechanics.fees import VenueFees
from bot.mechanics.fills import market_fill_price, market_slippage
from bot.risk import engine as en

# close-phase state per symbol (st[...])
(K_DAY, K_DAY_START, K_PEAK, K_PREV_TARGET, K_DESIRED_QTY, K_BUST, K_PREV_REASONS,
 K_PREV_STATE, K_PREV_CLIPPED, K_PREV_EQUITY) = range(10)
# the risk engine's memory (en.RK_* slots: hysteresis, cool-downs) lives in the same array,
# so everything that checkpoints `st` carries it
K_RISK = 10
N_K = K_RISK + en.N_RISK_STATE

# fill / fee / sizing parameters (fp[...])
(F_COEF, F_HALF_SPREAD, F_LIQ_MULT, F_MAX_IMPACT, F_TAKER, F_LIQ_FEE, F_BAND, F_SIZING) = \
    range(8)
N_FP = 8
SIZING_REBALANCE, SIZING_ENTRY = 0.0, 1.0
SIZINGS = {"rebalance": SIZING_REBALANCE, "entry": SIZING_ENTRY}

# outputs of `decide` (out[...])
(O_ORDER_MAIN, O_ORDER_HEDGE, O_TARGET, O_ALLOWED, O_EQUITY, O_LIQ_PRICE, O_CLIPPED,
 O_CHANGED) = range(8)
N_DECIDE = 8


def fill_params(fills: FillsConfig, fees: VenueFees, band: float, sizing: str) -> np.ndarray:
    """The F_* parameter array: fill model, taker and liquidation fees, rebalance band
    (fraction of the position) and the strategy's sizing (`entry` or `rebalance`)."""
    if sizing not in SIZINGS:
        raise ValueError(f"unknown sizing {sizing!r}; expected one of {list(SIZINGS)}")
    fp = np.zeros(N_FP)
    fp[F_COEF] = fills.impact_coef
    fp[F_HALF_SPREAD] = fills.half_spread_bps * 1e-4
    fp[F_LIQ_MULT] = fills.liq_multiplier
    fp[F_MAX_IMPACT] = fills.max_impact
    fp[F_TAKER] = fees.taker
    fp[F_LIQ_FEE] = fees.liquidation
    fp[F_BAND] = band
    fp[F_SIZING] = SIZINGS[sizing]
    return fp


def new_state(wallet: float) -> np.ndarray:
    """Close-phase state of one symbol for an account starting at `wallet` quote."""
    st = np.zeros(N_K)
    st[K_DAY] = -1.0
    st[K_DAY_START] = wallet
    st[K_PEAK] = wallet
    st[K_PREV_TARGET] = np.nan
    st[K_PREV_REASONS] = 0.0
    # the same source run by Python (plain numpy: np.zeros and one store), so that starting
    # a run compiles nothing; the risk engine's njit callers still use the compiled one
    st[K_RISK:N_K] = en.new_risk_state.py_func()
    st[K_RISK + en.RK_PEAK] = wallet
    return st


@njit(cache=True)
def fill_price(dq: float, open_px: float, vol_w: float, sig_w: float, liq_w: float,
               fp: np.ndarray) -> float:
    """The price a market order of `dq` base (signed, non-zero) fills at from `open_px`:
    the fill model's slippage over the window known when it was decided."""
    s = market_slippage(abs(dq) * open_px, vol_w, sig_w, liq_w, fp[F_COEF], fp[F_HALF_SPREAD],
                        fp[F_LIQ_MULT], fp[F_MAX_IMPACT])
    return market_fill_price(1.0 if dq > 0.0 else -1.0, open_px, s)


@njit(cache=True)
def fill_order(acct: np.ndarray, pos: np.ndarray, slot: int, dq: float, open_px: float,
               vol_w: float, sig_w: float, liq_w: float, fp: np.ndarray) -> tuple[float, float,
                                                                                  float]:
    """Fill `dq` base at `open_px` plus slippage; returns (price, fee, slippage cost), all 0
    when nothing fills. The window figures are those known when the order was decided."""
    if dq == 0.0 or open_px <= 0.0:
        return 0.0, 0.0, 0.0
    px = fill_price(dq, open_px, vol_w, sig_w, liq_w, fp)
    fees_before = acct[ac.A_FEES]
    ac.apply_fill(acct, pos, slot, dq, px, fp[F_TAKER])
    return px, acct[ac.A_FEES] - fees_before, abs(dq) * abs(px - open_px)


@njit(cache=True)
def settle_funding(acct: np.ndarray, pos: np.ndarray, slot: int, mark_open: float,
                   rate: float) -> float:
    """Funding of one slot at a settlement (NaN rate: none); returns the amount paid."""
    if rate != rate or pos[slot, ac.P_QTY] == 0.0:
        return 0.0
    return ac.apply_funding(acct, pos, slot, mark_open, rate)


@njit(cache=True)
def liquidate(acct: np.ndarray, pos: np.ndarray, slot: int, mark_low: float, mark_high: float,
              marks: np.ndarray, floor: np.ndarray, cap: np.ndarray, mmr: np.ndarray,
              cum: np.ndarray, fp: np.ndarray) -> tuple[float, float, float]:
    """Mark-price liquidation of one slot inside a bar. The caller sets `marks` of this
    symbol's slots to the position's adverse extreme (`adverse_mark`) and the others to
    their last marks. Returns (qty closed, liquidation price, clearance fee charged), or
    (0, NaN, 0) if it survived."""
    q = pos[slot, ac.P_QTY]
    if q == 0.0:
        return 0.0, np.nan, 0.0
    fees = acct[ac.A_FEES]
    lp = ac.check_liquidation(acct, pos, slot, mark_low, mark_high, marks, floor, cap, mmr, cum,
                              fp[F_LIQ_FEE])
    if lp == lp:
        return -q, lp, acct[ac.A_FEES] - fees
    return 0.0, np.nan, 0.0


@njit(cache=True)
def liquidation_rounds(first: np.ndarray, lo: np.ndarray, hi: np.ndarray, ref: np.ndarray,
                       acct: np.ndarray, pos: np.ndarray, marks: np.ndarray,
                       floor: np.ndarray, cap: np.ndarray, mmr: np.ndarray, cum: np.ndarray,
                       fp: np.ndarray, tally: np.ndarray, out: np.ndarray) -> int:
    """Liquidation checks of a cross account's symbols (two slots each) at one instant,
    re-checked across symbols after each liquidation until nothing more is liquidated: a
    liquidation's realised loss lowers the shared wallet, which moves every other symbol's
    liquidation price. The portfolio backtest's bar and the paper broker both run it.

    `first` (S): > 0 where the symbol is checked in the first pass; `lo`, `hi` (S): the
    mark range each symbol is checked over (its adverse extreme while it is checked);
    `ref` (S): each symbol's mark while another one is checked. Scratch: `marks` (2S),
    `tally` (S, 2: own liquidations, others' seen at its last check). `out` (2S, 4) gets a
    row (slot, qty closed, price, clearance fee) per liquidation, in order; returns how
    many (a slot is liquidated at most once: it is flat afterwards)."""
    n_sym = lo.shape[0]
    for s in range(n_sym):
        marks[2 * s] = ref[s]
        marks[2 * s + 1] = ref[s]
        tally[s, 0] = 0.0
        tally[s, 1] = 0.0
    total = 0.0
    n_out = 0
    again = True
    first_pass = True
    while again:
        again = False
        for s in range(n_sym):
            others = total - tally[s, 0]
            if first_pass and first[s] <= 0.0:
                continue
            if not first_pass and others <= tally[s, 1]:
                continue
            a = 2 * s
            if pos[a, ac.P_QTY] == 0.0 and pos[a + 1, ac.P_QTY] == 0.0:
                tally[s, 1] = others
                continue
            n = 0
            for k in range(2):
                if pos[a + k, ac.P_QTY] == 0.0:
                    continue
                adverse = adverse_mark(pos, a + k, lo[s], hi[s])
                marks[a] = adverse
                marks[a + 1] = adverse
                q, lp, fee = liquidate(acct, pos, a + k, lo[s], hi[s], marks, floor, cap, mmr,
                                       cum, fp)
                if lp == lp:
                    out[n_out, 0] = a + k
                    out[n_out, 1] = q
                    out[n_out, 2] = lp
                    out[n_out, 3] = fee
                    n_out += 1
                    n += 1
            marks[a] = ref[s]
            marks[a + 1] = ref[s]
            tally[s, 0] += n
            total += n
            tally[s, 1] = total - tally[s, 0]
            if n > 0 and n_sym > 1:
                again = True
        first_pass = False
    return n_out


@njit(cache=True)
def end_entry(st: np.ndarray, pos: np.ndarray, slot: int) -> None:
    """A liquidation (or a reduction the venue made that we did not send) on `slot`: for
    a main slot (even index) `entry` sizing holds what is left, nothing after a whole
    liquidation, until the strategy's target changes, as a liquidated holder buys nothing
    back (until 2026-12-06 it re-bought its entry quantity on whatever equity the
    liquidation left; and a venue's partial liquidation would have closed the rest).
    A hedge slot (odd) has no entry quantity. Callers: every loop's open phase after a
    liquidation, and the daemon after a liquidation fill or an adopted reduction."""
    if slot % 2 == 0:
        st[K_DESIRED_QTY] = pos[slot, ac.P_QTY]


@njit(cache=True)
def adverse_mark(pos: np.ndarray, slot: int, mark_low: float, mark_high: float) -> float:
    """The mark extreme that hurts the slot's position (a long's low, a short's high)."""
    return mark_low if pos[slot, ac.P_QTY] > 0.0 else mark_high


@njit(cache=True)
def _main_order(want: float, main_n: float, qty: float, close: float, band_frac: float) -> float:
    """The base quantity to trade from notional `main_n` (quantity `qty`) toward `want`.
    Orders are sized in base at this close; a target of zero closes exactly; the band only
    damps rebalancing: entries from flat, exits and flips always trade."""
    order = want - main_n
    if abs(order) > band_frac * max(abs(want), abs(main_n)) or (want == 0.0 and main_n != 0.0) \
            or want * main_n < 0.0 or (main_n == 0.0 and want != 0.0):
        return -qty if want == 0.0 else order / close
    return 0.0


@njit(cache=True)
def leverage_budget(cap: float, w: float, total: float, n_symbols: int) -> float:
    """One symbol's share of the account's hard leverage cap (the portfolio budget,
    docs/portfolio.md): `cap x w / total`, where `w` is the symbol's absolute target
    leverage and `total` the sum over the account's symbols (each at its last target);
    the whole cap when the symbol holds all of it, `cap / n_symbols` when every target is
    zero. The budgets sum to the cap, so the symbols' allowed notionals never sum past
    `cap x equity`. Shared by the portfolio backtest and the daemon."""
    if total > 0.0 and w < total:
        return cap * (w / total)
    if total > 0.0:
        return cap
    return cap / n_symbols


@njit(cache=True)
def decide(acct: np.ndarray, pos: np.ndarray, main: int, hedge: int, st: np.ndarray,
           ts: float, close: float, marks: np.ndarray, sig: np.ndarray, target_lev: float,
           pol: np.ndarray, fp: np.ndarray, floor: np.ndarray, cap: np.ndarray,
           mmr: np.ndarray, cum: np.ndarray, tier_cap: np.ndarray, max_lev: np.ndarray,
           view: np.ndarray, dec: np.ndarray, out: np.ndarray) -> None:
    """The close phase of one symbol (module docstring). `marks` holds every slot's mark at
    this close (equity is the whole account's). Writes the risk decision into `dec` and the
    orders (base qty for the next open), target, allowed notional, equity, liquidation
    price, whether the decision clipped the target and whether the decision changed (state,
    reasons or clipping: the timeline of what the risk engine did) into `out`."""
    eq = ac.equity(acct, pos, marks)
    if eq <= 0.0 and st[K_BUST] == 0.0:
        st[K_BUST] = 1.0
    # the UTC day; integer division for any real ms timestamp below 2**53 (the same floor
    # as the float `ts // 86_400_000`, without its fmod call on every bar)
    day = float(int(np.floor(ts)) // 86_400_000) if abs(ts) < 9.007199254740992e15 else \
        float(ts // 86_400_000)
    if day != st[K_DAY]:
        st[K_DAY_START] = st[K_PREV_EQUITY] if st[K_DAY] >= 0.0 else eq
        st[K_DAY] = day
    if eq > st[K_PEAK]:
        st[K_PEAK] = eq
    mark = marks[main]
    main_n = pos[main, ac.P_QTY] * mark
    hedge_n = pos[hedge, ac.P_QTY] * mark
    view[en.A_EQUITY] = eq
    view[en.A_NOTIONAL] = main_n
    # int(main): a loop passing a constant slot would otherwise compile a second
    # (Literal-typed) liquidation_price beside the int64 one `liquidate` uses
    view[en.A_LIQ_PRICE] = ac.liquidation_price(acct, pos, int(main), marks, floor, cap, mmr,
                                                cum)
    view[en.A_DAY_START_EQUITY] = st[K_DAY_START]
    view[en.A_PEAK_EQUITY] = st[K_PEAK]
    view[en.A_HEDGE_NOTIONAL] = hedge_n
    # sizing: entry fixes the quantity when the target changes; rebalance keeps leverage
    eq_pos = max(eq, 0.0)
    if fp[F_SIZING] == SIZING_ENTRY:
        if target_lev != st[K_PREV_TARGET]:
            st[K_DESIRED_QTY] = target_lev * eq_pos / close if close > 0.0 else 0.0
        target = st[K_DESIRED_QTY] * close
    else:
        target = target_lev * eq_pos
    st[K_PREV_TARGET] = target_lev
    view[en.A_TARGET_NOTIONAL] = target
    en.evaluate_state(sig, view, pol, st[K_RISK:N_K], ts, dec)
    allowed = en.allowed_target(target, main_n, dec, pol)
    allowed = order_limit(allowed, main_n, eq_pos, tier_cap, max_lev)
    if st[K_BUST] > 0.0:
        allowed = main_n
    qty = pos[main, ac.P_QTY]
    q_main = _main_order(allowed, main_n, qty, close, fp[F_BAND])
    # a binding intervention is the risk engine changing what is traded at this close: the
    # order from the allowed target differs from the order the strategy's own target would
    # have sent under the same band and the exchange's limit (a cap the position already
    # sits under, or one inside the rebalance band, changes nothing and does not count; nor
    # does the frozen account of a bust)
    q_free = _main_order(order_limit(target, main_n, eq_pos, tier_cap, max_lev), main_n, qty,
                         close, fp[F_BAND])
    clipped = 1.0 if st[K_BUST] == 0.0 and abs(q_main - q_free) * close > \
        1e-6 * max(1.0, abs(target)) else 0.0
    q_hedge = 0.0
    want = dec[en.D_HEDGE_NOTIONAL]
    hedge_order = want - hedge_n
    if st[K_BUST] == 0.0 and (abs(hedge_order) > fp[F_BAND] * max(abs(hedge_n), abs(want))
                              or (want == 0.0 and hedge_n != 0.0)):
        q_hedge = -pos[hedge, ac.P_QTY] if want == 0.0 else hedge_order / close
    changed = 1.0 if (dec[en.D_REASONS] != st[K_PREV_REASONS] or dec[en.D_STATE] !=
                      st[K_PREV_STATE] or clipped != st[K_PREV_CLIPPED]) else 0.0
    st[K_PREV_REASONS] = dec[en.D_REASONS]
    st[K_PREV_STATE] = dec[en.D_STATE]
    st[K_PREV_CLIPPED] = clipped
    out[O_ORDER_MAIN] = q_main
    out[O_ORDER_HEDGE] = q_hedge
    out[O_TARGET] = target
    out[O_ALLOWED] = allowed
    out[O_EQUITY] = eq
    out[O_LIQ_PRICE] = view[en.A_LIQ_PRICE]
    out[O_CLIPPED] = clipped
    out[O_CHANGED] = changed
    st[K_PREV_EQUITY] = eq
