"""Regression tests of the safety findings: secrets never echoed, paths never escape, user
errors exit 2 naming the culprit, garbage in never gives numbers out."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from benchmarks.run import verdict
from bot.cli.paths import check_output, finite_json
from bot.config import load_config, shown
from bot.data import dataset as ds_io
from bot.data.bars import MINUTE_MS, Bars
from bot.data.synthetic import SynthSpec, generate, spec_with
from bot.errors import ConfigError, LiqbotError

ROOT = Path(__file__).resolve().parents[1]
SECRET = "S3CRET-VALUE-7f3a9c1e55"
T0 = 1_760_054_400_000  # 2025-10-10T00:00Z
KHEAD = ("open_time,open,high,low,close,volume,close_time,quote_volume,count,"
         "taker_buy_volume,taker_buy_quote_volume,ignore\n")


def kline_rows(n: int, t0: int = T0, step: int = MINUTE_MS, unit: int = 1) -> str:
    """n valid 1m kline rows; times divided by `unit` (1000 = seconds, 1 = ms)."""
    rows = []
    for i in range(n):
        t = t0 + i * step
        p = 100.0 + i
        ct = (t + step - 1) // unit if unit > 1 else t + step - 1
        if unit < 1:  # microseconds
            ct = (t + step) * 1000 - 1
        ot = t // unit if unit >= 1 else t * 1000
        rows.append(f"{ot},{p},{p + 1},{p - 1},{p + 0.5},10,{ct},1000,5,4,400,0\n")
    return KHEAD + "".join(rows)


def no_trace(r) -> None:  # noqa: ANN001
    assert "Traceback" not in r.out + r.err and "unexpected error" not in r.err


# ---------------------------------------------------------------- secrets


@pytest.mark.parametrize("toml", [
    f'[exchange]\nsymbols = [{{api_key = "{SECRET}"}}]\n',
    f'mode = {{token = "{SECRET}"}}\n',
    f'[exchange]\nsymbols = [["{SECRET}"]]\n',
    f'[exchange]\nname = "{SECRET}"\n',
    f'[data]\nsource = ["{SECRET}"]\n',
    f'[run.params]\nx = {{nested = {{password = "{SECRET}"}}}}\n',
])
def test_config_errors_never_echo_a_secret(cli, tmp_path, toml):
    f = tmp_path / "c.toml"
    f.write_text(toml)
    r = cli("config", "check", f)
    assert r.code == 2
    assert SECRET not in r.out + r.err
    no_trace(r)


def test_nested_secret_key_is_named_by_path(cli, tmp_path):
    f = tmp_path / "c.toml"
    f.write_text(f'[exchange]\nsymbols = [{{api_key = "{SECRET}"}}]\n')
    r = cli("config", "check", f)
    assert r.out.splitlines()[0] == f"{f}: 1 problem (config file):"
    assert r.out.splitlines()[1].startswith("exchange.symbols.0.api_key: expected no secrets")


def test_url_password_is_masked(cli, tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[exchange]\nname = "https://alice:hunter2pw@example.com/x"\n')
    r = cli("config", "check", f)
    assert r.code == 2 and "hunter2pw" not in r.out
    assert "alice:***@example.com" in r.out
    assert shown("postgresql://u:pw@h/db?password=zz") == "'postgresql://u:***@h/db' (query not shown)"
    assert shown("yolo") == "'yolo'" and shown(5) == "5"
    assert shown(SECRET) == f"a string of {len(SECRET)} characters (not shown)"


def test_credentials_file_mode_and_format_checked_by_config_check(cli, tmp_path):
    creds = tmp_path / "creds.toml"
    creds.write_text(f'api_key = "{SECRET}"\napi_secret = "{SECRET}"\n')
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[exchange]\ncredentials_file = "{creds}"\n')
    os.chmod(creds, 0o644)
    r = cli("config", "check", cfg)
    assert r.code == 2 and "expected file mode 0600" in r.out and "got 0644" in r.out
    os.chmod(creds, 0o600)
    r = cli("config", "check", cfg)
    assert r.code == 0 and "credentials file mode 0600" in r.out
    creds.write_text(f"this is not toml {SECRET}\n")
    r = cli("config", "check", cfg)
    assert r.code == 2 and "got an unreadable file" in r.out and SECRET not in r.out
    creds.write_text(f'api_key = "{SECRET}"\n')
    r = cli("config", "check", cfg)
    assert r.code == 2 and "expected string api_secret" in r.out and SECRET not in r.out
    # any command refuses a bad credentials file at load, not only the daemon
    os.chmod(creds, 0o640)
    r = cli("--config", cfg, "data", "synth", "--days", "1", "--out", tmp_path / "d")
    assert r.code == 2 and "0600" in r.err and not (tmp_path / "d").exists()


@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_non_finite_config_numbers_refused_from_toml_and_env(tmp_path, value):
    f = tmp_path / "c.toml"
    f.write_text(f"[fills]\nimpact_coef = {value}\n")
    with pytest.raises(ConfigError) as err:
        load_config(f, env={})
    assert err.value.problems == [f"fills.impact_coef: expected a finite number, got {value}"
                                  .replace("got -inf", "got -inf")]
    with pytest.raises(ConfigError):
        load_config(None, env={"LIQBOT_FILLS__IMPACT_COEF": value})


def test_config_symbols_are_validated(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(None, env={"LIQBOT_EXCHANGE__SYMBOLS": '["../etc"]'})
    assert err.value.problems == ["exchange.symbols.0: expected a symbol like BTCUSDT (2-20 "
                                  "upper-case letters and digits), got '../etc' (from the "
                                  "environment: LIQBOT_EXCHANGE__SYMBOLS)"]


def test_config_check_recognises_a_risk_preset(cli, tmp_path):
    r = cli("config", "check", ROOT / "config" / "risk" / "balanced.toml")
    assert r.code == 0 and "(risk preset)" in r.out
    bad = tmp_path / "r.toml"
    bad.write_text("[risk]\nmax_leverage = inf\n")
    r = cli("config", "check", bad)
    assert r.code == 2 and r.out.splitlines() == [
        f"{bad}: 1 problem (risk preset):",
        "risk.max_leverage: expected less than or equal to 125, got inf"]   # the key path
    r = cli("config", "check", "--kind", "config", ROOT / "config" / "risk" / "balanced.toml")
    assert r.code == 2 and "unknown key 'risk'" in r.out


# ---------------------------------------------------------------- paths


def test_download_symbol_cannot_escape_out(cli, tmp_path):
    out = tmp_path / "a" / "b" / "c"
    r = cli("data", "download", "--symbol", "../../../x", "--kind", "klines", "--interval", "1m",
            "--from", "2025-10-08", "--to", "2025-10-08", "--out", out,
            "--base-url", "http://127.0.0.1:9")
    assert r.code == 2 and "--symbol: expected a symbol like BTCUSDT" in r.err
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def small_ds(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("ds") / "s"
    ds_io.save(generate(SynthSpec(seed=3, days=1)), d)
    return d


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


@pytest.mark.parametrize("name", ["../outside/evil", "/etc/passwd", "a/b", "..", "x.y", ""])
def test_manifest_table_names_are_confined(cli, tmp_path, small_ds, name):
    d = _copy(small_ds, tmp_path / "d")
    (tmp_path / "outside").mkdir()
    m = json.loads((d / "manifest.json").read_text())
    m["tables"] = {name: 1}
    (d / "manifest.json").write_text(json.dumps(m))
    r = cli("data", "info", d)
    assert r.code == 2 and "is not a plain table name" in r.err
    no_trace(r)


def test_manifest_sha256_is_verified(cli, tmp_path, small_ds):
    d = _copy(small_ds, tmp_path / "d")
    r = cli("data", "info", d, "--verify")
    assert r.code == 0 and "bars.parquet" in r.out
    raw = bytearray((d / "truth_book.parquet").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (d / "truth_book.parquet").write_bytes(bytes(raw))
    for args in (("data", "info", d), ("data", "info", d, "--verify")):
        r = cli(*args)
        assert r.code == 2 and "truth_book.parquet: checksum mismatch" in r.err


@pytest.mark.parametrize(("field", "value", "message"), [
    ("interval_ms", "abc", "interval_ms: expected a int, got a str"),
    ("interval_ms", [60000], "interval_ms: expected a int, got a list"),
    ("interval_ms", 0, "interval_ms: expected 1 .."),
    ("symbol", 5, "symbol: expected a str, got a int"),
    ("symbol", "../X", "symbol: expected a symbol like BTCUSDT"),
    ("tables", "x", "tables: expected an object"),
    ("tables", {"truth_book": "many"}, "tables.truth_book: expected a row count"),
    ("files", {"bars.parquet": 5}, "files: expected an object of file name -> sha256"),
])
def test_manifest_field_types(cli, tmp_path, small_ds, field, value, message):
    d = _copy(small_ds, tmp_path / "d")
    m = json.loads((d / "manifest.json").read_text())
    m[field] = value
    (d / "manifest.json").write_text(json.dumps(m))
    r = cli("data", "info", d)
    assert r.code == 2 and message in r.err
    no_trace(r)
    (d / "manifest.json").write_text("[1, 2]")
    assert cli("data", "info", d).code == 2


# ---------------------------------------------------------------- output paths


@pytest.mark.parametrize("case", ["missing", "file", "directory"])
def test_output_paths_checked_before_work(cli, tmp_path, case):
    afile = tmp_path / "afile"
    afile.write_text("x")
    target = {"missing": tmp_path / "no" / "x.json", "file": afile / "x.json",
              "directory": tmp_path}[case]
    r = cli("backtest", "--scenario", "synthetic:1:long:1", "--json", target)
    assert r.code == 2 and r.err.startswith("error: --json:")
    r = cli("backtest", "--scenario", "synthetic:1:long:1", "--report", target)
    assert r.code == 2 and r.err.startswith("error: --report:")
    out = afile if case == "file" else afile / "sub"
    r = cli("data", "synth", "--days", "1", "--out", out)
    assert r.code == 2 and r.err.startswith("error: --out:")
    r = cli("data", "import", "x.csv", "--out", out)
    assert r.code == 2 and r.err.startswith("error: --out:")


def test_unwritable_output_dir(cli, tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    if os.geteuid() == 0:        # root may write anywhere (CI runs as root): the answer a
        real = os.access         # user's account gets from the permission check, for `ro`
        monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False
                            if Path(p) in (ro, ro / "x.json") else real(p, mode, *a, **k))
    try:
        r = cli("backtest", "--scenario", "synthetic:1:long:1", "--json", ro / "x.json")
        assert r.code == 2 and "not writable" in r.err
    finally:
        ro.chmod(0o700)


def test_check_output_helper(tmp_path):
    assert check_output(Path("-"), "--json") is None
    assert check_output(tmp_path / "x.json", "--json") == tmp_path / "x.json"
    with pytest.raises(LiqbotError, match="--png: '-' .stdout. is not supported"):
        check_output(Path("-"), "--png", stdout_ok=False)


def test_backtest_json_dash_is_stdout(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = cli("backtest", "--scenario", "synthetic:1:long:1", "--risk", "off", "--json", "-")
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert set(data) == {"meta", "runs"} and data["meta"]["bars"] == 1440
    assert not (tmp_path / "-").exists()


# ---------------------------------------------------------------- user errors exit 2


def test_synth_bad_seed_and_long_run(cli, tmp_path):
    r = cli("data", "synth", "--seed", "-1", "--days", "1", "--out", tmp_path / "x")
    assert r.code == 2 and "--seed: expected an integer in 0 .." in r.err
    r = cli("data", "synth", "--days", "0", "--out", tmp_path / "x")
    assert r.code == 2 and "--days: expected 1 .. 2000" in r.err
    assert not (tmp_path / "x").exists()


def test_synthetic_book_scale_renormalises():
    """hold_minutes=1 decays the lazy scale below 1e-200 within hours (what 700+ days do
    with the default): the run used to die with ZeroDivisionError."""
    ds = generate(spec_with(SynthSpec(seed=1, days=1), hold_minutes=1.0))
    assert len(ds.bars) == 1440
    assert np.isfinite(ds.bars.close).all() and np.isfinite(ds.bars["open_interest"]).all()


def test_backtest_bad_time_wallet_strategy(cli, tmp_path, monkeypatch):
    base = ("backtest", "--scenario", "synthetic:1:long:1")
    r = cli(*base, "--from", "99999999999999999999")
    assert r.code == 2 and "--from: expected a UTC time" in r.err
    for w in ("nan", "inf", "-5", "1e300", "1e-9"):          # 1e-9 printed 'wallet 0'
        r = cli(*base, "--wallet", w)
        assert r.code == 2 and "--wallet: expected an amount from 1 to 1e+15 (quote)" in r.err
    for cmd in (("backtest", "--portfolio", tmp_path, tmp_path), ("run", "--replay", "calm"),
                ("sweep", "synthetic:1:none:1", "--strategy", "trend", "--grid", "fast=20")):
        r = cli(*cmd, "--wallet", "0.5")
        assert r.code == 2 and "--wallet: expected an amount from 1 to 1e+15" in r.err, cmd
    mod = tmp_path / "nostrat_mod.py"
    mod.write_text("from strategies.base import Strategy\n\n\nclass NoTargets(Strategy):\n"
                   "    name = 'no_targets'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    r = cli(*base, "--strategy", "nostrat_mod:NoTargets")
    assert r.code == 2 and "does not implement targets" in r.err


@pytest.mark.parametrize(("param", "message"), [
    ("leverage=1e9", "--param leverage"), ("leverage=nan", "--param leverage"),
    ("leverage=-1", "--param leverage"), ("side=up", "--param side"),
])
def test_strategy_parameter_ranges_through_cli(cli, param, message):
    r = cli("backtest", "--scenario", "synthetic:1:long:1", "--strategy", "hold",
            "--param", param)
    assert r.code == 2 and message in r.err
    no_trace(r)


# ---------------------------------------------------------------- calc


CALC = ("calc", "liquidation", "--exchange", "binance", "--side", "long", "--entry", "100000",
        "--qty", "1")


@pytest.mark.parametrize(("args", "message"), [
    (("--leverage", "1e9"), "--leverage: expected at most 200, got 1e+09"),
    (("--leverage", "nan"), "--leverage: expected a positive number, got nan"),
    (("--qty", "1e6", "--leverage", "10"), "exceeds the top bracket of BTCUSDT (cap 500,000,000)"),
    (("--leverage", "10", "--mmr", "0.01", "--maint-amount", "nan"), "--maint-amount: expected"),
    (("--leverage", "10", "--mmr", "0.01", "--maint-amount", "-5"), "--maint-amount: expected"),
    (("--leverage", "10", "--symbol", "../../x"), "--symbol: expected a symbol like BTCUSDT"),
    (("--wallet", "100"), "would be liquidated immediately (liquidation price 100,"),
    (("--wallet", "inf"), "--wallet: expected a positive number, got inf"),
])
def test_calc_garbage_in_exit_2(cli, args, message):
    argv = list(CALC)
    if "--qty" in args:
        argv[argv.index("--qty") + 1] = args[args.index("--qty") + 1]
        args = tuple(a for i, a in enumerate(args) if i not in (args.index("--qty"),
                                                              args.index("--qty") + 1))
    r = cli(*argv, *args, "--json")
    assert r.code == 2 and message in " ".join(r.err.split()), r.err
    assert r.out == ""


@pytest.mark.parametrize("fee", ["nan", "-0.001", "inf", "0.5"])
def test_calc_okx_fee_checked(cli, fee):
    r = cli("calc", "liquidation", "--exchange", "okx", "--side", "short", "--entry", "100",
            "--qty", "1", "--leverage", "10", "--mmr", "0.01", "--taker-fee", fee)
    assert r.code == 2 and "--taker-fee: expected a fee rate in [0, 0.01]" in r.err


@pytest.mark.parametrize(("row", "message"), [
    ({"mmr": "abc"}, "position 1: mmr must be a number, got 'abc'"),
    ({"mmr": float("nan")}, "position 1: mmr must be a finite number"),
    ({"mmr": 0.01, "maint_amount": "NaN"}, "maint_amount must be a finite number"),
    ({"mmr": 0.01, "qty": [1]}, "qty must be a number, got a list"),
    ({"symbol": "../x"}, "symbol must be like BTCUSDT"),
])
def test_calc_positions_file_values(cli, tmp_path, row, message):
    pos = {"side": "long", "qty": 1, "entry": 100, "mark": 100, **row}
    f = tmp_path / "p.json"
    f.write_text(json.dumps([pos]))
    r = cli(*CALC, "--wallet", "50000", "--margin-mode", "cross", "--positions", f)
    assert r.code == 2 and message in " ".join(r.err.split()), r.err


# ---------------------------------------------------------------- data files


def test_klines_in_seconds_and_microseconds_import_as_ms(cli, tmp_path):
    """... and the conversion is said (it was silent)."""
    for unit, name, word in ((1000, "s", "seconds"), (0, "us", "microseconds"),
                             (1, "ms", "")):
        src = tmp_path / f"BTCUSDT-1m-2025-10-10-{name}.csv"
        src.write_text(kline_rows(5, unit=unit))
        r = cli("data", "import", src, "--out", tmp_path / name)
        assert r.code == 0, r.err
        said = f"note: {src.name}: timestamps in {word}, converted to milliseconds"
        assert (said in " ".join(r.out.split())) == (name != "ms"), r.out
        m = json.loads((tmp_path / name / "manifest.json").read_text())
        assert (m["timeframe"], m["span"]["start"]) == ("1m", "2025-10-10T00:00:00Z")


def test_klines_mixed_units_and_1970_named(cli, tmp_path):
    text = kline_rows(3).splitlines(keepends=True)
    parts = text[3].split(",")
    parts[0] = str(int(parts[0]) // 1000)
    text[3] = ",".join(parts)
    f = tmp_path / "BTCUSDT-1m-2025-10-10.csv"
    f.write_text("".join(text))
    r = cli("data", "import", f, "--out", tmp_path / "o")
    assert r.code == 2 and "row 4, column open_time: timestamp unit changes from ms to s" in r.err
    f.write_text(kline_rows(3, t0=60_000_000))  # 1970 in ms: a 'seconds' file
    r = cli("data", "import", f, "--out", tmp_path / "o")
    assert r.code == 2 and "outside 2000-01-01 .. 2100-01-01" in r.err


def _bad_bars(kind: str) -> Bars:
    b = generate(SynthSpec(seed=3, days=1)).bars.take(slice(0, 50))
    cols = {k: v.copy() for k, v in b.columns.items()}
    if kind == "nan_close":
        cols["close"][7] = np.nan
    elif kind == "unsorted":
        cols["ts"][[3, 4]] = cols["ts"][[4, 3]]
    elif kind == "high_below_low":
        cols["high"][9] = cols["low"][9] - 1
    elif kind == "negative":
        cols["low"][5] = -1.0
    elif kind == "seconds":
        cols["ts"] = cols["ts"] // 1000
    return Bars(b.symbol, b.interval_ms, cols)


@pytest.mark.parametrize(("kind", "where"), [
    ("nan_close", "row 8, column close: value is NaN"),
    ("unsorted", "row 5, column ts: timestamp goes back in time"),
    ("high_below_low", "row 10, column high"),
    ("negative", "row 6, column low: price must be positive"),
    ("seconds", "row 1, column ts: timestamp"),
])
def test_parquet_validated_on_load(cli, tmp_path, kind, where):
    d = tmp_path / "d"
    ds_io.save(ds_io.Dataset(_bad_bars(kind)), d)
    for args in (("data", "info", d), ("backtest", d)):
        r = cli(*args)
        assert r.code == 2 and f"bars.parquet, {where}" in r.err, r.err
        no_trace(r)


def test_zip_bomb_refused_before_decompression(cli, tmp_path):
    f = tmp_path / "BTCUSDT-1m-2025-10-10.zip"
    with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as z, \
            z.open("BTCUSDT-1m-2025-10-10.csv", "w", force_zip64=True) as m:
        block = b"0" * (1 << 20)
        for _ in range(40):
            m.write(block)
    assert f.stat().st_size < 100_000
    r = cli("data", "import", f, "--out", tmp_path / "o")
    assert r.code == 2 and "above the 100:1 limit (zip bomb?); not decompressed" in r.err


def test_gzip_bomb_stopped_while_streaming(tmp_path, monkeypatch):
    import gzip

    from bot.data import csvfile
    from bot.errors import DataError
    f = tmp_path / "x.csv.gz"
    f.write_bytes(gzip.compress(b"1" * (8 << 20)))
    monkeypatch.setattr(csvfile, "RATIO_FLOOR", 1 << 20)
    with pytest.raises(DataError, match="compression ratio .* above the 100:1 limit"):
        csvfile.read_bytes(f)


# ---------------------------------------------------------------- results and bench


def test_finite_json_and_bench_margin():
    assert finite_json({"a": [1.0, float("nan")], "b": float("inf"), "c": np.float64(2)}) == \
        {"a": [1.0, None], "b": None, "c": 2.0}
    assert verdict(0.0502, 0.05) == "~"      # 50.2 ms against 50 ms: noise
    assert verdict(0.049, 0.05) == "yes"
    assert verdict(0.07, 0.05) == "NO"       # 40% over: a regression


def test_error_text_is_not_rich_markup(cli):
    """A message quoting user input such as '[/bold]' used to crash the error printer."""
    r = cli(*CALC, "--leverage", "5", "--symbol", "[/bold]")
    assert r.code == 2 and "got '[/bold]'" in r.err
    r = cli("backtest", "--scenario", "[red]x[/red]")
    assert r.code == 2 and "'[red]x[/red]'" in r.err


def test_an_exchange_error_never_carries_a_signed_query() -> None:
    """ccxt puts the request URL in its exception text; a signed one carries the signature
    (replayable within the recvWindow) and the key: cut in every message, log and event."""
    import ccxt

    from bot.errors import exc_text

    exc = ccxt.NetworkError("binanceusdm GET https://fapi.binance.com/fapi/v1/account?"
                            "timestamp=1764979200000&recvWindow=10000&signature=b5c150e4aa "
                            "failed")
    text = exc_text(exc)
    assert text == "NetworkError: binanceusdm GET https://fapi.binance.com/fapi/v1/account?... " \
                   "failed"
    assert "signature" not in exc_text(exc, 30) and len(exc_text(exc, 30)) <= 30 + 14
