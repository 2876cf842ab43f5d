"""Per-venue differences of the live broker, as data (keyed by ccxt id).

The LiveBroker speaks ccxt's unified API; what differs between venues is which unified
symbol a dataset symbol is, how the client order id and reduce-only flags are passed, which
client ids the venue accepts, how its forced liquidations are named, how its funding
payments are listed, how long a trade-history window may be, and which error answers say a
request was not executed (the others leave an order's fate unknown). Binance USD-M is the
one venue built and tested (against the emulator); a row for another venue must be added
and tested before `live` accepts it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.errors import ConfigError


@dataclass(frozen=True)
class Venue:
    """How one ccxt exchange class is driven."""

    ccxt_id: str                     # ccxt class (async / pro)
    exchange: str                    # `exchange.name` in the config
    quote: str                       # settlement asset of the linear contracts
    client_id_param: str             # the venue's own order parameter for the client id
    client_id_lookup_param: str      # fetch_order parameter naming an order by client id
    client_id_pattern: str           # what client ids the venue accepts
    liquidation_client_prefix: str   # client id of the venue's forced-liquidation orders
    funding_income_type: str         # fetch_funding_history / income rows of funding
    margin_modes: tuple[str, str]    # ccxt set_margin_mode values for (cross, isolated)
    trades_from_id_param: str        # REST trade history "from this trade id" parameter
    settlement_every_ms: int         # funding schedule granularity polled for payments
    trades_window_ms: int            # longest startTime..endTime span of the trade history
    clock_tolerance_ms: int          # how far ahead of the venue a request timestamp may be
    unprocessed_answers: tuple[str, ...]   # error texts saying the request was NOT processed
    refused_answers: tuple[str, ...] = ()  # error texts refusing an ORDER: final, not placed

    def unified(self, symbol: str) -> str:
        """Dataset symbol (BTCUSDT) -> ccxt unified linear perpetual (BTC/USDT:USDT)."""
        if not symbol.endswith(self.quote):
            raise ConfigError("exchange.symbols", [f"{symbol}: expected a {self.quote}-margined "
                                                   f"symbol like BTC{self.quote}"])
        base = symbol[: -len(self.quote)]
        return f"{base}/{self.quote}:{self.quote}"

    def valid_client_id(self, cid: str) -> bool:
        return re.fullmatch(self.client_id_pattern, cid) is not None


VENUES: dict[str, Venue] = {
    "binanceusdm": Venue(
        ccxt_id="binanceusdm", exchange="binance", quote="USDT",
        client_id_param="newClientOrderId", client_id_lookup_param="origClientOrderId",
        client_id_pattern=r"^[.A-Z:/a-z0-9_-]{1,36}$",      # Binance's documented rule
        liquidation_client_prefix="autoclose-", funding_income_type="FUNDING_FEE",
        margin_modes=("cross", "isolated"), trades_from_id_param="fromId",
        settlement_every_ms=3_600_000,                     # 8h, 4h or 1h: poll each hour
        trades_window_ms=7 * 86_400_000,                   # userTrades: at most 7 days
        clock_tolerance_ms=1_000,                          # timestamp < serverTime + 1000
        # Binance's general info: a 503 "Service Unavailable." or "Internal error; unable to
        # process your request" and -1008 "Server is currently overloaded" are failures (the
        # request was not executed); "Unknown error, please check your request" is NOT: its
        # execution status is unknown
        unprocessed_answers=("Service Unavailable", "Internal error; unable to process",
                             "Server is currently overloaded"),
        # -2027 / -2028 (ccxt: OperationRejected, an ExchangeError it does not call final):
        # the position limit at the account's leverage setting, or its margin, refuses the
        # order; resending the same order gets the same answer
        refused_answers=("Exceeded the maximum allowable position at current leverage",
                         "Leverage is smaller than permitted")),
}

#: config `exchange.name` -> ccxt id of its USD-margined perpetuals
BY_EXCHANGE = {v.exchange: k for k, v in VENUES.items()}


def venue_for(exchange: str) -> Venue:
    """The row of `exchange.name`; a ConfigError names the venues that are built."""
    cid = BY_EXCHANGE.get(exchange)
    if cid is None:
        raise ConfigError("exchange.name", [f"live trading on {exchange!r} is not built; "
                                            f"built: {sorted(BY_EXCHANGE)}"])
    return VENUES[cid]
