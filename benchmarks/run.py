"""`make bench`: speed and memory figures against the issue targets, measured in one run.

Prints a table (measured, target, ok) and writes the same figures as JSON (`--json FILE`,
default var/bench.json). liqbot's loop and vectorbt's `Portfolio.from_signals` run on the
same year of bars and the same signals IN THE SAME PROCESS, interleaved round by round, and
the ratio is taken from their best rounds, so machine noise hits both alike.

Figures are wall-clock best-of-N on a shared machine, so they carry noise. Each figure has
a direction (a time or a memory: lower is better; a throughput or a ratio: higher is
better). It passes when it meets its target, is flagged "~" when it misses by less than
`NOISE_MARGIN` (25%: 50.2 ms against 50 ms is noise), and "NO" beyond. With
`--baseline FILE` (an earlier JSON) every figure is also compared with its previous value:
a change for the worse beyond the same band is flagged as a REGRESSION. Exit 1 on a NO or
a regression.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from numba import njit

from bot.data import binance_vision as bv
from bot.data import dataset as ds_io
from bot.data.synthetic import SynthSpec, generate
from bot.mechanics import account as ac
from bot.mechanics.brackets import shipped
from bot.mechanics.liquidation import batch_isolated_liquidation_prices

#: Bars backtrader runs (a Python loop: its bars/s does not depend on the length).
BACKTRADER_BARS = 50_000

#: Relative slack over a target before a measurement counts as a regression.
NOISE_MARGIN = 0.25


def verdict(value: float, target: float, margin: float = NOISE_MARGIN,
            higher: bool = False) -> str:
    """'yes' when `value` meets `target`, '~' when it misses by less than the noise margin,
    'NO' beyond; `higher`: larger is better (throughputs, ratios)."""
    if higher:
        if value >= target:
            return "yes"
        return "~" if value >= target / (1.0 + margin) else "NO"
    if value <= target:
        return "yes"
    return "~" if value <= target * (1.0 + margin) else "NO"


def regressed(value: float, before: float, margin: float = NOISE_MARGIN,
              higher: bool = False) -> bool:
    """True when `value` is worse than the earlier `before` by more than the noise band."""
    if not (before > 0.0 and value == value):
        return False
    return value < before / (1.0 + margin) if higher else value > before * (1.0 + margin)


def _fmt(seconds: float) -> str:
    if seconds >= 10:
        return f"{seconds:.1f} s"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds < 1e-6:
        return f"{seconds * 1e9:.0f} ns"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    return f"{seconds * 1e3:.1f} ms"


def best_of(fn: Callable[[], object], n: int = 5) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def write_vision_csv(path: Path, days: int) -> int:
    """A Binance-layout 1m klines CSV (header row) from a synthetic run."""
    b = generate(SynthSpec(seed=1, days=days, crowding="none")).bars
    cols = [b.ts, b["open"], b["high"], b["low"], b.close, b["volume"], b.ts + 59_999,
            b["quote_volume"], b["trades"], b["taker_buy_volume"], b["taker_buy_quote_volume"],
            np.zeros(len(b))]
    fmt = ["%d", "%.1f", "%.1f", "%.1f", "%.1f", "%.3f", "%d", "%.5f", "%d", "%.3f", "%.5f", "%d"]
    header = ("open_time,open,high,low,close,volume,close_time,quote_volume,count,"
              "taker_buy_volume,taker_buy_quote_volume,ignore")
    np.savetxt(path, np.column_stack(cols), fmt=fmt, delimiter=",", header=header, comments="")
    return len(b)


@njit(cache=True)
def account_steps(n: int, acct: np.ndarray, pos: np.ndarray, floor: np.ndarray, cap: np.ndarray,
                  mmr: np.ndarray, cum: np.ndarray) -> float:
    """n account steps (fill every 10th bar, mark, liquidation check) on a wobbling price."""
    marks = np.empty(1)
    total = 0.0
    for t in range(n):
        px = 100_000.0 * (1.0 + 0.01 * np.sin(t * 0.001))
        marks[0] = px
        dq = 0.01 if t % 20 == 0 else (-0.01 if t % 20 == 10 else 0.0)
        total += ac.account_step(acct, pos, 0, dq, px, 0.0005, px * 0.999, px * 1.001, marks,
                                 floor, cap, mmr, cum, 0.0125)
    return total


def mechanics_rows() -> list[tuple[str, float, float]]:
    b = shipped("binance", "BTCUSDT")
    rng = np.random.default_rng(0)
    n = 1_000_000
    side = np.where(rng.uniform(size=n) < 0.5, 1.0, -1.0)
    entry = rng.uniform(20_000, 120_000, n)
    qty = rng.lognormal(-1.0, 1.5, n)
    lev = rng.choice(np.array([5.0, 10.0, 20.0, 50.0, 100.0]), n)
    batch_isolated_liquidation_prices(side[:10], qty[:10], entry[:10], lev[:10], b.floor, b.cap,
                                      b.mmr, b.cum)
    t_liq = best_of(lambda: batch_isolated_liquidation_prices(side, qty, entry, lev, b.floor,
                                                              b.cap, b.mmr, b.cum))
    floor, cap, mmr, cum, _ = ac.stack_brackets([b])
    steps = 1_000_000
    acct, pos = ac.new_account(1e6, 1, leverage=10.0)
    account_steps(100, acct, pos, floor, cap, mmr, cum)
    acct, pos = ac.new_account(1e6, 1, leverage=10.0)
    t_steps = best_of(lambda: account_steps(steps, acct.copy(), pos.copy(), floor, cap, mmr, cum))
    return [("Binance liquidation prices, 1,000,000 positions, bracketed", t_liq, 0.05),
            ("one account step (fill + mark + liquidation check), per step", t_steps / steps,
             1e-6)]


def signals_rows() -> list[tuple[str, float, float]]:
    from bot.signals import heatmap as hm
    from bot.signals import pipeline

    b = shipped("binance", "BTCUSDT")
    bars = generate(SynthSpec(seed=3, days=2)).bars.take(slice(1440, 2880))  # a full book
    levs = np.array([5.0, 10.0, 20.0, 25.0, 50.0, 100.0])
    w = np.full(6, 1 / 6)
    params = hm.HeatmapParams(n_bins=2000)
    hm.run(bars, b, params, levs, w)
    t_day = best_of(lambda: hm.run(bars, b, params, levs, w))
    pipeline.compute(bars, b)
    t_all = best_of(lambda: pipeline.compute(bars, b))
    return [("heatmap: one bar update, 2,000 bins, 6 leverage tiers", t_day / len(bars), 20e-6),
            ("heatmap: a day of 1m bars (1,440)", t_day, 0.05),
            ("all signals (heatmap + positioning + detectors), a day", t_all, 0.05)]


class Precomputed:
    """A strategy whose targets were computed beforehand: `run` on it times the loop
    alone (sizing and name as the strategy's)."""

    def __init__(self, strategy, targets: np.ndarray) -> None:
        self.name = strategy.name
        self.sizing = strategy.sizing
        self._targets = targets

    def targets(self, bars, signals) -> np.ndarray:
        return self._targets


#: one row: (name, value, target or None, unit "s" | "bars/s" | "x" | "MB" | "n", higher)
Row = tuple[str, float, float | None, str, bool]


def _cache_entries(path: str) -> int:
    return sum(len(files) for _, _, files in os.walk(path))


def jit_rows() -> list[Row]:
    """`liqbot backtest` of a saved one-day dataset (trend, risk on) in fresh processes:
    cold (empty numba cache: compiles every kernel it needs; on 2+ free cores the two
    kernel trees compile at once, `bot.warmup`) and warm (a second process reusing the
    on-disk cache); wall and CPU seconds (children included), and how many cache entries
    the second process wrote (0: it compiled nothing)."""
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as data:
        day = Path(data) / "day"                # a saved dataset, as `liqbot backtest` reads
        ds_io.save(ds_io.Dataset(generate(SynthSpec(seed=1, days=1)).bars), day)
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        cmd = [sys.executable, "-m", "bot.cli", "backtest", str(day), "--strategy", "trend",
               "--risk", "on"]
        times, cpus, entries = [], [], []
        for _ in range(2):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t = time.perf_counter()
            subprocess.run(cmd, env=env, check=True, capture_output=True)
            times.append(time.perf_counter() - t)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
            entries.append(_cache_entries(cache))
    return [("JIT cold: `liqbot backtest`, fresh process, empty cache, 1 day (wall)",
             times[0], None, "s", False),
            ("JIT warm: second process, cache=True reused (wall)", times[1], 10.0, "s", False),
            ("JIT compilation: cold - warm (wall)", times[0] - times[1], 8.0, "s", False),
            ("JIT compilation: cold - warm (CPU, all processes)", cpus[0] - cpus[1], None, "s",
             False),
            ("cache entries written by the second process (0 = compiles nothing)",
             float(entries[1] - entries[0]), 0.0, "n", False)]


RSS_PROBE = """
import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def peak_rss_mb(args: list[str]) -> float:
    """Peak resident memory (MB) of `python -m bot.cli ARGS` in its own process (warm numba
    cache: the one this process uses)."""
    out = subprocess.run([sys.executable, "-c", RSS_PROBE, sys.executable, "-m", "bot.cli",
                          *args], check=True, capture_output=True, text=True).stdout
    return int(out.strip().splitlines()[-1]) / 1024.0


def backtest_rows(tmp: Path, rounds: int = 5) -> tuple[list[Row], list[str]]:
    """One year of 1m bars: the full pipeline (signals + risk + trend) and the loop alone
    (sma_cross, signals precomputed, risk off) against vectorbt on the same signals,
    interleaved round by round in this process; then the peak RSS of `liqbot backtest` on
    the same year saved as a dataset."""
    from backtests import engine as eg
    from backtests.runner import RunSettings, prepare, run
    from bot.risk.policy import load_policy, off_policy
    from strategies import find

    bars = generate(SynthSpec(seed=1, days=365, crowding="none", snapshot_minutes=1440)).bars
    n = len(bars)
    b = shipped("binance", "BTCUSDT")
    small = bars.take(slice(0, 5000))
    run(prepare(small, b, RunSettings()), find("trend")(),
        load_policy("balanced"), b, RunSettings(), "warm-up")
    run(prepare(small, b, RunSettings()), find("sma_cross")(), off_policy(), b, RunSettings(),
        "warm-up")

    def full() -> object:
        return run(prepare(bars, b, RunSettings()), find("trend")(), load_policy("balanced"),
                   b, RunSettings(), "on")

    t_full = best_of(full, 3)
    inputs = prepare(bars, b, RunSettings())
    sma = find("sma_cross")()
    # the SMA targets computed once, outside the timed loop, as vectorbt's entries and exits
    # are below: the workload precomputes the signals for both
    pre = Precomputed(sma, sma.targets(bars, inputs.signals))
    rows: list[Row] = [
        ("full pipeline: heatmap + positioning + detectors + risk + trend, 1 year", n / t_full,
         2_000_000.0, "bars/s", True)]
    notes = [f"one year = {n:,} 1m bars (synthetic, seed 1, no crowding)"]

    def loop() -> object:
        return run(inputs, pre, off_policy(), b, RunSettings(), "off")

    def loop_core() -> object:     # the 4 record columns `liqbot backtest` and sweeps keep
        return run(inputs, pre, off_policy(), b, RunSettings(), "off",
                   record_columns=eg.N_REC_CORE)

    # the same SMA cross as entries and exits, for vectorbt and backtrader
    from strategies.sma_cross import sma as sma_fn
    up = sma_fn(bars.close, sma.params["fast"]) > sma_fn(bars.close, sma.params["slow"])
    entries = up & ~np.r_[False, up[:-1]]
    exits = ~up & np.r_[False, up[:-1]]
    try:
        import vectorbt as vbt

        kw = {"close": bars.close, "entries": entries, "exits": exits, "price": bars["open"],
              "fees": 0.0005, "init_cash": 100_000.0, "direction": "longonly"}

        def vb() -> object:
            return vbt.Portfolio.from_signals(**kw).value()

        vb()
        loop()
        loop_core()
        t_loop = t_vbt = t_core = float("inf")
        for _ in range(rounds):                 # interleaved: noise hits all alike
            t_loop = min(t_loop, best_of(loop, 1))
            t_vbt = min(t_vbt, best_of(vb, 1))
            t_core = min(t_core, best_of(loop_core, 1))
        rows += [("loop alone: sma_cross, signals precomputed, risk off", n / t_loop, None,
                  "bars/s", True),
                 (f"vectorbt {vbt.__version__} Portfolio.from_signals, same signals",
                  n / t_vbt, None, "bars/s", True),
                 ("loop / vectorbt (same process, interleaved)", t_vbt / t_loop, 1.5, "x",
                  True),
                 ("same loop keeping 4 record columns (as `liqbot backtest`, sweeps)",
                  n / t_core, None, "bars/s", True),
                 ("4-column loop / vectorbt", t_vbt / t_core, None, "x", True)]
        t_loop_bt = t_loop
    except ImportError:
        t_loop_bt = best_of(loop, rounds)
        rows.append(("loop alone: sma_cross, signals precomputed, risk off", n / t_loop_bt,
                     None, "bars/s", True))
        notes.append("vectorbt not installed (dev extra): comparison skipped")
    try:
        from backtrader_cmp import bars_per_second  # beside this script (sys.path[0])

        m = BACKTRADER_BARS
        bt_rate, bt_trades = bars_per_second(
            bars.ts[:m], bars["open"][:m], bars["high"][:m], bars["low"][:m], bars.close[:m],
            entries[:m], exits[:m])
        rows += [(f"backtrader, same signals (first {m:,} bars; bars/s)", bt_rate, None,
                  "bars/s", True),
                 ("loop / backtrader (same process)", n / t_loop_bt / bt_rate, None, "x", True)]
        notes.append(f"backtrader closed {bt_trades} trades on its {m:,} bars")
    except ImportError:
        notes.append("backtrader not installed (dev extra): comparison skipped")
    ds = tmp / "year"
    ds_io.save(ds_io.Dataset(bars), ds)
    rows.append(("peak RSS: liqbot backtest, 1 year, trend, risk on (warm cache)",
                 peak_rss_mb(["backtest", str(ds), "--strategy", "trend", "--risk", "on"]),
                 300.0, "MB", False))
    rows.append(("peak RSS: liqbot --help", peak_rss_mb(["--help"]), 120.0, "MB", False))
    notes.append("freqtrade is not installed here: not measured")
    return rows, notes


def _show(value: float, unit: str) -> str:
    if unit == "s":
        return _fmt(value)
    if unit == "bars/s":
        return f"{value / 1e6:.2f}M/s"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "MB":
        return f"{value:.0f} MB"
    return f"{value:g}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="liqbot speed and memory benchmarks")
    ap.add_argument("--json", type=Path, default=Path("var/bench.json"),
                    help="write the figures as JSON here (default var/bench.json)")
    ap.add_argument("--baseline", type=Path, default=None,
                    help="an earlier JSON: flag figures that got worse beyond the noise band")
    args = ap.parse_args(argv)
    before: dict[str, float] = {}
    if args.baseline is not None:
        try:
            before = {f["name"]: f["value"] for f in
                      json.loads(args.baseline.read_text(encoding="utf-8"))["figures"]}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"--baseline {args.baseline}: not a bench JSON ({exc})", file=sys.stderr)
            return 2
    rows: list[Row] = []

    def secs(items: list[tuple[str, float, float]]) -> list[Row]:
        return [(name, value, target, "s", False) for name, value, target in items]

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        csv_path = tmp / "BTCUSDT-1m-2026-01.csv"
        n = write_vision_csv(csv_path, 31)

        def load() -> object:
            return bv.kline_bars(bv.load_file(csv_path))

        bars = load()
        rows += secs([(f"load 1 month 1m klines CSV ({n:,} rows, parse+validate)",
                       best_of(load), 0.5)])
        ds = ds_io.Dataset(bars)
        out = tmp / "ds"

        def roundtrip() -> object:
            ds_io.save(ds, out)
            return ds_io.load(out)

        back = roundtrip().bars
        assert all(np.array_equal(back[c], bars[c]) for c in bars.names), "round trip not lossless"
        rows += secs([("Parquet round trip of it (write + read)", best_of(roundtrip), 0.05)])
        generate(SynthSpec(seed=1, days=1))  # JIT (cached on disk after the first process)
        rows += secs([("synthesise 30 days of 1m bars (after JIT)",
                       best_of(lambda: generate(SynthSpec(seed=2, days=30, snapshot_minutes=60)),
                               3), 5.0)])
        rows += secs(mechanics_rows())
        rows += secs(signals_rows())
        bt_rows, notes = backtest_rows(tmp)
        rows += bt_rows
    rows += jit_rows()
    print(f"{'benchmark':<72} {'measured':>11} {'target':>10}  ok "
          f"(~ = within the {NOISE_MARGIN:.0%} noise band)")
    ok_all = True
    figures = []
    for name, value, target, unit, higher in rows:
        v = "" if target is None else verdict(value, target, higher=higher)
        worse = name in before and regressed(value, before[name], higher=higher)
        ok_all &= v != "NO" and not worse
        tgt = "" if target is None else ("<= " if not higher else ">= ") + _show(target, unit)
        flag = f"  REGRESSION (was {_show(before[name], unit)})" if worse else ""
        print(f"{name:<72} {_show(value, unit):>11} {tgt:>10}  {v}{flag}")
        figures.append({"name": name, "value": value, "unit": unit, "target": target,
                        "higher_is_better": higher, "ok": v, "regressed": worse})
    for note in notes:
        print(note)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "platform": platform.platform()},
        "noise_margin": NOISE_MARGIN, "figures": figures, "notes": notes}, indent=1) + "\n",
        encoding="utf-8")
    print(f"figures as JSON: {args.json}")
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
