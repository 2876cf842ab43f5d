"""Account state as arrays, and the numba operations on it.

State (all float64, owned by the caller; no objects, so the backtester's numba loop, the
paper broker and the emulator share it):
- `acct[A_*]`: wallet balance (quote, includes isolated margins), cumulative realised PnL,
  fees paid, funding paid (positive = paid), number of liquidations suffered;
- `pos[i, P_*]` for symbol i: signed qty (base, + long), average entry (quote/base),
  leverage, margin mode (0 cross, 1 isolated), isolated margin (quote), per-position
  realised PnL, fees and funding.
- brackets per symbol as 2-D arrays `floor/cap/mmr/cum[i, tier]`, padded with cap = inf.

Invariant (tested): wallet - wallet_0 = realised PnL - fees - funding, through any sequence
of fills, funding settlements and liquidations.

Choices, stated once:
- One-way mode: a fill that crosses zero closes the position and opens the rest at the
  fill price (a flip). Average entry is the quantity-weighted mean of opening fills;
  reducing fills realise PnL against it and leave it unchanged.
- Isolated margin = notional / leverage at each opening fill; reducing fills release it in
  proportion; funding is paid out of it (as on Binance), which moves the liquidation price.
- Liquidation triggers when the MARK price crosses the liquidation price; the position is
  closed AT the liquidation price. Isolated: the clearance fee takes whatever margin is
  left, so the position always costs exactly its margin and the wallet never goes
  negative. Cross: fee = liquidation rate x notional, capped at the equity left; the other
  cross positions are then re-evaluated against the new wallet by the next check.
- Cross liquidation price of position i uses the cross wallet (wallet minus isolated
  margins) and the maintenance margin and unrealised PnL of the other cross positions at
  their current marks (Binance's TMM1 and UPNL1).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from bot.mechanics.brackets import tier_of
from bot.mechanics.fees import trade_fee
from bot.mechanics.funding import funding_payment
from bot.mechanics.liquidation import (
    binance_liquidation_price_bracketed,
    position_maintenance,
)

A_WALLET, A_REALIZED, A_FEES, A_FUNDING, A_LIQUIDATIONS = 0, 1, 2, 3, 4
N_ACCT = 5
P_QTY, P_ENTRY, P_LEVERAGE, P_ISOLATED, P_MARGIN, P_REALIZED, P_FEES, P_FUNDING = range(8)
N_POS = 8

CROSS, ISOLATED = 0.0, 1.0
# reason codes of `initial_margin_check`
OK = 0
REJECT_ZERO_QTY = 1
REJECT_BRACKET_LEVERAGE = 2   # the new notional's bracket allows less than the leverage set
REJECT_INSUFFICIENT_MARGIN = 3


def new_account(wallet: float, n_symbols: int, leverage: float | list[float] = 10.0,
                isolated: bool | list[bool] = False) -> tuple[np.ndarray, np.ndarray]:
    """Fresh (acct, pos) arrays: `wallet` quote, flat positions."""
    acct = np.zeros(N_ACCT)
    acct[A_WALLET] = wallet
    pos = np.zeros((n_symbols, N_POS))
    pos[:, P_LEVERAGE] = leverage
    pos[:, P_ISOLATED] = np.where(np.asarray(isolated, dtype=bool), ISOLATED, CROSS)
    return acct, pos


def stack_brackets(brackets: list) -> tuple[np.ndarray, ...]:  # list[Brackets]
    """Per-symbol bracket tables as padded 2-D arrays (floor, cap, mmr, cum, max_leverage)."""
    width = max(len(b) for b in brackets)
    out = [np.zeros((len(brackets), width)) for _ in range(5)]
    for i, b in enumerate(brackets):
        n = len(b)
        for k, col in enumerate((b.floor, b.cap, b.mmr, b.cum, b.max_leverage)):
            out[k][i, :n] = col
            out[k][i, n:] = col[-1]
        out[1][i, n - 1:] = np.inf   # beyond the table: treated as the last tier
    return tuple(out)


@njit(cache=True)
def apply_fill(acct: np.ndarray, pos: np.ndarray, i: int, dq: float, price: float,
               fee_rate: float) -> float:
    """Fill `dq` base (signed: + buys) of symbol i at `price`; returns realised PnL (quote).

    Handles open, add, reduce, close and flip; charges fee_rate x |dq| x price.
    """
    q = pos[i, P_QTY]
    fee = trade_fee(dq, price, fee_rate)
    realized = 0.0
    if q == 0.0 or q * dq > 0.0:                        # open or add
        new_q = q + dq
        pos[i, P_ENTRY] = (q * pos[i, P_ENTRY] + dq * price) / new_q
        pos[i, P_QTY] = new_q
        if pos[i, P_ISOLATED] == ISOLATED:
            pos[i, P_MARGIN] += abs(dq) * price / pos[i, P_LEVERAGE]
    else:                                               # reduce, close or flip
        closed = min(abs(dq), abs(q))
        side = 1.0 if q > 0.0 else -1.0
        realized = side * closed * (price - pos[i, P_ENTRY])
        if pos[i, P_ISOLATED] == ISOLATED:
            pos[i, P_MARGIN] -= pos[i, P_MARGIN] * closed / abs(q)
        rest = abs(dq) - abs(q)
        if rest > 0.0:                                  # flip: open the remainder
            pos[i, P_QTY] = -side * rest
            pos[i, P_ENTRY] = price
            pos[i, P_MARGIN] = (rest * price / pos[i, P_LEVERAGE]
                                if pos[i, P_ISOLATED] == ISOLATED else 0.0)
        else:
            pos[i, P_QTY] = q + dq
            if pos[i, P_QTY] == 0.0 or abs(pos[i, P_QTY]) < 1e-12 * abs(q):
                pos[i, P_QTY] = 0.0
                pos[i, P_ENTRY] = 0.0
                pos[i, P_MARGIN] = 0.0
    acct[A_WALLET] += realized - fee
    acct[A_REALIZED] += realized
    acct[A_FEES] += fee
    pos[i, P_REALIZED] += realized
    pos[i, P_FEES] += fee
    return realized


@njit(cache=True)
def apply_funding(acct: np.ndarray, pos: np.ndarray, i: int, mark: float, rate: float) -> float:
    """Settle funding for symbol i; returns the amount paid (negative = received)."""
    pay = funding_payment(pos[i, P_QTY], mark, rate)
    acct[A_WALLET] -= pay
    acct[A_FUNDING] += pay
    pos[i, P_FUNDING] += pay
    if pos[i, P_ISOLATED] == ISOLATED and pos[i, P_QTY] != 0.0:
        pos[i, P_MARGIN] -= pay
    return pay


@njit(cache=True)
def unrealized(pos: np.ndarray, i: int, mark: float) -> float:
    return pos[i, P_QTY] * (mark - pos[i, P_ENTRY])


@njit(cache=True)
def equity(acct: np.ndarray, pos: np.ndarray, marks: np.ndarray) -> float:
    """Wallet + unrealised PnL of every position at `marks` (quote)."""
    e = acct[A_WALLET]
    for i in range(pos.shape[0]):
        if pos[i, P_QTY] != 0.0:
            e += unrealized(pos, i, marks[i])
    return e


@njit(cache=True)
def leverage(qty: float, mark: float, equity_now: float) -> float:
    """Signed leverage of a position: its notional at `mark` over the account's equity (0
    when the equity is gone)."""
    return qty * mark / equity_now if equity_now > 0.0 else 0.0


@njit(cache=True)
def _cross_others(acct: np.ndarray, pos: np.ndarray, i: int, marks: np.ndarray,
                  floor: np.ndarray, cap: np.ndarray, mmr: np.ndarray,
                  cum: np.ndarray) -> tuple[float, float, float]:
    """(cross wallet, maintenance of other cross positions, their unrealised PnL)."""
    wallet = acct[A_WALLET]
    maint = 0.0
    upnl = 0.0
    for j in range(pos.shape[0]):
        if pos[j, P_ISOLATED] == ISOLATED:
            wallet -= pos[j, P_MARGIN]
        elif j != i and pos[j, P_QTY] != 0.0:
            maint += position_maintenance(pos[j, P_QTY], marks[j], floor[j], cap[j], mmr[j],
                                          cum[j])
            upnl += unrealized(pos, j, marks[j])
    return wallet, maint, upnl


@njit(cache=True)
def liquidation_price(acct: np.ndarray, pos: np.ndarray, i: int, marks: np.ndarray,
                      floor: np.ndarray, cap: np.ndarray, mmr: np.ndarray,
                      cum: np.ndarray) -> float:
    """Current liquidation price of symbol i (NaN when flat)."""
    q = pos[i, P_QTY]
    if q == 0.0:
        return np.nan
    side = 1.0 if q > 0.0 else -1.0
    if pos[i, P_ISOLATED] == ISOLATED:
        return binance_liquidation_price_bracketed(side, abs(q), pos[i, P_ENTRY], pos[i, P_MARGIN],
                                                   floor[i], cap[i], mmr[i], cum[i])[0]
    wallet, maint, upnl = _cross_others(acct, pos, i, marks, floor, cap, mmr, cum)
    return binance_liquidation_price_bracketed(side, abs(q), pos[i, P_ENTRY], wallet, floor[i],
                                               cap[i], mmr[i], cum[i], maint, upnl)[0]


@njit(cache=True)
def check_liquidation(acct: np.ndarray, pos: np.ndarray, i: int, mark_low: float,
                      mark_high: float, marks: np.ndarray, floor: np.ndarray, cap: np.ndarray,
                      mmr: np.ndarray, cum: np.ndarray, liq_fee_rate: float) -> float:
    """Liquidate symbol i if the mark range [mark_low, mark_high] reached its liquidation
    price. Returns the price it was closed at, or NaN if nothing happened: the liquidation
    price, or the range's nearest mark when the whole range lies past it (the position was
    past it before any mark of the range traded: a funding payment, or another symbol's
    loss on a cross account, moved the liquidation price), never a price the range did not
    reach; except when that nearest mark is past bankruptcy: then the bankruptcy price (the
    insurance fund takes the position there and the rest of the loss, as on Binance)."""
    q = pos[i, P_QTY]
    if q == 0.0:
        return np.nan
    lp = liquidation_price(acct, pos, i, marks, floor, cap, mmr, cum)
    long = q > 0.0
    if (long and mark_low > lp) or ((not long) and mark_high < lp):
        return np.nan
    if lp > mark_high:
        lp = mark_high
    elif lp < mark_low:
        lp = mark_low
    side = 1.0 if long else -1.0
    realized = side * abs(q) * (lp - pos[i, P_ENTRY])
    # closed past bankruptcy (only at a nearest mark above): the insurance fund takes the
    # rest, the loss stops at the margin (isolated) or at the account's equity (cross), and
    # the close is reported at the bankruptcy price, where that loss is the price's PnL
    # (Binance's convention: the trade's price, fee and PnL then agree in every ledger that
    # books them as a fill, the live broker's included)
    capped = False
    if pos[i, P_ISOLATED] == ISOLATED:
        fee = pos[i, P_MARGIN] + realized          # what margin is left goes with it
        if fee < 0.0:
            realized = -pos[i, P_MARGIN]
            fee = 0.0
            capped = True
    else:
        wallet, maint, upnl = _cross_others(acct, pos, i, marks, floor, cap, mmr, cum)
        left = wallet + upnl + realized
        fee = liq_fee_rate * abs(q) * lp
        if fee > left:
            fee = left if left > 0.0 else 0.0
        if left < 0.0:
            realized -= left
            capped = True
    if capped:
        lp = pos[i, P_ENTRY] + realized / (side * abs(q))
    acct[A_WALLET] += realized - fee
    acct[A_REALIZED] += realized
    acct[A_FEES] += fee
    acct[A_LIQUIDATIONS] += 1.0
    pos[i, P_REALIZED] += realized
    pos[i, P_FEES] += fee
    pos[i, P_QTY] = 0.0
    pos[i, P_ENTRY] = 0.0
    pos[i, P_MARGIN] = 0.0
    return lp


@njit(cache=True)
def initial_margin_check(acct: np.ndarray, pos: np.ndarray, i: int, dq: float, price: float,
                         marks: np.ndarray, fee_rate: float, floor: np.ndarray, cap: np.ndarray,
                         mmr: np.ndarray, cum: np.ndarray, max_lev: np.ndarray) -> int:
    """Would an order of `dq` base at `price` be accepted? Returns a reason code (OK = 0).

    Reducing orders always pass. Increasing ones need the bracket of the new notional to
    allow the position's leverage, and available margin (cross wallet + cross unrealised
    PnL - cross initial margins at mark) to cover notional / leverage + fee.
    """
    if dq == 0.0 or price <= 0.0:
        return REJECT_ZERO_QTY
    q = pos[i, P_QTY]
    new_q = q + dq
    if abs(new_q) <= abs(q) and q * new_q >= 0.0:
        return OK
    k = tier_of(abs(new_q) * price, floor[i], cap[i])
    lev = pos[i, P_LEVERAGE]
    if lev > max_lev[i, k] + 1e-12:
        return REJECT_BRACKET_LEVERAGE
    available = acct[A_WALLET]
    for j in range(pos.shape[0]):
        if pos[j, P_QTY] == 0.0:
            continue
        if pos[j, P_ISOLATED] == ISOLATED:
            available -= pos[j, P_MARGIN]
        else:
            available += unrealized(pos, j, marks[j])
            if j != i:
                available -= abs(pos[j, P_QTY]) * marks[j] / pos[j, P_LEVERAGE]
    # margin for the position after the order (the part of it that grows exposure)
    added = abs(new_q) - (abs(q) if q * new_q > 0.0 else 0.0)
    if pos[i, P_ISOLATED] != ISOLATED:
        kept = abs(q) if q * new_q > 0.0 else 0.0
        available -= kept * marks[i] / lev
    required = added * price / lev + trade_fee(dq, price, fee_rate)
    if required > available + 1e-9:
        return REJECT_INSUFFICIENT_MARGIN
    return OK


@njit(cache=True)
def account_step(acct: np.ndarray, pos: np.ndarray, i: int, dq: float, price: float,
                 fee_rate: float, mark_low: float, mark_high: float, marks: np.ndarray,
                 floor: np.ndarray, cap: np.ndarray, mmr: np.ndarray, cum: np.ndarray,
                 liq_fee_rate: float) -> float:
    """One backtest step for symbol i: fill (if dq != 0), mark, liquidation check.
    Returns equity at `marks` after the step."""
    if dq != 0.0:
        apply_fill(acct, pos, i, dq, price, fee_rate)
    check_liquidation(acct, pos, i, mark_low, mark_high, marks, floor, cap, mmr, cum,
                      liq_fee_rate)
    return equity(acct, pos, marks)
