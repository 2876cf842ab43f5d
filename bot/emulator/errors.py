"""Binance USD-M error bodies `{"code": -NNNN, "msg": "..."}` with the HTTP status Binance
uses for them. Codes and messages follow Binance's published error-code list; the HTTP
status is 400 for request errors, 401 for API-key errors, 404 for unknown routes, 429 / 418
for rate limits, 503 for an unavailable service."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error answer: HTTP `status`, Binance `code` and `msg`, optional extra headers."""

    def __init__(self, status: int, code: int, msg: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{code} {msg}")
        self.status, self.code, self.msg = status, code, msg
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "msg": self.msg}


def unknown(msg: str = "An unknown error occured while processing the request.") -> ApiError:
    return ApiError(400, -1000, msg)


def internal() -> ApiError:
    return ApiError(503, -1001, "Internal error; unable to process your request. Please try "
                                "again.")


def mandatory(name: str) -> ApiError:
    return ApiError(400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, "
                                "or malformed.")


def bad_param(name: str) -> ApiError:
    return ApiError(400, -1100, f"Illegal characters found in parameter '{name}'; legal range "
                                "is '^[0-9]{1,20}$'.")


def bad_symbol() -> ApiError:
    return ApiError(400, -1121, "Invalid symbol.")


def timestamp_outside() -> ApiError:
    return ApiError(400, -1021, "Timestamp for this request is outside of the recvWindow.")


def bad_signature() -> ApiError:
    return ApiError(400, -1022, "Signature for this request is not valid.")


def key_format() -> ApiError:
    return ApiError(401, -2014, "API-key format invalid.")


def bad_key() -> ApiError:
    return ApiError(401, -2015, "Invalid API-key, IP, or permissions for action.")


def no_order() -> ApiError:
    return ApiError(400, -2013, "Order does not exist.")


def unknown_order_cancel() -> ApiError:
    return ApiError(400, -2011, "Unknown order sent.")


def insufficient_margin() -> ApiError:
    return ApiError(400, -2019, "Margin is insufficient.")


def reduce_only_rejected() -> ApiError:
    return ApiError(400, -2022, "ReduceOnly Order is rejected.")


def over_max_position() -> ApiError:
    return ApiError(400, -2027, "Exceeded the maximum allowable position at current leverage.")


def precision() -> ApiError:
    return ApiError(400, -1111, "Precision is over the maximum defined for this asset.")


def qty_above_max() -> ApiError:
    return ApiError(400, -4005, "Quantity greater than max quantity.")


def qty_not_positive() -> ApiError:
    return ApiError(400, -4003, "Quantity less than zero.")


def bad_leverage(lev: Any) -> ApiError:
    return ApiError(400, -4028, f"Leverage {lev} is not valid")


def margin_type_unchanged() -> ApiError:
    return ApiError(400, -4046, "No need to change margin type.")


def margin_type_with_position() -> ApiError:
    return ApiError(400, -4048, "Margin type cannot be changed if there exists position.")


def position_side_unchanged() -> ApiError:
    return ApiError(400, -4059, "No need to change position side.")


def duplicate_client_id() -> ApiError:
    return ApiError(400, -4116, "clientOrderId is duplicated")


def min_notional(notional: float) -> ApiError:
    return ApiError(400, -4164, f"Order's notional must be no smaller than {notional:g} (unless "
                                "you choose reduce only)")


def bad_order_type() -> ApiError:
    return ApiError(400, -1116, "Invalid orderType.")


def listen_key_missing() -> ApiError:
    return ApiError(400, -1125, "This listenKey does not exist. Please use POST "
                                "/fapi/v1/listenKey to recreate listenKey")


def not_found() -> ApiError:
    return ApiError(404, -5000, "Path not found (not served by the liqbot emulator).")


def rate_limited(limit: int, retry_after_s: int) -> ApiError:
    return ApiError(429, -1003, f"Too many requests; current limit is {limit} requests per "
                                "minute. Please use the websocket for live updates to avoid "
                                "polling the API.", {"Retry-After": str(retry_after_s)})


def banned(until_ms: int, retry_after_s: int) -> ApiError:
    return ApiError(418, -1003, f"Way too many requests; IP banned until {until_ms}. Please use "
                                "the websocket for live updates to avoid bans.",
                    {"Retry-After": str(retry_after_s)})


def maintenance() -> ApiError:
    """Binance's general info: a 503 "Service Unavailable." is a sure failure, retry later."""
    return ApiError(503, -1001, "Service Unavailable.")
