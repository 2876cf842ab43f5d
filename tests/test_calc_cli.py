import json
from pathlib import Path

import pytest


def test_calc_json_reproduces_binance_example(cli, tmp_path):
    r = cli("calc", "liquidation", "--exchange", "binance", "--side", "long", "--entry",
            "1456.84", "--qty", "3683.979", "--wallet", "1535443.01", "--symbol", "ETHUSDT",
            "--json")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert set(out) == {"liquidation_price", "bankruptcy_price", "maintenance_margin",
                        "maintenance_rate", "maintenance_amount"}
    assert round(out["liquidation_price"], 2) == 1114.78
    assert out["maintenance_rate"] == 0.1 and out["maintenance_amount"] == 135365
    pos = tmp_path / "pos.json"
    pos.write_text(json.dumps([{"side": "long", "qty": 109.488, "entry": 32481.98,
                                "mark": 31967.27, "symbol": "BTCUSDT"}]))
    r = cli("calc", "liquidation", "--exchange", "binance", "--side", "long", "--entry",
            "1456.84", "--qty", "3683.979", "--wallet", "1535443.01", "--symbol", "ETHUSDT",
            "--margin-mode", "cross", "--positions", pos, "--json")
    assert round(json.loads(r.out)["liquidation_price"], 2) == 1153.26


def test_a_stated_tier_with_its_maintenance_amount(cli, tmp_path):
    """--maint-amount (and maint_amount in a positions file) describe the one tier the
    position sits in; they were checked as a whole table's first tier, which must have 0,
    so every non-zero amount exited 2 ("breaks cum_i = ...")."""
    r = cli("calc", "liquidation", "--exchange", "binance", "--side", "long", "--entry",
            "100000", "--qty", "1", "--leverage", "10", "--mmr", "0.005", "--maint-amount",
            "50", "--json")
    assert r.code == 0, r.err
    # Binance's tier 2 (0.5%, 50) stated by hand: the README's shipped-table figure,
    # (10,000 + 50 - 100,000) / (0.005 - 1)
    assert json.loads(r.out)["liquidation_price"] == pytest.approx(90402.0100502513, rel=1e-12)
    pos = tmp_path / "pos.json"         # the BTCUSDT position of the example above, in its
    pos.write_text(json.dumps([{"side": "long", "qty": 109.488, "entry": 32481.98,  # tier
                                "mark": 31967.27, "mmr": 0.025, "maint_amount": 16300}]))
    r = cli("calc", "liquidation", "--exchange", "binance", "--side", "long", "--entry",
            "1456.84", "--qty", "3683.979", "--wallet", "1535443.01", "--symbol", "ETHUSDT",
            "--margin-mode", "cross", "--positions", pos, "--json")
    assert r.code == 0, r.err
    assert round(json.loads(r.out)["liquidation_price"], 2) == 1153.26
    # an amount no tier of this position has (above rate x notional: a negative
    # maintenance, a liquidation price past bankruptcy) is refused
    r = cli("calc", "liquidation", "--exchange", "binance", "--side", "long", "--entry", "100",
            "--qty", "10", "--leverage", "10", "--mmr", "0.005", "--maint-amount", "200")
    assert r.code == 2 and "--maint-amount: maintenance amount 200 is above the rate x the " \
        "position's notional (0.005 x 1,000.00 = 5.00)" in " ".join(r.err.split())
    # within rate x the entry notional, but not at the liquidation notional: past bankruptcy
    r = cli("calc", "liquidation", "--exchange", "binance", "--side", "long", "--entry", "100",
            "--qty", "1", "--leverage", "10", "--mmr", "0.01", "--maint-amount", "0.99")
    assert r.code == 2 and "puts the liquidation price 89.91 past the bankruptcy price " \
        "90.00" in " ".join(r.err.split())
    pos.write_text(json.dumps([{"side": "long", "qty": 1, "entry": 100, "mark": 100,
                                "mmr": 0.005, "maint_amount": 50}]))
    r = cli("calc", "liquidation", "--exchange", "binance", "--side", "long", "--entry",
            "1456.84", "--qty", "3683.979", "--wallet", "1535443.01", "--symbol", "ETHUSDT",
            "--margin-mode", "cross", "--positions", pos, "--json")
    assert r.code == 2 and "position 1: maintenance amount 50 is above" in r.err


