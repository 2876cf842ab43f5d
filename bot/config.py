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
import re
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StrictBool,
    StringConstraints,
    ValidationError,
    field_validator,
)

from bot.errors import ConfigError

SECRET_KEYS = frozenset(
    {"api_key", "apikey", "secret", "api_secret", "password", "passphrase",
     "api_passphrase", "private_key", "token"}
)
ENV_PREFIX = "LIQBOT_"
SECRET_ENV = {"api_key": "LIQBOT_API_KEY", "api_secret": "LIQBOT_API_SECRET",
              "api_passphrase": "LIQBOT_API_PASSPHRASE"}
#: LIQBOT_* variables that are not config overrides: the config path and the secrets each
#: read by its own module (dashboard token, Telegram bot token, the emulator's credentials)
OTHER_ENV = frozenset({"LIQBOT_CONFIG", "LIQBOT_HTTP_TOKEN", "LIQBOT_TELEGRAM_TOKEN",
                       "LIQBOT_EMULATOR_KEY", "LIQBOT_EMULATOR_SECRET"})
#: config keys the environment may not set: live trading needs mode = "live" IN THE FILE
#: and --live on the command line (a variable left in a shell profile must not be a gate)
FILE_ONLY = {"mode": "LIQBOT_MODE"}


#: An exchange symbol: upper-case letters and digits only, so it is safe in URLs and paths.
SYMBOL_PATTERN = r"^[A-Z0-9]{2,20}$"
Symbol = Annotated[str, StringConstraints(pattern=SYMBOL_PATTERN)]
HTTP_URL = r"^https?://\S+$"
WS_URL = r"^wss?://\S+$"
#: what a `pattern=` field expects, in words (pydantic's message would show the regex)
PATTERN_EXPECTED = {
    SYMBOL_PATTERN: "a symbol like BTCUSDT (2-20 upper-case letters and digits)",
    HTTP_URL: "an http:// or https:// URL (no spaces)",
    WS_URL: "a ws:// or wss:// URL (no spaces)",
}
#: Longest string a config error message repeats; longer ones could be a pasted secret.
ECHO_MAX = 12
_ECHO_SAFE = re.compile(r"^[A-Za-z0-9_.:/ +-]*$")
CREDENTIAL_KEYS = ("api_key", "api_secret", "api_passphrase")


class _Section(BaseModel):
    # allow_inf_nan=False: `inf` or `nan` in TOML or an env override is an error, never a
    # silent NaN equity later.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


#: Longest synthetic run in days (`bot.data.synthetic`; the kernel renormalises its lazy
#: book scale, so any length works: this bounds memory, about 260 MB of bars per 1,000 days).
SYNTHETIC_MAX_DAYS = 2000


class SyntheticConfig(_Section):
    """The embedded scenario: a synthetic cascade day generated from a seed (no files needed)."""

    seed: int = Field(7, ge=0, le=2**63 - 1)
    days: int = Field(3, ge=1, le=SYNTHETIC_MAX_DAYS)
    crowding: Literal["long", "short", "none"] = "long"
    symbol: Symbol = "BTCUSDT"
    start_price: float = Field(100_000.0, gt=0, le=1e9)


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
    symbols: list[Symbol] = Field(default_factory=lambda: ["BTCUSDT"], min_length=1,
                                  max_length=100)
    credentials_file: Path | None = None
    testnet: StrictBool = False


class DownloadConfig(_Section):
    """Historical data download (`liqbot data download` / `liqbot data fetch`)."""

    vision_base_url: str = "https://data.binance.vision"
    ccxt_base_url: str | None = Field(
        None, description="override the exchange's REST host (tests point it at 127.0.0.1)"
    )
    requests_per_second: float = Field(5.0, gt=0, le=100)
    timeout_s: float = Field(30.0, gt=0, le=3600)
    retries: int = Field(3, ge=0, le=20)


