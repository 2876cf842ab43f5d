"""Bad input found by fuzzing the CLI (review of 2026-12): each case exits 2 with a message
naming the file, row, column, key or option, never 1, a traceback, a warning, a NaN or a
silently wrong result."""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.test_safety import KHEAD, T0, kline_rows, no_trace

SECRET = "CANARYbadinputs5d1e"


def _err(r) -> str:  # noqa: ANN001
    """The message, on one line (rich wraps long lines at the terminal width)."""
    return " ".join(r.err.split())


def _klines(tmp_path: Path, n: int = 20, name: str = "BTCUSDT-1m-2025-10-10.csv") -> Path:
    f = tmp_path / name
    f.write_text(kline_rows(n))
    return f


def _edit_row(text: str, line: int, col: int, value: str) -> str:
    """`text` with field `col` (0-based) of 1-based `line` replaced by `value`."""
    lines = text.splitlines(keepends=True)
    fields = lines[line - 1].rstrip("\n").split(",")
    fields[col] = value
    lines[line - 1] = ",".join(fields) + "\n"
    return "".join(lines)


# --- CSV cells pyarrow refuses but Python's int()/float() take --------------------------------

@pytest.mark.parametrize(("col", "value", "column", "expected"), [
    (1, "1_000", "open", "expected a number, got '1_000'"),
    (8, "+5", "count", "expected an integer, got '+5'"),
    (8, "１２", "count", "expected an integer, got '１２'"),
    (0, "99999999999999999999999", "open_time", "expected an integer"),
])
def test_unparsable_cell_is_named(cli, tmp_path, col, value, column, expected):
    """The slow pass agrees with pyarrow on what a number is, so the bad row is found
    (was: 'unreadable CSV (could not locate the bad row)')."""
    f = tmp_path / "BTCUSDT-1m-2025-10-10.csv"
    f.write_text(_edit_row(kline_rows(20), 5, col, value))
    r = cli("data", "import", f, "--out", tmp_path / "ds")
    no_trace(r)
    assert r.code == 2 and f"row 5, column {column}: {expected}" in _err(r), r.err
    assert "could not locate" not in r.err


# --- a UTF-8 byte order mark (spreadsheet exports) --------------------------------------------

def test_bom_before_headerless_file_keeps_first_row(cli, tmp_path):
    """A BOM before a header-less klines file made its first row look like a header: the
    first bar was dropped without a word."""
    f = tmp_path / "BTCUSDT-1m-2025-10-10.csv"
    f.write_bytes(b"\xef\xbb\xbf" + kline_rows(20)[len(KHEAD):].encode())
    r = cli("data", "import", f, "--out", tmp_path / "ds")
    assert r.code == 0, r.err
    m = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert m["rows"] == 20 and m["span"]["start_ms"] == T0


def test_bom_before_header_is_recognised(cli, tmp_path):
    """The kind comes from the header even behind a BOM (was: 'cannot tell which kind')."""
    f = tmp_path / "export.csv"
    f.write_bytes(b"\xef\xbb\xbf" + kline_rows(20).encode())
    r = cli("data", "import", f, "--symbol", "BTCUSDT", "--out", tmp_path / "ds")
    assert r.code == 0, r.err
    m = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert m["rows"] == 20 and m["span"]["start_ms"] == T0 and m["symbol"] == "BTCUSDT"


# --- Binance Vision metrics and liquidationSnapshot values ------------------------------------

MHEAD = ("create_time,symbol,sum_open_interest,sum_open_interest_value,"
         "count_toptrader_long_short_ratio,sum_toptrader_long_short_ratio,"
         "count_long_short_ratio,sum_taker_long_short_vol_ratio\n")
LHEAD = ("time,side,order_type,time_in_force,original_quantity,price,average_price,"
         "order_status,last_fill_quantity,accumulated_fill_quantity\n")


