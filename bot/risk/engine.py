"""The risk engine: one pure numba function from (signals, account, policy) to a decision.

`evaluate(sig, acct, pol, out)` reads three float arrays laid out by the S_*, A_* and P_*
indices below and writes the decision into `out` (D_* indices). It allocates nothing, so
the backtester calls it inside its numba loop and the daemon calls the same compiled
function on live state: same inputs, same decision.

Rules (defaults in config/risk/*.toml, documented in docs/risk.md):
1. leverage schedule: the max leverage of a side falls linearly from `lev_base` at crowding
   `crowd_start` to `lev_min` at crowding 1;
2. cluster guard: a dense liquidation cluster on the adverse side within `cluster_k_atr`
   ATRs caps leverage so that our own liquidation price sits beyond its far edge plus
   `cluster_buffer` (`bot.mechanics.liquidation.leverage_for_liquidation_at`);
3. cascade mode: a running cascade against the position forces REDUCING to
   `cascade_max_lev`; entries on the side being liquidated are blocked until the exhaustion
   detector fires (or the look-back expires) - buying a falling knife waits for exhaustion.
   With `cascade_reach_atr` > 0 (and an ATR) it acts only on a side whose liquidation the
   cascade can reach: a position above the leverage liquidated `cascade_reach_atr` ATRs
   away is cut to that leverage (not below `cascade_max_lev`), and entries may grow the
   side up to it; positions liquidated farther away are left alone; a cut smaller than
   `min_cut` of the held leverage is skipped (no growth either). With
   `cascade_near_atr` > 0 the cut is graded by evidence: a position liquidated within
   `cascade_near_atr` ATRs is cut at the cascade's first bar; one liquidated between
   `cascade_near_atr` and `cascade_reach_atr` ATRs away only once the cascade has run
   `cascade_confirm_atr` ATRs past the close of its first bar (S_CASCADE_RUN): a burst that
   stops where it fired leaves it alone (it may not grow either). With `cascade_flat_atr`
   > 0, once the cascade has run that many ATRs on, the liquidated side is closed (cap 0,
   whatever the reach) until the cascade ends (RK_CASC_FLAT latches it);
4. hedge: crowding of the position's side at `hedge_threshold` or more hedges
   `hedge_fraction` of it on the other side; the hedge unwinds below `hedge_unwind`;
5. hard limits: max leverage, max order and position notional, stale data for
   `stale_bars` (REDUCING);
6. liquidation distance WITH HYSTERESIS (needs the risk state): our own liquidation price
   closer than `min_liq_atr` ATRs trips the rule (REDUCING) and caps the side at the
   leverage whose liquidation sits `liq_release_atr` ATRs away; it releases only once the
   leverage held when it tripped would itself sit `liq_release_atr` ATRs away, so the
   position is never re-levered inside the band. With `liq_shrink` > 0 it trips only once
   the distance has also shrunk below `liq_shrink` of its distance when the position was
   opened (RK_LIQ_REF), or below 0.75 x `min_liq_atr` whatever the opening: a volatile coin
   at its normal volatility is not a danger sign, a shrinking distance is. An entry (or
   growth) the rule would trip at once, by the strategy's target (A_TARGET_NOTIONAL), enters
   tripped: capped at the release leverage with the target's leverage as the tripping one,
   instead of being bought and cut on the next bar. No ATR yet (warm-up): no action;
7. halts WITH COOL-DOWN: daily loss halts until the next UTC day (the day-start equity
   resets); max drawdown halts for `drawdown_cooldown_hours`, then the peak resets to the
   equity at release (the loss is accepted and a fresh drawdown budget starts).
`evaluate_state(sig, acct, pol, rs, ts, out)` runs every rule with the memory `rs` (RK_*
slots, stored by the trading kernel in its per-symbol state, so daemon checkpoints carry
it); `evaluate(sig, acct, pol, out)` is the memoryless form (fresh state, peak from the
account view) for one-off decisions.
Reasons are a bitmask (R_*) with the numbers behind them in the decision; text is rendered
outside the kernel (`bot.risk.reasons`).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from bot.mechanics.liquidation import leverage_for_liquidation_at

# --- signals (per bar, per symbol) --------------------------------------------------------
(S_MARK, S_ATR, S_CROWD_LONG, S_CROWD_SHORT, S_CASCADE, S_CASCADE_BLOCK, S_CLUSTER_BELOW,
 S_CLUSTER_BELOW_EDGE, S_CLUSTER_BELOW_SHARE, S_CLUSTER_ABOVE, S_CLUSTER_ABOVE_EDGE,
 S_CLUSTER_ABOVE_SHARE, S_STALE_BARS, S_CASCADE_RUN) = range(14)
N_SIG = 14
# S_CASCADE_RUN: while a cascade is held, how far the close has moved in the cascade's
# direction since the close of its first bar, in ATRs (S_ATR at that bar); NaN otherwise.
# --- account view ---------------------------------------------------------------------------
# A_TARGET_NOTIONAL: the strategy's target (signed quote) at this close, NaN when unknown
(A_EQUITY, A_NOTIONAL, A_LIQ_PRICE, A_DAY_START_EQUITY, A_PEAK_EQUITY, A_HEDGE_NOTIONAL,
 A_TARGET_NOTIONAL) = range(7)
N_ACCT_VIEW = 7
# --- policy -----------------------------------------------------------------------------------
(P_MAX_LEV_HARD, P_MAX_ORDER_NOTIONAL, P_MAX_POS_NOTIONAL, P_DAILY_LOSS, P_MAX_DRAWDOWN,
 P_STALE_BARS, P_MIN_LIQ_ATR, P_LEV_BASE, P_LEV_MIN, P_CROWD_START, P_CLUSTER_K_ATR,
 P_CLUSTER_BUFFER, P_CLUSTER_MIN_SHARE, P_MMR, P_CASCADE_ON, P_CASCADE_MAX_LEV, P_HEDGE_ON,
 P_HEDGE_THRESHOLD, P_HEDGE_FRACTION, P_HEDGE_UNWIND, P_LIQ_RELEASE_ATR,
 P_DD_COOLDOWN_H, P_CASCADE_REACH_ATR, P_MIN_CUT, P_LIQ_SHRINK, P_CASCADE_NEAR_ATR,
 P_CASCADE_CONFIRM_ATR, P_CASCADE_FLAT_ATR) = range(28)
N_POLICY = 28
# --- risk state (memory of the rules, one array per symbol) ----------------------------------
# RK_LIQ_TRIP: 1 while the liquidation-distance rule is tripped; RK_LIQ_LEV: leverage held
# when it tripped; RK_PEAK: the drawdown halt's peak equity (0 = not set yet);
# RK_DD_SINCE: ts (ms) at which the drawdown halt tripped, -1 when not halted.
# RK_LIQ_REF: the liquidation distance (ATRs) when the position was opened (0 = flat).
# RK_CASC_FLAT: the direction (+1 long, -1 short) of the held cascade that has run
# `cascade_flat_atr` ATRs on (its side closed until it ends), 0 otherwise.
(RK_LIQ_TRIP, RK_LIQ_LEV, RK_PEAK, RK_DD_SINCE, RK_LIQ_REF, RK_CASC_FLAT) = range(6)
N_RISK_STATE = 6
# --- decision -------------------------------------------------------------------------------
(D_STATE, D_MAX_LEV_LONG, D_MAX_LEV_SHORT, D_MAX_NOTIONAL_LONG, D_MAX_NOTIONAL_SHORT,
 D_HEDGE_NOTIONAL, D_BLOCK_LONG, D_BLOCK_SHORT, D_REASONS, D_CROWD, D_CLUSTER_PRICE,
 D_CLUSTER_CAP, D_LIQ_DISTANCE_ATR, D_DRAWDOWN, D_DAY_LOSS, D_CASCADE_RUN) = range(16)
N_DECISION = 16

ACTIVE, REDUCING, HALTED = 0, 1, 2
STATE_NAMES = ("ACTIVE", "REDUCING", "HALTED")

R_CROWDING = 1            # leverage schedule lowers the cap of the position's side
R_CLUSTER = 2             # cluster guard caps the position's side
R_CASCADE = 4             # cascade against the position: reducing
R_CASCADE_BLOCK = 8       # entries on the liquidated side blocked until exhaustion
R_HEDGE = 16              # hedge on
R_HARD_LEVERAGE = 32      # hard max leverage binds
R_LIQ_DISTANCE = 64       # own liquidation tripped min_liq_atr ATRs (hysteresis)
R_STALE = 128             # market data stale
R_DAILY_LOSS = 256        # daily loss limit: halted
R_DRAWDOWN = 512          # max drawdown: halted
R_HEDGE_UNWIND = 1024     # crowding normalised: hedge unwound


@njit(cache=True)
def _schedule(crowd: float, pol: np.ndarray) -> float:
    start = pol[P_CROWD_START]
    if not crowd > start:                 # also NaN: unknown crowding, no schedule
        return pol[P_LEV_BASE]
    f = (crowd - start) / (1.0 - start) if start < 1.0 else 1.0
    if f > 1.0:
        f = 1.0
    return pol[P_LEV_BASE] + f * (pol[P_LEV_MIN] - pol[P_LEV_BASE])


@njit(cache=True)
def new_risk_state() -> np.ndarray:
    """Empty memory of `evaluate_state` (RK_* slots): nothing tripped, peak unset."""
    rs = np.zeros(N_RISK_STATE)
    rs[RK_DD_SINCE] = -1.0
    return rs


@njit(cache=True)
def evaluate(sig: np.ndarray, acct: np.ndarray, pol: np.ndarray, out: np.ndarray) -> None:
    """The memoryless decision (fresh risk state; the drawdown peak is the view's
    A_PEAK_EQUITY). Writes `out`."""
    rs = new_risk_state()
    rs[RK_PEAK] = acct[A_PEAK_EQUITY]
    evaluate_state(sig, acct, pol, rs, 0.0, out)


@njit(cache=True)
def _lev_at_distance(side: float, mark: float, dist: float, mmr: float) -> float:
    """The leverage whose liquidation price sits `dist` (quote) from `mark` on `side`.

    A long's liquidation cannot sit farther than the mark (at 1x it is at zero): beyond it
    the answer is `mark / dist`, the leverage at which a `dist` move takes the whole equity.
    That is the short side's own formula in that range (a short's liquidation above the
    mark is always defined, and its leverage tends to mark / dist), and it meets the
    bracket formula at 1x: a volatile enough market caps a long below 1x as it caps a
    short. (Until 2026-12-05 a long was floored at 1x: on a deep grind the liquidation
    rules then held an unlevered long all the way down; docs/risk.md.)"""
    liq = mark - side * dist
    if side > 0.0 and liq <= 0.0:
        return mark / dist
    return leverage_for_liquidation_at(side, mark, liq, mmr)


@njit(cache=True)
def _liq_trip_atr(pol: np.ndarray, ref_atr: float) -> float:
    """The distance (ATRs) inside which rule 6 trips a position opened `ref_atr` ATRs from
    its liquidation: `min_liq_atr`, and with `liq_shrink` > 0 only once the distance has
    also shrunk below `liq_shrink` x `ref_atr` or below 0.75 x `min_liq_atr` (a new
    position, `ref_atr` = 0, trips on the floor alone)."""
    if pol[P_LIQ_SHRINK] <= 0.0:
        return pol[P_MIN_LIQ_ATR]
    return min(pol[P_MIN_LIQ_ATR], max(pol[P_LIQ_SHRINK] * ref_atr, 0.75 * pol[P_MIN_LIQ_ATR]))


@njit(cache=True)
def evaluate_state(sig: np.ndarray, acct: np.ndarray, pol: np.ndarray, rs: np.ndarray,
                   ts: float, out: np.ndarray) -> None:
    """The decision for one symbol at the bar close `ts` (ms UTC) with the rules' memory
    `rs` (updated in place). Writes `out`."""
    reasons = 0
    state = ACTIVE
    mark = sig[S_MARK]
    bad_mark = not mark > 0.0              # NaN or non-positive: treated as stale data
    if bad_mark:
        mark = 1.0
    has_atr = sig[S_ATR] > 0.0            # NaN during the ATR's warm-up
    # no ATR yet: a nominal one, never 0 (a subnormal mark x 1e-3 underflows)
    atr = sig[S_ATR] if has_atr else max(mark * 1e-3, 1e-300)
    equity = acct[A_EQUITY]
    if equity != equity:
        equity = 0.0
    notional = acct[A_NOTIONAL]
    lev_now = abs(notional) / equity if equity > 0.0 else 0.0
    side = 1.0 if notional > 0.0 else (-1.0 if notional < 0.0 else 0.0)
    hard = pol[P_MAX_LEV_HARD]
    # 1. leverage schedule
    lev_l = _schedule(sig[S_CROWD_LONG], pol)
    lev_s = _schedule(sig[S_CROWD_SHORT], pol)
    crowd = sig[S_CROWD_LONG] if side >= 0.0 else sig[S_CROWD_SHORT]
    if (side > 0.0 and lev_l < pol[P_LEV_BASE]) or (side < 0.0 and lev_s < pol[P_LEV_BASE]):
        reasons |= R_CROWDING      # the schedule applies to the position's side
    # 2. cluster guard
    cluster_price = np.nan
    cluster_cap = np.nan
    if sig[S_CLUSTER_BELOW] == sig[S_CLUSTER_BELOW] and \
            sig[S_CLUSTER_BELOW_SHARE] >= pol[P_CLUSTER_MIN_SHARE] and \
            (mark - sig[S_CLUSTER_BELOW]) / atr <= pol[P_CLUSTER_K_ATR]:
        cap = leverage_for_liquidation_at(1.0, mark, sig[S_CLUSTER_BELOW_EDGE] *
                                          (1.0 - pol[P_CLUSTER_BUFFER]), pol[P_MMR])
        if cap < lev_l:
            lev_l = cap
            if side > 0.0:
                cluster_price = sig[S_CLUSTER_BELOW]
                cluster_cap = cap
                reasons |= R_CLUSTER
    if sig[S_CLUSTER_ABOVE] == sig[S_CLUSTER_ABOVE] and \
            sig[S_CLUSTER_ABOVE_SHARE] >= pol[P_CLUSTER_MIN_SHARE] and \
            (sig[S_CLUSTER_ABOVE] - mark) / atr <= pol[P_CLUSTER_K_ATR]:
        cap = leverage_for_liquidation_at(-1.0, mark, sig[S_CLUSTER_ABOVE_EDGE] *
                                          (1.0 + pol[P_CLUSTER_BUFFER]), pol[P_MMR])
        if cap < lev_s:
            lev_s = cap
            if side < 0.0:
                cluster_price = sig[S_CLUSTER_ABOVE]
                cluster_cap = cap
                reasons |= R_CLUSTER
    # 3. cascade mode
    block_l = 0.0
    block_s = 0.0
    # a cascade that has run `cascade_flat_atr` ATRs on closes its side until it ends (a
    # latch: a bounce inside the cascade does not re-open it)
    if sig[S_CASCADE] != rs[RK_CASC_FLAT]:
        rs[RK_CASC_FLAT] = 0.0
    if pol[P_CASCADE_ON] > 0.0 and pol[P_CASCADE_FLAT_ATR] > 0.0 and sig[S_CASCADE] != 0.0 \
            and sig[S_CASCADE_RUN] >= pol[P_CASCADE_FLAT_ATR]:
        rs[RK_CASC_FLAT] = sig[S_CASCADE]
    flat = rs[RK_CASC_FLAT]
    if pol[P_CASCADE_ON] > 0.0:
        reach = pol[P_CASCADE_REACH_ATR]
        if reach > 0.0 and has_atr:
            # only a side whose liquidation the cascade can reach is acted on: a position
            # held above the leverage liquidated `reach` ATRs away is cut to it (not below
            # `cascade_max_leverage`); entries up to it stay allowed. (Cutting to
            # cascade_max_leverage instead measured worse: docs/risk.md)
            blk = sig[S_CASCADE_BLOCK]
            csc = sig[S_CASCADE]
            near = pol[P_CASCADE_NEAR_ATR]
            # the cascade has followed through (NaN run: not, or no cascade held)
            ran = sig[S_CASCADE_RUN] >= pol[P_CASCADE_CONFIRM_ATR]
            for sd in (1.0, -1.0):
                if blk * sd <= 0.0 and csc * sd <= 0.0:
                    continue
                safe = _lev_at_distance(sd, mark, reach * atr, pol[P_MMR])
                held = lev_now if side == sd else 0.0
                # graded by evidence: a position liquidated within `near` ATRs is cut at
                # once, one farther away (but within reach) once the cascade has run on
                urgent = near <= 0.0 or ran or \
                    held > _lev_at_distance(sd, mark, near * atr, pol[P_MMR])
                # materiality: a cut by less than `min_cut` of the held leverage is not
                # made (trimming 3x to 2.8x costs fees and buys no safety); the position
                # may not grow either
                if flat * sd > 0.0:               # the cascade ran far: side closed
                    cap = 0.0
                    if held > 0.0:
                        state = REDUCING
                        reasons |= R_CASCADE
                    else:
                        reasons |= R_CASCADE_BLOCK
                elif csc * sd > 0.0 and urgent and \
                        max(safe, pol[P_CASCADE_MAX_LEV]) < (1.0 - pol[P_MIN_CUT]) * held:
                    state = REDUCING
                    reasons |= R_CASCADE
                    cap = max(safe, pol[P_CASCADE_MAX_LEV])
                else:
                    cap = max(safe, held)          # no growth beyond the reachable leverage
                    reasons |= R_CASCADE_BLOCK
                if sd > 0.0:
                    lev_l = min(lev_l, cap)
                else:
                    lev_s = min(lev_s, cap)
        else:
            if sig[S_CASCADE_BLOCK] > 0.0:
                block_l = 1.0
                reasons |= R_CASCADE_BLOCK
            elif sig[S_CASCADE_BLOCK] < 0.0:
                block_s = 1.0
                reasons |= R_CASCADE_BLOCK
            if sig[S_CASCADE] * side > 0.0:       # +1 long cascade vs long position
                state = REDUCING
                reasons |= R_CASCADE
                cap = 0.0 if flat * side > 0.0 else pol[P_CASCADE_MAX_LEV]
                if side > 0.0:
                    lev_l = min(lev_l, cap)
                else:
                    lev_s = min(lev_s, cap)
    # 4. hedge (with hysteresis on the current hedge)
    hedge = acct[A_HEDGE_NOTIONAL]
    if pol[P_HEDGE_ON] > 0.0:
        if side != 0.0 and crowd >= pol[P_HEDGE_THRESHOLD]:
            hedge = -side * pol[P_HEDGE_FRACTION] * abs(notional)
            reasons |= R_HEDGE
        elif hedge != 0.0 and (side == 0.0 or crowd < pol[P_HEDGE_UNWIND]):
            hedge = 0.0
            reasons |= R_HEDGE_UNWIND
        elif hedge != 0.0:
            reasons |= R_HEDGE
    else:
        hedge = 0.0
    # 5. hard limits (written so that NaN caps fall back to the hard limit too)
    if not lev_l <= hard:
        lev_l = hard
    if not lev_s <= hard:
        lev_s = hard
    if lev_now > hard + 1e-9:
        reasons |= R_HARD_LEVERAGE
    liq_atr = np.nan
    lp = acct[A_LIQ_PRICE]
    if side != 0.0 and lp == lp and lp > 0.0 and has_atr:
        liq_atr = abs(mark - lp) / atr
    if side == 0.0:
        rs[RK_LIQ_TRIP] = 0.0
        rs[RK_LIQ_REF] = 0.0
    elif has_atr:
        if rs[RK_LIQ_REF] * side <= 0.0 and liq_atr == liq_atr:
            rs[RK_LIQ_REF] = side * liq_atr       # opened (or flipped): remember the distance
        if rs[RK_LIQ_TRIP] == 0.0 and liq_atr < _liq_trip_atr(pol, abs(rs[RK_LIQ_REF])):
            rs[RK_LIQ_TRIP] = side
            rs[RK_LIQ_LEV] = lev_now
        if rs[RK_LIQ_TRIP] != 0.0:
            s_trip = rs[RK_LIQ_TRIP]
            cap = _lev_at_distance(s_trip, mark, pol[P_LIQ_RELEASE_ATR] * atr, pol[P_MMR])
            if cap >= rs[RK_LIQ_LEV] or s_trip != side:
                rs[RK_LIQ_TRIP] = 0.0          # the tripping leverage is safe again
            else:
                state = max(state, REDUCING)
                reasons |= R_LIQ_DISTANCE
                if side > 0.0:
                    lev_l = min(lev_l, cap)
                else:
                    lev_s = min(lev_s, cap)
    # an entry the rule would trip at once enters tripped: the target opening, flipping or
    # growing the position to a leverage whose liquidation would sit inside the distance at
    # which it trips (for a new position its own distance is the opening one, so only the
    # floor applies) is capped at the release leverage now, with the target's leverage as
    # the tripping one, instead of being bought at full size and cut on the next bar
    tgt = acct[A_TARGET_NOTIONAL]
    if has_atr and pol[P_MIN_LIQ_ATR] > 0.0 and rs[RK_LIQ_TRIP] == 0.0 and equity > 0.0 \
            and tgt == tgt and tgt != 0.0:
        t_side = 1.0 if tgt > 0.0 else -1.0
        grow = t_side == side
        if not grow or abs(tgt) > abs(notional):
            d_trip = _liq_trip_atr(pol, abs(rs[RK_LIQ_REF]) if grow else 0.0)
            t_lev = abs(tgt) / equity
            if t_lev > _lev_at_distance(t_side, mark, d_trip * atr, pol[P_MMR]):
                cap = _lev_at_distance(t_side, mark, pol[P_LIQ_RELEASE_ATR] * atr, pol[P_MMR])
                if cap < t_lev:
                    rs[RK_LIQ_TRIP] = t_side
                    rs[RK_LIQ_LEV] = t_lev
                    reasons |= R_LIQ_DISTANCE
                    if grow and lev_now > cap:
                        state = max(state, REDUCING)
                    if t_side > 0.0:
                        lev_l = min(lev_l, cap)
                    else:
                        lev_s = min(lev_s, cap)
    if sig[S_STALE_BARS] >= pol[P_STALE_BARS] or bad_mark:
        state = max(state, REDUCING)
        reasons |= R_STALE
    if not rs[RK_PEAK] > 0.0:
        rs[RK_PEAK] = acct[A_PEAK_EQUITY] if acct[A_PEAK_EQUITY] > 0.0 else equity
    if equity > rs[RK_PEAK]:
        rs[RK_PEAK] = equity
    if rs[RK_DD_SINCE] >= 0.0 and ts - rs[RK_DD_SINCE] >= pol[P_DD_COOLDOWN_H] * 3_600_000.0:
        rs[RK_DD_SINCE] = -1.0               # cool-down over: the loss becomes the new peak
        rs[RK_PEAK] = equity
    dd = 1.0 - equity / rs[RK_PEAK] if rs[RK_PEAK] > 0.0 else 0.0
    day = 1.0 - equity / acct[A_DAY_START_EQUITY] if acct[A_DAY_START_EQUITY] > 0.0 else 0.0
    if dd != dd:
        dd = 0.0
    if day != day:
        day = 0.0
    if day >= pol[P_DAILY_LOSS]:
        state = HALTED
        reasons |= R_DAILY_LOSS
    if dd >= pol[P_MAX_DRAWDOWN] and rs[RK_DD_SINCE] < 0.0:
        rs[RK_DD_SINCE] = ts
    if rs[RK_DD_SINCE] >= 0.0:
        state = HALTED
        reasons |= R_DRAWDOWN
    if state == HALTED:
        lev_l = 0.0
        lev_s = 0.0
        hedge = 0.0
    out[D_STATE] = state
    out[D_MAX_LEV_LONG] = lev_l
    out[D_MAX_LEV_SHORT] = lev_s
    cap_n = pol[P_MAX_POS_NOTIONAL]
    out[D_MAX_NOTIONAL_LONG] = min(lev_l * max(equity, 0.0), cap_n)
    out[D_MAX_NOTIONAL_SHORT] = min(lev_s * max(equity, 0.0), cap_n)
    out[D_HEDGE_NOTIONAL] = hedge
    out[D_BLOCK_LONG] = block_l
    out[D_BLOCK_SHORT] = block_s
    out[D_REASONS] = reasons
    out[D_CROWD] = crowd
    out[D_CLUSTER_PRICE] = cluster_price
    out[D_CLUSTER_CAP] = cluster_cap
    out[D_LIQ_DISTANCE_ATR] = liq_atr
    out[D_DRAWDOWN] = dd
    out[D_DAY_LOSS] = day
    out[D_CASCADE_RUN] = sig[S_CASCADE_RUN]


@njit(cache=True)
def allowed_target(target: float, current: float, dec: np.ndarray, pol: np.ndarray) -> float:
    """Clip a strategy's target notional (signed quote) by a decision.

    HALTED: flat. Caps per side. Blocked sides cannot grow. REDUCING: exposure can only
    shrink toward zero. Finally the order (target - current) is clipped to the max order
    notional, so a large move is split over several bars.
    """
    state = dec[D_STATE]
    t = target
    if state == HALTED:
        t = 0.0
    if t > dec[D_MAX_NOTIONAL_LONG]:
        t = dec[D_MAX_NOTIONAL_LONG]
    if t < -dec[D_MAX_NOTIONAL_SHORT]:
        t = -dec[D_MAX_NOTIONAL_SHORT]
    if dec[D_BLOCK_LONG] > 0.0 and t > 0.0 and t > current:
        t = max(current, 0.0)
    if dec[D_BLOCK_SHORT] > 0.0 and t < 0.0 and t < current:
        t = min(current, 0.0)
    if state == REDUCING:
        t = min(max(t, 0.0), current) if current >= 0.0 else max(min(t, 0.0), current)
    order = t - current
    cap = pol[P_MAX_ORDER_NOTIONAL]
    if order > cap:
        t = current + cap
    elif order < -cap:
        t = current - cap
    return t
