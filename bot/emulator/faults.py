"""Fault profiles and their injector. A profile is a TOML table (a file, `[faults]` or top
level) or a built-in name; the admin endpoint can replace it at run time. Every injected
fault is logged on "liqbot.emulator" with its kind and counted (`FaultInjector.counts`).

Kinds: `latency` (extra delay on every REST answer), `timeout_after_accept` (an order is
placed, then the answer is withheld `hang_s` and the connection dropped: the client sees a
timeout and must reconcile; with `hide_lost_order_s` such an order, filled at once, stays
invisible to the order queries - GET order by id or client id, openOrders, allOrders - for
that many wall seconds, as a venue whose query service lags its matching engine: its trade
is in the history and on the stream, the look-up says -2013), `http_5xx` (a fraction of
REST requests answered 503 before being processed), `burst_429` (the next N requests
answered 429), `ws_disconnect` (every socket closed every N wall seconds), `stale_stream`
(market pushes suspended for `stale_for_s` every `stale_every_s` wall seconds), `duplicate`
and `out_of_order` (a fraction of stream messages sent twice / swapped with the next one),
`maintenance` (simulated-time windows in which REST answers 503 and websockets are
refused), `split_fill` (a fraction of MARKET orders of 2+ lots execute as 2-4 trades of
random whole-lot sizes summing to the order's quantity, as one that walks several book
levels: every trade at the price the fill model gives the whole order, its own trade id and
taker commission, one ORDER_TRADE_UPDATE each, PARTIALLY_FILLED then FILLED), and
`partial_expire` (a fraction of MARKET orders of 2+ lots fill only 1..n-1 of their n lots,
in 1-3 trades at the fill model's price for the executed quantity, then end EXPIRED with
executedQty < origQty, as one that exhausts the book: the rest is not filled)."""

from __future__ import annotations

import logging
import random
import time
import tomllib
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from bot.errors import ConfigError

log = logging.getLogger("liqbot.emulator")


@dataclass(frozen=True)
class FaultProfile:
    latency_ms: float = 0.0
    timeout_after_accept: int = 0         # next N order placements lose their answer
    hang_s: float = 3.0
    hide_lost_order_s: float = 0.0        # a lost order invisible to order queries (wall s)
    http_5xx_rate: float = 0.0
    burst_429: int = 0                    # next N REST requests answered 429
    ws_disconnect_every_s: float = 0.0
    stale_every_s: float = 0.0
    stale_for_s: float = 0.0
    duplicate_rate: float = 0.0
    reorder_rate: float = 0.0
    maintenance: tuple[tuple[int, int], ...] = ()   # [start_ms, end_ms) simulated
    split_fill_rate: float = 0.0          # MARKET orders executed as 2-4 trades
    partial_expire_rate: float = 0.0      # MARKET orders filled in part, then EXPIRED
    seed: int = 0


BUILTIN: dict[str, FaultProfile] = {
    "none": FaultProfile(),
    "flaky": FaultProfile(latency_ms=50.0, http_5xx_rate=0.02, ws_disconnect_every_s=60.0,
                          duplicate_rate=0.01, reorder_rate=0.01),
    "lossy-orders": FaultProfile(timeout_after_accept=1),
    "partial-fills": FaultProfile(split_fill_rate=0.3, partial_expire_rate=0.05),
}


def profile_from_mapping(m: dict[str, Any], where: str = "(faults)") -> FaultProfile:
    known = {f.name for f in fields(FaultProfile)}
    bad = sorted(set(m) - known)
    if bad:
        raise ConfigError(where, [f"unknown fault keys {bad}; known: {sorted(known)}"])
    kw = dict(m)
    try:
        if "maintenance" in kw:
            kw["maintenance"] = tuple((int(a), int(b)) for a, b in kw["maintenance"])
        p = FaultProfile(**kw)
        for f in fields(FaultProfile):
            v = getattr(p, f.name)
            if isinstance(v, (int, float)) and v < 0:
                raise ValueError(f"{f.name} must be >= 0")
        over = [n for n in ("http_5xx_rate", "duplicate_rate", "reorder_rate",
                            "split_fill_rate", "partial_expire_rate") if getattr(p, n) > 1]
        if over:
            raise ValueError(f"{over[0]} must be a fraction in [0, 1]")
    except (TypeError, ValueError) as exc:
        raise ConfigError(where, [f"bad fault profile: {exc}"]) from None
    return p


