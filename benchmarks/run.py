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

from bot.data import binance_vision as bv
from bot.data import dataset as ds_io
from bot.data.synthetic import SynthSpec, generate


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
    print(f"{'benchmark':<62} {'measured':>10} {'target':>8}  ok")
    ok_all = True
    for name, value, target in rows:
        ok = value < target
        ok_all &= ok
        print(f"{name:<62} {value * 1000:>8.1f}ms {target * 1000:>6.0f}ms  {'yes' if ok else 'NO'}")
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
