"""`liqbot data import`: the symbol comes from a valid file name or --symbol (never a
garbage name), and an existing dataset in --out is replaced only with --force."""

from __future__ import annotations

import json

import pytest

from tests.test_safety import kline_rows


def _symbol(out) -> str:  # noqa: ANN001
    return json.loads((out / "manifest.json").read_text())["symbol"]


@pytest.mark.parametrize("name", ["good.csv", "BTC USDT-1m-x.csv", "BTCÜSDT-1m-x.csv",
                                  "A" * 28 + "-1m-x.csv"])
def test_bad_symbol_in_file_name_exits_2_naming_the_file(cli, tmp_path, name):
    f = tmp_path / name
    f.write_text(kline_rows(20))
    r = cli("data", "import", f, "--out", tmp_path / "ds")
    msg = " ".join(r.err.split())
    assert r.code == 2 and msg.startswith(f"error: {f}: no symbol in the file name"), r.err
    assert "--symbol" in msg and "Traceback" not in r.out + r.err
    assert not (tmp_path / "ds").exists()


def test_symbol_option_names_a_klines_file(cli, tmp_path):
    f = tmp_path / "good.csv"
    f.write_text(kline_rows(30))
    out = tmp_path / "ds"
    r = cli("data", "import", f, "--out", out, "--symbol", "btcusdt")
    assert r.code == 0, r.err
    assert _symbol(out) == "BTCUSDT"
    r = cli("backtest", out, "--risk", "off", "--json", "-")
    assert r.code == 0, r.err
    same = tmp_path / "BTCUSDT-1m-2025-10-10.csv"       # a name that agrees with --symbol
    same.write_text(kline_rows(30))
    r = cli("data", "import", same, "--out", tmp_path / "ds2", "--symbol", "BTCUSDT")
    assert r.code == 0 and _symbol(tmp_path / "ds2") == "BTCUSDT", r.err


def test_symbol_option_conflicting_with_file_name(cli, tmp_path):
    f = tmp_path / "ETHUSDT-1m-2025-10-10.csv"
    f.write_text(kline_rows(5))
    r = cli("data", "import", f, "--out", tmp_path / "ds", "--symbol", "BTCUSDT")
    msg = " ".join(r.err.split())
    assert r.code == 2 and msg.startswith(f"error: {f}:"), r.err
    assert "ETHUSDT" in msg and "BTCUSDT" in msg
    assert not (tmp_path / "ds").exists()


def test_reimport_into_a_dataset_needs_force_and_drops_stale_tables(cli, tmp_path):
    out = tmp_path / "s"
    assert cli("data", "synth", "--days", "1", "--out", out).code == 0
    assert (out / "truth_book.parquet").exists()
    (out / "notes.txt").write_text("mine")                # not the dataset's: kept
    f = tmp_path / "BTCUSDT-1m-onebar.csv"
    f.write_text(kline_rows(1))
    before = (out / "manifest.json").read_text()
    r = cli("data", "import", f, "--out", out)
    assert r.code == 2 and "--force" in r.err and f"{out}" in " ".join(r.err.split()), r.err
    assert (out / "manifest.json").read_text() == before
    r = cli("data", "import", f, "--out", out, "--force")
    assert r.code == 0, r.err
    assert sorted(p.name for p in out.iterdir()) == ["bars.parquet", "manifest.json",
                                                     "notes.txt"]
    r = cli("data", "info", out, "--verify")
    assert r.code == 0 and r.out.startswith("OK:"), r.out + r.err
    assert json.loads((out / "manifest.json").read_text())["rows"] == 1


def test_synth_into_a_dataset_needs_force(cli, tmp_path):
    out = tmp_path / "s"
    f = tmp_path / "BTCUSDT-1m-2025-10-10.csv"
    f.write_text(kline_rows(5))
    assert cli("data", "import", f, "--out", out).code == 0
    r = cli("data", "synth", "--days", "1", "--out", out)
    assert r.code == 2 and "--force" in r.err, r.err
    r = cli("data", "synth", "--days", "1", "--out", out, "--force")
    assert r.code == 0, r.err
    assert cli("data", "info", out, "--verify").code == 0