class FillsConfig(_Section):
    """Market-order slippage model (`bot/mechanics/fills.py`)."""

    impact_coef: float = Field(0.7, ge=0, le=100, description="square-root-law coefficient")
    half_spread_bps: float = Field(0.5, ge=0, le=1000, description="paid on every market order")
    liq_multiplier: float = Field(2.0, ge=0, le=1000, description="book thinning per liq/volume")
    window_bars: int = Field(60, ge=1, le=100_000,
                             description="trailing window for volume and sigma")
    max_impact: float = Field(0.05, gt=0, le=0.5, description="cap on slippage (fraction)")


class FeesConfig(_Section):
    """Overrides of the venue fee schedule (`bot/mechanics/fees.py`); fractions of notional.
    Unset keys keep the venue's base rates."""

    maker: float | None = Field(None, ge=-0.001, le=0.01)
    taker: float | None = Field(None, ge=0, le=0.01)
    liquidation: float | None = Field(None, ge=0, le=0.1)


class LoggingConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = Field("text", description="json = one JSON object a line")
    file: Path | None = Field(None, description="also append the daemon's log to this file")


class RunConfig(_Section):
    """What `liqbot run` trades and how the daemon commits and schedules its jobs."""

    strategy: str = "hold"
    params: dict[str, str | int | float] = Field(default_factory=dict,
                                                 description="strategy parameters, as --param")
    preset: str = "balanced"
    wallet: float = Field(100_000.0, ge=1.0, le=1e15, allow_inf_nan=False)   # paths.MIN_WALLET
    speed: float = Field(0.0, ge=0, lt=1e9, allow_inf_nan=False,
                         description="replay speed: 0 = as fast as possible, 60 = 1h per minute")
    commit_bars: int = Field(500, ge=1, le=100_000)
    commit_seconds: float = Field(0.5, gt=0, le=3600, allow_inf_nan=False)
    equity_every_s: float = Field(60.0, gt=0, le=86_400, allow_inf_nan=False)
    stale_check_s: float = Field(60.0, gt=0, le=86_400, allow_inf_nan=False)
    reconcile_every_s: float = Field(30.0, gt=0, le=86_400, allow_inf_nan=False)
    positioning_every_s: float = Field(300.0, gt=0, le=86_400, allow_inf_nan=False)
    strategy_fail_flat_bars: int = Field(
        30, ge=0, le=1_000_000,
        description="a strategy failing this many bars in a row on a symbol has its position "
                    "closed (target 0) until it recovers; 0 = hold its last target")


ALERT_KINDS = ("state", "liquidation_distance", "stale_feed", "reject", "liquidation",
               "strategy_error", "daily_summary")


class AlertsConfig(_Section):
    """`liqbot run` alerts (bot/runtime/alerts.py, docs/operations.md): a JSON webhook and/or
    Telegram. The Telegram bot token is read only from LIQBOT_TELEGRAM_TOKEN, never here."""

    webhook_url: str | None = Field(None, pattern=HTTP_URL,
                                    description="JSON POST target; unset = no webhook")
    telegram_chat_id: int | str | None = Field(None, description="unset = no Telegram")
    telegram_api_url: str = Field("https://api.telegram.org", pattern=HTTP_URL,
                                  description="Bot API base (tests point it at 127.0.0.1)")
    on: list[Literal["state", "liquidation_distance", "stale_feed", "reject", "liquidation",
                     "strategy_error", "daily_summary"]] = Field(
        default_factory=lambda: list(ALERT_KINDS))
    liq_distance_pct: float = Field(5.0, gt=0, le=100, allow_inf_nan=False,
                                    description="alert when own liquidation is closer (% of mark)")
    min_interval_s: float = Field(60.0, ge=0, le=86_400, allow_inf_nan=False,
                                  description="per alert key (kind + symbol [+ state])")
    max_per_minute: int = Field(20, ge=1, le=10_000)
    retries: int = Field(3, ge=0, le=20)
    retry_backoff_s: float = Field(1.0, ge=0, le=600, allow_inf_nan=False)
    timeout_s: float = Field(10.0, gt=0, le=600, allow_inf_nan=False)
    queue_size: int = Field(1000, ge=1, le=1_000_000)


