"""Request-weight limits like Binance's: each IP has `limit` weight per fixed window
(`window_s`, wall clock; Binance: 2400 per minute). Over it, answers are 429 with
Retry-After (seconds to the window's end); a client that keeps sending while limited is
banned after `ban_after` such 429s: 418 with Retry-After `ban_s` for every request until
the ban ends. Every answer carries `X-MBX-USED-WEIGHT-1M`."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bot.emulator import errors as er

#: Binance USD-M request weights by path (method-independent here); default 1.
WEIGHTS = {"/fapi/v1/exchangeInfo": 1, "/fapi/v1/depth": 5, "/fapi/v1/allOrders": 5,
           "/fapi/v1/userTrades": 5, "/fapi/v2/account": 5, "/fapi/v3/account": 5,
           "/fapi/v2/balance": 5, "/fapi/v3/balance": 5, "/fapi/v2/positionRisk": 5,
           "/fapi/v3/positionRisk": 5, "/fapi/v1/openOrders": 1, "/fapi/v1/income": 30,
           "/futures/data/openInterestHist": 0, "/futures/data/globalLongShortAccountRatio": 0}


def weight(path: str, limit: int | None) -> int:
    """Published weight of `path`; klines-type endpoints by `limit`."""
    if path.endswith("Klines") or path.endswith("/klines"):
        n = 500 if limit is None else limit
        return 1 if n < 100 else 2 if n < 500 else 5 if n <= 1000 else 10
    return WEIGHTS.get(path, 1)


@dataclass
class _Ip:
    window_start: float = 0.0
    used: int = 0
    strikes: int = 0
    banned_until: float = 0.0


@dataclass
class RateLimiter:
    limit: int = 2400
    window_s: float = 60.0
    ban_after: int = 3
    ban_s: float = 120.0
    now: Callable[[], float] = time.monotonic
    ips: dict[str, _Ip] = field(default_factory=dict)

    def charge(self, ip: str, w: int) -> int:
        """Count `w` weight for `ip`; returns the weight used in this window or raises the
        429 / 418 ApiError."""
        st = self.ips.setdefault(ip, _Ip())
        t = self.now()
        if t < st.banned_until:
            raise er.banned(int(time.time() * 1000 + (st.banned_until - t) * 1000),
                            math.ceil(st.banned_until - t))
        if t - st.window_start >= self.window_s:
            st.window_start, st.used = t - (t % self.window_s), 0
            st.strikes = 0
        if st.used + w > self.limit:
            st.strikes += 1
            if st.strikes > self.ban_after:
                st.banned_until = t + self.ban_s
                raise er.banned(int(time.time() * 1000 + self.ban_s * 1000),
                                math.ceil(self.ban_s))
            raise er.rate_limited(self.limit,
                                  max(1, math.ceil(st.window_start + self.window_s - t)))
        st.used += w
        return st.used

    def reset(self) -> None:
        self.ips.clear()
