"""kill -9 bench of the live path (issue 9 acceptance): the daemon in live mode (real ccxt
`binanceusdm` + ccxt.pro user stream, the LiveBroker) trades a dataset against the local
emulator, is SIGKILLed at N random moments and restarted on the same store each time until
the data is fully traded; the emulator outlives every daemon.

- The emulator runs in this (the harness) process on 127.0.0.1, paused, in lockstep: the
  daemon moves its clock to each bar's close (`POST /admin/clock {"to_ms"}`) before it
  processes the bar, as `liqbot drill` does in-process, so a restart finds the venue where
  the killed daemon left it.
- The daemon is a separate OS process (`python benchmarks/kill9_live.py child ...`): the
  dataset's closed bars fed by a replay feed (not the exchange feed: `ExchangeFeed` runs on
  the wall clock, the emulator on the dataset's), the daemon's broker is the LiveBroker
  against the emulator's REST and websocket URLs, and its resume path is `liqbot run`'s
  (same account, same fingerprint: the run's checkpoint is restored and the feed continues
  after the watermark). Orders decided at the last close are not sent (`sending = False`,
  as in the drill: no later bar would fill and book them).
- Each kill lands `uniform(0, --max-delay)` wall seconds after the child says it is ready
  (store open, checkpoint loaded): during broker start-up, reconciliation, a bar, a commit,
  an order in flight. Before each restart the harness classifies the kill point from the
  store and the venue: intents committed but not at the venue (killed between the commit
  and the send), venue trades not in the store yet (killed between send and booking).
- `--targeted K` adds K kills the daemon deals itself (SIGKILL to its own pid) at the n-th
  passage of a chosen point of the real code path: right after the intents' commit with the
  orders unsent, right after the orders reached the venue, right after the venue's trades
  were read but not booked; the narrow windows random timing rarely hits.

Checked at the end against the emulator's own records (`ok`): no client order id placed
twice (duplicates), every venue trade of the account in the store's fills (lost fills = venue
trades not in the store), no store fill the venue does not have, booked quantities per
client id = the venue's executed ones (nothing booked twice), the final position (checkpoint
and store) = the emulator's, the wallet = the emulator's (relative 1e-9), no position
adopted by reconciliation (that would hide a lost fill), the run ended "done".

Usage: python benchmarks/kill9_live.py [--kills 100] [--dataset synthetic:5:long:10]
       [--bars N] [--max-delay 1.0] [--targeted K] [--seed 1] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

KEY, SECRET = "kill9KEY0123456789abcdef", "kill9-secret-" + "z" * 24   # emulator-only pair
ACCOUNT = "live:emulator-kill9"
LEVERAGE = 20                    # the account's leverage setting (live.leverage)
#: flips and rebalances often (about 120 orders a day on the synthetic scenario); the
#: aggressive preset's 30 % daily-loss halt leaves it trading most of each day
STRATEGY = ("trend", {"fast": "3", "slow": "8", "leverage": "2", "sizing": "rebalance"})
PRESET = "aggressive"
WALLET = 10_000.0
WALLET_REL_TOL = 1e-9
#: the venue rounds each commission to 8 decimals: the wallets may differ by half a unit per
#: trade (a lost fee is orders of magnitude larger)
FEE_ROUNDING = 0.5e-8
ROOT = Path(__file__).resolve().parent.parent
SELF_KILL_ENV = "LIQBOT_KILL9_AT"
SELF_KILL_POINTS = ("after_commit", "after_send", "after_read")


# ---------------------------------------------------------------------------- the daemon
def _child_feed(bars: Any, rest_url: str, on_last: Callable[[], None]) -> Any:
    """The replay feed that moves the emulator's clock to each bar's close (admin endpoint)
    before the daemon sees the bar: the drill's lockstep, across processes."""
    import aiohttp

    from bot.runtime.replay import ReplayFeed

    class AdminLockstepFeed(ReplayFeed):
        async def events(self) -> AsyncIterator[Any]:
            last_close = int(bars.ts[-1]) + bars.interval_ms
            async with aiohttp.ClientSession() as http:
                async for ev in super().events():
                    async with http.post(f"{rest_url}/admin/clock",
                                         json={"to_ms": int(ev.received_ms)}) as r:
                        r.raise_for_status()
                    if ev.received_ms >= last_close:
                        on_last()
                    yield ev

    return AdminLockstepFeed({bars.symbol: bars}, 0.0)


