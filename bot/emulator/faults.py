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
import math
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from bot.config import read_toml
from bot.errors import ConfigError, LiqbotError

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


# Bounds of a profile's keys (`profile_from_mapping`; docs/emulator.md "Faults"): a delay
# longer than a minute stalls a drill or a client rather than testing it, and a period past
# a day never fires in a run.
MAX_DELAY_MS = 60_000.0               # latency_ms; hang_s at most MAX_DELAY_MS / 1000
MAX_PERIOD_S = 86_400.0               # hide_lost_order_s, ws_disconnect_every_s, stale_*
MAX_COUNT = 1_000_000_000             # timeout_after_accept, burst_429
MAX_SEED = 2**63 - 1
RATES = ("http_5xx_rate", "duplicate_rate", "reorder_rate", "split_fill_rate",
         "partial_expire_rate")
#: key -> (kind, upper bound, unit shown in messages)
LIMITS: dict[str, tuple[str, float, str]] = {
    "latency_ms": ("number", MAX_DELAY_MS, "ms"),
    "hang_s": ("number", MAX_DELAY_MS / 1000, "seconds"),
    "hide_lost_order_s": ("number", MAX_PERIOD_S, "seconds"),
    "ws_disconnect_every_s": ("number", MAX_PERIOD_S, "seconds"),
    "stale_every_s": ("number", MAX_PERIOD_S, "seconds"),
    "stale_for_s": ("number", MAX_PERIOD_S, "seconds"),
    **{k: ("number", 1.0, "fraction") for k in RATES},
    "timeout_after_accept": ("count", MAX_COUNT, "orders"),
    "burst_429": ("count", MAX_COUNT, "requests"),
    "seed": ("count", MAX_SEED, "seed"),
    "maintenance": ("windows", 0.0, "ms"),
}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check(name: str, key: str, v: Any) -> tuple[Any, str | None]:
    """Key `name`'s value converted (floats for numbers, int pairs for windows), or a
    problem line `key: expected X, got Y` (`key`: the name as the user wrote its path)."""
    kind, hi, unit = LIMITS[name]
    if kind == "number":
        what = ("a fraction in [0, 1]" if unit == "fraction"
                else f"a finite number of {unit} in [0, {hi:,.0f}]")
        if not (_is_int(v) or isinstance(v, float)) or not math.isfinite(v) \
                or not 0 <= v <= hi:
            return None, f"{key}: expected {what}, got {v!r}"
        return float(v), None
    if kind == "count":
        if not _is_int(v) or not 0 <= v <= hi:
            what = "an integer" if unit == "seed" else f"a whole number of {unit}"
            return None, f"{key}: expected {what} in [0, {int(hi):,}], got {v!r}"
        return int(v), None
    want = (f"{key}: expected a list of [start_ms, end_ms] windows (integer ms UTC, "
            "0 <= start_ms < end_ms)")
    if not isinstance(v, list | tuple):
        return None, f"{want}, got {v!r}"
    out = []
    for w in v:
        if not (isinstance(w, list | tuple) and len(w) == 2 and all(map(_is_int, w))
                and 0 <= w[0] < w[1]):
            return None, f"{want}, got {w!r}"
        out.append((int(w[0]), int(w[1])))
    return tuple(out), None


def profile_from_mapping(m: Any, where: str = "(faults)", prefix: str = "") -> FaultProfile:
    """A profile from a TOML table or a JSON object (`POST /admin/faults`). Every key is
    checked (type, bool is not a number, finite, within `LIMITS`) and unknown keys are
    refused, so a bad file fails at start (ConfigError naming `where` and the key, shown as
    `prefix` + key) instead of breaking every request of the emulator."""
    if not isinstance(m, dict):
        raise ConfigError(where, [f"{prefix.rstrip('.') or 'faults'}: expected a table of "
                                  f"fault keys, got {type(m).__name__}"])
    known = [f.name for f in fields(FaultProfile)]
    problems = []
    bad = sorted(str(k) for k in m if k not in known)
    if bad:
        problems.append(f"unknown fault key(s) {', '.join(prefix + k for k in bad)}; "
                        f"known: {', '.join(known)}")
    kw: dict[str, Any] = {}
    for name in known:
        if name in m:
            value, problem = _check(name, prefix + name, m[name])
            if problem:
                problems.append(problem)
            kw[name] = value
    if problems:
        raise ConfigError(where, problems)
    return FaultProfile(**kw)


def load_profile(spec: str | None) -> FaultProfile:
    """A built-in name, or a TOML file (its `[faults]` table, else its top level)."""
    if not spec:
        return FaultProfile()
    if spec in BUILTIN:
        return BUILTIN[spec]
    path = Path(spec)
    if not path.is_file():
        raise LiqbotError(f"--faults {spec!r}: neither a built-in profile "
                          f"({', '.join(BUILTIN)}) nor a TOML file")
    doc = read_toml(path)
    if "faults" in doc:
        return profile_from_mapping(doc["faults"], spec, "faults.")
    return profile_from_mapping(doc, spec)


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