class LiveConfig(_Section):
    """`liqbot run --live` (bot/execution/live.py, docs/live.md). The caps bind every order
    that can grow exposure, whatever the strategy asks; reduce-only orders are exempt."""

    leverage: int = Field(20, ge=1, le=125, description="set per symbol at start (live); "
                                                        "paper runs keep its position limit")
    margin_mode: Literal["cross", "isolated"] = "cross"
    max_order_notional: float | None = Field(None, gt=0, le=1e12, allow_inf_nan=False,
                                             description="quote; required for run --live")
    max_day_notional: float | None = Field(None, gt=0, le=1e13, allow_inf_nan=False,
                                           description="quote per UTC day; required for live")
    rest_url: str | None = Field(None, pattern=HTTP_URL,
                                 description="REST host override (an emulator on 127.0.0.1)")
    ws_url: str | None = Field(None, pattern=WS_URL,
                               description="websocket host override (an emulator)")
    user_stream: StrictBool = Field(True, description="also read fills from the user-data stream")
    order_attempts: int = Field(6, ge=1, le=50, description="send/look-up tries per order")

    @field_validator("rest_url", "ws_url")
    @classmethod
    def _no_user_info(cls, v: str | None) -> str | None:
        """A host override carrying user:password@ is refused: the URL appears in log lines
        and error messages, and the emulator needs no such credentials."""
        if v is not None and "@" in v.split("://", 1)[-1].split("/", 1)[0]:
            raise ValueError("a URL without user information (user:password@ would appear "
                             "in messages)")
        return v


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
    run: RunConfig = RunConfig()
    alerts: AlertsConfig = AlertsConfig()
    live: LiveConfig = LiveConfig()


class Credentials:
    """API credentials held as `SecretStr`; `repr` and `str` never show them."""

    def __init__(self, api_key: str, api_secret: str, api_passphrase: str | None = None) -> None:
        self.api_key = SecretStr(api_key)
        self.api_secret = SecretStr(api_secret)
        self.api_passphrase = SecretStr(api_passphrase) if api_passphrase else None

    def __repr__(self) -> str:
        return "Credentials(api_key=***, api_secret=***)"

    __str__ = __repr__


def shown(value: Any) -> str:
    """How a config error shows the offending input: never anything that could be a secret.

    Numbers, booleans and short plain words (<= ECHO_MAX characters, e.g. 'yolo') are
    repeated; a URL is shown with its userinfo masked (`user:***@`); any other string,
    table or list is described by its type and size only.
    """
    if value is None or isinstance(value, bool | int | float):
        return repr(value)
    if isinstance(value, str):
        if "://" in value or "@" in value:
            from bot.store.urls import mask_url
            masked = mask_url(value.split("?", 1)[0])
            if "@" in masked.split("://", 1)[-1] and ":***@" not in masked:
                return f"a URL with user information ({len(value)} characters, not shown)"
            return repr(masked) + (" (query not shown)" if "?" in value else "")
        if len(value) <= ECHO_MAX and _ECHO_SAFE.fullmatch(value):
            return repr(value)
        return f"a string of {len(value)} characters (not shown)"
    if isinstance(value, Mapping):
        return f"a table with {len(value)} key(s) (not shown)"
    if isinstance(value, list | tuple):
        return "an empty list" if not value else f"a list of {len(value)} item(s) (not shown)"
    return f"a {type(value).__name__} (not shown)"


_EXPECTED = {"finite_number": "a finite number",
             # StrictBool: pydantic's lax bool took "yes", "off", 1 or "0" from a TOML file
             "bool_type": "true or false",
             "too_short": "at least one item"}


