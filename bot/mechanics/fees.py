"""Trading and liquidation fees, per venue, in one place.

Rates are fractions of quote notional. Defaults are each venue's base (VIP 0, no discount)
USDT-perpetual schedule; override them in config when your tier differs.
- Binance USD-M: maker 0.02%, taker 0.05%; liquidation clearance fee 1.25% of the notional
  for BTCUSDT (`liquidationFee` "0.012500" in /fapi/v1/exchangeInfo).
- Bybit USDT perpetual: maker 0.02%, taker 0.055%; no separate clearance fee: the position
  is taken over at the bankruptcy price, so the remaining margin is lost.
- OKX USDT swap: maker 0.02%, taker 0.05%; same take-over at bankruptcy.
How the account charges a liquidation (see `bot.mechanics.account.check_liquidation`):
isolated positions always lose their whole margin (the position closes at the liquidation
price and the clearance fee takes what margin is left); cross positions pay
`liquidation_fee x notional`, capped at the equity left.
"""

from __future__ import annotations

from dataclasses import dataclass

from numba import njit


@dataclass(frozen=True)
class VenueFees:
    maker: float
    taker: float
    liquidation: float


VENUES: dict[str, VenueFees] = {
    "binance": VenueFees(maker=0.0002, taker=0.0005, liquidation=0.0125),
    "bybit": VenueFees(maker=0.0002, taker=0.00055, liquidation=0.0),
    "okx": VenueFees(maker=0.0002, taker=0.0005, liquidation=0.0),
}


def venue_fees(exchange: str) -> VenueFees:
    try:
        return VENUES[exchange]
    except KeyError:
        raise ValueError(f"unknown exchange {exchange!r}; expected one of {list(VENUES)}") from None


@njit(cache=True)
def trade_fee(qty: float, price: float, rate: float) -> float:
    """Fee in quote for |qty| base at `price`."""
    return abs(qty) * price * rate