def _metrics(n: int = 4) -> str:
    rows = []
    for i in range(n):
        t = datetime.fromtimestamp((T0 + i * 300_000) / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
        rows.append(f"{t},BTCUSDT,90000,9000000000,1.5,1.4,1.3,0.9\n")
    return MHEAD + "".join(rows)


def _liqs(n: int = 4) -> str:
    return LHEAD + "".join(f"{T0 + i * 70_000},SELL,LIMIT,IOC,0.5,100,100,FILLED,0.5,0.5\n"
                           for i in range(n))


METRICS = ("BTCUSDT-metrics-2025-10-10.csv", _metrics)
LIQS = ("BTCUSDT-liquidationSnapshot-2025-10-10.csv", _liqs)


@pytest.mark.parametrize(("kind", "col", "value", "column", "expected"), [
    (METRICS, 5, "inf", "sum_toptrader_long_short_ratio", "value is NaN or infinite"),
    (METRICS, 6, "-2", "count_long_short_ratio", "negative count_long_short_ratio -2.0"),
    (METRICS, 2, "-5", "sum_open_interest", "negative sum_open_interest -5.0"),
    (LIQS, 6, "inf", "average_price", "value is NaN or infinite"),
    (LIQS, 9, "-5", "accumulated_fill_quantity", "negative accumulated_fill_quantity -5.0"),
    (LIQS, 9, "1e308", "accumulated_fill_quantity",
     "average_price x accumulated_fill_quantity = inf is beyond 1e+12 (quote)"),
])
def test_metrics_and_liquidation_values_checked_at_import(cli, tmp_path, kind, col, value,
                                                         column, expected):
    """Metrics ratios were not checked at all (inf landed in the dataset) and a negative
    open interest was accepted by the import, then refused by every later load; inf prices
    and negative or overflowing liquidation quantities were imported (an overflow warning on
    stderr, an infinite or negative liquidation notional in the dataset)."""
    name, rows = kind
    k = _klines(tmp_path)
    f = tmp_path / name
    f.write_text(_edit_row(rows(), 3, col, value))
    r = cli("data", "import", k, f, "--out", tmp_path / "ds")
    no_trace(r)
    assert r.code == 2 and f"{f}, row 3, column {column}: {expected}" in _err(r), r.err
    assert "RuntimeWarning" not in r.err


# --- event files given twice ------------------------------------------------------------------

def test_liquidation_files_overlapping_refused(cli, tmp_path):
    """The same liquidationSnapshot file twice doubled every bar's liquidation notional."""
    k = _klines(tmp_path)
    f = tmp_path / "BTCUSDT-liquidationSnapshot-2025-10-10.csv"
    f.write_text(_liqs())
    r = cli("data", "import", k, f, f, "--out", tmp_path / "ds")
    no_trace(r)
    assert r.code == 2 and "overlaps BTCUSDT-liquidationSnapshot-2025-10-10.csv" in _err(r)
    assert "count twice" in _err(r)
    assert cli("data", "import", k, f, "--out", tmp_path / "ds").code == 0


def test_trade_files_overlapping_refused(cli, tmp_path):
    """The same aggTrades file twice doubled the trades table (and the bars' volume)."""
    f = tmp_path / "BTCUSDT-aggTrades-2025-10-10.csv"
    f.write_text("agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,"
                 "is_buyer_maker\n" + "".join(
                     f"{i},{100 + i % 5},0.5,{i},{i},{T0 + i * 1000},true\n" for i in range(300)))
    r = cli("data", "import", f, f, "--out", tmp_path / "ds")
    no_trace(r)
    assert r.code == 2 and "(the same file twice?)" in _err(r) and "trades" in _err(r)


def test_unknown_kind_label_named(cli, tmp_path):
    """FILE:nosuch said 'cannot read file (No such file or directory)' about FILE:nosuch."""
    k = _klines(tmp_path)
    r = cli("data", "import", f"{k}:nosuch", "--out", tmp_path / "ds")
    assert r.code == 2 and "unknown kind 'nosuch'" in _err(r) and "No such file" not in r.err
    # the file named whole once (a long path's head was cut off without an ellipsis)
    assert f"{k}: unknown kind 'nosuch' after ':'; label a file FILE:KIND" in _err(r)


def test_vendor_funding_out_of_scale(cli, tmp_path):
    """Vendor funding of 500 (percent per 8h) became a 5.0 rate in the dataset, which a
    load then refused; the import refuses it, naming the row."""
    price = tmp_path / "api_price_ohlc_history.csv"
    price.write_text('"time","open","high","low","close","volume_usd"\n' + "".join(
        f'{T0 + i * 14_400_000},"100","101","99","100.5","1000000"\n' for i in range(12)))
    fr = tmp_path / "api_futures_fundingRate_oi_weight_ohlc_history_BTC.csv"
    fr.write_text('"time","open","high","low","close"\n' + "".join(
        f"{T0 + i * 14_400_000},0.01,0.01,0.01,{500 if i == 3 else 0.01}\n" for i in range(12)))
    r = cli("data", "import", price, fr, "--out", tmp_path / "ds")
    no_trace(r)
    assert r.code == 2 and f"{fr}, row 5, column close: funding 500.0% per 8h" in _err(r)


# --- a saved dataset edited after import ------------------------------------------------------

@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bot.data import dataset
    from bot.data.synthetic import SynthSpec, generate
    d = tmp_path_factory.mktemp("s") / "ds"
    dataset.save(generate(SynthSpec(seed=1, days=1)), d)
    return d


def _tampered(src: Path, dst: Path, column: str, row: int, value: object) -> Path:
    """A copy of dataset `src` with bars.parquet's `column`[row] set to `value` (a whole
    column of strings when `value` is str), its sha256 updated in the manifest."""
    shutil.copytree(src, dst)
    t = pq.read_table(dst / "bars.parquet")
    cols = {n: t.column(n).to_numpy().copy() for n in t.column_names}
    if isinstance(value, str):
        cols[column] = np.array([str(x) for x in cols[column]])
    else:
        cols[column][row] = value
    pq.write_table(pa.table(cols), dst / "bars.parquet")
    m = json.loads((dst / "manifest.json").read_text())
    m["files"]["bars.parquet"] = hashlib.sha256((dst / "bars.parquet").read_bytes()).hexdigest()
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


@pytest.mark.parametrize(("column", "value", "expected"), [
    ("mark_close", np.inf, "row 6, column mark_close: value is infinite"),
    ("mark_close", -1.0, "row 6, column mark_close: price -1.0 is outside the plausible"),
    ("funding_rate", 5.0, "row 6, column funding_rate: funding rate 5 is beyond +-0.1"),
    ("long_short_ratio", -3.0, "row 6, column long_short_ratio: negative long_short_ratio"),
    ("open_interest", np.inf, "row 6, column open_interest: value is infinite"),
    ("mark_high", 1.0, "row 6, column mark_high: mark_high 1.0 is below mark_low"),
])
def test_edited_dataset_optional_columns_checked(cli, synth_dir, tmp_path, column, value,
                                                 expected):
    """The optional columns of a dataset were not checked on load: an infinite or negative
    mark price or a funding rate of 500% ran a backtest to exit 0."""
    d = _tampered(synth_dir, tmp_path / "ds", column, 5, value)
    r = cli("backtest", d, "--strategy", "hold", "--risk", "on")
    no_trace(r)
    assert r.code == 2 and f"{d / 'bars.parquet'}, {expected}" in _err(r), r.err


def test_edited_dataset_text_column(cli, synth_dir, tmp_path):
    """A column of strings in bars.parquet was an 'unexpected error' (exit 1)."""
    d = _tampered(synth_dir, tmp_path / "ds", "close", 0, "text")
    r = cli("backtest", d, "--risk", "on")
    no_trace(r)
    assert r.code == 2 and "column close: expected numbers, got" in _err(r), r.err


# --- tiers files ------------------------------------------------------------------------------

def _tier(lo: float, hi: float, mmr: float, lev: object, cum: object) -> dict:
    return {"minNotional": lo, "maxNotional": hi, "maintenanceMarginRate": mmr,
            "maxLeverage": lev, "info": {"cum": cum}}


@pytest.mark.parametrize(("tiers", "expected"), [
    ([_tier(0, float("nan"), 0.004, 125, "0"), _tier(float("nan"), 6e5, 0.005, 100, "50")],
     "tier 1: cap is not a finite number"),
    ([_tier(0, 5e4, 0.004, 125, "0"), _tier(5e4, 6e5, 0.005, 100, "nan")],
     "tier 2: cum is not a finite number"),
    ([_tier(0, 5e4, 0.004, 125, "0"), _tier(5e4, 6e5, 0.005, 100, "abc")],
     "every tier needs numeric floor, cap, mmr (and cum when given)"),
    ([_tier(1000, 5e4, 0.004, 125, "0")], "tier 1: floor 1000 is not 0"),
    ([_tier(0, 5e4, 0.004, True, "0")], "tier 1: max_leverage is true/false"),
])
def test_bad_tiers_refused(cli, tmp_path, tiers, expected):
    """NaN caps and maintenance amounts were accepted (NaN liquidation prices: never
    liquidated), a non-numeric cum was exit 1, a first tier not starting at 0 left small
    positions without a tier, and true was 1x."""
    f = tmp_path / "tiers.json"
    f.write_text(json.dumps({"BTC/USDT:USDT": tiers}))
    r = cli("backtest", "--scenario", "calm", "--risk", "on", "--tiers", f)
    no_trace(r)
    assert r.code == 2 and f"{f}: {expected}" in _err(r), r.err


def test_empty_tiers_file_says_so(cli, tmp_path):
    """`{}` said "no tiers for symbol 'BTCUSDT'; present: " and nothing after it."""
    f = tmp_path / "tiers.json"
    f.write_text("{}")
    r = cli("backtest", "--scenario", "calm", "--risk", "on", "--tiers", f)
    no_trace(r)
    assert r.code == 2 and f"{f}: no tiers for symbol 'BTCUSDT'; the file holds none" \
        in _err(r), r.err


@pytest.mark.parametrize(("content", "expected"), [
    (bytes(range(256)), "not valid JSON (not UTF-8 text"),
    (b"[" * 100_000 + b"]" * 100_000, "not valid JSON (nested too deeply)"),
])
def test_unreadable_json_files(cli, tmp_path, content, expected):
    """Binary or deeply nested JSON was an 'unexpected error' (exit 1)."""
    f = tmp_path / "tiers.json"
    f.write_bytes(content)
    r = cli("backtest", "--scenario", "calm", "--risk", "on", "--tiers", f)
    no_trace(r)
    assert r.code == 2 and expected in _err(r), r.err
    r = cli("calc", "liquidation", "--exchange", "binance", "--side", "long", "--entry", "100",
            "--qty", "1", "--wallet", "1000", "--margin-mode", "cross", "--positions", f)
    assert r.code == 2 and expected in _err(r), r.err


# --- calc ---------------------------------------------------------------------------------------

def test_calc_leverage_below_one(cli):
    """--leverage 1e-300 divided by zero in the Bybit formula (exit 1)."""
    r = cli("calc", "liquidation", "--exchange", "bybit", "--side", "long", "--entry", "1e7",
            "--qty", "1e8", "--leverage", "1e-300", "--mmr", "0.01")
    no_trace(r)
    assert r.code == 2 and "--leverage: expected at least 1, got 1e-300" in _err(r), r.err


def test_calc_tiny_prices(cli):
    """An entry of 1e-300 printed 0.0 as a short's liquidation price; a real low-priced
    coin's prices printed as 0.00 in the table and JSON rounded them toward 0."""
    r = cli("calc", "liquidation", "--exchange", "okx", "--side", "short", "--entry", "1e-300",
            "--qty", "1", "--leverage", "10", "--mmr", "0.01")
    assert r.code == 2 and "--entry: expected at least 1e-12, got 1e-300" in _err(r), r.err
    args = ("calc", "liquidation", "--exchange", "binance", "--side", "long", "--entry",
            "0.00001234", "--qty", "1000000", "--leverage", "10")
    r = cli(*args, "--json")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert out["liquidation_price"] == pytest.approx(1.11506e-05, rel=1e-4)
    assert out["bankruptcy_price"] == pytest.approx(1.1106e-05, rel=1e-9)
    r = cli(*args)
    assert r.code == 0 and "0.0000111506" in r.out and "0.0000111060" in r.out, r.out
    # the README's example keeps its digits
    r = cli("calc", "liquidation", "--exchange", "binance", "--side", "long", "--entry",
            "100000", "--qty", "1", "--leverage", "10", "--json")
    assert json.loads(r.out)["liquidation_price"] == 90402.0100502513


# --- times and spans ----------------------------------------------------------------------------

def test_backtest_empty_span_names_dataset_span(cli):
    """'the selected span has fewer than 10 bars' named neither the data nor its span."""
    r = cli("backtest", "--scenario", "calm", "--risk", "on", "--from", "2030-01-01")
    assert r.code == 2, r.err
    assert ("calm: 0 bar(s) with --from 2030-01-01 (its bars run 2026-01-01T00:00:00Z .. "
            "2026-01-04T00:00:00Z): fewer than 10 bars") in _err(r), r.err


def test_out_of_range_offset_no_warning(cli):
    """An offset beyond +-24h fell through to numpy, which printed a UserWarning line
    (with a source line) before the message (here: warnings are errors, so exit 1)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = cli("backtest", "--scenario", "calm", "--risk", "on", "--from",
                "2026-01-01T00:00:00+99:00")
    no_trace(r)
    assert r.code == 2 and "--from: expected a UTC time" in _err(r), r.err


def test_heatmap_one_bar_without_at(cli, tmp_path):
    """A one-bar dataset said '--at: need at least two bars' though no --at was given."""
    k = _klines(tmp_path, 1)
    assert cli("data", "import", k, "--out", tmp_path / "ds").code == 0
    r = cli("heatmap", tmp_path / "ds")
    assert r.code == 2 and "1 bar(s); the heatmap needs at least two" in _err(r), r.err
    assert "--at" not in r.err


# --- config -------------------------------------------------------------------------------------

def test_secret_from_env_override_named(cli, monkeypatch):
    """A secret-looking LIQBOT_<SECTION>__<KEY> override was reported as 'in a config file'
    under '(defaults)'; the message names the variable, never the value."""
    monkeypatch.setenv("LIQBOT_EXCHANGE__TOKEN", SECRET)
    r = cli("backtest", "--scenario", "calm", "--risk", "on")
    assert r.code == 2 and "exchange.token: expected no secrets in config overrides " \
        "(LIQBOT_EXCHANGE__TOKEN is set)" in _err(r), r.err
    assert SECRET not in r.out + r.err


# --- download / fetch options -------------------------------------------------------------------

@pytest.mark.parametrize(("args", "expected"), [
    (("download", "--symbol", "BTCUSDT", "--kind", "klines", "--interval", "7m"),
     "--interval: unknown interval '7m'"),
    (("download", "--symbol", "BTCUSDT", "--kind", "candles"), "--kind: unknown kind 'candles'"),
    (("fetch", "--symbol", "BTCUSDT", "--exchange", "kraken"),
     "--exchange: unknown exchange 'kraken'"),
    (("fetch", "--symbol", "BTCUSDT", "--timeframe", "7m"), "--timeframe: unknown interval '7m'"),
])
def test_download_fetch_options_named(cli, tmp_path, args, expected):
    """These errors named '(argument)' instead of the option (and fetch checked
    --timeframe only after building the exchange client)."""
    r = cli("data", *args, "--from", "2025-10-08", "--to", "2025-10-09", "--out",
            tmp_path / "o")
    assert r.code == 2 and f"error: {expected}" in _err(r) and "(argument)" not in r.err, r.err
