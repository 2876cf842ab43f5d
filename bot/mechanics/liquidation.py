"""Liquidation and bankruptcy prices, maintenance margin and margin ratio (numba kernels).

Units: prices quote/base; qty base (absolute size); wallet, margins, PnL, cum in quote;
rates are fractions. `side` is +1 long, -1 short. All formulas are for one-way mode.

Binance USD-M (FAQ "How to Calculate Liquidation Price of USDⓈ-M Futures Contracts"):

    LP = (WB - TMM1 + UPNL1 + cumB - Side1 x Position1 x EP1)
         / (Position1 x MMR_B - Side1 x Position1)

WB is the wallet balance (cross) or the position's isolated wallet balance (isolated);
TMM1 and UPNL1 are the maintenance margin and unrealised PnL of all OTHER positions
(0 in isolated); cumB and MMR_B are the maintenance amount and rate of the bracket. The FAQ
adds: when the position's notional at the liquidation price falls in a different bracket
than at entry, use that bracket's rate and amount and recompute. `binance_liquidation_
price_bracketed` does exactly that, so the bracket is chosen by position notional at the
price where liquidation happens.

Bybit USDT perpetual, isolated (Help Center "Liquidation Price (USDT Contract)"):
    LP(long)  = entry - (IM - MM) / qty - extra_margin / qty
    LP(short) = entry + (IM - MM) / qty + extra_margin / qty
    IM = qty x entry / leverage,  MM = qty x entry x MMR - MM deduction

OKX USDT-margined swap, isolated (OKX Help "isolated margin mode", est. liquidation price):
    LP(long)  = (margin - qty x entry) / (qty x (MMR + taker_fee - 1))
    LP(short) = (margin + qty x entry) / (qty x (MMR + taker_fee + 1))
(qty = contracts x ctVal, in base).

Bankruptcy price: where the position's margin (isolated) or the account's equity (cross)
reaches zero: BP = EP - Side x (WB + UPNL1) / Position.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from bot.mechanics.brackets import maintenance_margin, tier_of


@njit(cache=True)
def binance_liquidation_price(
    side: float, qty: float, entry: float, wallet: float, mmr: float, cum: float,
    other_maint: float = 0.0, other_upnl: float = 0.0,
) -> float:
    """Binance USD-M liquidation price for one bracket (formula in the module docstring).

    Returns 0.0 when the formula gives a negative price: a long whose margin covers the whole
    notional cannot be liquidated (Binance shows "--").
    """
    num = wallet - other_maint + other_upnl + cum - side * qty * entry
    den = qty * mmr - side * qty
    price = num / den
    if price < 0.0:
        return 0.0
    return price


@njit(cache=True)
def binance_liquidation_price_bracketed(
    side: float, qty: float, entry: float, wallet: float, floor: np.ndarray, cap: np.ndarray,
    mmr: np.ndarray, cum: np.ndarray, other_maint: float = 0.0, other_upnl: float = 0.0,
) -> tuple[float, int]:
    """Liquidation price with the bracket of the notional AT the liquidation price.

    Tries each tier and returns the first whose own liquidation price puts the notional
    inside that tier (floor < qty x LP <= cap); falls back to the tier of the entry notional.
    Returns (price, tier index).
    """
    n = len(cap)
    for i in range(n):
        p = binance_liquidation_price(side, qty, entry, wallet, mmr[i], cum[i], other_maint,
                                      other_upnl)
        notional = qty * p
        if (i == 0 or notional > floor[i]) and (notional <= cap[i] or i == n - 1):
            return p, i
    j = tier_of(qty * entry, floor, cap)
    return binance_liquidation_price(side, qty, entry, wallet, mmr[j], cum[j], other_maint,
                                     other_upnl), j


@njit(cache=True)
def leverage_for_liquidation_at(side: float, entry: float, liq_price: float, mmr: float) -> float:
    """The isolated leverage whose Binance liquidation price (single bracket, cum = 0) is
    `liq_price`: the formula above with WB = qty x entry / L solved for L,
        1 / L = side + liq_price x (mmr - side) / entry.
    Returns +inf when no leverage puts the liquidation that far (1/L <= 0)."""
    inv = side + liq_price * (mmr - side) / entry
    if inv <= 0.0:
        return np.inf
    return 1.0 / inv


@njit(cache=True)
def bankruptcy_price(side: float, qty: float, entry: float, wallet: float,
                     other_upnl: float = 0.0) -> float:
    """Price at which margin (isolated: wallet = isolated margin) or equity (cross) is zero."""
    p = entry - side * (wallet + other_upnl) / qty
    if p < 0.0:
        return 0.0
    return p


@njit(cache=True)
def margin_ratio(maint_margin: float, margin_balance: float) -> float:
    """Binance margin ratio = maintenance margin / margin balance; liquidation at >= 1."""
    if margin_balance <= 0.0:
        return np.inf
    return maint_margin / margin_balance


@njit(cache=True)
def bybit_liquidation_price_isolated(side: float, qty: float, entry: float, leverage: float,
                                     mmr: float, mm_deduction: float = 0.0,
                                     extra_margin: float = 0.0) -> float:
    """Bybit USDT perpetual isolated liquidation price (module docstring)."""
    im = qty * entry / leverage
    mm = qty * entry * mmr - mm_deduction
    p = entry - side * ((im - mm) / qty + extra_margin / qty)
    if p < 0.0:
        return 0.0
    return p


@njit(cache=True)
def okx_liquidation_price_isolated(side: float, qty: float, entry: float, margin: float,
                                   mmr: float, taker_fee: float) -> float:
    """OKX USDT-margined swap isolated liquidation price (module docstring)."""
    p = (margin - side * qty * entry) / (qty * (mmr + taker_fee - side))
    if p < 0.0:
        return 0.0
    return p


@njit(cache=True)
def batch_isolated_liquidation_prices(side: np.ndarray, qty: np.ndarray, entry: np.ndarray,
                                      leverage: np.ndarray, floor: np.ndarray, cap: np.ndarray,
                                      mmr: np.ndarray, cum: np.ndarray) -> np.ndarray:
    """Binance isolated liquidation prices of many positions opened at `leverage`
    (isolated margin = notional / leverage), bracketed. Used by the heatmap and benchmarks."""
    out = np.empty(len(qty))
    for k in range(len(qty)):
        wallet = qty[k] * entry[k] / leverage[k]
        out[k] = binance_liquidation_price_bracketed(side[k], qty[k], entry[k], wallet, floor, cap,
                                                     mmr, cum)[0]
    return out


@njit(cache=True)
def position_maintenance(qty: float, mark: float, floor: np.ndarray, cap: np.ndarray,
                         mmr: np.ndarray, cum: np.ndarray) -> float:
    """Maintenance margin of a position marked at `mark` (bracket of the marked notional)."""
    notional = abs(qty) * mark
    i = tier_of(notional, floor, cap)
    return maintenance_margin(notional, mmr[i], cum[i])