def test_calc_leverage_and_explicit_rate(cli):
    r = cli("calc", "liquidation", "--exchange", "binance", "--side", "short", "--entry",
            "100000", "--qty", "0.1", "--leverage", "20", "--mmr", "0.004", "--json")
    out = json.loads(r.out)
    # margin 500: (500 + 0 + 10000) / (0.1*0.004 + 0.1) = 10500 / 0.1004
    assert out["liquidation_price"] == pytest.approx(10500 / 0.1004)
    assert out["bankruptcy_price"] == pytest.approx(105000.0)
    r = cli("calc", "liquidation", "--exchange", "bybit", "--side", "long", "--entry", "20000",
            "--qty", "1", "--leverage", "50", "--mmr", "0.005")
    assert r.code == 0 and "19,700.00" in r.out


@pytest.mark.parametrize(("args", "message"), [
    (["--side", "up"], "--side: expected long or short, got 'up'"),
    (["--side", "long"], "give exactly one of --leverage L"),
    (["--side", "long", "--leverage", "10", "--wallet", "5"], "give exactly one of --leverage"),
    (["--side", "long", "--leverage", "-3"], "--leverage: expected a positive number, got -3.0"),
    (["--side", "long", "--leverage", "10", "--margin-mode", "cross"],
     "--margin-mode cross needs --wallet"),
    (["--side", "long", "--leverage", "10", "--mmr", "2"], "--mmr: expected a rate in (0, 1)"),
    (["--side", "long", "--leverage", "10", "--symbol", "DOGEUSDT"],
     "no shipped bracket table for binance DOGEUSDT"),
])
def test_calc_bad_arguments_exit_2(cli, args, message):
    r = cli("calc", "liquidation", "--exchange", "binance", "--entry", "100", "--qty", "1", *args)
    assert r.code == 2
    assert message in " ".join(r.err.split())
    assert "Traceback" not in r.err


def test_calc_unknown_exchange_and_missing_rate(cli, tmp_path):
    base = ["calc", "liquidation", "--side", "long", "--entry", "100", "--qty", "1",
            "--leverage", "5"]
    r = cli(*base, "--exchange", "kraken")
    assert r.code == 2 and "--exchange: expected binance, bybit or okx" in r.err
    r = cli(*base, "--exchange", "okx")
    assert r.code == 2 and "--mmr: required for okx" in r.err
    bad = tmp_path / "t.json"
    bad.write_text("{not json")
    r = cli(*base, "--exchange", "binance", "--tiers", bad)
    assert r.code == 2 and "not valid JSON" in r.err


def test_calc_cross_account_liquidated_at_entry_exits_2(cli, tmp_path):
    """Cross: a wallet (plus the other positions' PnL) under the maintenance requirement at
    entry has its 'liquidation price' on the wrong side of the entry; isolated refused it,
    cross printed it (100,351.76 for a long entered at 100,000)."""
    base = ["calc", "liquidation", "--exchange", "binance", "--side", "long", "--entry",
            "100000", "--qty", "1", "--margin-mode", "cross"]
    r = cli(*base, "--wallet", "100")
    assert r.code == 2
    err = " ".join(r.err.split())
    assert "liquidated immediately" in err and "100,351.76 is above the entry" in err
    assert "add to --wallet" in err
    pos = tmp_path / "pos.json"        # another long 1 BTC bought at 100k, marked at 50k
    pos.write_text(json.dumps([{"side": "long", "qty": 1, "entry": 100000, "mark": 50000,
                                "symbol": "BTCUSDT"}]))
    r = cli(*base, "--wallet", "20000", "--positions", pos)
    assert r.code == 2 and "liquidated immediately" in r.err
    r = cli(*base, "--wallet", "20000")   # the same wallet without the loser: 81,0xx
    assert r.code == 0 and "liquidation price" in r.out


def test_calc_leverage_above_the_bracket_and_a_1x_long(cli):
    base = ["calc", "liquidation", "--exchange", "binance", "--side", "long", "--entry",
            "100000", "--qty", "1"]
    r = cli(*base, "--leverage", "200")       # 100k notional: tier 2, 100x at most
    assert r.code == 2
    assert "200x is above the 100x that BTCUSDT's bracket allows" in " ".join(r.err.split())
    r = cli(*base, "--leverage", "1", "--json")
    out = json.loads(r.out)
    assert out["liquidation_price"] == 0.0 and str(out["maintenance_margin"]) == "0.0"
    assert "-0.0" not in r.out
    r = cli(*base, "--leverage", "1")
    assert r.code == 0 and "none (the margin covers a fall to 0)" in r.out and "-0.00" not in r.out
    r = cli("calc", "liquidation", "--exchange", "bybit", "--side", "long", "--entry", "20000",
            "--qty", "1", "--leverage", "50", "--mmr", "0.005")
    assert "notional > 0," in " ".join(r.out.split()) and "inf" not in r.out