def load_profile(spec: str | None) -> FaultProfile:
    """A built-in name, or a TOML file (its `[faults]` table, else its top level)."""
    if not spec:
        return FaultProfile()
    if spec in BUILTIN:
        return BUILTIN[spec]
    path = Path(spec)
    if not path.is_file():
        raise ConfigError(spec, [f"--faults: neither a built-in profile ({', '.join(BUILTIN)}) "
                                 "nor a TOML file"])
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(spec, [f"unreadable TOML ({exc})"]) from None
    return profile_from_mapping(doc.get("faults", doc), spec)


@dataclass
class FaultInjector:
    profile: FaultProfile = field(default_factory=FaultProfile)
    counts: Counter[str] = field(default_factory=Counter)
    events: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.set(self.profile)

    def set(self, profile: FaultProfile) -> None:
        self.profile = profile
        self.rng = random.Random(profile.seed)
        self._lost_orders = profile.timeout_after_accept
        self._burst = profile.burst_429
        self._t0 = time.monotonic()

    def record(self, kind: str, sim_ms: int, detail: str = "") -> None:
        self.counts[kind] += 1
        self.events.append({"kind": kind, "sim_ms": sim_ms, "detail": detail})
        del self.events[:-1000]
        log.warning("fault injected: %s at %d %s", kind, sim_ms, detail)

    # --- decisions (each one that fires is recorded by the caller or here) ----------------
    def in_maintenance(self, sim_ms: int) -> bool:
        return any(a <= sim_ms < b for a, b in self.profile.maintenance)

    def take_burst(self) -> bool:
        if self._burst > 0:
            self._burst -= 1
            return True
        return False

    def take_lost_order(self) -> bool:
        if self._lost_orders > 0:
            self._lost_orders -= 1
            return True
        return False

    def roll(self, rate: float) -> bool:
        return rate > 0 and self.rng.random() < rate

    def fill_plan(self, lots: int, sim_ms: int, detail: str) -> tuple[list[int], bool]:
        """How a MARKET order of `lots` whole lot steps executes: the trades' sizes in lots,
        and True when the rest expires unfilled (`partial_expire`, else `split_fill`, else
        one trade). Orders of one lot cannot be split; nothing is drawn when both rates are
        0 (the other faults' random sequence is unchanged)."""
        p = self.profile
        if lots >= 2 and self.roll(p.partial_expire_rate):
            k = self.rng.randint(1, lots - 1)
            sizes = self._cut(k, self.rng.randint(1, min(3, k)))
            self.record("partial_expire", sim_ms, f"{detail}: {k} of {lots} lots in "
                        f"{len(sizes)} trade(s), the rest expired")
            return sizes, True
        if lots >= 2 and self.roll(p.split_fill_rate):
            sizes = self._cut(lots, self.rng.randint(2, min(4, lots)))
            self.record("split_fill", sim_ms, f"{detail}: {lots} lots as trades of {sizes}")
            return sizes, False
        return [lots], False

    def _cut(self, lots: int, n: int) -> list[int]:
        """`lots` cut at n-1 distinct random points: n sizes >= 1 summing to `lots`."""
        cuts = sorted(self.rng.sample(range(1, lots), n - 1))
        return [b - a for a, b in zip([0, *cuts], [*cuts, lots], strict=True)]

    def stale_now(self) -> bool:
        p = self.profile
        if p.stale_every_s <= 0 or p.stale_for_s <= 0:
            return False
        return (time.monotonic() - self._t0) % p.stale_every_s >= p.stale_every_s - \
            p.stale_for_s

    def as_dict(self) -> dict[str, Any]:
        return {"profile": asdict(self.profile), "counts": dict(self.counts),
                "recent": self.events[-50:]}
