"""Print the calibration table of docs/synthetic.md: stylized facts on real and synthetic days.

Usage: python benchmarks/calibration.py [path/to/shared/data]
"""

from __future__ import annotations

import sys
from pathlib import Path

from bot.data.dataset import iso
from bot.data.importer import build_dataset
from bot.data.stylized import cascade_facts
from bot.data.synthetic import SynthSpec, generate

REAL = ["BTCUSDT-1m-2025-10-10T1848Z_to_2025-10-11T0123Z.csv",
        "BTCUSDT-1m-2026-02-05T1932Z_to_2026-02-06T0216Z.csv"]


def row(name: str, bars: object) -> str:
    f = cascade_facts(bars)  # type: ignore[arg-type]
    return (f"| {name} | {f.worst_1m:+.2%} ({iso(f.worst_1m_ts)[11:16]}) | x{f.volume_spike:.1f} | "
            f"{f.peak_trades:,.0f} | {f.taker_buy_share:.2f} | {f.recovered_2h:.2f} |")


def main() -> None:
    default = Path(__file__).resolve().parents[2] / "shared" / "data"
    shared = Path(sys.argv[1]) if len(sys.argv) > 1 else default
    print("| span | worst 1m low/open | peak 1m quote vol / median prior 2h | peak trades/min | "
          "taker buy share at peak | drop recovered in 2h |")
    print("|---|---|---|---|---|---|")
    for name in REAL:
        path = shared / "binance_um" / "klines_1m" / name
        if path.exists():
            print(row(f"real {name.split('-1m-')[1].removesuffix('.csv')}", build_dataset([path]).bars))
    for crowding in ("long", "none"):
        for seed in range(1, 7):
            print(row(f"synthetic seed {seed} {crowding}",
                      generate(SynthSpec(seed=seed, days=3, crowding=crowding)).bars))


if __name__ == "__main__":
    main()
