"""The `liqbot` command line (typer + rich).

Exit codes: 0 success; 2 bad usage, config or data (a one-paragraph message, never a
traceback); 1 unexpected error (traceback only with --debug); 130 interrupted by Ctrl-C
(SIGINT), at any moment, without a traceback (`bot.interrupts`); 141 when the reader of
our output left (`liqbot run ... | head`, `liqbot --help | head`), silently.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from bot import __version__, interrupts
from bot.errors import LiqbotError, UserCodeError

#: Commands loaded on first use, so `liqbot --help` (and every command) imports only the
#: modules it runs (numba, pyarrow, aiohttp, sqlalchemy stay out of `--help`): name ->
#: (module, "register" = its `register(app)` adds the command | "app" = its typer `app` is
#: the group, short help shown by `liqbot --help`, hidden). tests/test_startup.py checks
#: each entry against the loaded command.
LAZY: dict[str, tuple[str, str, str, bool]] = {
    "heatmap": ("bot.cli.heatmap", "register", "Liquidation heatmap: top clusters per side "
                "and the crowding score of a dataset.", False),
    "heatmap-validate": ("bot.cli.heatmap", "register", "", True),
    "backtest": ("bot.cli.backtest", "register", "Replay a dataset or scenario through a "
                 "strategy, the risk engine and the mechanics.", False),
    "run": ("bot.cli.run", "register", "Run the trading daemon (paper by default; exchange "
            "feed or --replay).", False),
    "status": ("bot.cli.run", "register", "The daemon's state, positions, last decision and "
               "why.", False),
    "halt": ("bot.cli.run", "register", "Kill switch: stop (or flatten) the running daemon "
             "within a second.", False),
    "sweep": ("bot.cli.sweep", "register", "Sweep a strategy's parameters over datasets "
              "(grid, Optuna, walk-forward; every core or Ray).", False),
    "data": ("bot.cli.data", "app", "Market data: import, inspect, synthesise, download.", False),
    "config": ("bot.cli.config_cmd", "app", "Validate configuration files.", False),
    "calc": ("bot.cli.calc", "app", "Calculators: liquidation price.", False),
    "drill": ("bot.cli.drill", "register", "Live mode against the local emulator (real ccxt) "
              "vs the backtest of the same data: parity report.", False),
    "emulator": ("bot.cli.emulator", "app", "Local Binance USD-M exchange emulator (replays a "
                 "dataset).", False),
}


def load_command(name: str) -> Any:
    """The real click command of a LAZY entry (imports its module), built exactly as an
    eager `app.add_typer(module.app)` / `module.register(app)` would build it."""
    import importlib

    module_name, how, _, _ = LAZY[name]
    module = importlib.import_module(module_name)
    holder = typer.Typer(add_completion=False)
    if how == "app":
        holder.add_typer(module.app, name=name)
    else:
        module.register(holder)
    cmd = typer.main.get_group(holder).commands[name]
    _reflow_help(cmd)
    return cmd


def _reflow_help(cmd: Any) -> None:
    """Join the single line breaks of a docstring's later paragraphs (typer joins only the
    first paragraph's, so the rest broke where the source line did); a paragraph that
    starts with click's \\b keeps its lines. Recurses into groups."""
    import inspect

    if cmd.help:
        first, *rest = inspect.cleandoc(cmd.help).split("\n\n")
        cmd.help = "\n\n".join([first, *(p if p.startswith("\b") else " ".join(p.split("\n"))
                                          for p in rest)])
    for sub in getattr(cmd, "commands", {}).values():
        _reflow_help(sub)


