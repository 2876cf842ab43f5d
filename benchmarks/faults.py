"""Fault bench of the live path (issue 9 acceptance): N market orders through the LiveBroker
(real ccxt `binanceusdm` + ccxt.pro user stream) against the local emulator, with a fault of
one kind armed before ~20 % of them, every kind in turn at random: latency, timeout after
accept (order placed, answer lost), 5xx, 429 bursts, websocket disconnects, stale streams,
duplicated and out-of-order stream messages, maintenance windows, split fills (a market
order executed as 2-4 trades) and partial expiries (part filled, the rest EXPIRED).

The broker is driven bar by bar the way the daemon drives it (emulator clock to the bar's
close, `sync`, `on_bar_open`, `set_mark`, `submit`, `flush`), with a fast-flipping target
position (a new target every bar; reduce-only when it shrinks the position without crossing
zero). An order still unresolved (its outcome unknown) holds the next decision back, as the
daemon's order manager does.

Invariants checked at the end (`ok` in the report):
- 0 duplicate orders: no client id placed twice at the venue;
- 0 lost orders: every submitted order is at the venue once or refused with an event;
- 0 lost fills: every venue trade of the account booked by the broker, none twice, none
  invented (a split order's trades each once; a partially filled order's part, its rest
  never resent);
- our final position = the emulator's, and = the sum of the booked fills; no position
  adopted by reconciliation (that would hide a lost fill);
- every fault logged with its kind: the emulator's log lines "fault injected: KIND" per kind
  equal its counters, and every armed fault fired.

Usage: python benchmarks/faults.py [--orders N] [--rate 0.2] [--seed S] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import random
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from backtests.scenarios import load_scenario
from bot.data.bars import Bars
from bot.data.dataset import Dataset
from bot.emulator.faults import FaultInjector, FaultProfile
from bot.execution.broker import Fill, Order
from bot.execution.live import LiveBroker, LiveSettings
from bot.execution.venues import VENUES
from bot.mechanics import account as ac
from bot.mechanics.brackets import shipped

KEY, SECRET = "faultKEY0123456789abcdef", "fault-secret-" + "y" * 24   # emulator-only pair
KINDS = ("latency", "timeout_after_accept", "http_5xx", "burst_429", "ws_disconnect",
         "stale_stream", "duplicate", "out_of_order", "maintenance", "split_fill",
         "partial_expire")
STEP_LOTS = 2            # targets move in 0.002 BTC (min notional 100 USDT at ~95k)
STREAM_KINDS = ("stale_stream", "duplicate", "out_of_order")   # fire on the next message
CARRY = 200              # bars a stream fault stays armed waiting for a message
MAX_LOTS = 20            # |target| <= 0.04 BTC: far from any margin limit on 10,000 USDT


class ArmedInjector(FaultInjector):
    """The emulator's injector with one fault armed at a time: disarmed after `quota`
    injections of the armed kind (count faults) or by the bench (window faults)."""

    def __init__(self) -> None:
        super().__init__(FaultProfile())
        self.armed: str | None = None
        self.quota = 0

    def arm(self, kind: str, profile: FaultProfile, quota: int = 0) -> None:
        self.set(profile)
        self.armed, self.quota = kind, quota

    def disarm(self) -> None:
        self.set(FaultProfile())
        self.armed, self.quota = None, 0

    def record(self, kind: str, sim_ms: int, detail: str = "") -> None:
        super().record(kind, sim_ms, detail)
        if kind == self.armed and self.quota > 0:
            self.quota -= 1
            if self.quota == 0:      # after the caller has used the profile (latency sleeps)
                asyncio.get_running_loop().call_soon(self._disarm_if, kind)

    def _disarm_if(self, kind: str) -> None:
        if self.armed == kind and self.quota == 0:
            self.disarm()


class KindCounter(logging.Handler):
    """Counts the emulator's "fault injected: KIND" log lines by kind."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.kinds: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg.startswith("fault injected:") and record.args:
            self.kinds[str(record.args[0])] += 1


@dataclass
class Tally:
    submitted: list[Order] = field(default_factory=list)
    fills: list[Fill] = field(default_factory=list)
    armed: Counter[str] = field(default_factory=Counter)
    not_fired: Counter[str] = field(default_factory=Counter)
    held_bars: int = 0              # bars with no decision: an order still unresolved


