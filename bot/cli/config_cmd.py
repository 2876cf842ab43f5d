"""`liqbot config ...`: check a config file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bot.config import load_config
from bot.errors import ConfigError

app = typer.Typer(help="Validate configuration files.", no_args_is_help=True)


@app.command("check")
def check(file: Annotated[Path, typer.Argument(help="TOML config file")]) -> None:
    """Print OK, or every problem as `key.path: expected X, got Y` (exit 2)."""
    try:
        cfg = load_config(file)
    except ConfigError as exc:
        for p in exc.problems:
            print(p)
        raise typer.Exit(2) from None
    print(f"OK: {file} (mode = {cfg.mode})")