def _format_problem(err: Mapping[str, Any]) -> str:
    loc = ".".join(str(p) for p in err["loc"]) or "(root)"
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"{loc}: expected a known key, got unknown key {shown(str(err['loc'][-1]))}"
    if kind == "missing":
        return f"{loc}: expected a value, got nothing"
    msg = str(err["msg"])
    if kind == "string_pattern_mismatch":     # each field its own format, not the regex
        pattern = str((err.get("ctx") or {}).get("pattern", ""))
        return (f"{loc}: expected {PATTERN_EXPECTED.get(pattern, 'a string matching ' + pattern)}"
                f", got {shown(err.get('input'))}")
    expected = _EXPECTED.get(kind) or msg.replace("Input should be ", "").replace(
        "Value error, ", "")
    return f"{loc}: expected {expected}, got {shown(err.get('input'))}"


def _secret_keys_in(tree: Any, prefix: str = "") -> list[str]:
    """Paths of secret-looking keys at any depth: tables, arrays, inline tables."""
    found: list[str] = []
    if isinstance(tree, Mapping):
        items = [(str(k), v) for k, v in tree.items()]
    elif isinstance(tree, list | tuple):
        items = [(str(i), v) for i, v in enumerate(tree)]
    else:
        return found
    for key, value in items:
        path = f"{prefix}{key}"
        if isinstance(tree, Mapping) and _is_secret_key(key):
            found.append(path)
        elif isinstance(value, Mapping | list | tuple):
            found.extend(_secret_keys_in(value, path + "."))
    return found


def _is_secret_key(key: str) -> bool:
    k = key.lower().replace("-", "_")
    return k in SECRET_KEYS or any(w in k for w in ("secret", "password", "passphrase", "token",
                                                    "api_key", "apikey", "private_key"))


