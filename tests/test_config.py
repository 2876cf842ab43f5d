import os
from pathlib import Path

import pytest

from bot.config import Config, load_config, load_credentials, parse_config
from bot.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_default_toml_equals_builtin_defaults():
    cfg = load_config(ROOT / "config" / "default.toml", env={})
    assert cfg == Config()
    assert cfg.mode == "paper"
    assert cfg.store.url.startswith("sqlite:///./var/")


def test_every_problem_is_reported_with_key_path():
    tree = {"mode": "yolo", "data": {"synthetic": {"days": 0, "crowding": "up"}},
            "exchange": {"nmae": "binance"}}
    with pytest.raises(ConfigError) as err:
        parse_config(tree, "x.toml", env={})
    probs = err.value.problems
    assert "mode: expected 'paper' or 'live', got 'yolo'" in probs
    assert "data.synthetic.days: expected greater than or equal to 1, got 0" in probs
    assert "data.synthetic.crowding: expected 'long', 'short' or 'none', got 'up'" in probs
    assert "exchange.nmae: expected a known key, got unknown key 'nmae'" in probs
    assert len(probs) == 4


def test_the_configs_synthetic_days_are_bounded_as_data_synth_bounds_them():
    """`data synth --days` took up to 2,000 days, `[data.synthetic] days` only 366 (two
    bounds for one generator). One bound now: 2,000 is accepted, 2,001 named."""
    from bot.data.synthetic import MAX_DAYS
    assert MAX_DAYS == 2000
    cfg = parse_config({"data": {"synthetic": {"days": 2000}}}, "x.toml", env={})
    assert cfg.data.synthetic.days == 2000
    with pytest.raises(ConfigError) as err:
        parse_config({"data": {"synthetic": {"days": 2001}}}, "x.toml", env={})
    assert err.value.problems == [
        "data.synthetic.days: expected less than or equal to 2000, got 2001"]


def test_secrets_in_toml_are_rejected_without_echo():
    tree = {"exchange": {"api_key": "AKIA-SUPER-SECRET", "secret": "s3cr3t"}}
    with pytest.raises(ConfigError) as err:
        parse_config(tree, "x.toml", env={})
    text = str(err.value)
    assert "exchange.api_key: expected no secrets in a config file" in text
    assert "exchange.secret: expected no secrets" in text
    assert "AKIA-SUPER-SECRET" not in text and "s3cr3t" not in text


def test_env_overrides_nested_keys():
    cfg = parse_config({}, "t", env={"LIQBOT_DATA__SYNTHETIC__SEED": "11",
                                     "LIQBOT_EXCHANGE__SYMBOLS": '["ETHUSDT"]'})
    assert cfg.data.synthetic.seed == 11
    assert cfg.exchange.symbols == ["ETHUSDT"]


@pytest.mark.parametrize("file_mode", [{}, {"mode": "paper"}, {"mode": "live"}])
def test_mode_is_never_taken_from_the_environment(file_mode):
    # LIQBOT_MODE=live left in a shell profile made `--live` the only gate
    with pytest.raises(ConfigError) as err:
        parse_config(file_mode, "t", env={"LIQBOT_MODE": "live"})
    assert err.value.problems == [
        "mode: set it in the config file, not in the environment (LIQBOT_MODE is set): live "
        'trading needs mode = "live" in the file and --live on the command line']


@pytest.mark.parametrize("var", ["LIQBOT_HTTP_TOKEN", "LIQBOT_TELEGRAM_TOKEN",
                                 "LIQBOT_EMULATOR_KEY", "LIQBOT_EMULATOR_SECRET",
                                 "LIQBOT_API_KEY", "LIQBOT_CONFIG"])
def test_the_secret_and_path_variables_are_not_config_overrides(var):
    # each is read by its own module; as overrides they made every command exit 2
    # ("telegram_token: expected no secrets in a config file", "unknown key 'emulator_key'")
    assert parse_config({}, "t", env={var: "x1"}) == Config()


def test_every_liqbot_variable_the_code_reads_is_declared():
    import re

    from bot.config import FILE_ONLY, OTHER_ENV, SECRET_ENV
    names = set()
    for f in (ROOT / "bot").rglob("*.py"):
        names |= set(re.findall(r'"(LIQBOT_[A-Z_]+)"', f.read_text()))
    known = set(SECRET_ENV.values()) | OTHER_ENV | set(FILE_ONLY.values())
    assert names - {"LIQBOT_"} <= known


def test_env_override_errors_name_the_key():
    with pytest.raises(ConfigError) as err:
        parse_config({}, "t", env={"LIQBOT_DATA__SYNTHETIC__DAYS": "many"})
    assert err.value.problems == [
        "data.synthetic.days: expected a valid integer, unable to parse string as an integer, "
        "got 'many' (from the environment: LIQBOT_DATA__SYNTHETIC__DAYS)"]
    with pytest.raises(ConfigError) as err:            # a typo'd table: named by its variable
        parse_config({}, "t", env={"LIQBOT_FILLZ__X": "1"})
    assert err.value.problems == [
        "fillz: expected a known key, got unknown key 'fillz' (from the environment: "
        "LIQBOT_FILLZ__X)"]


