"""`make bench`: speed figures against the issue targets, measured in one process.

Prints a table (measured, target, ok). Figures are wall-clock best-of-N on this machine.
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


def _fmt(seconds: float) -> str:
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
    print(f"{'benchmark':<62} {'measured':>12} {'target':>10}  ok")
    ok_all = True
    for name, value, target in rows:
        ok = value < target
        ok_all &= ok
        print(f"{name:<62} {_fmt(value):>12} {_fmt(target):>10}  {'yes' if ok else 'NO'}")
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