class LazyGroup(typer.core.TyperGroup):
    """The root group: listing (help) shows LAZY entries as stubs; running one loads it."""

    def list_commands(self, ctx: Any) -> list[str]:
        return [*super().list_commands(ctx), *(n for n in LAZY if n not in self.commands)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is None and cmd_name in LAZY:
            _, _, short, hidden = LAZY[cmd_name]
            cmd = typer.core.TyperCommand(cmd_name, short_help=short, hidden=hidden)
        return cmd

    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[str | None, Any, list[str]]:
        name = args[0] if args else ""
        if name in LAZY and name not in self.commands:
            # the name the user typed: usage lines and hints say `liqbot heatmap validate`
            return name.replace("heatmap-validate", "heatmap validate"), load_command(name), args[1:]
        if name and not name.startswith("-") and name not in self.commands:
            from difflib import get_close_matches

            close = get_close_matches(name, [n for n in self.list_commands(ctx)
                                             if not (n in LAZY and LAZY[n][3])])
            if close:
                ctx.fail(f"No such command {name!r}. Did you mean "
                         f"{', '.join(repr(c) for c in close)}?")
        return super().resolve_command(ctx, args)


app = typer.Typer(
    name="liqbot",
    cls=LazyGroup,
    help="Perpetual-futures trading with liquidation-aware risk controls.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


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


def _file_id(target: int | str) -> tuple[int, int] | None:
    """(device, inode) of a file descriptor's file or a path's; None when there is none."""
    try:
        st = os.stat(target)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; maps errors to exit codes (see module docstring)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in args[1:] and "--" not in args[:args.index("--debug")]:
        args.remove("--debug")        # a global option, taken anywhere on the line
        args.insert(0, "--debug")
    from bot.cli.paths import width_for  # COLUMNS=0 must not hide the message
    err = Console(stderr=True, highlight=False, emoji=False,  # ':boom:' in a message: verbatim
                  width=width_for(sys.stderr))
    # `heatmap validate` has options (and --help) of its own: route it to its command
    for i, a in enumerate(args):
        if not a.startswith("-") and (i == 0 or args[i - 1] not in ("--config", "-c")):
            if a == "heatmap" and args[i + 1:i + 2] == ["validate"]:
                args[i:i + 2] = ["heatmap-validate"]
            break
    stdout_was = _file_id(1)
    try:
        # standalone mode: typer itself turns usage errors into exit 2 (SystemExit) and a
        # KeyboardInterrupt in a command into exit 130; Ctrl-C raises one only at a safe
        # point (never inside Python code numba's compiled code calls: bot.interrupts)
        with interrupts.taken_safely(signal.SIGINT):
            app(args=args, prog_name="liqbot")
    except KeyboardInterrupt:               # outside a command (or deferred to its end)
        return 130
    except SystemExit as exc:
        # typer's help console is rich's own: on a broken pipe it points stdout at
        # /dev/null and exits 1 ("a bug" here); the reader left, as below
        now = _file_id(1)
        if exc.code == 1 and stdout_was is not None and stdout_was != now == _file_id(os.devnull):
            return 141
        # typer's own EPIPE handling (a command's plain print or click.echo): it wraps
        # stdout in click's PacifyFlushWrapper and exits 1; the reader left, as below
        if exc.code == 1 and type(sys.stdout).__name__ == "PacifyFlushWrapper":
            with contextlib.suppress(OSError, ValueError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
            return 141
        raise
    except BrokenPipeError:                 # `liqbot ... | head`: the reader left
        # no message (nobody reads it) and no second error when Python flushes stdout at
        # exit: 141 = 128 + SIGPIPE, what a shell shows for a tool its pipe ended
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except LiqbotError as exc:
        from bot.store.urls import mask_url  # a URL's password never reaches the terminal
        if "--debug" in args and isinstance(exc, UserCodeError) and exc.__cause__ is not None:
            traceback.print_exception(exc.__cause__)
        # escape (and emoji=False): a message quoting user input like '[/bold]' or
        # '/tmp/a:fire:b' prints as it is
        err.print(f"[bold red]error:[/] {escape(mask_url(str(exc)))}", markup=True, soft_wrap=True)
        return 2
    except Exception as exc:
        from bot.store.urls import mask_url
        if "--debug" in args:
            traceback.print_exc()
        err.print(f"[bold red]unexpected error:[/] {type(exc).__name__}: {escape(mask_url(str(exc)))}\n"
                  "This is a bug in liqbot; rerun with --debug for the traceback.", soft_wrap=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
