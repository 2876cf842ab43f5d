"""`--tiers FILE`: which leverage brackets a command trades each symbol on.

One resolution for every command (`brackets.for_symbol`): the file when given, else the
shipped table, else BTCUSDT's as a stand-in, announced on stderr once per symbol so a
backtest of an alt never silently runs on BTC's margin tiers. A live run reads the
exchange's own tiers instead (`bot.cli.run`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from bot.errors import LiqbotError
from bot.mechanics import brackets as br

TiersOption = Annotated[Path | None, typer.Option(
    "--tiers", help="leverage brackets as JSON (ccxt fetch_leverage_tiers output, one or "
                    "many symbols); default: the shipped table, BTCUSDT's as a stand-in "
                    "for other symbols")]


def brackets_for(symbol: str, tiers: Path | None, hint: bool = True) -> br.Brackets:
    """`symbol`'s brackets; a missing `tiers` file is an exit-2 error naming it. `hint`:
    the warning suggests `--tiers` (False for a command without the option)."""
    if tiers is not None and not tiers.is_file():
        raise LiqbotError(f"--tiers {tiers}: no such file")
    b = br.for_symbol(symbol, tiers)
    note = br.stand_in_note(symbol, b, hint)
    if note:
        Console(stderr=True, highlight=False).print(f"[yellow]warning:[/] {escape(note)}")
    return b