def profile_for(kind: str, now_ms: int, interval_ms: int) -> tuple[FaultProfile, int]:
    """(profile, quota): quota > 0 disarms after that many injections, 0 at the step's end."""
    if kind == "latency":
        return FaultProfile(latency_ms=15.0), 1
    if kind == "timeout_after_accept":
        return FaultProfile(timeout_after_accept=1, hang_s=0.02), 1
    if kind == "http_5xx":
        return FaultProfile(http_5xx_rate=1.0), 1
    if kind == "burst_429":
        return FaultProfile(burst_429=3), 3
    if kind == "ws_disconnect":
        return FaultProfile(ws_disconnect_every_s=0.001), 1
    if kind == "stale_stream":
        return FaultProfile(stale_every_s=1e9, stale_for_s=1e9), 0
    if kind == "duplicate":
        return FaultProfile(duplicate_rate=1.0), 0
    if kind == "out_of_order":
        return FaultProfile(reorder_rate=1.0), 0
    if kind == "maintenance":
        return FaultProfile(maintenance=((now_ms, now_ms + interval_ms),)), 0
    if kind == "split_fill":
        return FaultProfile(split_fill_rate=1.0, seed=now_ms), 1
    if kind == "partial_expire":
        return FaultProfile(partial_expire_rate=1.0, seed=now_ms), 1
    raise ValueError(kind)


def bars_for(orders: int) -> Bars:
    days = max(1, math.ceil((orders * 1.25 + 200) / 1440))
    return load_scenario(f"synthetic:3:none:{days}").bars


async def run_bench(orders: int = 10_000, rate: float = 0.2, seed: int = 1,
                    bars: Bars | None = None) -> dict[str, Any]:
    """Drive the LiveBroker through `orders` orders against the emulator (module docstring)."""
    import ccxt.pro as ccxt_pro

    from bot.emulator.server import Emulator, EmulatorConfig, point_ccxt

    bars = bars if bars is not None else bars_for(orders)
    sym = bars.symbol
    brackets = shipped("binance", "BTCUSDT")
    iv = bars.interval_ms
    emu = Emulator([Dataset(bars)], {KEY: SECRET},
                   EmulatorConfig(paused=True, start_ms=int(bars.ts[0]), wallet=10_000.0,
                                  weight_limit=10**9), {sym: brackets})
    inj = ArmedInjector()
    emu.faults = emu.hub.faults = inj
    counter = KindCounter()
    elog = logging.getLogger("liqbot.emulator")
    elog.addHandler(counter)
    quiet = [(n, logging.getLogger(n).level) for n in ("liqbot", "ccxt")]
    for n, _ in quiet:
        logging.getLogger(n).setLevel(logging.ERROR)
    elog_level = elog.level
    elog.setLevel(logging.WARNING)
    elog.propagate = False
    await emu.start()
    ex = point_ccxt(ccxt_pro.binanceusdm({"apiKey": KEY, "secret": SECRET,
                                          "enableRateLimit": False, "timeout": 10_000}),
                    emu.rest_url, emu.ws_url)
    broker = LiveBroker(ex, VENUES["binanceusdm"], [sym], [brackets], iv,
                        LiveSettings(attempts=4, backoff_s=0.002, reconcile_s=2.0))
    rng = random.Random(seed)
    t = Tally()
    target = 0
    t0 = time.perf_counter()
    try:
        await broker.start()
        i, carry_left, before = 0, CARRY, 0
        kind: str | None = None                         # armed now
        due: deque[str] = deque()                       # drawn, waiting for a free injector
        while i < len(bars) - 1 and len(t.submitted) < orders:
            now = int(bars.ts[i]) + iv                  # this bar's close
            await _step_clock(emu, now)
            await broker.sync(now)
            t.fills += _open_phase(broker, bars, i)
            broker.set_mark(sym, _col(bars, "mark_close", i))
            if broker.pending():
                t.held_bars += 1
            else:
                held = int(round(float(broker.pos[0, ac.P_QTY]) / 0.001))
                target = _next_target(rng, held)
                dq = (target - held) * 0.001
                shrink = held != 0 and abs(target) < abs(held) and target * held >= 0
                o = Order(f"fb{seed}-{len(t.submitted)}", sym, 0, dq, shrink, (0.0, 0.0, 0.0))
                broker.submit(o)
                t.submitted.append(o)
                if rng.random() < rate:
                    due.append(rng.choice(KINDS))
                if kind is None and due:                # armed before this order leaves
                    kind = due.popleft()
                    t.armed[kind] += 1
                    before, carry_left = inj.counts[kind], CARRY
                    inj.arm(kind, *profile_for(kind, now, iv))
            await broker.flush()
            await emu.hub.flush()
            if kind == "ws_disconnect":                 # the emulator's pump drops the sockets
                for _ in range(200):
                    if inj.counts[kind] > before:
                        break
                    await asyncio.sleep(0.005)
            if kind is not None:
                fired = inj.counts[kind] > before
                carry_left -= 1
                if not fired and kind in STREAM_KINDS and carry_left > 0:
                    pass                                # stays armed for the next bar
                else:
                    if not fired:
                        t.not_fired[kind] += 1
                    inj.disarm()
                    kind = None
            i += 1
        # the last orders' fills: one more bar, then a full reconciliation
        inj.disarm()
        now = int(bars.ts[i]) + iv
        await _step_clock(emu, now)
        for _ in range(20):
            await broker.sync(now)
            if not any(f.state == "unknown" for f in broker.inflight.values()):
                break
        t.fills += _open_phase(broker, bars, i)
        await broker.reconcile()
        duration = time.perf_counter() - t0
        return _report(emu, broker, t, counter, duration, orders, rate, seed, i)
    finally:
        await broker.close()
        await emu.stop()
        elog.removeHandler(counter)
        elog.setLevel(elog_level)
        elog.propagate = True
        for n, lv in quiet:
            logging.getLogger(n).setLevel(lv)