def _arm_self_kill(broker: Any, spec: str) -> None:
    """Targeted kills (`--targeted`): SIGKILL ourselves at the n-th occurrence of a point
    `spec` = "POINT:N" names (SELF_KILL_POINTS), inside the real code path:
    after_commit (the intents are committed, the orders not sent), after_send (the
    venue has the orders, nothing booked or committed since), after_read (the venue's trades
    read into the broker's buffer, not booked)."""
    if not spec:
        return
    point, n = spec.split(":")
    left = [int(n)]

    def tick() -> None:
        left[0] -= 1
        if left[0] <= 0:
            os.kill(os.getpid(), signal.SIGKILL)

    flush, sync = broker.flush, broker.sync

    async def flush_hook() -> None:
        busy = bool(broker.queue) and broker.sending
        if busy and point == "after_commit":
            tick()
        await flush()
        if busy and point == "after_send":
            tick()

    async def sync_hook(now_ms: int) -> None:
        await sync(now_ms)
        if point == "after_read" and any(broker.buffer.values()):
            tick()

    broker.flush, broker.sync = flush_hook, sync_hook


async def _child_main(rest_url: str, data: str, store_url: str) -> int:
    """One daemon life: `liqbot run`'s resume rules, the LiveBroker, the lockstep feed."""
    import ccxt.pro as ccxt_pro

    from bot.cli.drill import load_data
    from bot.cli.run import _fingerprint, _state_layout
    from bot.config import FillsConfig
    from bot.emulator.server import point_ccxt
    from bot.execution import kernel as kn
    from bot.execution.live import LiveBroker, LiveSettings, exchange_brackets
    from bot.execution.venues import VENUES
    from bot.mechanics import brackets as br
    from bot.mechanics.fees import venue_fees
    from bot.risk.policy import load_policy
    from bot.runtime.daemon import Daemon
    from bot.store import Store
    from strategies import find
    bars = load_data([data]).bars
    strat = find(STRATEGY[0]).from_strings(dict(STRATEGY[1]))
    preset = PRESET
    policy = load_policy(preset)
    fees = venue_fees("binance")
    fp = kn.fill_params(FillsConfig(), fees, 0.05, strat.sizing)
    store = Store(store_url)
    store.acquire(ACCOUNT)
    try:
        ex = point_ccxt(ccxt_pro.binanceusdm({"apiKey": KEY, "secret": SECRET,
                                              "enableRateLimit": False, "timeout": 10_000}),
                        rest_url, rest_url.replace("http://", "ws://") + "/ws")
        # as `liqbot run --live`: the venue's tiers at the leverage the broker sets
        brackets = br.at_leverage((await exchange_brackets(ex, VENUES["binanceusdm"],
                                                           [bars.symbol]))[bars.symbol],
                                  LEVERAGE)
        spec = {"strategy": strat.describe(), "preset": preset, "wallet": WALLET,
                "source": {"kill9": data}, "layout": _state_layout()}
        fp_id = _fingerprint(spec)
        prev = store.latest_run(ACCOUNT)
        resume = prev is not None and prev.status == "running" and \
            prev.config.get("fingerprint") == fp_id
        run_ = prev if resume else store.open_run(
            "live", ACCOUNT, [bars.symbol], strat.name, strat.params, preset, WALLET,
            {"fingerprint": fp_id, "spec": spec})
        assert run_ is not None
        broker = LiveBroker(ex, VENUES["binanceusdm"], [bars.symbol], [brackets],
                            bars.interval_ms, LiveSettings(leverage=LEVERAGE))

        def stop_sending() -> None:
            broker.sending = False

        feed = _child_feed(bars, rest_url, stop_sending)
        _arm_self_kill(broker, os.environ.get(SELF_KILL_ENV, ""))
        daemon = Daemon(run_id=run_.run_id, feed=feed, store=store, strategy=strat,
                        policy=policy.to_array(), fp=fp, brackets={bars.symbol: brackets},
                        wallet=WALLET, broker=broker)
        cp = store.load_checkpoint(run_.run_id) if resume else None
        if cp is not None:
            daemon.restore(cp[1])
            done_to = {s: x.last_ts for s, x in daemon.state.items()}
            feed.seek(done_to)
            if done_to.get(bars.symbol, -1) >= int(bars.ts[-1]):
                stop_sending()             # the last close's orders are never sent
        print(f"ready {run_.run_id} {'resumed' if cp is not None else 'new'}", flush=True)
        await daemon.run(simulated=True)
        store.set_run_status(run_.run_id, "done")
        print(f"done {daemon.bars_processed} bars, {daemon.seq} orders", flush=True)
    finally:
        store.close()
    return 0


