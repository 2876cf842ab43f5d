"""`liqbot config check`: validate a config file or a risk preset file."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any

import typer

from bot.cli.paths import check_log_file
from bot.config import Config, RunConfig, load_config
from bot.errors import ConfigError, LiqbotError
from bot.text import count

app = typer.Typer(help="Validate configuration files.", no_args_is_help=True)
KINDS = ("auto", "config", "risk")


def _kind_of(file: Path) -> str:
    """'risk' for a preset (a TOML whose only top-level table is [risk]), else 'config'."""
    try:
        tree = tomllib.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return "config"  # load_config reports the problem with the file
    return "risk" if set(tree) == {"risk"} else "config"


def _run_problems(run: dict[str, Any]) -> list[str]:
    """Every problem `liqbot run` would find in a [run] table (raw TOML values), each named
    by its key: `run_choices` (what `run` itself calls) on the strategy alone, on each
    parameter alone, on all of them together (their relations, the streaming form), and on
    the preset alone, so all are reported, not only the first (until 2026-12-06 the first
    stopped the check: fix one, see the next)."""
    from bot.cli.run import run_choices

    out: list[str] = []

    def attempt(**fields: Any) -> bool:
        part = Config().model_copy(update={"run": RunConfig.model_construct(
            **{**RunConfig().model_dump(), **fields})})
        try:
            run_choices(part, None, None, None, None, None)
        except ConfigError as exc:            # a preset file's own problems name its keys
            out.extend(p for p in exc.problems if p not in out)
            return False
        except LiqbotError as exc:
            out.append(str(exc))
            return False
        return True

    strategy, params, preset = (run.get("strategy", "hold"), run.get("params", {}),
                                run.get("preset", "balanced"))
    # each parameter alone first (every one tried: a list, not a short-circuit), then all
    if isinstance(strategy, str) and attempt(strategy=strategy) and isinstance(params, dict) \
            and all([attempt(strategy=strategy, params={k: v}) for k, v in params.items()]):
        attempt(strategy=strategy, params=params)
    if isinstance(preset, str):
        attempt(preset=preset)
    return out


def _raw_run(file: Path) -> dict[str, Any]:
    """The [run] table of a TOML file as written ({} when unreadable or not a table)."""
    try:
        run = tomllib.loads(file.read_text(encoding="utf-8")).get("run", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}
    return run if isinstance(run, dict) else {}


def _check_run(cfg: Config, file: Path) -> None:
    """The [run] section as `liqbot run` reads it (strategy, its parameters, preset): a
    value it would refuse is a problem here too, named by its key."""
    problems = _run_problems(cfg.run.model_dump())
    if problems:
        raise ConfigError(str(file), problems)


def _check_alerts(cfg: Config, file: Path) -> None:
    """A Telegram chat needs its bot token in the environment, as `liqbot run` does (which
    refuses to start without it): the token is never read from the config."""
    import os

    from bot.runtime.alerts import TELEGRAM_TOKEN_ENV
    if cfg.alerts.telegram_chat_id is not None and not os.environ.get(TELEGRAM_TOKEN_ENV):
        raise ConfigError(str(file), [f"alerts.telegram_chat_id: set, but {TELEGRAM_TOKEN_ENV} "
                                      "is not in the environment (the bot token is never read "
                                      "from the config; `liqbot run` refuses to start "
                                      "without it)"])


@app.command("check")
def check(
    file: Annotated[Path, typer.Argument(help="TOML config file or risk preset")],
    kind: Annotated[str, typer.Option(
        "--kind", help="auto (a file with only a \\[risk] table is a risk preset) | config | risk")]
    = "auto",
) -> None:
    """Print OK, or every problem as `key.path: expected X, got Y` (exit 2)."""
    if kind not in KINDS:
        print(f"--kind: expected one of {', '.join(KINDS)}, got {kind!r}")
        raise typer.Exit(2)
    chosen = _kind_of(file) if kind == "auto" else kind
    try:
        if chosen == "risk":
            from bot.risk.policy import load_policy
            if not file.is_file():
                raise ConfigError(str(file), ["(file): expected a readable TOML file, got "
                                              "no such file"])
            load_policy(str(file))
            print(f"OK: {file} (risk preset)")
            return
        try:
            cfg = load_config(file)
        except ConfigError as exc:            # the [run] problems too, not only the model's
            raise ConfigError(str(file), exc.problems + [
                p for p in _run_problems(_raw_run(file)) if p not in exc.problems]) from None
        _check_run(cfg, file)
        try:
            check_log_file(cfg.logging.file, create=False)
        except LiqbotError as exc:
            raise ConfigError(str(file), [str(exc)]) from None
        _check_alerts(cfg, file)
    except ConfigError as exc:
        # the file first when the lines name keys (as `liqbot run` says "error: FILE: ...")
        if not all(p.startswith("(file)") for p in exc.problems):
            print(f"{file}: {count(len(exc.problems), 'problem')} "
                  f"({'risk preset' if chosen == 'risk' else 'config file'}):")
        for p in exc.problems:                # "(file): ..." is about the file: name it
            print(f"{file}{p[len('(file)'):]}" if p.startswith("(file)") else p)
        raise typer.Exit(2) from None
    creds = "" if cfg.exchange.credentials_file is None else ", credentials file mode 0600"
    print(f"OK: {file} (mode = {cfg.mode}{creds})")