async def _step_clock(emu: Any, now: int) -> None:
    """The lockstep of `liqbot drill`: the venue processes every bar up to `now` and its
    streams are delivered before the broker looks."""
    emu.clock.set(now)
    emu.venue.sync()
    await emu.hub.flush()


def _col(bars: Bars, name: str, i: int) -> float:
    """A mark column when the data has it, else the trade price (funding: none)."""
    if bars.has(name):
        return float(bars[name][i])
    return math.nan if name == "funding_rate" else float(bars["close" if name.endswith(
        "close") else "open" if name.endswith("open") else name.split("_")[1]][i])


def _open_phase(broker: LiveBroker, bars: Bars, i: int) -> list[Fill]:
    """The bar's open phase: the venue's trades and payments before its close booked."""
    fills, _ = broker.on_bar_open(bars.symbol, int(bars.ts[i]), float(bars["open"][i]),
                                  _col(bars, "mark_open", i), _col(bars, "mark_high", i),
                                  _col(bars, "mark_low", i), _col(bars, "funding_rate", i))
    return fills


def _next_target(rng: random.Random, held: int) -> int:
    """A new target (lots) at least STEP_LOTS away: flips, shrinks, grows, closes."""
    while True:
        tgt = STEP_LOTS * rng.randint(-MAX_LOTS // STEP_LOTS, MAX_LOTS // STEP_LOTS)
        if abs(tgt - held) >= STEP_LOTS:
            return tgt


def _report(emu: Any, broker: LiveBroker, t: Tally, counter: KindCounter, duration: float,
            orders: int, rate: float, seed: int, bars_used: int) -> dict[str, Any]:
    a = emu.venue.accounts[KEY]
    sym = broker.symbols[0]
    venue_orders = [o for o in a.orders.values() if o.type != "LIQUIDATION"]
    by_cid = Counter(o.client_id for o in venue_orders)
    duplicates = sum(n - 1 for n in by_cid.values() if n > 1)
    events = broker.drain_events()
    rejected = {e["data"].get("client_id") for e in events if e["kind"].startswith("reject")}
    lost_orders = sum(1 for o in t.submitted if o.client_id not in by_cid
                      and o.client_id not in rejected)
    venue_trades = {f"{tr.symbol}-{tr.trade_id}" for tr in a.trades}
    booked = Counter(f.fill_id for f in t.fills)
    lost_fills = len(venue_trades - set(booked))
    double_booked = sum(n - 1 for n in booked.values() if n > 1)
    phantom = len(set(booked) - venue_trades)
    ours = float(broker.pos[0, ac.P_QTY])
    theirs = float(a.pos[emu.venue.slot[sym], ac.P_QTY])
    booked_sum = sum(f.qty for f in t.fills)
    pos_equal = abs(ours - theirs) <= 1e-9 and abs(booked_sum - theirs) <= 1e-9
    counts = dict(inj_counts(emu))
    logged = dict(counter.kinds)
    every_kind = all(t.armed[k] > 0 and counts.get(k, 0) > 0 for k in KINDS)
    logged_ok = logged == counts
    wallet_ours = float(broker.acct[ac.A_WALLET])
    wallet_venue = float(a.acct[ac.A_WALLET])
    adopted = int(broker.stats["adopted"])
    ok = (len(t.submitted) == orders and duplicates == 0 and lost_orders == 0 and
          lost_fills == 0 and double_booked == 0 and phantom == 0 and pos_equal and
          adopted == 0 and every_kind and logged_ok and sum(t.not_fired.values()) == 0)
    return {
        "ok": ok, "orders": len(t.submitted), "orders_asked": orders, "fault_rate": rate,
        "seed": seed, "bars": bars_used, "held_bars": t.held_bars,
        "orders_with_fault_armed": sum(t.armed.values()),
        "fault_share": sum(t.armed.values()) / max(len(t.submitted), 1),
        "armed_by_kind": dict(sorted(t.armed.items())),
        "armed_not_fired": dict(t.not_fired),
        "faults_injected": dict(sorted(counts.items())),
        "faults_logged": dict(sorted(logged.items())), "faults_logged_ok": logged_ok,
        "every_kind_injected": every_kind,
        "venue_orders": len(venue_orders), "duplicate_orders": duplicates,
        "rejected": len(rejected), "lost_orders": lost_orders,
        "partial_orders": sum(1 for e in events if e["kind"] == "order_partial"),
        "venue_trades": len(venue_trades), "fills_booked": sum(booked.values()),
        "lost_fills": lost_fills, "double_booked_fills": double_booked,
        "phantom_fills": phantom,
        "position": {"ours": ours, "venue": theirs, "booked_sum": booked_sum,
                     "equal": pos_equal},
        "wallet": {"ours": wallet_ours, "venue": wallet_venue,
                   "rel_diff": abs(wallet_ours / wallet_venue - 1.0) if wallet_venue else None},
        "adopted": adopted,
        "adoptions": [e["message"] for e in events if e["kind"].endswith("_adopted")][:20],
        "unbooked_funding": [e["message"] for e in events
                             if e["kind"] == "funding_unbooked"][:20],
        "reject_events": Counter(e["kind"] for e in events
                                                     if e["kind"].startswith("reject")),
        "broker": dict(broker.stats, duplicates_ignored=broker.ledger.duplicates),
        "duration_s": duration, "orders_per_s": len(t.submitted) / duration if duration else 0,
    }


def inj_counts(emu: Any) -> Counter[str]:
    return Counter(emu.faults.counts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--orders", type=int, default=10_000)
    ap.add_argument("--rate", type=float, default=0.2, help="fraction of orders with a fault")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", dest="json_out", default=None)
    a = ap.parse_args(argv)
    if not 1 <= a.orders <= 1_000_000:
        print(f"--orders: expected 1..1000000, got {a.orders}", file=sys.stderr)
        return 2
    if not 0.0 <= a.rate <= 1.0:
        print(f"--rate: expected a fraction in [0, 1], got {a.rate}", file=sys.stderr)
        return 2
    r = asyncio.run(run_bench(a.orders, a.rate, a.seed))
    print(f"fault bench: {r['orders']} orders over {r['bars']} bars in {r['duration_s']:.1f} s "
          f"({r['orders_per_s']:.0f} orders/s); {r['orders_with_fault_armed']} with a fault armed "
          f"({r['fault_share']:.1%})")
    print(f"  armed by kind:    {r['armed_by_kind']}")
    print(f"  injected by kind: {r['faults_injected']}")
    print(f"  logged by kind = injected: {r['faults_logged_ok']}; armed but not fired: "
          f"{r['armed_not_fired'] or 0}")
    print(f"  venue orders {r['venue_orders']}, duplicates {r['duplicate_orders']}, lost orders "
          f"{r['lost_orders']}, rejected {r['rejected']}, partially filled (EXPIRED) "
          f"{r['partial_orders']}")
    print(f"  venue trades {r['venue_trades']}, booked {r['fills_booked']}, lost fills "
          f"{r['lost_fills']}, double-booked {r['double_booked_fills']}, phantom "
          f"{r['phantom_fills']}")
    p = r["position"]
    print(f"  position ours {p['ours']:+.3f} / venue {p['venue']:+.3f} / booked sum "
          f"{p['booked_sum']:+.3f}: equal {p['equal']}; adopted {r['adopted']}; wallet rel diff "
          f"{r['wallet']['rel_diff']:.2e}")
    print(f"  broker: {r['broker']}")
    for m in r["adoptions"] + r["unbooked_funding"]:
        print(f"  event: {m}")
    print("OK" if r["ok"] else "FAILED")
    if a.json_out:
        with open(a.json_out, "w", encoding="utf-8") as fh:
            json.dump(r, fh, indent=2, default=dict)
    return 0 if r["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