# ---------------------------------------------------------------------------- the harness
def _venue(emu: Any, symbol: str) -> dict[str, Any]:
    """The emulator's records for our key: orders per client id, trades, position, wallet."""
    from bot.mechanics import account as ac

    emu.venue.sync()
    a = emu.venue.accounts.get(KEY)
    if a is None:
        return {"by_client": {}, "trades": {}, "exec": {}, "qty": 0.0, "wallet": WALLET,
                "orders": 0}
    by_client = Counter(o.client_id for o in a.orders.values() if o.type != "LIQUIDATION")
    trades = {f"{t.symbol}-{t.trade_id}": t for t in a.trades}
    cid_of = {o.order_id: o.client_id for o in a.orders.values()}
    exec_qty: Counter[str] = Counter()
    for t in a.trades:
        exec_qty[cid_of.get(t.order_id, "")] += float(t.qty) if t.side == "BUY" \
            else -float(t.qty)
    return {"by_client": dict(by_client), "trades": trades, "exec": dict(exec_qty),
            "qty": float(a.pos[emu.venue.slot[symbol], ac.P_QTY]),
            "wallet": float(a.acct[ac.A_WALLET]), "orders": len(a.orders)}


def _store_view(url: str) -> dict[str, Any]:
    from bot.store import Store

    st = Store(url)
    try:
        r = st.latest_run(ACCOUNT)
        if r is None:
            return {"run": None, "intents": [], "fills": [], "events": [], "positions": [],
                    "checkpoint": None, "status": None}
        cp = st.load_checkpoint(r.run_id)
        return {"run": r.run_id, "status": r.status, "intents": st.intents(r.run_id),
                "fills": st.fills(r.run_id), "events": st.events(r.run_id),
                "positions": st.positions(r.run_id), "checkpoint": cp}
    finally:
        st.close()


def _kill_point(view: dict[str, Any], venue: dict[str, Any]) -> str:
    """Where a kill landed, seen from outside: committed intents the venue has not got
    (between commit and send), venue trades the store has not got (between send and the
    booking commit), else between bars / in start-up or reconciliation ("clean")."""
    unsent = [i for i in view["intents"] if i.status == "sent" and
              i.client_id not in venue["by_client"]]
    stored = {f.fill_id for f in view["fills"]}
    unbooked = [k for k in venue["trades"] if k not in stored]
    if unsent and unbooked:
        return "unsent+unbooked"
    if unsent:
        return "committed_not_sent"
    if unbooked:
        return "sent_not_booked"
    return "clean"


