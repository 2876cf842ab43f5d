"""Canary: a unique secret set through the environment, a credentials file and (refused) a
config TOML must never appear in any output, log, written file, database row or error text,
whatever command runs."""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from pathlib import Path

import pytest

from tests.test_safety import kline_rows

NONFINITE = re.compile(r"(?i)\b(nan|-?inf|-?infinity)\b")


def _strict(text: str) -> object:
    def bad(tok: str) -> None:
        raise AssertionError(f"non-finite number {tok} in JSON output")
    return json.loads(text, parse_constant=bad)


def _scan_files(root: Path, canary: bytes) -> list[str]:
    hits = []
    for p in root.rglob("*"):
        if p.is_file() and p.name != "creds.toml" and canary in p.read_bytes():
            hits.append(str(p))
    return hits


def _commands(tmp: Path, cfg: Path) -> list[tuple[str, ...]]:
    ds, store = tmp / "ds", f"sqlite:///{tmp}/store/liqbot.db"
    (tmp / "store").mkdir(exist_ok=True)
    csv = tmp / "BTCUSDT-1m-2025-10-10.csv"
    csv.write_text(kline_rows(30))
    c = ("--config", str(cfg))
    return [
        (*c, "config", "check", str(cfg)),
        (*c, "calc", "liquidation", "--exchange", "binance", "--side", "long", "--entry",
         "100000", "--qty", "1", "--leverage", "10", "--json"),
        (*c, "data", "synth", "--seed", "2", "--days", "1", "--out", str(ds)),
        (*c, "data", "synth", "--seed", "2", "--days", "1", "--out", str(ds / "x"), "--json"),
        (*c, "data", "info", str(ds)),
        (*c, "data", "info", str(ds), "--json"),
        (*c, "data", "info", str(ds), "--verify"),
        (*c, "data", "import", str(csv), "--out", str(tmp / "imported")),
        (*c, "backtest", "--scenario", "synthetic:1:long:1", "--json", str(tmp / "bt.json"),
         "--report", str(tmp / "bt.html")),
        (*c, "backtest", str(ds), "--risk", "on", "--json", "-"),
        (*c, "heatmap", str(ds), "--json"),
        (*c, "run", "--replay", "cascade-long", "--store", store),
        (*c, "status", "--store", store),
        (*c, "status", "--store", store, "--json"),
        (*c, "halt", "--store", store, "--wait", "0"),
        (*c, "halt", "--resume", "--store", store, "--wait", "0"),
        (*c, "data", "download", "--symbol", "BTCUSDT", "--kind", "nope", "--from",
         "2025-10-08", "--to", "2025-10-08", "--out", str(tmp / "dl")),
    ]


@pytest.fixture
def clean_logging():
    """`liqbot run` installs log handlers; remove them so later tests are unaffected."""
    root = logging.getLogger()
    before = list(root.handlers)
    yield
    for h in list(root.handlers):
        if h not in before:
            root.removeHandler(h)
            h.close()


@pytest.mark.parametrize("source", ["env", "credentials_file"])
def test_canary_never_leaks(cli, tmp_path, monkeypatch, source, clean_logging):
    canary = f"CANARY{uuid.uuid4().hex}"
    for name in list(os.environ):
        if name.startswith("LIQBOT_"):
            monkeypatch.delenv(name)
    cfg = tmp_path / "liqbot.toml"
    lines = [f'[logging]\nlevel = "DEBUG"\nfile = "{tmp_path}/liqbot.log"\n']
    if source == "env":
        monkeypatch.setenv("LIQBOT_API_KEY", canary + "K")
        monkeypatch.setenv("LIQBOT_API_SECRET", canary + "S")
        monkeypatch.setenv("LIQBOT_API_PASSPHRASE", canary + "P")
    else:
        creds = tmp_path / "creds.toml"
        creds.write_text(f'api_key = "{canary}K"\napi_secret = "{canary}S"\n')
        creds.chmod(0o600)
        lines.append(f'[exchange]\ncredentials_file = "{creds}"\n')
    cfg.write_text("".join(lines))
    for args in _commands(tmp_path, cfg):
        r = cli(*args)
        text = r.out + r.err
        assert canary not in text, args
        expected = 2 if "nope" in args else 0
        assert r.code == expected, (args, r.err)
        assert "Traceback" not in text
        # results invariant: nothing non-finite printed; JSON outputs parse strictly
        assert not NONFINITE.search(r.out), (args, NONFINITE.search(r.out))
        if "--json" in args and (args[-1] == "--json" or args[args.index("--json") + 1] == "-"):
            _strict(r.out)
    bt = _strict((tmp_path / "bt.json").read_text())
    assert set(bt["runs"]) == {"off", "on"}
    for name in ("ds/manifest.json", "imported/manifest.json"):
        _strict((tmp_path / name).read_text())
    assert (tmp_path / "liqbot.log").stat().st_size > 0
    assert (tmp_path / "store" / "liqbot.db").stat().st_size > 0
    assert _scan_files(tmp_path, canary.encode()) == []


def test_canary_in_toml_is_refused_and_never_echoed(cli, tmp_path, monkeypatch):
    canary = f"CANARY{uuid.uuid4().hex}"
    tomls = [f'[exchange]\napi_key = "{canary}"\n',
             f'[exchange]\nsymbols = [{{api_secret = "{canary}"}}]\n',
             f'mode = {{token = "{canary}"}}\n',
             f'[store]\nurl = ["postgresql://u:{canary}@h/db"]\n',
             f'[store]\npassword = "{canary}"\n',
             f'[logging]\nlevel = "{canary}"\n']
    for i, text in enumerate(tomls):
        cfg = tmp_path / f"c{i}.toml"
        cfg.write_text(text)
        for args in (("config", "check", cfg), ("--config", cfg, "backtest", "--scenario", "calm"),
                     ("--config", cfg, "data", "synth", "--days", "1", "--out", tmp_path / "d"),
                     ("--config", cfg, "status", "--store", f"sqlite:///{tmp_path}/s.db")):
            r = cli(*args)
            assert r.code == 2, (text, args, r.err)
            assert canary not in r.out + r.err, (text, args)
    monkeypatch.setenv("LIQBOT_STORE__URL", f"postgresql://u:{canary}@127.0.0.1:1/db")
    r = cli("status")
    assert r.code == 2 and canary not in r.out + r.err
    monkeypatch.setenv("LIQBOT_EXCHANGE__NAME", f"https://u:{canary}@h")
    r = cli("config", "check", tmp_path / "c0.toml")
    assert canary not in r.out + r.err
    # only the refused config files themselves hold it
    assert all(Path(p).name.startswith("c") and p.endswith(".toml")
               for p in _scan_files(tmp_path, canary.encode()))
