"""Configuration: pydantic models of `config/*.toml`, env overrides, and secrets.

Rules:
- every section is a model with `extra="forbid"`, so a misspelt key is an error, not a no-op;
- `LIQBOT_<SECTION>__<KEY>=value` overrides a TOML value (`__` separates nesting levels, the
  value is parsed as a TOML literal when it is one, else taken as a string);
- secrets (API key, secret, passphrase) never come from the TOML: they come from the
  environment (`LIQBOT_API_KEY`, `LIQBOT_API_SECRET`, `LIQBOT_API_PASSPHRASE`) or from the file
  named by `exchange.credentials_file`, which must have mode 0600. A secret-looking key in
  the TOML is rejected without echoing its value.
"""

from __future__ import annotations

import copy
import os
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from bot.errors import ConfigError

SECRET_KEYS = frozenset(
    {"api_key", "apikey", "secret", "api_secret", "password", "passphrase",
     "api_passphrase", "private_key", "token"}
)
ENV_PREFIX = "LIQBOT_"
SECRET_ENV = {"api_key": "LIQBOT_API_KEY", "api_secret": "LIQBOT_API_SECRET",
              "api_passphrase": "LIQBOT_API_PASSPHRASE"}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SyntheticConfig(_Section):
    """The embedded scenario: a synthetic cascade day generated from a seed (no files needed)."""

    seed: int = Field(7, ge=0)
    days: int = Field(3, ge=1, le=366)
    crowding: Literal["long", "short", "none"] = "long"
    symbol: str = "BTCUSDT"
    start_price: float = Field(100_000.0, gt=0)


class DataConfig(_Section):
    """Where market data comes from when a command is not given a dataset."""

    source: str = Field("synthetic", description='"synthetic" or a dataset directory')
    synthetic: SyntheticConfig = SyntheticConfig()


class StoreConfig(_Section):
    """Persistence of orders, fills and decisions (SQLite by default)."""

    url: str = "sqlite:///./var/liqbot.db"


class ExchangeConfig(_Section):
    """Exchange account. Secrets are NOT here: see module docstring."""

    name: Literal["binance", "bybit", "okx"] = "binance"
    symbols: list[str] = Field(default_factory=lambda: ["BTCUSDT"], min_length=1)
    credentials_file: Path | None = None
    testnet: bool = False


class DownloadConfig(_Section):
    """Historical data download (`liqbot data download` / `liqbot data fetch`)."""

    vision_base_url: str = "https://data.binance.vision"
    ccxt_base_url: str | None = Field(
        None, description="override the exchange's REST host (tests point it at 127.0.0.1)"
    )
    requests_per_second: float = Field(5.0, gt=0, le=100)
    timeout_s: float = Field(30.0, gt=0)
    retries: int = Field(3, ge=0, le=20)


class FillsConfig(_Section):
    """Market-order slippage model (`bot/mechanics/fills.py`)."""

    impact_coef: float = Field(0.7, ge=0, description="square-root-law coefficient")
    half_spread_bps: float = Field(0.5, ge=0, description="paid on every market order")
    liq_multiplier: float = Field(2.0, ge=0, description="book thinning per liq/volume")
    window_bars: int = Field(60, ge=1, description="trailing window for volume and sigma")
    max_impact: float = Field(0.05, gt=0, le=0.5, description="cap on slippage (fraction)")


class FeesConfig(_Section):
    """Overrides of the venue fee schedule (`bot/mechanics/fees.py`); fractions of notional.
    Unset keys keep the venue's base rates."""

    maker: float | None = Field(None, ge=-0.001, le=0.01)
    taker: float | None = Field(None, ge=0, le=0.01)
    liquidation: float | None = Field(None, ge=0, le=0.1)


class LoggingConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class Config(_Section):
    """The whole configuration. `mode = "paper"` is the default; live needs `--live` too."""

    mode: Literal["paper", "live"] = "paper"
    data: DataConfig = DataConfig()
    store: StoreConfig = StoreConfig()
    exchange: ExchangeConfig = ExchangeConfig()
    download: DownloadConfig = DownloadConfig()
    fills: FillsConfig = FillsConfig()
    fees: FeesConfig = FeesConfig()
    logging: LoggingConfig = LoggingConfig()


class Credentials:
    """API credentials held as `SecretStr`; `repr` and `str` never show them."""

    def __init__(self, api_key: str, api_secret: str, api_passphrase: str | None = None) -> None:
        self.api_key = SecretStr(api_key)
        self.api_secret = SecretStr(api_secret)
        self.api_passphrase = SecretStr(api_passphrase) if api_passphrase else None

    def __repr__(self) -> str:
        return "Credentials(api_key=***, api_secret=***)"

    __str__ = __repr__


