"""The `liqbot` command line (typer + rich).

Exit codes: 0 success; 2 bad usage, config or data (a one-paragraph message, never a
traceback); 1 unexpected error (traceback only with --debug).
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from bot import __version__
from bot.cli import backtest, calc, config_cmd, data, heatmap
from bot.errors import LiqbotError

app = typer.Typer(
    name="liqbot",
    help="Perpetual-futures trading with liquidation-aware risk controls.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(data.app, name="data")
app.add_typer(config_cmd.app, name="config")
app.add_typer(calc.app, name="calc")
heatmap.register(app)
backtest.register(app)


def _version(value: bool) -> None:
    if value:
        print(f"liqbot {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="TOML config file (default: $LIQBOT_CONFIG, else built-ins)")] = None,
    debug: Annotated[bool, typer.Option(
        "--debug", help="show tracebacks of unexpected errors")] = False,
    version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="print the version and exit")] = False,
) -> None:
    """liqbot: replay cascade days, measure liquidation risk, trade perpetuals."""
    ctx.obj = {"config": config, "debug": debug}


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; maps errors to exit codes (see module docstring)."""
    args = sys.argv[1:] if argv is None else argv
    err = Console(stderr=True, highlight=False)
    try:
        # standalone mode: typer itself turns usage errors into exit 2 (SystemExit)
        app(args=args, prog_name="liqbot")
    except LiqbotError as exc:
        err.print(f"[bold red]error:[/] {exc}", markup=True, soft_wrap=True)
        return 2
    except Exception as exc:
        if "--debug" in args:
            traceback.print_exc()
        err.print(f"[bold red]unexpected error:[/] {type(exc).__name__}: {exc}\n"
                  "This is a bug in liqbot; rerun with --debug for the traceback.", soft_wrap=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