def _parse_env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _apply_env(tree: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    skip = set(SECRET_ENV.values()) | OTHER_ENV | set(FILE_ONLY.values())
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or name in skip:
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
    environ = env if env is not None else os.environ
    merged = _apply_env(copy.deepcopy(dict(tree)), environ)
    secret_paths = _secret_keys_in(merged)
    from_env = {".".join(name[len(ENV_PREFIX):].lower().split("__")): name
                for name in environ if name.startswith(ENV_PREFIX)}
    problems = []
    for p in secret_paths:
        # a LIQBOT_<SECTION>__<KEY> override is a config value too, not a secret's place
        var = next((v for k, v in from_env.items() if p == k or p.startswith(k + ".")), None)
        where = f"config overrides ({var} is set)" if var else "a config file"
        problems.append(f"{p}: expected no secrets in {where} (use the "
                        f"{SECRET_ENV['api_key']}-style environment variables or "
                        "exchange.credentials_file with mode 0600), got a value (not shown)")
    problems += [f"{key}: set it in the config file, not in the environment ({var} is set): "
                 'live trading needs mode = "live" in the file and --live on the command line'
                 for key, var in FILE_ONLY.items() if var in environ]
    try:
        cfg = Config.model_validate(merged)
    except ValidationError as exc:
        for e in exc.errors():
            loc = ".".join(str(p) for p in e["loc"])
            if _under_secret(loc, secret_paths):
                continue
            # the variable set this key, one under it, or (an unknown table) one inside it
            var = next((v for k, v in from_env.items() if loc == k or loc.startswith(k + ".")
                        or k.startswith(loc + ".")), None)
            problems.append(_format_problem(e) + (f" (from the environment: {var})" if var
                                                  else ""))
        cfg = None
    if problems or cfg is None:
        raise ConfigError(source, problems)
    return cfg


def _under_secret(loc: str, secret_paths: list[str]) -> bool:
    """True when an error's location is a secret key, inside one, or a container holding one
    (its message would otherwise describe the secret)."""
    return any(loc == p or loc.startswith(p + ".") or p.startswith(loc + ".")
               for p in secret_paths)


def read_toml(path: Path) -> dict[str, Any]:
    """The TOML table of `path`; ConfigError naming the file when it cannot be read, is not
    UTF-8 text or not valid TOML."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"(file): expected a readable TOML file, got "
                                      f"{exc.strerror or type(exc).__name__}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), [f"(file): expected UTF-8 text (TOML), got byte "
                                      f"0x{exc.object[exc.start]:02x} at offset {exc.start} "
                                      f"in {path}"]) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [f"(file): expected valid TOML, got {exc}"]) from None


def load_config(path: Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Load `path` (or `$LIQBOT_CONFIG`, or the built-in defaults) and apply env overrides."""
    environ = env if env is not None else os.environ
    if path is None and environ.get("LIQBOT_CONFIG"):
        path = Path(environ["LIQBOT_CONFIG"])
    if path is None:
        cfg = parse_config({}, "(defaults)", environ)
        check_credentials_file(cfg)
        return cfg
    cfg = parse_config(read_toml(path), str(path), environ)
    check_credentials_file(cfg)
    return cfg


def load_credentials(cfg: Config, env: Mapping[str, str] | None = None) -> Credentials | None:
    """Credentials from the environment, else from `exchange.credentials_file` (mode 0600).

    Returns None when neither provides an API key (paper mode needs none). A key without
    its secret in the environment is a ConfigError naming the variable (it passed, and the
    exchange's refusal was reported as unreadable leverage brackets).
    """
    environ = env if env is not None else os.environ
    if environ.get(SECRET_ENV["api_key"]):
        if not environ.get(SECRET_ENV["api_secret"]):
            raise ConfigError("(environment)", [
                f"{SECRET_ENV['api_secret']}: expected the API secret beside "
                f"{SECRET_ENV['api_key']}, got nothing"])
        return Credentials(
            environ[SECRET_ENV["api_key"]],
            environ[SECRET_ENV["api_secret"]],
            environ.get(SECRET_ENV["api_passphrase"]),
        )
    tree = _read_credentials_file(cfg.exchange.credentials_file)
    if tree is None:
        return None
    return Credentials(tree["api_key"], tree["api_secret"], tree.get("api_passphrase"))


def _read_credentials_file(path: Path | None) -> dict[str, str] | None:
    """The credentials TOML after checking mode 0600 and format; never echoes its content."""
    if path is None:
        return None
    key = "exchange.credentials_file"
    path = path.expanduser()
    try:
        st = path.stat()
    except OSError as exc:
        raise ConfigError(str(path), [f"{key}: expected a readable file, got {exc.strerror}"]) from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(str(path), [f"{key}: expected a regular file, got something else"])
    if stat.S_IMODE(st.st_mode) & 0o077:
        mode = oct(stat.S_IMODE(st.st_mode))[2:]
        raise ConfigError(
            str(path), [f"{key}: expected file mode 0600 (run: chmod 600 {path}), got 0{mode}"]
        )
    try:
        tree = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        # The message of a TOML error can quote the secret itself, so it is not repeated.
        raise ConfigError(str(path), [f"{key}: expected TOML with api_key and api_secret, "
                                      "got an unreadable file"]) from None
    problems = [f"{key}: expected string {m}, got nothing" for m in ("api_key", "api_secret")
                if not isinstance(tree.get(m), str) or not tree.get(m)]
    problems += [f"{key}: expected only {', '.join(CREDENTIAL_KEYS)}, got unknown key "
                 f"{shown(k)}" for k in tree if k not in CREDENTIAL_KEYS]
    if "api_passphrase" in tree and not isinstance(tree["api_passphrase"], str):
        problems.append(f"{key}: expected string api_passphrase, got a "
                        f"{type(tree['api_passphrase']).__name__}")
    if problems:
        raise ConfigError(str(path), problems)
    return tree


def check_credentials_file(cfg: Config) -> None:
    """Mode and format of `exchange.credentials_file` (if set); raises ConfigError.

    Called by `load_config`, so every command (and `config check`) refuses a world-readable
    or malformed credentials file, not only the daemon that reads it.
    """
    _read_credentials_file(cfg.exchange.credentials_file)
