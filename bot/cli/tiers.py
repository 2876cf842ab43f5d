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


def brackets_for(symbol: str, tiers: Path | None, hint: bool = True,
                 leverage: float | None = None, clamp: bool = False) -> br.Brackets:
    """`symbol`'s brackets; a missing `tiers` file is an exit-2 error naming it. `hint`:
    the warning suggests `--tiers` (False for a command without the option). `leverage`:
    the account's leverage setting (`live.leverage`), which closes the tiers above it
    (`brackets.at_leverage`): what the account may trade, for every command that trades
    it (backtest, portfolio, sweep, paper); None for the table itself (calc, heatmap,
    the emulator's venue). `clamp` (backtests): a setting above the table's largest
    leverage trades at that largest, said on stderr; without it (paper rehearses live,
    where the venue refuses the setting) it is an exit-2 error."""
    if tiers is not None and not tiers.is_file():
        raise LiqbotError(f"--tiers {tiers}: no such file")
    b = br.for_symbol(symbol, tiers)
    err = Console(stderr=True, highlight=False)
    note = br.stand_in_note(symbol, b, hint)
    if note:
        err.print(f"[yellow]warning:[/] {escape(note)}")
    if leverage is None:
        return b
    top = float(b.max_leverage.max())
    if clamp and leverage > top:
        err.print(f"note: live.leverage {leverage:g}x is above what {symbol}'s brackets "
                  f"allow ({top:g}x): traded at {top:g}x, the most the exchange would set "
                  "(paper and live runs refuse it: lower live.leverage)")
    return br.at_leverage(b, leverage, clamp=clamp)
