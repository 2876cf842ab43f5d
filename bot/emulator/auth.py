"""Binance request signing, checked like Binance: the key in `X-MBX-APIKEY`, an HMAC-SHA256
hex `signature` of the total parameters (query string followed directly by the form body,
minus the signature itself), `timestamp` within `recvWindow` (default 5000 ms, at most
60000) of the server's time and not more than 1000 ms ahead of it.

The server's time for this check is the wall clock OR the simulated clock (either passes):
ccxt stamps requests with the wall clock unless `adjustForTimeDifference` is set, in which
case it follows `/fapi/v1/time`, which serves the simulated time."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable

from bot.emulator import errors as er

_SIG = re.compile(r"(^|&)signature=([^&]*)")
#: Binance's API-key format: a request with another key is refused (-2014)
KEY_RULE = "[A-Za-z0-9]{16,128}"
_KEY = re.compile(f"^{KEY_RULE}$")


def key_ok(api_key: str) -> bool:
    """True when `api_key` has the format every request's key is checked against."""
    return _KEY.fullmatch(api_key) is not None


def new_credentials() -> tuple[str, str]:
    """A fresh (api key, secret) pair for one run: random, never a real key."""
    return "emu" + secrets.token_hex(16), secrets.token_hex(32)


def sign(secret: str, payload: str) -> str:
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


class Authenticator:
    """Known keys -> secrets; `check` returns the key of a correctly signed request."""

    def __init__(self, keys: dict[str, str], sim_now: Callable[[], int],
                 wall_now: Callable[[], int] = lambda: time.time_ns() // 1_000_000) -> None:
        self.keys = dict(keys)
        self.sim_now, self.wall_now = sim_now, wall_now

    def key_only(self, api_key: str | None) -> str:
        """For USER_STREAM endpoints (listenKey): key needed, no signature."""
        if not api_key or not _KEY.fullmatch(api_key):
            raise er.key_format()
        if api_key not in self.keys:
            raise er.bad_key()
        return api_key

    def check(self, api_key: str | None, query: str, body: str,
              params: dict[str, str]) -> str:
        key = self.key_only(api_key)
        total = query + body
        m = _SIG.search(total)
        if m is None:
            raise er.mandatory("signature")
        signed = total[:m.start()] + total[m.end():]
        if m.start() == 0 and signed.startswith("&"):
            signed = signed[1:]
        want = sign(self.keys[key], signed)
        if not hmac.compare_digest(want, m.group(2)):
            raise er.bad_signature()
        try:
            ts = int(params.get("timestamp", ""))
        except ValueError:
            raise er.mandatory("timestamp") from None
        try:
            window = int(params.get("recvWindow", "5000"))
        except ValueError:
            raise er.bad_param("recvWindow") from None
        if not 0 < window <= 60_000:
            raise er.ApiError(400, -1131, "recvWindow must be less than 60000")
        if not any(ts < now + 1000 and now - ts <= window
                   for now in (self.wall_now(), self.sim_now())):
            raise er.timestamp_outside()
        return key
