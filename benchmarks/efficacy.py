"""Risk off vs on on the real cascade days and on calm synthetic days (docs/risk.md).

Usage: python benchmarks/efficacy.py [path/to/shared/data] > table.md
"""

from __future__ import annotations

import sys
from pathlib import Path

from backtests.runner import RunSettings, prepare, run
from bot.data.bars import Bars
from bot.data.importer import build_dataset
from bot.data.synthetic import SynthSpec, generate
from bot.mechanics.brackets import shipped
from bot.risk import engine as en
from bot.risk.policy import load_policy, off_policy
from bot.risk.reasons import reason_names
from bot.signals import pipeline
from strategies import find

REAL = {"2025-10-10": "BTCUSDT-1m-2025-10-08_to_2025-10-12.csv",
        "2026-02-05/06": "BTCUSDT-1m-2026-02-03_to_2026-02-07.csv"}
STRATS = [("hold", {"side": "long", "leverage": "10"}), ("trend", {"leverage": "5"}),
          ("cascade_fade", {"leverage": "3"})]


def rows(label: str, bars: Bars, no_halts: bool = False) -> list[str]:
    """One row per strategy; with `no_halts` the balanced preset runs without its daily-loss
    and drawdown halts, to show what the liquidation-aware rules do on their own."""
    br = shipped("binance", "BTCUSDT")
    s = RunSettings()
    inputs = prepare(bars, pipeline.compute(bars, br), s)
    policy = load_policy("balanced")
    if no_halts:
        policy = policy.model_copy(update={"daily_loss": 1.0, "max_drawdown": 1.0})
        label += " (balanced, halts off)"
    out = []
    for name, params in STRATS[:1] if no_halts else STRATS:
        strat = find(name).from_strings(params)
        off = run(inputs, strat, off_policy(), br, s, "off").metrics
        res = run(inputs, strat, policy, br, s, "on")
        on = res.metrics
        acted = sorted({r for d in res.decisions for r in reason_names(int(d[3 + en.D_REASONS]))
                        if d[2] != d[1] or r in ("drawdown", "daily_loss", "cascade")})
        cut = 1 - on["max_drawdown"] / off["max_drawdown"] if off["max_drawdown"] > 0 else 0.0
        out.append(f"| {label} | {strat.describe()} | {off['total_return']:+.1%} | "
                   f"{off['max_drawdown']:.1%} | {off['liquidations']} | "
                   f"{on['total_return']:+.1%} | {on['max_drawdown']:.1%} | "
                   f"{on['liquidations']} | {cut:+.0%} | {on['n_risk_actions']} | "
                   f"{', '.join(acted) or '-'} |")
    return out


def main() -> None:
    shared = Path(sys.argv[1]) if len(sys.argv) > 1 else \
        Path(__file__).resolve().parents[2] / "shared" / "data"
    print("| days | strategy | off return | off max DD | off liqs | on return | on max DD | "
          "on liqs | DD cut | risk actions | rules that changed a target |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    funding = shared / "binance_um" / "funding" / "BTCUSDT_funding_2020-2026.csv"
    for label, name in REAL.items():
        path = shared / "binance_um" / "klines_1m" / name
        if path.exists():
            bars = build_dataset([path, funding]).bars
            for r in rows(f"real {label}", bars) + rows(f"real {label}", bars, no_halts=True):
                print(r, flush=True)
    for seed in (1, 2, 3):
        for r in rows(f"synthetic calm seed {seed}",
                      generate(SynthSpec(seed=seed, days=3, crowding="none")).bars):
            print(r, flush=True)


if __name__ == "__main__":
    main()
