"""Daemon benchmarks (`make bench`): bar close -> intent latency, replay throughput through
the daemon path on SQLite, and resident memory over a replayed day on 3 symbols.

Usage: python benchmarks/daemon.py [--json FILE]
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from backtests.runner import RunSettings
from backtests.scenarios import load_scenario
from bot.data.bars import Bars
from bot.execution import kernel as kn
from bot.mechanics.brackets import shipped
from bot.mechanics.fees import venue_fees
from bot.risk.policy import load_policy
from bot.runtime.daemon import Daemon, percentiles
from bot.runtime.replay import ReplayFeed
from bot.store import Store
from strategies import find

BR = shipped("binance", "BTCUSDT")
GOALS = {"latency_p99_us": 1000.0, "bars_per_s": 5000.0, "rss_mb": 250.0}


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def make_daemon(bars: dict[str, Bars], url: str, strategy: str, params: dict[str, str]
                ) -> Daemon:
    strat = find(strategy).from_strings(params)
    store = Store(url)
    feed = ReplayFeed(bars, 0.0)
    run = store.open_run("paper", "paper:binance", list(feed.symbols), strat.name, strat.params,
                         "balanced", 100_000.0)
    s = RunSettings()
    fp = kn.fill_params(s.fills, venue_fees("binance"), s.band, strat.sizing)
    return Daemon(run_id=run.run_id, feed=feed, store=store, strategy=strat,
                  policy=load_policy("balanced").to_array(), fp=fp,
                  brackets={k: BR for k in feed.symbols}, wallet=100_000.0)


def timed_replay(bars: dict[str, Bars], strategy: str, params: dict[str, str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        d = make_daemon(bars, f"sqlite:///{tmp}/b.db", strategy, params)
        t0 = time.perf_counter()
        asyncio.run(d.run(simulated=True))
        dt = time.perf_counter() - t0
        d.store.close()
    lat = percentiles(d.latency_ns[5:])          # the first orders include JIT loading
    wr = percentiles(d.write_ns[5:])
    return {"bars": d.bars_processed, "seconds": dt, "bars_per_s": d.bars_processed / dt,
            "orders": d.seq, "latency": lat, "write": wr}


def memory_run() -> dict:
    """A day of 1m bars on 3 symbols; RSS sampled every 6 simulated hours."""
    base = load_scenario("synthetic:2:none:1").bars
    bars = {s: Bars(s, base.interval_ms, dict(base.columns))
            for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT")}
    samples: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        d = make_daemon(bars, f"sqlite:///{tmp}/m.db", "trend", {"leverage": "3"})
        orig = d.on_bar

        def on_bar(ev: object) -> None:
            orig(ev)  # type: ignore[arg-type]
            if d.bars_processed % (3 * 360) == 0:
                samples.append(rss_mb())

        d.on_bar = on_bar  # type: ignore[method-assign]
        asyncio.run(d.run(simulated=True))
        d.store.close()
    return {"bars": d.bars_processed, "rss_mb_samples": [round(x, 1) for x in samples],
            "rss_mb_max": max(samples), "rss_growth_mb": samples[-1] - samples[0]}


def main() -> None:
    if sys.argv[1:] == ["--warm-cache"]:       # the child below: compile, nothing else
        memory_run()
        return
    # memory first, in a process that has run nothing else: what a daemon holds (imports,
    # compiled kernels, 3 symbols' state), not what the timed replays below leave behind
    # (run after them, the same day measured about 290 MB instead of about 215). The numba
    # cache is filled by a child process first: compiling in this one leaves LLVM's
    # working memory behind (about 305 MB instead of 215 after a source change), which a
    # daemon started on a warm cache does not hold
    subprocess.run([sys.executable, __file__, "--warm-cache"], check=True)
    mem = memory_run()
    warm = load_scenario("cascade-long").bars.take(slice(0, 300))
    timed_replay({warm.symbol: warm}, "trend", {"leverage": "5"})   # JIT / cache load
    day3 = load_scenario("cascade-long").bars
    hold = timed_replay({day3.symbol: day3}, "hold", {"leverage": "10"})
    trend = timed_replay({day3.symbol: day3}, "trend",
                         {"leverage": "5", "sizing": "rebalance", "fast": "10", "slow": "30"})
    out = {"hold_10x": hold, "trend_rebalance": trend, "memory_3_symbols": mem}
    lat, wr = trend["latency"], trend["write"]
    lines = [
        f"daemon replay, hold 10x (few orders): {hold['bars_per_s']:,.0f} bars/s "
        f"(goal >= {GOALS['bars_per_s']:,.0f})",
        f"daemon replay, trend rebalancing ({trend['orders']} orders in {trend['bars']} bars): "
        f"{trend['bars_per_s']:,.0f} bars/s",
        f"bar close -> intent (before the durable write): p50 {lat['p50_us']:.0f} us, "
        f"p99 {lat['p99_us']:.0f} us over {lat['n']} intents (goal p99 <= "
        f"{GOALS['latency_p99_us']:.0f} us)",
        f"durable write of a decision + intent + checkpoint (SQLite WAL): p50 "
        f"{wr['p50_us']:.0f} us, p99 {wr['p99_us']:.0f} us",
        f"RSS over a replayed day on 3 symbols: {mem['rss_mb_samples']} MB, max "
        f"{mem['rss_mb_max']:.0f} MB (goal <= {GOALS['rss_mb']:.0f}), growth "
        f"{mem['rss_growth_mb']:+.1f} MB",
    ]
    print("\n".join(lines))
    if len(sys.argv) > 2 and sys.argv[1] == "--json":
        Path(sys.argv[2]).parent.mkdir(parents=True, exist_ok=True)
        Path(sys.argv[2]).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
