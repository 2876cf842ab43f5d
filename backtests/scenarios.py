"""Where a backtest's bars come from: a dataset directory or a named synthetic scenario.

Names: `cascade-long` (seed 7, 3 days, longs crowded), `cascade-short` (seed 7, shorts
crowded), `calm` (seed 7, no crowding), or `synthetic:SEED[:CROWDING[:DAYS]]`.
"""

from __future__ import annotations

from pathlib import Path

from bot.data import dataset as ds_io
from bot.data.dataset import Dataset
from bot.data.synthetic import CROWDING_BIAS, MAX_DAYS, MAX_SEED, SynthSpec, generate, snapshot_minutes_for
from bot.errors import LiqbotError

NAMED = {"cascade-long": (7, "long", 3), "cascade-short": (7, "short", 3), "calm": (7, "none", 3)}


def load_scenario(name: str, option: str = "--scenario") -> Dataset:
    """A dataset directory path, or a synthetic scenario name (module docstring); errors
    name `option`, the argument the user gave it as."""
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
            raise LiqbotError(f"{option}: expected synthetic:SEED[:CROWDING[:DAYS]], got "
                              f"{name!r}") from None
        if crowd not in CROWDING_BIAS or not 1 <= days <= MAX_DAYS or not 0 <= seed <= MAX_SEED:
            raise LiqbotError(f"{option}: seed 0..{MAX_SEED}, crowding long|short|none, days "
                              f"1..{MAX_DAYS}, got {name!r}")
        return generate(SynthSpec(seed=seed, days=days, crowding=crowd,
                                  snapshot_minutes=snapshot_minutes_for(days)))
    path = Path(name)
    if path.is_dir():
        return ds_io.load(path)
    if path.exists():
        raise LiqbotError(f"{option}: {name!r} is a file, expected a dataset directory")
    raise LiqbotError(f"{option}: {name!r} is neither a dataset directory nor one of "
                      f"{', '.join(NAMED)}, synthetic:SEED[:CROWDING[:DAYS]]")
