"""`make bench`: speed figures against the issue targets, measured in one process.

Prints a table (measured, target, ok). Figures are wall-clock best-of-N on this machine,
so they carry noise: a figure fails only when it exceeds its target by more than
`NOISE_MARGIN` (25%), and one within the margin but above the target is flagged "~"
(e.g. 50.2 ms against 50 ms is noise, 70 ms is a regression). Exit 1 only on a regression.
"""

from __future__ import annotations

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

#: Relative slack over a target before a measurement counts as a regression.
NOISE_MARGIN = 0.25


def verdict(value: float, target: float, margin: float = NOISE_MARGIN) -> str:
    """'yes' within target, '~' above it but within the noise margin, 'NO' beyond."""
    if value <= target:
        return "yes"
    return "~" if value <= target * (1.0 + margin) else "NO"


def _fmt(seconds: float) -> str:
    if seconds >= 10:
        return f"{seconds:.1f} s"
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


JIT_PROBE = """
import time
t = time.perf_counter()
from backtests.runner import RunSettings, prepare, run
from bot.data.synthetic import SynthSpec, generate
from bot.mechanics.brackets import shipped
from bot.risk.policy import load_policy
from bot.signals import pipeline
from strategies import find
b = generate(SynthSpec(seed=1, days=1)).bars
br = shipped("binance", "BTCUSDT")
run(prepare(b, br, RunSettings()), find("trend")(), load_policy("balanced"),
    br, RunSettings(), "on")
print(time.perf_counter() - t)
"""


def jit_rows() -> list[tuple[str, float, float]]:
    """A one-day backtest in fresh processes: cold (empty numba cache: compiles every kernel)
    and warm (a second process reusing the on-disk cache)."""
    import os
    import subprocess
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        times = []
        for _ in range(2):
            out = subprocess.run([sys.executable, "-c", JIT_PROBE], env=env, check=True,
                                 capture_output=True, text=True).stdout
            times.append(float(out.strip().splitlines()[-1]))
    return [("JIT cold: fresh process, empty cache, 1-day backtest", times[0], 120.0),
            ("JIT warm: second process, cache=True reused", times[1], 10.0)]


def backtest_rows() -> tuple[list[tuple[str, float, float]], list[str]]:
    from backtests.runner import RunSettings, prepare, run
    from bot.risk.policy import load_policy, off_policy
    from strategies import find

    bars = generate(SynthSpec(seed=1, days=365, crowding="none", snapshot_minutes=1440)).bars
    n = len(bars)
    b = shipped("binance", "BTCUSDT")
    small = bars.take(slice(0, 5000))
    run(prepare(small, b, RunSettings()), find("trend")(),
        load_policy("balanced"), b, RunSettings(), "warm-up")

    def full() -> object:
        return run(prepare(bars, b, RunSettings()), find("trend")(), load_policy("balanced"),
                   b, RunSettings(), "on")

    t_full = best_of(full, 3)
    inputs = prepare(bars, b, RunSettings())
    sma = find("sma_cross")()
    t_loop = best_of(lambda: run(inputs, sma, off_policy(), b, RunSettings(), "off"), 3)
    notes = [f"one year = {n:,} 1m bars (synthetic, seed 1, no crowding)",
             f"liqbot full run (signals + risk + trend): {n / t_full:,.0f} bars/s",
             f"liqbot engine loop only (sma_cross, signals precomputed): {n / t_loop:,.0f} bars/s"]
    try:
        import vectorbt as vbt
        fast, slow = sma.params["fast"], sma.params["slow"]
        from strategies.sma_cross import sma as sma_fn
        f, s = sma_fn(bars.close, fast), sma_fn(bars.close, slow)
        entries = (f > s) & ~(np.r_[False, (f > s)[:-1]])
        exits = (f <= s) & np.r_[False, (f > s)[:-1]]
        kw = {"close": bars.close, "entries": entries, "exits": exits, "price": bars["open"],
              "fees": 0.0005, "init_cash": 100_000.0, "direction": "longonly"}
        vbt.Portfolio.from_signals(**kw)
        t_vbt = best_of(lambda: vbt.Portfolio.from_signals(**kw).value(), 3)
        notes.append(f"vectorbt {vbt.__version__} Portfolio.from_signals (same SMA signals, "
                     f"same data, same process): {n / t_vbt:,.0f} bars/s")
    except ImportError:
        notes.append("vectorbt not installed (dev extra): comparison skipped")
    return [("backtest: 1 year of 1m bars, heatmap + risk + strategy", t_full, 1.0)], notes


def main() -> int:
    rows: list[tuple[str, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "BTCUSDT-1m-2026-01.csv"
        n = write_vision_csv(csv_path, 31)

        def load() -> object:
            return bv.kline_bars(bv.load_file(csv_path))

        bars = load()
        rows.append((f"load 1 month 1m klines CSV ({n:,} rows, parse+validate)",
                     best_of(load), 0.5))
        ds = ds_io.Dataset(bars)
        out = Path(tmp) / "ds"

        def roundtrip() -> object:
            ds_io.save(ds, out)
            return ds_io.load(out)

        back = roundtrip().bars
        assert all(np.array_equal(back[c], bars[c]) for c in bars.names), "round trip not lossless"
        rows.append(("Parquet round trip of it (write + read)", best_of(roundtrip), 0.05))
    generate(SynthSpec(seed=1, days=1))  # JIT (cached on disk after the first process)
    rows.append(("synthesise 30 days of 1m bars (after JIT)",
                 best_of(lambda: generate(SynthSpec(seed=2, days=30, snapshot_minutes=60)), 3),
                 5.0))
    rows.extend(mechanics_rows())
    rows.extend(signals_rows())
    bt_rows, notes = backtest_rows()
    rows.extend(bt_rows)
    rows.extend(jit_rows())
    print(f"{'benchmark':<62} {'measured':>12} {'target':>10}  ok "
          f"(~ = within the {NOISE_MARGIN:.0%} noise margin)")
    ok_all = True
    for name, value, target in rows:
        v = verdict(value, target)
        ok_all &= v != "NO"
        print(f"{name:<62} {_fmt(value):>12} {_fmt(target):>10}  {v}")
    for note in notes:
        print(note)
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
