"""bot.store on SQLite (tmp_path) and on the real PostgreSQL at 127.0.0.1:5432 (skipped with a
reason when unreachable): round trips, idempotent replays, atomic commits, kill -9 survival,
the account lock, schema migration, masked URLs, the command queue and the status summary."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import IntegrityError

from bot.errors import LiqbotError
from bot.store import CURRENT_VERSION, Store, client_order_id, mask_url
from bot.store.tables import CLIENT_ID_RE, TABLES

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def stores(url: str):
    """Open Stores on `url`; all closed at teardown (before the schema is dropped)."""
    opened: list[Store] = []

    def make() -> Store:
        s = Store(url)
        opened.append(s)
        return s

    yield make
    for s in opened:
        s.close()


def _decision(run_id: str, symbol: str, bar_ts: int, **kw) -> dict:
    row = {"run_id": run_id, "symbol": symbol, "bar_ts": bar_ts, "state": 0, "reasons": 0,
           "text": f"ACTIVE {symbol} {bar_ts}", "target_notional": 1000.0,
           "allowed_notional": 800.0, "numbers": {"lev": 2.5, "crowd": 0.25}}
    row.update(kw)
    return row


def _spawn(code: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ))


def _await_line(proc: subprocess.Popen[str], expected: str) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != expected:
        proc.kill()
        pytest.fail(f"child said {line!r}, stderr: {proc.stderr.read() if proc.stderr else ''}")


def _kill9(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL


# --------------------------------------------------------------------------- round trips

def test_round_trip_every_table(stores):
    s = stores()
    run = s.open_run("paper", "binance:main", ["BTCUSDT", "ETHUSDT"], strategy="trend",
                     params={"fast": 12, "slow": np.int64(48)}, preset="balanced", wallet=10_000.0,
                     config={"store": {"url": "sqlite:///x.db"}}, run_id="run-a", created_ms=1_000)
    assert (run.run_id, run.mode, run.account, run.symbols) == ("run-a", "paper", "binance:main",
                                                               ["BTCUSDT", "ETHUSDT"])
    assert run.params == {"fast": 12, "slow": 48} and run.wallet == 10_000.0
    assert run.status == "running" and run.config == {"store": {"url": "sqlite:///x.db"}}

    cid = client_order_id("run-a", 0)
    s.stage("decisions", _decision("run-a", "BTCUSDT", 60_000, state=1, reasons=5,
                                   numbers={"lev": np.float64(3.0), "gap": float("nan")}))
    s.stage("decisions", _decision("run-a", "ETHUSDT", 60_000, target_notional=float("nan")))
    s.stage("intents", {"client_id": cid, "run_id": "run-a", "symbol": "BTCUSDT",
                        "bar_ts": 60_000, "slot": 0, "qty": -0.015, "reduce_only": True,
                        "order_type": "limit", "price": 64_250.5, "created_ms": 120_001,
                        "updated_ms": 120_001})
    s.stage("fills", {"fill_id": "f1", "client_id": cid, "run_id": "run-a", "symbol": "BTCUSDT",
                      "ts": 120_050, "qty": -0.015, "price": 64_240.0, "fee": 0.38544,
                      "liquidation": False, "slippage": 0.15})
    s.stage("equity", {"run_id": "run-a", "ts": 120_000, "equity": 10_012.5, "wallet": 10_000.0,
                       "upnl": 12.5})
    s.stage("funding", {"run_id": "run-a", "symbol": "BTCUSDT", "ts": 28_800_000,
                        "rate": 0.0001, "mark": 64_000.0, "payment": -0.96})
    s.stage("events", {"run_id": "run-a", "event_key": "start", "ts": 1_000, "kind": "start",
                       "message": "daemon started", "data": {"pid": 42}})
    s.stage_position("run-a", "BTCUSDT", 0, -0.015, 64_240.0, 70_100.0, 120_050)
    s.stage_intent_update(cid, "filled", 120_060)
    assert s.pending() == 9 and s.urgent
    assert s.commit({"BTCUSDT": 60_000, "ETHUSDT": 60_000}, b"\x00state\xff") == 9
    assert s.pending() == 0 and not s.urgent

    r = stores()                                  # a second connection sees it all
    d_btc, d_eth = r.decisions("run-a")
    assert (d_btc.symbol, d_btc.state, d_btc.reasons, d_btc.numbers) == (
        "BTCUSDT", 1, 5, {"lev": 3.0, "gap": None})
    assert d_eth.target_notional is None and d_eth.allowed_notional == 800.0
    assert d_eth.text == "ACTIVE ETHUSDT 60000"
    it = r.intent(cid)
    assert it is not None
    assert (it.qty, it.reduce_only, it.order_type, it.price, it.status, it.filled_qty,
            it.created_ms, it.updated_ms) == (-0.015, True, "limit", 64_250.5, "filled", -0.015,
                                              120_001, 120_060)
    assert r.open_intents("run-a") == []
    (f,) = r.fills("run-a")
    assert (f.fill_id, f.qty, f.price, f.fee, f.liquidation, f.slippage) == (
        "f1", -0.015, 64_240.0, 0.38544, False, 0.15)
    (e,) = r.equity("run-a")
    assert (e.ts, e.equity, e.wallet, e.upnl) == (120_000, 10_012.5, 10_000.0, 12.5)
    (fu,) = r.funding("run-a")
    assert (fu.ts, fu.rate, fu.mark, fu.payment) == (28_800_000, 0.0001, 64_000.0, -0.96)
    (ev,) = r.events("run-a")
    assert (ev.event_key, ev.kind, ev.message, ev.data) == ("start", "start", "daemon started",
                                                            {"pid": 42})
    (p,) = r.positions("run-a")
    assert (p.symbol, p.slot, p.qty, p.entry, p.liq_price) == ("BTCUSDT", 0, -0.015, 64_240.0,
                                                               70_100.0)
    assert r.watermarks("run-a") == {"BTCUSDT": 60_000, "ETHUSDT": 60_000}
    assert r.load_checkpoint("run-a") == (60_000, b"\x00state\xff")
    assert r.load_checkpoint("nope") is None and r.get_run("nope") is None

    # upserts: position, watermark and checkpoint move; a later run becomes the latest
    s.stage_position("run-a", "BTCUSDT", 0, 0.0, 0.0, None, 180_000)
    s.commit({"BTCUSDT": 120_000}, b"v2", checkpoint_ts=120_000)
    (p,) = r.positions("run-a")
    assert (p.qty, p.liq_price, p.updated_ms) == (0.0, None, 180_000)
    assert r.watermarks("run-a") == {"BTCUSDT": 120_000, "ETHUSDT": 60_000}
    assert r.load_checkpoint("run-a") == (120_000, b"v2")
    assert r.decisions("run-a", since_ts=60_001) == []
    s.open_run("live", "binance:main", ["BTCUSDT"], run_id="run-b", created_ms=2_000)
    s.open_run("paper", "binance:other", ["BTCUSDT"], run_id="run-c", created_ms=1_500)
    assert r.latest_run().run_id == "run-b"
    assert r.latest_run("binance:other").run_id == "run-c"
    s.set_run_status("run-a", "stopped")
    assert r.get_run("run-a").status == "stopped"


def test_reinsert_is_a_no_op(stores):
    """A crash replays bars already durable: the same rows again change nothing."""
    s = stores()
    s.open_run("paper", "acct", ["BTCUSDT"], run_id="r", created_ms=0)

    def stage_batch(text_suffix: str) -> None:
        for ts in (0, 60_000, 120_000):
            s.stage("decisions", _decision("r", "BTCUSDT", ts, text=f"first{text_suffix}"))
        s.stage("intents", {"client_id": client_order_id("r", 7), "run_id": "r",
                            "symbol": "BTCUSDT", "bar_ts": 0, "qty": 1.0, "created_ms": 1,
                            "updated_ms": 1})
        s.stage("fills", {"fill_id": "t-1", "client_id": client_order_id("r", 7), "run_id": "r",
                          "symbol": "BTCUSDT", "ts": 5, "qty": 1.0, "price": 100.0})
        s.stage("equity", {"run_id": "r", "ts": 0, "equity": 1.0, "wallet": 1.0, "upnl": 0.0})
        s.stage("funding", {"run_id": "r", "symbol": "BTCUSDT", "ts": 0, "rate": 1e-4,
                            "mark": 100.0, "payment": -0.01})
        s.stage("events", {"run_id": "r", "event_key": "liq:BTCUSDT:0", "ts": 0, "kind": "liq",
                           "message": "m", "data": {}})

    stage_batch("")
    stage_batch("")                               # duplicates inside one batch
    s.commit({"BTCUSDT": 120_000})
    stage_batch(" replayed")                      # and across commits
    s.commit({"BTCUSDT": 120_000})
    summary = s.summary("r")["counts"]
    assert summary == {"decisions": 3, "intents": 1, "fills": 1, "events": 1, "open_intents": 1,
                       "liquidations": 0}
    assert [d.text for d in s.decisions("r")] == ["first", "first", "first"]
    assert len(s.equity("r")) == 1 and len(s.funding("r")) == 1


def test_commit_is_atomic(stores):
    """A failure inside the transaction leaves no row, no watermark, no checkpoint."""
    s = stores()
    s.open_run("paper", "acct", ["BTCUSDT"], run_id="r", created_ms=0)
    for ts in range(0, 600_000, 60_000):
        s.stage("decisions", _decision("r", "BTCUSDT", ts))
    # events are inserted after decisions: a NOT NULL violation there must roll them back
    s.stage("events", {"run_id": "r", "event_key": "bad", "ts": 0, "kind": "x", "message": None})
    with pytest.raises(IntegrityError):
        s.commit({"BTCUSDT": 540_000}, b"blob")
    other = stores()
    assert other.decisions("r") == [] and other.events("r") == []
    assert other.watermarks("r") == {} and other.load_checkpoint("r") is None
    assert s.pending() == 11                      # kept for a retry ...
    assert s.discard() == 11 and s.pending() == 0  # ... or dropped
    s.stage("decisions", _decision("r", "BTCUSDT", 0))
    assert s.commit({"BTCUSDT": 0}, b"ok") == 1
    assert len(other.decisions("r")) == 1 and other.load_checkpoint("r") == (0, b"ok")


@pytest.mark.parametrize("when", ["after-commit", "staged-only", "mid-transaction"])
def test_sigkill_keeps_exactly_the_committed_rows(url, stores, when):
    """kill -9 after commit keeps every row, watermark and checkpoint; killed with rows only
    staged, or inside the open write transaction (rows sent, no COMMIT), keeps none of them."""
    child = _spawn(f"""
        import sys, time
        from bot.store import Store
        s = Store({url!r})
        s.open_run("paper", "acct", ["BTCUSDT"], run_id="killed", created_ms=0)
        for ts in range(1000):
            s.stage("decisions", {{"run_id": "killed", "symbol": "BTCUSDT", "bar_ts": ts,
                                   "state": 0, "reasons": 0}})
        if {when!r} == "after-commit":
            s.commit({{"BTCUSDT": 999}}, b"cp")
        if {when!r} == "mid-transaction":
            with s._write() as conn:
                conn.execute(s._insert["decisions"], s._staged["decisions"])
                print("ready", flush=True)
                time.sleep(60)
        print("ready", flush=True)
        time.sleep(60)
    """)
    try:
        _await_line(child, "ready")
    finally:
        _kill9(child)
    s = stores()
    assert s.get_run("killed") is not None         # open_run commits at once
    if when == "after-commit":
        assert len(s.decisions("killed")) == 1000
        assert s.watermarks("killed") == {"BTCUSDT": 999}
        assert s.load_checkpoint("killed") == (999, b"cp")
    else:
        assert s.decisions("killed") == []
        assert s.watermarks("killed") == {} and s.load_checkpoint("killed") is None
    # the dead writer left no lock behind: the next writer commits at once
    s.stage("decisions", _decision("killed", "ETHUSDT", 0))
    assert s.commit({"ETHUSDT": 0}, run_id="killed") == 1   # a stale lock: busy, raises


# --------------------------------------------------------------------------- ownership

def test_account_lock_across_processes(url, stores):
    holder = _spawn(f"""
        import time
        from bot.store import Store
        Store({url!r}).acquire("binance:main")
        print("locked", flush=True)
        time.sleep(60)
    """)
    try:
        _await_line(holder, "locked")
        s = stores()
        with pytest.raises(LiqbotError) as err:
            s.acquire("binance:main")
        msg = str(err.value)
        assert f"another liqbot daemon (pid {holder.pid} on host {socket.gethostname()}) holds " \
               "account 'binance:main' in this store" in msg
        assert " since 20" in msg and " UTC" in msg
        s.acquire("binance:sub")                  # another account is free
    finally:
        _kill9(holder)
    deadline = time.monotonic() + 10              # PostgreSQL ends the dead session promptly
    while True:
        try:
            s.acquire("binance:main")
            break
        except LiqbotError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    second = stores()                             # in-process: a second Store is refused too
    with pytest.raises(LiqbotError, match=f"pid {os.getpid()} "):
        second.acquire("binance:main")
    s.release("binance:main")
    second.acquire("binance:main")


# --------------------------------------------------------------------------- schema

_V1_INTENTS = """CREATE TABLE intents (client_id VARCHAR(36) PRIMARY KEY, run_id VARCHAR NOT NULL,
    symbol VARCHAR NOT NULL, bar_ts BIGINT NOT NULL, slot INTEGER NOT NULL, qty FLOAT NOT NULL,
    reduce_only BOOLEAN NOT NULL, order_type VARCHAR NOT NULL, status VARCHAR NOT NULL,
    filled_qty FLOAT NOT NULL, created_ms BIGINT NOT NULL, updated_ms BIGINT NOT NULL)"""


def test_empty_store_is_created_at_current_version(url, stores):
    stores()
    engine = create_engine(url)
    with engine.connect() as conn:
        version = conn.execute(text("SELECT value FROM meta WHERE key='schema_version'")).scalar()
    engine.dispose()
    assert int(version) == CURRENT_VERSION == 4


def test_migrates_version_1_store(url, stores, caplog):
    """A store written by schema v1 (no intents.price or .reason, no holders, no open-intent
    index)."""
    if url.startswith("sqlite"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True)
    engine = create_engine(url)
    with engine.begin() as conn:
        for name, table in TABLES.items():
            if name not in ("intents", "holders"):
                table.create(conn)
        conn.execute(text(_V1_INTENTS))
        conn.execute(text("INSERT INTO meta (key, value) VALUES ('schema_version', '1')"))
        conn.execute(text("INSERT INTO intents VALUES ('old-1', 'r', 'BTCUSDT', 0, 0, 0.5, "
                          "false, 'market', 'sent', 0.0, 10, 11)"))
    with engine.connect() as conn:
        assert "price" not in {c["name"] for c in inspect(conn).get_columns("intents")}
    with caplog.at_level(logging.WARNING, logger="liqbot.store"):
        s = stores()
    assert "migrating schema version 1 -> 2" in caplog.text
    assert "migrating schema version 2 -> 3" in caplog.text
    assert "migrating schema version 3 -> 4" in caplog.text
    with engine.connect() as conn:
        insp = inspect(conn)
        assert {"price", "reason"} <= {c["name"] for c in insp.get_columns("intents")}
        assert "ix_intents_run_status" in {i["name"] for i in insp.get_indexes("intents")}
        assert "holders" in insp.get_table_names()
        assert "ix_fills_client_id" in {i["name"] for i in insp.get_indexes("fills")}
        assert conn.execute(text("SELECT value FROM meta")).scalar() == "4"
    engine.dispose()
    (old,) = s.open_intents("r")
    assert (old.client_id, old.qty, old.status, old.price, old.reason) == \
        ("old-1", 0.5, "sent", None, None)
    s.stage("intents", {"client_id": "new-1", "run_id": "r", "symbol": "BTCUSDT", "bar_ts": 60_000,
                        "qty": -0.5, "order_type": "limit", "price": 101.5, "created_ms": 12,
                        "updated_ms": 12})
    s.commit()
    assert [(i.client_id, i.price) for i in s.open_intents("r")] == [("old-1", None),
                                                                    ("new-1", 101.5)]
    s.stage_intent_update("old-1", "cancelled", 13, reason="data ended")   # v4 column usable
    s.commit()
    assert (s.intent("old-1").status, s.intent("old-1").reason) == ("cancelled", "data ended")
    s.acquire("acct")                             # holders table usable
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="liqbot.store"):
        stores()                                  # reopening does not migrate again
    assert "migrating" not in caplog.text


def test_an_order_filled_in_pieces_sums_its_fills(url, stores):
    """A market order executed as three trades over two bars (commits): the intent's
    filled quantity is the sum, 0.004 + 0.005 + 0.001; a fill staged again is stored once."""
    s = stores()
    cid = client_order_id("run-p", 0)
    s.stage("intents", {"client_id": cid, "run_id": "run-p", "symbol": "BTCUSDT",
                        "bar_ts": 60_000, "qty": 0.010, "order_type": "market",
                        "created_ms": 60_001, "updated_ms": 60_001})
    s.commit()

    def fill(fid: str, qty: float, ts: int) -> None:
        s.stage("fills", {"fill_id": fid, "client_id": cid, "run_id": "run-p",
                          "symbol": "BTCUSDT", "ts": ts, "qty": qty, "price": 64_000.0})
        s.stage_intent_update(cid, "filled", ts)

    fill("t1", 0.004, 120_000)
    fill("t2", 0.005, 120_000)
    s.commit()
    assert s.intent(cid).filled_qty == pytest.approx(0.009)
    fill("t3", 0.001, 180_000)
    fill("t2", 0.005, 180_000)                     # the same trade offered again
    s.commit()
    it = s.intent(cid)
    assert (it.status, it.filled_qty, it.updated_ms) == ("filled", pytest.approx(0.010), 180_000)


def test_an_intent_closed_without_a_fill_keeps_its_reason(url, stores):
    """`cancelled` with a reason (a replayed symbol's data ended): the reason is stored with
    the status, the intent leaves the open ones, and a later update without a reason keeps
    it (None = unchanged)."""
    s = stores()
    cid = client_order_id("run-c", 0)
    s.stage("intents", {"client_id": cid, "run_id": "run-c", "symbol": "ETHUSDT",
                        "bar_ts": 60_000, "qty": -0.5, "status": "sent", "created_ms": 120_000,
                        "updated_ms": 120_000})
    s.commit()
    assert s.intent(cid).reason is None and [i.client_id for i in s.open_intents("run-c")] \
        == [cid]
    s.stage_intent_update(cid, "cancelled", 120_000,
                          reason="replayed data ended at 1970-01-01T00:02:00Z")
    s.commit()
    it = s.intent(cid)
    assert (it.status, it.filled_qty, it.updated_ms, it.reason) == \
        ("cancelled", 0.0, 120_000, "replayed data ended at 1970-01-01T00:02:00Z")
    assert s.open_intents("run-c") == []
    s.stage_intent_update(cid, "cancelled", 180_000)
    s.commit()
    assert (s.intent(cid).updated_ms, s.intent(cid).reason) == \
        (180_000, "replayed data ended at 1970-01-01T00:02:00Z")


def test_newer_store_is_refused(url, stores):
    stores()
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE meta SET value='{CURRENT_VERSION + 1}' WHERE key='schema_version'"))
    engine.dispose()
    with pytest.raises(LiqbotError) as err:
        Store(url)
    assert (f"has schema version {CURRENT_VERSION + 1}, newer than this liqbot understands "
            f"(version {CURRENT_VERSION}); upgrade liqbot") in str(err.value)


def test_foreign_database_is_refused(url):
    if url.startswith("sqlite"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True)
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE runs (x INTEGER)"))
    engine.dispose()
    with pytest.raises(LiqbotError, match="has liqbot tables but no meta table"):
        Store(url)


# --------------------------------------------------------------------------- urls and errors

def test_mask_url():
    assert mask_url("postgresql+psycopg://bob:hunter2@db.example:5432/liq") == \
        "postgresql+psycopg://bob:***@db.example:5432/liq"
    assert mask_url("postgresql://bob@host/db?password=hunter2&sslmode=require") == \
        "postgresql://bob@host/db?password=***&sslmode=require"
    assert mask_url("sqlite:///var/liqbot.db") == "sqlite:///var/liqbot.db"
    assert mask_url("error near postgres://a:b@c/d here") == "error near postgres://a:***@c/d here"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_and_bad_urls_are_user_errors(tmp_path):
    port = _closed_port()
    with pytest.raises(LiqbotError) as err:
        Store(f"postgresql://bob:hunter2@127.0.0.1:{port}/liq")
    msg = str(err.value)
    assert msg.startswith(f"store postgresql+psycopg://bob:***@127.0.0.1:{port}/liq: open failed: ")
    assert "Connection refused" in msg and "hunter2" not in msg
    with pytest.raises(LiqbotError, match=r"unsupported database 'mysql'") as err:
        Store("mysql://root:hunter2@localhost/x")
    assert "hunter2" not in str(err.value)
    with pytest.raises(LiqbotError, match="is not valid"):
        Store("not a url")
    (tmp_path / "file").write_text("x")
    with pytest.raises(LiqbotError, match="cannot create directory"):
        Store(f"sqlite:///{tmp_path}/file/sub/liqbot.db")


def test_passwords_never_reach_the_database(tmp_path):
    db = tmp_path / "liqbot.db"
    s = Store(f"sqlite:///{db}")
    run = s.open_run("live", "binance:main", ["BTCUSDT"], run_id="r", config={
        "store": {"url": "postgresql://bob:hunter2@db/liq"},
        "exchange": {"api_key": "AKIAhunter2", "api_secret": "hunter2", "testnet": False}})
    assert run.config == {"store": {"url": "postgresql://bob:***@db/liq"},
                          "exchange": {"api_key": "***", "api_secret": "***", "testnet": False}}
    s.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("liqbot.db"))
    assert b"postgresql://bob:***@db/liq" in raw and b"hunter2" not in raw
    assert repr(Store(f"sqlite:///{db}")) == f"Store('sqlite:///{db}')"


# --------------------------------------------------------------------------- staging rules

def test_stage_validation_and_client_ids(tmp_path):
    s = Store(f"sqlite:///{tmp_path}/s.db")
    with pytest.raises(ValueError, match=r"missing \['reasons', 'state'\], unknown \['bogus'\]"):
        s.stage("decisions", {"run_id": "r", "symbol": "X", "bar_ts": 0, "bogus": 1})
    with pytest.raises(ValueError, match="cannot stage into 'positions'"):
        s.stage("positions", {})
    with pytest.raises(ValueError, match="needs 1-36 chars"):
        s.stage("intents", {"client_id": "has space", "run_id": "r", "symbol": "X", "bar_ts": 0,
                            "qty": 1.0, "created_ms": 0, "updated_ms": 0})
    s.stage("decisions", {"run_id": "r", "symbol": "X", "bar_ts": np.int64(1_700_000_000_000),
                          "state": np.int8(2), "reasons": np.uint32(9),
                          "target_notional": np.float64("nan"), "allowed_notional": np.float32(0.5)})
    s.commit()
    (d,) = s.decisions("r")
    assert (d.bar_ts, d.state, d.reasons, d.target_notional, d.allowed_notional) == (
        1_700_000_000_000, 2, 9, None, 0.5)
    ids = [client_order_id("paper-20251010T000000-abcdef", n) for n in (0, 1, 10**19)]
    assert ids[0] == client_order_id("paper-20251010T000000-abcdef", 0)   # deterministic
    assert len(set(ids)) == 3 and all(CLIENT_ID_RE.match(i) and len(i) <= 36 for i in ids)
    assert ids[0] != client_order_id("paper-20251010T000000-abcdeg", 0)   # per run
    s.close()


# --------------------------------------------------------------------------- commands, summary

def test_commands_queue(stores):
    s = stores()
    halt = s.push_command("halt", run_id="A", created_ms=1)
    flat = s.push_command("flatten", created_ms=2)
    resume = s.push_command("resume", run_id="B", created_ms=3)
    assert [(c.id, c.kind) for c in s.pending_commands("A")] == [(halt, "halt"), (flat, "flatten")]
    assert [c.kind for c in s.pending_commands("B")] == ["flatten", "resume"]
    assert s.ack_command(halt, consumed_ms=10) is True
    assert s.ack_command(halt, consumed_ms=11) is False     # once only
    assert [c.id for c in stores().pending_commands("A")] == [flat]
    assert s.ack_command(resume) is True and s.ack_command(999) is False
    with pytest.raises(LiqbotError, match="unknown command 'pause'"):
        s.push_command("pause")


def test_summary(stores):
    s = stores()
    s.open_run("paper", "acct", ["BTCUSDT", "ETHUSDT"], run_id="r", wallet=5_000.0, created_ms=7)
    for ts in (0, 60_000):
        for sym in ("BTCUSDT", "ETHUSDT"):
            s.stage("decisions", _decision("r", sym, ts, state=2 if ts else 0, reasons=ts // 60_000))
    s.stage("intents", {"client_id": "c0", "run_id": "r", "symbol": "BTCUSDT", "bar_ts": 0,
                        "qty": 0.1, "status": "filled", "filled_qty": 0.1, "created_ms": 1,
                        "updated_ms": 2})
    s.stage("intents", {"client_id": "c1", "run_id": "r", "symbol": "ETHUSDT", "bar_ts": 60_000,
                        "qty": -1.0, "status": "sent", "created_ms": 3, "updated_ms": 3})
    s.stage("fills", {"fill_id": "f0", "client_id": "c0", "run_id": "r", "symbol": "BTCUSDT",
                      "ts": 2, "qty": 0.1, "price": 60_000.0, "fee": 2.4})
    s.stage("fills", {"fill_id": "liq0", "client_id": "liq-ETHUSDT", "run_id": "r",
                      "symbol": "ETHUSDT", "ts": 60_000, "qty": 0.5, "price": 3_000.0,
                      "liquidation": True})
    for ts, eq in ((0, 5_000.0), (60_000, 4_990.0)):
        s.stage("equity", {"run_id": "r", "ts": ts, "equity": eq, "wallet": 4_997.6,
                           "upnl": eq - 4_997.6})
    s.stage_position("r", "BTCUSDT", 0, 0.1, 60_000.0, 30_500.0, 60_000)
    s.commit({"BTCUSDT": 60_000, "ETHUSDT": 0}, b"x")
    got = s.summary("r")
    assert got["counts"] == {"decisions": 4, "intents": 2, "fills": 2, "events": 0,
                             "open_intents": 1, "liquidations": 1}
    assert got["run"]["run_id"] == "r" and got["run"]["wallet"] == 5_000.0
    last = got["last_decision"]
    assert (last["bar_ts"], last["symbol"], last["state"], last["reasons"]) == (60_000, "BTCUSDT", 2, 1)
    assert got["last_equity"] == {"run_id": "r", "ts": 60_000, "equity": 4_990.0,
                                  "wallet": 4_997.6, "upnl": pytest.approx(-7.6)}
    assert got["positions"] == [{"run_id": "r", "symbol": "BTCUSDT", "slot": 0, "qty": 0.1,
                                 "entry": 60_000.0, "liq_price": 30_500.0, "updated_ms": 60_000}]
    assert got["watermarks"] == {"BTCUSDT": 60_000, "ETHUSDT": 0}
    assert got["last_watermark"] == 60_000 and got["checkpoint_ts"] == 60_000
    with pytest.raises(LiqbotError, match="no run 'zzz'"):
        s.summary("zzz")


# --------------------------------------------------------------------------- throughput

def test_bulk_throughput(stores, capsys):
    """10,000 decision rows staged and committed in batches of 500 (figure printed, the row
    count asserted)."""
    s = stores()
    s.open_run("paper", "acct", ["BTCUSDT"], run_id="bulk", created_ms=0)
    numbers = {"max_lev_long": 5.0, "max_lev_short": 3.0, "crowd": 0.41, "cluster": 61_234.5}
    t0 = time.perf_counter()
    for batch in range(20):
        for i in range(500):
            ts = (batch * 500 + i) * 60_000
            s.stage("decisions", {"run_id": "bulk", "symbol": "BTCUSDT", "bar_ts": ts, "state": 0,
                                  "reasons": 3, "text": "ACTIVE: no rule binding",
                                  "target_notional": 1_000.0, "allowed_notional": 900.0,
                                  "numbers": numbers})
        s.commit({"BTCUSDT": ts}, b"\x00" * 2048)
    elapsed = time.perf_counter() - t0
    assert s.summary("bulk")["counts"]["decisions"] == 10_000
    with capsys.disabled():
        print(f"\n[{s.dialect}] 10,000 decisions in batches of 500: {elapsed:.3f} s, "
              f"{10_000 / elapsed:,.0f} rows/s")