def _check(view: dict[str, Any], venue: dict[str, Any], symbol: str,
           last_bar_ts: int) -> dict[str, Any]:
    from bot.execution.broker import from_bytes
    from bot.mechanics import account as ac

    dup = sum(n - 1 for n in venue["by_client"].values() if n > 1)
    stored = {f.fill_id: f for f in view["fills"]}
    lost = sorted(k for k in venue["trades"] if k not in stored)
    phantom = sorted(k for k in stored if k not in venue["trades"])
    booked: Counter[str] = Counter()
    for f in view["fills"]:
        booked[f.client_id or "liquidation"] += f.qty
    venue_exec: Counter[str] = Counter()
    for k, v in venue["exec"].items():
        venue_exec["liquidation" if k.startswith("autoclose-") else k] += v
    qty_mismatch = {k: (booked.get(k, 0.0), v) for k, v in venue_exec.items()
                    if abs(booked.get(k, 0.0) - v) > 1e-9} | \
        {k: (v, 0.0) for k, v in booked.items() if k not in venue_exec}
    a = from_bytes(view["checkpoint"][1]) if view["checkpoint"] else {}
    cp_qty = float(a["pos"][0, ac.P_QTY]) if a else float("nan")
    cp_wallet = float(a["acct"][ac.A_WALLET]) if a else float("nan")
    pos_rows = [p for p in view["positions"] if p.symbol == symbol and p.slot == 0]
    store_qty = float(pos_rows[0].qty) if pos_rows else 0.0
    fills_sum = sum(f.qty for f in view["fills"])
    wallet_rel = abs(cp_wallet / venue["wallet"] - 1.0) if venue["wallet"] else math.inf
    wallet_ok = abs(cp_wallet - venue["wallet"]) <= \
        WALLET_REL_TOL * abs(venue["wallet"]) + FEE_ROUNDING * max(1, len(venue["trades"]))
    adopted = [e.message for e in view["events"] if e.kind.endswith("_adopted")]
    unsent_end = [i.client_id for i in view["intents"] if i.status == "sent" and
                  i.client_id not in venue["by_client"]]
    # only the last close's orders may stay unsent (no later bar to fill and book them)
    unsent_early = [i.client_id for i in view["intents"] if i.client_id in unsent_end and
                    i.bar_ts != last_bar_ts]
    pos_equal = abs(cp_qty - venue["qty"]) <= 1e-9 and abs(store_qty - venue["qty"]) <= 1e-9 \
        and abs(fills_sum - venue["qty"]) <= 1e-9
    ok = (dup == 0 and not lost and not phantom and not qty_mismatch and pos_equal
          and not unsent_early
          and wallet_ok and not adopted and view["status"] == "done")
    return {"ok": ok, "duplicate_orders": dup, "lost_fills": len(lost), "lost": lost[:20],
            "phantom_fills": len(phantom), "booked_qty_mismatch": len(qty_mismatch),
            "venue_orders": venue["orders"], "venue_trades": len(venue["trades"]),
            "store_fills": len(stored), "intents": len(view["intents"]),
            "unsent_at_end": unsent_end, "unsent_before_last_bar": unsent_early,
            "position": {"venue": venue["qty"], "checkpoint": cp_qty, "store": store_qty,
                         "fills_sum": fills_sum, "equal": pos_equal},
            "wallet": {"venue": venue["wallet"], "ours": cp_wallet, "rel_diff": wallet_rel,
                       "equal": wallet_ok},
            "adopted": adopted, "run_status": view["status"]}


def prepare_data(dataset: str, bars_limit: int | None, out: Path) -> Any:
    """The dataset (scenario, directory or klines CSV), cut to `bars_limit`, saved where the
    child daemon reads it."""
    from bot.cli.drill import load_data
    from bot.data import dataset as ds_io
    from bot.data.dataset import Dataset

    ds = load_data([dataset])
    if bars_limit is not None and bars_limit < len(ds.bars):
        ds = Dataset(ds.bars.take(slice(0, bars_limit)))
    ds_io.save(ds, out)
    return ds


