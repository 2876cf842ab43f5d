"""Where a backtest's bars come from: a dataset directory or a named synthetic scenario.

Names: `cascade-long` (seed 7, 3 days, longs crowded), `cascade-short` (seed 7, shorts
crowded), `calm` (seed 7, no crowding), or `synthetic:SEED[:CROWDING[:DAYS]]`.
"""

from __future__ import annotations

from pathlib import Path

from bot.data import dataset as ds_io
from bot.data.dataset import Dataset
from bot.data.synthetic import CROWDING_BIAS, SynthSpec, generate
from bot.errors import LiqbotError

NAMED = {"cascade-long": (7, "long", 3), "cascade-short": (7, "short", 3), "calm": (7, "none", 3)}


def load_scenario(name: str) -> Dataset:
    """A dataset directory path, or a synthetic scenario name (module docstring)."""
    if name in NAMED:
        seed, crowd, days = NAMED[name]
        return generate(SynthSpec(seed=seed, days=days, crowding=crowd))
    if name.startswith("synthetic:"):
        parts = name.split(":")[1:]
        try:
            seed = int(parts[0])
            crowd = parts[1] if len(parts) > 1 else "long"
            days = int(parts[2]) if len(parts) > 2 else 3
        except (ValueError, IndexError):
            raise LiqbotError(f"--scenario: expected synthetic:SEED[:CROWDING[:DAYS]], got "
                              f"{name!r}") from None
        if crowd not in CROWDING_BIAS or not 1 <= days <= 366 or seed < 0:
            raise LiqbotError(f"--scenario: crowding long|short|none, days 1..366, got {name!r}")
        return generate(SynthSpec(seed=seed, days=days, crowding=crowd))
    path = Path(name)
    if path.exists():
        return ds_io.load(path)
    raise LiqbotError(f"--scenario: {name!r} is neither a dataset directory nor one of "
                      f"{', '.join(NAMED)}, synthetic:SEED[:CROWDING[:DAYS]]")
