"""Liquidation and bankruptcy prices (numba kernels).

Binance USD-M, one-way mode (Binance Support FAQ "How to Calculate Liquidation Price of
USDⓈ-M Contracts"):

    LP = (WB - TMM1 + UPNL1 + cumB - Side1 * Position1 * EP1)
         / (Position1 * MMR_B - Side1 * Position1)

WB: wallet balance (isolated: the position's isolated margin); TMM1 and UPNL1: maintenance
margin and unrealised PnL of all OTHER positions in cross mode (0 in isolated); cumB:
maintenance amount of the bracket; Side1: +1 long, -1 short; Position1: absolute size
(base qty); EP1: entry price; MMR_B: maintenance margin rate of the bracket. The bracket is
the one the POSITION NOTIONAL falls in. Units: prices quote/base, qty base, WB/TMM/UPNL/cum
quote.
"""

from __future__ import annotations

from numba import njit


@njit(cache=True)
def binance_liquidation_price(
    side: float, qty: float, entry: float, wallet: float, mmr: float, cum: float,
    other_maint: float = 0.0, other_upnl: float = 0.0,
) -> float:
    """Binance USD-M liquidation price (formula in the module docstring).

    Returns 0.0 for a long that cannot be liquidated (numerator <= 0 means the wallet covers
    the whole notional) and +inf for a short in the same situation never happens (a short can
    always be liquidated by a high enough price).
    """
    num = wallet - other_maint + other_upnl + cum - side * qty * entry
    den = qty * mmr - side * qty
    price = num / den
    if price < 0.0:
        return 0.0
    return price