async def run_bench(kills: int, dataset: str = "synthetic:5:long:10", bars: int | None = None,
                    max_delay: float = 1.0, seed: int = 1, targeted: int = 0,
                    workdir: Path | None = None,
                    log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Emulator here, the daemon as a subprocess SIGKILLed `kills` times at random moments
    and `targeted` times at chosen points (module docstring)."""
    from bot.data.dataset import Dataset
    from bot.emulator.server import Emulator, EmulatorConfig
    from bot.mechanics import brackets as br

    tmp = tempfile.TemporaryDirectory(prefix="liqbot-kill9-") if workdir is None else None
    wd = Path(tmp.name) if tmp is not None else workdir
    assert wd is not None
    data_dir = wd / "data"
    ds = prepare_data(dataset, bars, data_dir)
    b = ds.bars
    emu = Emulator([Dataset(b)], {KEY: SECRET},
                   EmulatorConfig(speed=1.0, paused=True, start_ms=int(b.ts[0]), wallet=WALLET,
                                  weight_limit=10**9), {b.symbol: br.for_symbol(b.symbol)})
    await emu.start()
    store_url = f"sqlite:///{wd}/kill9.db"
    rng = random.Random(seed)
    env = dict(os.environ)
    env.pop("LIQBOT_CONFIG", None)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, str(Path(__file__).resolve()), "child", "--rest", emu.rest_url,
           "--data", str(data_dir), "--store", store_url]
    points: Counter[str] = Counter()
    targeted_points: Counter[str] = Counter()
    delays: list[float] = []
    lives, killed, self_killed, restart_s = 0, 0, 0, []
    finished = False
    t0 = time.perf_counter()
    errlog = (wd / "daemon.log").open("ab")
    p: asyncio.subprocess.Process | None = None
    try:
        while not finished:
            lives += 1
            left = (kills - killed) + (targeted - self_killed)
            aim = SELF_KILL_POINTS[self_killed % len(SELF_KILL_POINTS)] \
                if self_killed < targeted and \
                rng.random() < (targeted - self_killed) / max(left, 1) else ""
            life_env = dict(env, **{SELF_KILL_ENV: f"{aim}:{rng.randint(1, 4)}"}) if aim \
                else env
            t_spawn = time.perf_counter()
            p = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE,
                                                     stderr=errlog, env=life_env,
                                                     cwd=str(ROOT))
            assert p.stdout is not None
            line = await asyncio.wait_for(p.stdout.readline(), 300)
            if not line.startswith(b"ready"):
                rc = await p.wait()
                raise RuntimeError(f"daemon life {lives} did not start (exit {rc}); see "
                                   f"{wd / 'daemon.log'}")
            restart_s.append(time.perf_counter() - t_spawn)
            if aim:                                    # it kills itself at the point
                rc = await asyncio.wait_for(p.wait(), 600)
                if rc == -signal.SIGKILL:
                    self_killed += 1
                    point = _kill_point(_store_view(store_url), _venue(emu, b.symbol))
                    targeted_points[f"{aim} -> {point}"] += 1
                    log(f"targeted kill {self_killed}/{targeted} at {aim}: {point}")
                    continue
            elif killed < kills:
                delay = rng.uniform(0.0, max_delay)
                try:
                    await asyncio.wait_for(p.wait(), delay)
                except TimeoutError:
                    p.send_signal(signal.SIGKILL)
                    await p.wait()
                    view = _store_view(store_url)
                    if view["status"] == "done":       # it had just finished: no kill
                        finished = True
                        break
                    killed += 1
                    delays.append(delay)
                    point = _kill_point(view, _venue(emu, b.symbol))
                    points[point] += 1
                    log(f"kill {killed}/{kills} after {delay:.2f} s: {point}")
                    continue
            rest = await p.stdout.read()
            rc = await p.wait()
            if rc != 0:
                raise RuntimeError(f"daemon life {lives} exited {rc}; see {wd / 'daemon.log'}")
            log(rest.decode().strip())
            finished = True
        duration = time.perf_counter() - t0
        view = _store_view(store_url)
        venue = _venue(emu, b.symbol)
        report = _check(view, venue, b.symbol, int(b.ts[-1]))
        report.update({
            "kills": killed, "kills_asked": kills, "lives": lives, "kill_points": dict(points),
            "targeted_kills": self_killed, "targeted_asked": targeted,
            "targeted_points": dict(targeted_points),
            "mean_kill_delay_s": sum(delays) / len(delays) if delays else 0.0,
            "mean_start_s": sum(restart_s) / len(restart_s), "duration_s": duration,
            "bars": len(b), "symbol": b.symbol, "dataset": dataset,
            "strategy": f"{STRATEGY[0]} " + " ".join(f"{k}={v}" for k, v in
                                                     STRATEGY[1].items()),
            "feed": "dataset bars (replay feed) in lockstep with the emulator clock; "
                    "daemon = separate OS process, LiveBroker through real ccxt"})
        report["ok"] = bool(report["ok"] and killed == kills and self_killed == targeted)
        return report
    finally:
        if p is not None and p.returncode is None:    # interrupted: no daemon left behind
            p.kill()
            await p.wait()
        errlog.close()
        await emu.stop()
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.cleanup()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd")
    ch = sub.add_parser("child", help="(internal) one daemon life")
    ch.add_argument("--rest", required=True)
    ch.add_argument("--data", required=True)
    ch.add_argument("--store", required=True)
    ap.add_argument("--kills", type=int, default=100)
    ap.add_argument("--dataset", default="synthetic:5:long:10")
    ap.add_argument("--bars", type=int, default=None, help="use the first N bars only")
    ap.add_argument("--max-delay", type=float, default=1.0,
                    help="kill at uniform(0, this) wall seconds after the daemon is ready")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--targeted", type=int, default=0,
                    help="extra kills the daemon deals itself at chosen points "
                         "(after_commit, after_send, after_read), mixed in")
    ap.add_argument("--json", dest="json_out", default=None)
    a = ap.parse_args(argv)
    if a.cmd == "child":
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                            format="%(asctime)s %(name)s %(levelname)s %(message)s")
        logging.getLogger("ccxt").setLevel(logging.ERROR)
        return asyncio.run(_child_main(a.rest, a.data, a.store))
    if not 0 <= a.kills <= 10_000:
        print(f"--kills: expected 0..10000, got {a.kills}", file=sys.stderr)
        return 2
    if not (a.max_delay > 0 and a.max_delay < 600):
        print(f"--max-delay: expected seconds in (0, 600), got {a.max_delay}", file=sys.stderr)
        return 2
    if not 0 <= a.targeted <= 10_000:
        print(f"--targeted: expected 0..10000, got {a.targeted}", file=sys.stderr)
        return 2
    if a.bars is not None and a.bars < 2:
        print(f"--bars: expected at least 2, got {a.bars}", file=sys.stderr)
        return 2
    from bot.errors import LiqbotError
    try:
        r = asyncio.run(run_bench(a.kills, a.dataset, a.bars, a.max_delay, a.seed, a.targeted,
                                  log=lambda s: print(s, flush=True)))
    except LiqbotError as exc:
        print(f"--dataset {a.dataset}: {exc}", file=sys.stderr)
        return 2
    print(f"kill -9 bench: {r['kills']} kills ({r['lives']} daemon lives) over {r['bars']} bars "
          f"of {r['dataset']}, {r['strategy']}, in {r['duration_s']:.1f} s (mean start "
          f"{r['mean_start_s']:.2f} s)")
    print(f"  kill points: {r['kill_points']}")
    if r["targeted_asked"]:
        print(f"  targeted kills {r['targeted_kills']}/{r['targeted_asked']}: "
              f"{r['targeted_points']}")
    print(f"  intents {r['intents']}, venue orders {r['venue_orders']}, duplicates "
          f"{r['duplicate_orders']}; venue trades {r['venue_trades']}, store fills "
          f"{r['store_fills']}, lost fills {r['lost_fills']}, phantom {r['phantom_fills']}, "
          f"booked-qty mismatches {r['booked_qty_mismatch']}")
    p, w = r["position"], r["wallet"]
    print(f"  position venue {p['venue']:+.3f} / checkpoint {p['checkpoint']:+.3f} / store "
          f"{p['store']:+.3f} / fills sum {p['fills_sum']:+.3f}: equal {p['equal']}; wallet "
          f"venue {w['venue']:,.6f} / ours {w['ours']:,.6f} (rel {w['rel_diff']:.1e}); "
          f"adopted {len(r['adopted'])}; run {r['run_status']}")
    print("OK" if r["ok"] else "FAILED")
    if a.json_out:
        with open(a.json_out, "w", encoding="utf-8") as fh:
            json.dump(r, fh, indent=2, default=str)
    return 0 if r["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