def test_credentials_from_env_are_masked():
    creds = load_credentials(Config(), env={"LIQBOT_API_KEY": "k123", "LIQBOT_API_SECRET": "s456"})
    assert creds is not None
    assert creds.api_key.get_secret_value() == "k123"
    assert "k123" not in repr(creds) and "s456" not in str(creds)
    # a key without its secret: named before any request (it passed, and the exchange's
    # refusal read as "could not read the leverage brackets")
    for env in ({"LIQBOT_API_KEY": "k123"}, {"LIQBOT_API_KEY": "k123", "LIQBOT_API_SECRET": ""}):
        with pytest.raises(ConfigError) as err:
            load_credentials(Config(), env=env)
        assert err.value.problems == ["LIQBOT_API_SECRET: expected the API secret beside "
                                      "LIQBOT_API_KEY, got nothing"]
        assert "k123" not in str(err.value)


def test_credentials_file_must_be_0600(tmp_path):
    f = tmp_path / "creds.toml"
    f.write_text('api_key = "kkk"\napi_secret = "sss"\n')
    os.chmod(f, 0o644)
    cfg = parse_config({"exchange": {"credentials_file": str(f)}}, "t", env={})
    with pytest.raises(ConfigError) as err:
        load_credentials(cfg, env={})
    assert err.value.problems == [
        f"exchange.credentials_file: expected file mode 0600 (run: chmod 600 {f}), got 0644"]
    os.chmod(f, 0o600)
    creds = load_credentials(cfg, env={})
    assert creds is not None and creds.api_secret.get_secret_value() == "sss"


def test_config_check_cli(cli, tmp_path):
    good = tmp_path / "good.toml"
    good.write_text((ROOT / "config" / "default.toml").read_text())
    r = cli("config", "check", good)
    assert r.code == 0 and r.out.startswith("OK")
    bad = tmp_path / "bad.toml"
    bad.write_text('mode = "live"\n[store]\nurl = 5\n[exchange]\napi_key = "abc"\n')
    r = cli("config", "check", bad)
    assert r.code == 2
    assert r.out.splitlines() == [
        f"{bad}: 2 problems (config file):",
        "exchange.api_key: expected no secrets in a config file (use the LIQBOT_API_KEY-style "
        "environment variables or exchange.credentials_file with mode 0600), got a value "
        "(not shown)",
        "store.url: expected a valid string, got 5",
    ]
    broken = tmp_path / "broken.toml"
    broken.write_text("mode = \n")
    r = cli("config", "check", broken)
    assert r.code == 2 and r.out.startswith(f"{broken}: expected valid TOML")   # named
    r = cli("config", "check", tmp_path / "missing.toml")
    assert r.code == 2 and r.out.startswith(f"{tmp_path / 'missing.toml'}: expected a readable")
    assert "Traceback" not in r.out + r.err


def test_a_boolean_key_takes_only_true_or_false():
    """pydantic's lax booleans took testnet = "yes" (or "off", 1, "0") from a file: a
    typo'd value passed `config check` and picked a venue by pydantic's word list."""
    with pytest.raises(ConfigError) as err:
        parse_config({"exchange": {"testnet": "yes"}, "live": {"user_stream": 0}}, "t")
    assert err.value.problems == ["exchange.testnet: expected true or false, got 'yes'",
                                  "live.user_stream: expected true or false, got 0"]
    with pytest.raises(ConfigError) as err:
        parse_config({}, "t", env={"LIQBOT_EXCHANGE__TESTNET": "1"})
    assert err.value.problems == ["exchange.testnet: expected true or false, got 1 (from the "
                                  "environment: LIQBOT_EXCHANGE__TESTNET)"]
    assert parse_config({}, "t", env={"LIQBOT_EXCHANGE__TESTNET": "true"}).exchange.testnet


@pytest.mark.parametrize(("tree", "problem"), [
    ({"alerts": {"webhook_url": "ftp://x"}},
     "alerts.webhook_url: expected an http:// or https:// URL (no spaces), got 'ftp://x'"),
    ({"alerts": {"telegram_api_url": "telegram"}},
     "alerts.telegram_api_url: expected an http:// or https:// URL (no spaces), got "
     "'telegram'"),
    ({"live": {"rest_url": "ws://127.0.0.1:1"}},
     "live.rest_url: expected an http:// or https:// URL (no spaces), got 'ws://127.0.0.1:1'"),
    ({"live": {"ws_url": "http://127.0.0.1:1/ws"}},
     "live.ws_url: expected a ws:// or wss:// URL (no spaces), got 'http://127.0.0.1:1/ws'"),
    ({"exchange": {"symbols": ["BTCUSDT", "btc-usdt"]}},
     "exchange.symbols.1: expected a symbol like BTCUSDT (2-20 upper-case letters and digits), "
     "got 'btc-usdt'"),
    ({"data": {"synthetic": {"symbol": "X"}}},
     "data.synthetic.symbol: expected a symbol like BTCUSDT (2-20 upper-case letters and "
     "digits), got 'X'"),
])
def test_each_pattern_field_names_its_own_format(tree, problem):
    """Every `pattern=` field said "expected a symbol like BTCUSDT", a webhook URL too."""
    with pytest.raises(ConfigError) as err:
        parse_config(tree, "t", env={})
    assert err.value.problems == [problem]
