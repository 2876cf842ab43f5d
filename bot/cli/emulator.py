"""`liqbot emulator serve DATASET [--port P] [--speed N] [--faults PROFILE]`: a local Binance
USD-M exchange replaying DATASET (a dataset directory or a scenario name such as
`cascade-long`) for any ccxt script. Prints the base URLs and the API key/secret it accepts:
from $LIQBOT_EMULATOR_KEY / $LIQBOT_EMULATOR_SECRET (checked at start against the key rule
every request is checked against, and never printed), else generated for this run (and
printed: the client needs them)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Annotated

import typer

from bot.cli.paths import check_number
from bot.cli.tiers import TiersOption, brackets_for
from bot.data.dataset import iso
from bot.emulator.auth import KEY_RULE, key_ok, new_credentials
from bot.emulator.faults import load_profile
from bot.emulator.server import Emulator, EmulatorConfig, serve
from bot.errors import LiqbotError

MIN_SPEED, MAX_SPEED = 0.001, 1e7      # --speed: the clock needs > 0 (a paused start: --paused)
MAX_WALLET = 1e15                      # --wallet, USDT per key (as backtest --wallet)

app = typer.Typer(help="Local Binance USD-M exchange emulator (replays a dataset).",
                  no_args_is_help=True)


KEY_ENV, SECRET_ENV = "LIQBOT_EMULATOR_KEY", "LIQBOT_EMULATOR_SECRET"


def credentials() -> tuple[str, str, bool]:
    """(key, secret, given): from the environment (`given`), else a generated pair.

    A given key must have the format the emulator checks every request's key against
    (`auth.KEY_RULE`, Binance's): otherwise each signed request would be refused with -2014.
    The secret has no format (any text signs). Neither value is ever repeated in a message.
    """
    key, secret = os.environ.get(KEY_ENV), os.environ.get(SECRET_ENV)
    if bool(key) != bool(secret):
        raise LiqbotError(f"emulator: set both {KEY_ENV} and {SECRET_ENV}, or neither (a pair "
                          "is then generated)")
    if not (key and secret):
        return (*new_credentials(), False)
    if not key_ok(key):
        n, other = len(key), sum(1 for c in key if not (c.isascii() and c.isalnum()))
        size = "fewer than 16" if n < 16 else "more than 128" if n > 128 else ""
        raise LiqbotError(f"{KEY_ENV}: expected an API key of 16 to 128 letters and digits "
                          f"({KEY_RULE}, Binance's format: the emulator would refuse every "
                          f"request with -2014), got {n} character(s)"
                          + (f", {size}" if size else "")
                          + (f", {other} of them neither a letter nor a digit" if other else "")
                          + " (value not shown)")
    return key, secret, True


def banner(emu: Emulator, key: str, secret: str, given: bool = False) -> str:
    """What `serve` prints once listening. A given key and secret (from the environment)
    are not repeated: the client has them; a generated pair is, as the client needs it."""
    cred = (f"  apiKey    from ${KEY_ENV}\n  secret    from ${SECRET_ENV}\n" if given else
            f"  apiKey    {key}\n  secret    {secret}\n")
    return (f"liqbot emulator: {', '.join(emu.venue.symbols)} from "
            f"{iso(emu.clock.start_ms)} to {iso(emu.clock.end_ms)} ({emu.clock.start_ms} to "
            f"{emu.clock.end_ms} ms) at x{emu.clock.speed:g}\n"
            f"  REST      {emu.rest_url}   (ccxt: replace https://fapi.binance.com)\n"
            f"  websocket {emu.ws_url}   (ccxt.pro: urls['api']['ws']['linear'])\n"
            f"  admin     {emu.rest_url}/admin/state\n"
            + cred + "  (test credentials for this emulator only; Ctrl-C stops it)")


@app.command("serve")
def serve_cmd(
    dataset: Annotated[str, typer.Argument(help="dataset directory or scenario name "
                                                "(cascade-long, calm, synthetic:SEED...)")],
    port: Annotated[int, typer.Option("--port", min=0, max=65535,
                                      help="TCP port on 127.0.0.1 (0: any free)")] = 8765,
    speed: Annotated[float, typer.Option("--speed", help="simulated ms per wall ms "
                                         f"({MIN_SPEED:g} .. {MAX_SPEED:g})")] = 1.0,
    faults: Annotated[str | None, typer.Option(
        "--faults", help="fault profile: none, flaky, lossy-orders, partial-fills or a TOML "
                          "file")] = None,
    paused: Annotated[bool, typer.Option("--paused", help="start with the clock paused "
                                                          "(POST /admin/clock)")] = False,
    wallet: Annotated[float, typer.Option("--wallet", help="USDT per API key "
                                          f"(0 .. {MAX_WALLET:g})")] = 10_000.0,
    tiers: TiersOption = None,
) -> None:
    """Serve DATASET as a Binance USD-M exchange on 127.0.0.1 until Ctrl-C."""
    from backtests.scenarios import load_scenario

    # checked here, not by typer's min/max: those let nan and inf through to a message about
    # the bound alone (`--speed nan`: "less than or equal to 10000000"), or to a server
    check_number(speed, "--speed", MIN_SPEED, MAX_SPEED)
    check_number(wallet, "--wallet", 0.0, MAX_WALLET)
    key, secret, given = credentials()          # before the data: a bad key fails at once
    ds = load_scenario(dataset, "emulator serve DATASET")
    brackets = {ds.bars.symbol: brackets_for(ds.bars.symbol, tiers)}
    cfg = EmulatorConfig(speed=speed, paused=paused, wallet=wallet, faults=load_profile(faults))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve([ds], {key: secret}, port, cfg,
                          on_ready=lambda emu: print(banner(emu, key, secret, given),
                                                     flush=True),
                          brackets=brackets))
