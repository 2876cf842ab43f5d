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
   detector fires (or the look-back expires) - buying a falling knife waits for exhaustion;
4. hedge: crowding of the position's side at `hedge_threshold` or more hedges
   `hedge_fraction` of it on the other side; the hedge unwinds below `hedge_unwind`;
5. hard limits: max leverage, max order and position notional, daily loss and max
   drawdown (HALTED), stale data for `stale_bars` (REDUCING), our own liquidation price
   closer than `min_liq_atr` ATRs (REDUCING, leverage halved).
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
 S_CLUSTER_ABOVE_SHARE, S_STALE_BARS) = range(13)
N_SIG = 13
# --- account view ---------------------------------------------------------------------------
(A_EQUITY, A_NOTIONAL, A_LIQ_PRICE, A_DAY_START_EQUITY, A_PEAK_EQUITY, A_HEDGE_NOTIONAL) = \
    range(6)
N_ACCT_VIEW = 6
# --- policy -----------------------------------------------------------------------------------
(P_MAX_LEV_HARD, P_MAX_ORDER_NOTIONAL, P_MAX_POS_NOTIONAL, P_DAILY_LOSS, P_MAX_DRAWDOWN,
 P_STALE_BARS, P_MIN_LIQ_ATR, P_LEV_BASE, P_LEV_MIN, P_CROWD_START, P_CLUSTER_K_ATR,
 P_CLUSTER_BUFFER, P_CLUSTER_MIN_SHARE, P_MMR, P_CASCADE_ON, P_CASCADE_MAX_LEV, P_HEDGE_ON,
 P_HEDGE_THRESHOLD, P_HEDGE_FRACTION, P_HEDGE_UNWIND) = range(20)
N_POLICY = 20
# --- decision -------------------------------------------------------------------------------
(D_STATE, D_MAX_LEV_LONG, D_MAX_LEV_SHORT, D_MAX_NOTIONAL_LONG, D_MAX_NOTIONAL_SHORT,
 D_HEDGE_NOTIONAL, D_BLOCK_LONG, D_BLOCK_SHORT, D_REASONS, D_CROWD, D_CLUSTER_PRICE,
 D_CLUSTER_CAP, D_LIQ_DISTANCE_ATR, D_DRAWDOWN, D_DAY_LOSS) = range(15)
N_DECISION = 15

ACTIVE, REDUCING, HALTED = 0, 1, 2
STATE_NAMES = ("ACTIVE", "REDUCING", "HALTED")

R_CROWDING = 1            # leverage schedule lowers the cap of the position's side
R_CLUSTER = 2             # cluster guard caps the position's side
R_CASCADE = 4             # cascade against the position: reducing
R_CASCADE_BLOCK = 8       # entries on the liquidated side blocked until exhaustion
R_HEDGE = 16              # hedge on
R_HARD_LEVERAGE = 32      # hard max leverage binds
R_LIQ_DISTANCE = 64       # own liquidation price within min_liq_atr ATRs
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
def evaluate(sig: np.ndarray, acct: np.ndarray, pol: np.ndarray, out: np.ndarray) -> None:
    """The decision for one symbol at one bar close (module docstring). Writes `out`."""
    reasons = 0
    state = ACTIVE
    mark = sig[S_MARK]
    bad_mark = not mark > 0.0              # NaN or non-positive: treated as stale data
    if bad_mark:
        mark = 1.0
    atr = sig[S_ATR] if sig[S_ATR] > 0.0 else mark * 1e-3
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
    if pol[P_CASCADE_ON] > 0.0:
        if sig[S_CASCADE_BLOCK] > 0.0:
            block_l = 1.0
            reasons |= R_CASCADE_BLOCK
        elif sig[S_CASCADE_BLOCK] < 0.0:
            block_s = 1.0
            reasons |= R_CASCADE_BLOCK
        if sig[S_CASCADE] * side > 0.0:       # +1 long cascade vs long position
            state = REDUCING
            reasons |= R_CASCADE
            if side > 0.0:
                lev_l = min(lev_l, pol[P_CASCADE_MAX_LEV])
            else:
                lev_s = min(lev_s, pol[P_CASCADE_MAX_LEV])
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
    if side != 0.0 and acct[A_LIQ_PRICE] == acct[A_LIQ_PRICE] and acct[A_LIQ_PRICE] > 0.0:
        liq_atr = abs(mark - acct[A_LIQ_PRICE]) / atr
        if liq_atr < pol[P_MIN_LIQ_ATR]:
            state = max(state, REDUCING)
            reasons |= R_LIQ_DISTANCE
            if side > 0.0:
                lev_l = min(lev_l, 0.5 * lev_now)
            else:
                lev_s = min(lev_s, 0.5 * lev_now)
    if sig[S_STALE_BARS] >= pol[P_STALE_BARS] or bad_mark:
        state = max(state, REDUCING)
        reasons |= R_STALE
    dd = 1.0 - equity / acct[A_PEAK_EQUITY] if acct[A_PEAK_EQUITY] > 0.0 else 0.0
    day = 1.0 - equity / acct[A_DAY_START_EQUITY] if acct[A_DAY_START_EQUITY] > 0.0 else 0.0
    if dd != dd:
        dd = 0.0
    if day != day:
        day = 0.0
    if day >= pol[P_DAILY_LOSS]:
        state = HALTED
        reasons |= R_DAILY_LOSS
    if dd >= pol[P_MAX_DRAWDOWN]:
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