@pytest.mark.parametrize("args", [
    ["calc", "liquidation", "--exchange", "binance", "--side", "long", "--entry", "100000",
     "--qty", "1", "--leverage", "10"],
    ["--help"],                     # typer's own rich console (it exited 1 until 2026-12-06)
    ["backtest", "--help"],
    # plain prints (typer's EPIPE handling exited 1 until 2026-12-06)
    ["calc", "liquidation", "--exchange", "binance", "--side", "long", "--entry", "100000",
     "--qty", "1", "--leverage", "10", "--json"],
    ["config", "check", str(Path(__file__).resolve().parents[1] / "config" / "default.toml")],
])
def test_a_reader_that_leaves_ends_the_command_with_141_silently(args: list[str]) -> None:
    """`liqbot ... | head`: rich exited 1 (read as "a bug in liqbot")."""
    import os
    import subprocess
    import sys

    r, w = os.pipe()
    os.close(r)                                   # the reader is gone before we write
    p = subprocess.run([sys.executable, "-m", "bot.cli", *args], stdout=w,
                       stderr=subprocess.PIPE, text=True, timeout=120)
    os.close(w)
    assert p.returncode == 141 and p.stderr == ""
    ok = subprocess.run([sys.executable, "-m", "bot.cli", *args], capture_output=True,
                        text=True, timeout=120)
    assert ok.returncode == 0 and ok.stdout and ok.stderr == ""


AVAX_TIERS = {"AVAX/USDT:USDT": [
    {"tier": k + 1, "currency": "USDT", "minNotional": lo, "maxNotional": hi,
     "maintenanceMarginRate": rate, "maxLeverage": lev, "info": {"cum": str(cum)}}
    for k, (lo, hi, rate, lev, cum) in enumerate([
        (0, 5000, 0.01, 50, 0.0), (5000, 25000, 0.02, 25, 50.0),
        (25000, 100000, 0.025, 20, 175.0), (100000, 250000, 0.05, 10, 2675.0),
        (250000, 1000000, 0.1, 5, 15175.0)])]}


def test_bybit_and_okx_price_a_position_at_its_own_tier(cli, tmp_path):
    """A 500k AVAX long at 4x sits in the table's fifth tier (rate 10%, amount 15,175): Bybit
    and OKX used the FIRST tier's 1% for every size (7.60, too far from the entry). By hand:
    Bybit 10 - (500,000/4 - (500,000 x 0.1 - 15,175)) / 50,000 = 8.1965; OKX (margin -
    notional) / (qty x (0.1 + 0.0005 taker - 1)) = -375,000 / (50,000 x -0.8995)."""
    tiers = tmp_path / "avax.json"
    tiers.write_text(json.dumps(AVAX_TIERS))
    base = ("calc", "liquidation", "--side", "long", "--entry", "10", "--leverage", "4",
            "--tiers", tiers, "--symbol", "AVAXUSDT", "--json")
    by = json.loads(cli(*base, "--exchange", "bybit", "--qty", "50000").out)
    assert by["liquidation_price"] == pytest.approx(8.1965, abs=1e-12)
    assert (by["maintenance_rate"], by["maintenance_amount"]) == (0.1, 15175.0)
    ok = json.loads(cli(*base, "--exchange", "okx", "--qty", "50000").out)
    assert ok["liquidation_price"] == round(375_000 / (50_000 * 0.8995), 10)   # JSON: 10 dp
    assert (ok["maintenance_rate"], ok["maintenance_amount"]) == (0.1, 0.0)
    small = json.loads(cli(*base, "--exchange", "bybit", "--qty", "100").out)   # 1k: tier 1
    assert small["liquidation_price"] == pytest.approx(10 - (250 - 10) / 100, abs=1e-12)
    assert small["maintenance_rate"] == 0.01


def test_calc_refuses_input_it_would_ignore(cli, tmp_path):
    base = ("calc", "liquidation", "--side", "long", "--entry", "100000", "--qty", "1",
            "--leverage", "10")
    r = cli(*base, "--exchange", "binance", "--taker-fee", "0.001")
    assert r.code == 2 and "--taker-fee: only OKX's liquidation price includes the taker " \
        "fee; binance's does not" in " ".join(r.err.split())
    pos = tmp_path / "pos.json"
    pos.write_text(json.dumps([{"side": "long", "qty": 1, "entry": 100, "mark": 100,
                                "mmr": 0.01, "maint_amt": 1}]))
    r = cli(*base[:-2], "--exchange", "binance", "--wallet", "20000", "--margin-mode", "cross",
            "--positions", pos)
    assert r.code == 2 and "position 1: unknown key 'maint_amt'" in " ".join(r.err.split())