def _format_problem(err: Mapping[str, Any]) -> str:
    loc = ".".join(str(p) for p in err["loc"]) or "(root)"
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"{loc}: expected a known key, got unknown key {str(err['loc'][-1])!r}"
    if kind == "missing":
        return f"{loc}: expected a value, got nothing"
    msg = str(err["msg"])
    expected = msg.replace("Input should be ", "").replace("Value error, ", "")
    got = err.get("input")
    return f"{loc}: expected {expected}, got {got!r}"


def _secret_keys_in(tree: Mapping[str, Any], prefix: str = "") -> list[str]:
    found: list[str] = []
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            found.extend(_secret_keys_in(value, path + "."))
        elif key.lower() in SECRET_KEYS:
            found.append(path)
    return found


def _parse_env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _apply_env(tree: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    secret_vars = set(SECRET_ENV.values()) | {"LIQBOT_CONFIG"}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or name in secret_vars:
            continue
        path = name[len(ENV_PREFIX):].lower().split("__")
        node = tree
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                break
            node = child
        else:
            node[path[-1]] = _parse_env_value(raw)
    return tree


def parse_config(
    tree: Mapping[str, Any], source: str, env: Mapping[str, str] | None = None
) -> Config:
    """Validate a config tree (from TOML) plus env overrides; raise ConfigError with all problems."""
    secret_paths = _secret_keys_in(tree)
    problems = [
        f"{p}: expected no secrets in a config file (use the {SECRET_ENV['api_key']}-style "
        "environment variables or exchange.credentials_file with mode 0600), got a value "
        "(not shown)"
        for p in secret_paths
    ]
    merged = _apply_env(copy.deepcopy(dict(tree)), env if env is not None else os.environ)
    try:
        cfg = Config.model_validate(merged)
    except ValidationError as exc:
        problems.extend(
            _format_problem(e) for e in exc.errors()
            if ".".join(str(p) for p in e["loc"]) not in secret_paths  # already reported
        )
        cfg = None
    if problems or cfg is None:
        raise ConfigError(source, problems)
    return cfg


def load_config(path: Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Load `path` (or `$LIQBOT_CONFIG`, or the built-in defaults) and apply env overrides."""
    environ = env if env is not None else os.environ
    if path is None and environ.get("LIQBOT_CONFIG"):
        path = Path(environ["LIQBOT_CONFIG"])
    if path is None:
        return parse_config({}, "(defaults)", environ)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"(file): expected a readable TOML file, got {exc.strerror}"]) from None
    try:
        tree = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [f"(file): expected valid TOML, got {exc}"]) from None
    return parse_config(tree, str(path), environ)


def load_credentials(cfg: Config, env: Mapping[str, str] | None = None) -> Credentials | None:
    """Credentials from the environment, else from `exchange.credentials_file` (mode 0600).

    Returns None when neither provides an API key (paper mode needs none).
    """
    environ = env if env is not None else os.environ
    if environ.get(SECRET_ENV["api_key"]):
        return Credentials(
            environ[SECRET_ENV["api_key"]],
            environ.get(SECRET_ENV["api_secret"], ""),
            environ.get(SECRET_ENV["api_passphrase"]),
        )
    path = cfg.exchange.credentials_file
    if path is None:
        return None
    key = "exchange.credentials_file"
    try:
        st = path.stat()
    except OSError as exc:
        raise ConfigError(str(path), [f"{key}: expected a readable file, got {exc.strerror}"]) from None
    if stat.S_IMODE(st.st_mode) & 0o077:
        mode = oct(stat.S_IMODE(st.st_mode))[2:]
        raise ConfigError(
            str(path), [f"{key}: expected file mode 0600 (run: chmod 600 {path}), got 0{mode}"]
        )
    try:
        tree = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        # The message of a TOML error can quote the secret itself, so it is not repeated.
        raise ConfigError(str(path), [f"{key}: expected TOML with api_key and api_secret, "
                                      "got an unreadable file"]) from None
    missing = [k for k in ("api_key", "api_secret") if not isinstance(tree.get(k), str)]
    if missing:
        raise ConfigError(str(path), [f"{key}: expected string {m}, got nothing" for m in missing])
    return Credentials(tree["api_key"], tree["api_secret"], tree.get("api_passphrase"))
