"""The operator's view of a daemon: `liqbot status` and `liqbot halt` address the config's
account, status figures come from one commit, its equity and counts agree with the run's
final line, and the log file holds what `liqbot run` prints (the operator review's
findings 1-4, 6, 9, 11 and 14)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from bot.runtime.status import status_data
from bot.store import Store

T0 = 1_767_225_600_000                                    # 2026-01-01T00:00:00Z
MIN = 60_000


def _checkpoint(bars: int, fills: int, liquidations: int) -> bytes:
    """A checkpoint blob as `run_counts` reads it: BTCUSDT's meta [last bar, bars] and the
    counters in `tally`."""
    buf = io.BytesIO()
    tally = {"counters": {"fills": fills, "liquidations": liquidations, "rejects": 0,
                          "stale": 0, "strategy_errors": 0}, "skipped": 0}
    np.savez(buf, **{"meta:BTCUSDT": np.array([T0 + (bars - 1) * MIN, bars], dtype=np.int64),
                     "tally": np.array([json.dumps(tally)])})
    return buf.getvalue()


def _bars(store: Store, run_id: str, first: int, n: int, *, snapshots: bool = True) -> None:
    """Commit bars first..first+n-1 as the daemon does: a decision a bar (equity 100,000 + the
    bar's index), an order fill every 5th bar, the position, an equity snapshot at each close
    (`snapshots`), the watermark and the checkpoint, in one transaction."""
    for i in range(first, first + n):
        ts = T0 + i * MIN
        store.stage("decisions", {"run_id": run_id, "symbol": "BTCUSDT", "bar_ts": ts,
                                  "state": 0, "reasons": 0, "text": f"bar {i}",
                                  "numbers": {"equity": 100_000.0 + i, "mark": 50_000.0 + i,
                                              "atr": 100.0}})
        if i % 5 == 0:
            store.stage("fills", {"fill_id": f"f{i}", "client_id": f"c{i}", "run_id": run_id,
                                  "symbol": "BTCUSDT", "ts": ts, "qty": 0.01,
                                  "price": 50_000.0 + i})
        if snapshots:
            store.stage("equity", {"run_id": run_id, "ts": ts + MIN, "equity": 100_000.0 + i,
                                   "wallet": 100_000.0, "upnl": float(i)})
        store.stage_position(run_id, "BTCUSDT", 0, 0.01 * (i // 5 + 1), 50_000.0, 40_000.0, ts)
    last = first + n
    store.commit({"BTCUSDT": T0 + (last - 1) * MIN}, _checkpoint(last, (last + 4) // 5, 0),
                 run_id=run_id)


# --------------------------------------------------------------------------- finding 2

def test_status_reads_every_figure_from_one_commit(url: str) -> None:
    """A daemon that commits while `status` reads (here: right after its first read, the
    summary) is not seen half-way: decisions, bars processed, the order fills and the
    checkpoint's counters, the last bar, the equity and the position are all of the commit
    the first read saw. Before, each figure was its own read transaction (decisions 24,844
    beside 25,238 bars)."""
    daemon = Store(url)
    run = daemon.open_run("paper", "paper:binance", ["BTCUSDT"], "hold", {}, "balanced",
                          100_000.0, run_id="r")
    _bars(daemon, "r", 0, 10)
    reader = Store(url, create=False)
    try:
        summary = reader.summary
        wrote = []

        def summary_then_a_commit(run_id: str) -> dict:
            got = summary(run_id)
            if not wrote:                   # the daemon commits 10 bars more meanwhile
                _bars(daemon, "r", 10, 10)
                wrote.append(True)
            return got

        reader.summary = summary_then_a_commit        # type: ignore[method-assign]
        got = status_data(reader, run)
        assert wrote
        assert (got["decisions"], got["bars_processed"]) == (10, 10)
        assert (got["fills"], got["counters"]["fills"]) == (2, 2)
        assert got["last_bar"] == "2026-01-01T00:09:00Z"
        assert got["equity"] == 100_009.0
        assert [p["qty"] for p in got["positions"]] == [pytest.approx(0.02)]
        assert got["last_decision"]["text"] == "bar 9"
        # and once the reads are over, the next status sees the new commit whole
        after = status_data(reader, run)
        assert (after["decisions"], after["bars_processed"], after["fills"]) == (20, 20, 4)
        assert after["equity"] == 100_019.0 and after["last_bar"] == "2026-01-01T00:19:00Z"
    finally:
        reader.close()
        daemon.close()


def test_a_snapshot_is_one_read_transaction(url: str) -> None:
    """`Store.snapshot`: every read method inside it sees the commit its first read saw."""
    daemon = Store(url)
    daemon.open_run("paper", "paper:binance", ["BTCUSDT"], run_id="r")
    _bars(daemon, "r", 0, 3)
    reader = Store(url, create=False)
    try:
        with reader.snapshot():
            assert len(reader.decisions("r")) == 3
            _bars(daemon, "r", 3, 4)
            assert len(reader.decisions("r")) == 3
            assert len(reader.fills("r")) == 1 and reader.watermarks("r") == {
                "BTCUSDT": T0 + 2 * MIN}
            assert reader.summary("r")["counts"]["decisions"] == 3
        assert len(reader.decisions("r")) == 7 and len(reader.fills("r")) == 2
    finally:
        reader.close()
        daemon.close()


# --------------------------------------------------------------------------- finding 3

def test_status_equity_is_the_last_bars_not_the_older_snapshot(tmp_path: Path) -> None:
    """A stop leaves the last minute's jobs to the restart, so the last equity snapshot is
    a bar older than the last processed bar: status shows the equity the run's stop line
    shows (the last decision's), and the snapshot with its time."""
    store = Store(f"sqlite:///{tmp_path}/s.db")
    run = store.open_run("paper", "paper:binance", ["BTCUSDT"], run_id="r", wallet=100_000.0)
    _bars(store, "r", 0, 9)
    _bars(store, "r", 9, 1, snapshots=False)       # the stop: no snapshot at the last close
    got = status_data(store, run)
    store.close()
    assert got["equity"] == 100_009.0
    assert got["equity_snapshot"] == {"equity": 100_008.0, "ts": "2026-01-01T00:09:00Z"}


def test_a_stopped_daemon_status_equity_is_its_stop_lines(tmp_path: Path) -> None:
    """The real thing: a paper replay stopped (as by SIGTERM) after 300 bars of a 10x long
    through a cascade: status's equity is the daemon's final equity (its stop line), not
    the snapshot of the bar before (110,743.39 against 111,208.54 in the review)."""
    from backtests.runner import RunSettings
    from backtests.scenarios import load_scenario
    from bot.execution import kernel as kn
    from bot.mechanics.brackets import shipped
    from bot.mechanics.fees import venue_fees
    from bot.risk.policy import load_policy
    from bot.runtime.daemon import Daemon
    from bot.runtime.replay import ReplayFeed
    from strategies import find

    bars = load_scenario("cascade-long").bars
    store = Store(f"sqlite:///{tmp_path}/s.db")
    strat = find("hold").from_strings({"side": "long", "leverage": "10"})
    feed = ReplayFeed({bars.symbol: bars}, 0.0)
    run = store.open_run("paper", "paper:binance", list(feed.symbols), strat.name,
                         strat.params, "balanced", 100_000.0)
    fp = kn.fill_params(RunSettings(wallet=100_000.0).fills, venue_fees("binance"), 0.05,
                        strat.sizing)
    d = Daemon(run_id=run.run_id, feed=feed, store=store, strategy=strat,
               policy=load_policy("balanced").to_array(), fp=fp,
               brackets={bars.symbol: shipped("binance", bars.symbol)}, wallet=100_000.0)
    seen = []

    def stop_at_300(kind: str, data: dict) -> None:
        if kind == "decision":
            seen.append(1)
            if len(seen) == 300:
                d._stop()

    d.listeners.append(stop_at_300)
    asyncio.run(d.run(simulated=True))
    final, _ = d.equity()
    got = status_data(store, store.get_run(d.run_id))
    store.close()
    assert got["bars_processed"] == 300
    assert got["equity"] == pytest.approx(final, rel=1e-12)
    snap = got["equity_snapshot"]
    assert snap["equity"] != pytest.approx(final, rel=1e-9)        # the one before
    assert snap["ts"] == got["last_bar"]            # taken at that bar's open = the prior close


# --------------------------------------------------------------------------- finding 4

def test_status_keeps_a_symbol_whose_data_ended_and_shows_the_worst_state(
        cli, tmp_path: Path) -> None:
    """Three symbols: BTC's data ended 20 days before the others (status read only the last
    day's decisions, and BTC vanished from it); at the last bar ETH is HALTED and SOL
    ACTIVE (the top line said the state of the symbol sorting last: ACTIVE)."""
    url = f"sqlite:///{tmp_path}/s.db"
    store = Store(url)
    store.open_run("paper", "paper:binance", ["BTCUSDT", "ETHUSDT", "SOLUSDT"], "hold", {},
                   "balanced", 100_000.0, run_id="r")
    end = T0 + 30 * 1440 * MIN
    last = {"BTCUSDT": T0 + 10 * 1440 * MIN, "ETHUSDT": end, "SOLUSDT": end}
    state = {"BTCUSDT": 1, "ETHUSDT": 2, "SOLUSDT": 0}
    for sym, ts in last.items():
        for k in (2, 1, 0):
            store.stage("decisions", {"run_id": "r", "symbol": sym, "bar_ts": ts - k * MIN,
                                      "state": state[sym] if k == 0 else 0, "reasons": 0,
                                      "numbers": {"equity": 90_000.0}})
    # SOL's feed went stale: the watchdog's decision is stamped after its last bar, off
    # the grid (a first version of this read only the decision at the watermark)
    store.stage("decisions", {"run_id": "r", "symbol": "SOLUSDT", "bar_ts": end + 5 * MIN - 1,
                              "state": 1, "reasons": 0, "numbers": {"equity": 90_000.0}})
    store.commit(last, None, run_id="r")
    store.close()
    data = json.loads(cli("status", "--store", url, "--json").out)
    assert sorted(data["by_symbol"]) == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    assert data["by_symbol"]["SOLUSDT"]["state"] == "REDUCING"
    assert data["by_symbol"]["BTCUSDT"]["ts"] == "2026-01-11T00:00:00Z"
    assert data["by_symbol"]["BTCUSDT"]["state"] == "REDUCING"
    assert data["state"] == "HALTED"          # ETH's, at the last bar; BTC's is 20 days old
    assert data["last_decision"]["symbol"] == "SOLUSDT"
    r = cli("status", "--store", url)
    assert "BTCUSDT at 2026-01-11T00:00:00Z: REDUCING" in r.out and "state HALTED" in r.out


def test_status_counts_fills_and_liquidations_as_the_final_line(cli, tmp_path: Path) -> None:
    """One order fill and one liquidation: "1 fill, 1 liquidation" (the run's final line),
    not "2 fills, 1 liquidations"; counts with thousands separators."""
    url = f"sqlite:///{tmp_path}/s.db"
    store = Store(url)
    store.open_run("paper", "paper:binance", ["BTCUSDT"], "hold", {}, "balanced", 100_000.0,
                   run_id="r")
    for i in range(1_200):
        store.stage("decisions", {"run_id": "r", "symbol": "BTCUSDT", "bar_ts": T0 + i * MIN,
                                  "state": 0, "reasons": 0, "numbers": {"equity": 90_000.0}})
    store.stage("fills", {"fill_id": "f0", "client_id": "c0", "run_id": "r",
                          "symbol": "BTCUSDT", "ts": T0, "qty": 1.0, "price": 50_000.0})
    store.stage("fills", {"fill_id": "liq0", "client_id": "liq", "run_id": "r",
                          "symbol": "BTCUSDT", "ts": T0 + 600 * MIN, "qty": -1.0,
                          "price": 45_000.0, "liquidation": True})
    buf = io.BytesIO()
    np.savez(buf, **{"meta:BTCUSDT": np.array([T0 + 1_199 * MIN, 1_200], dtype=np.int64),
                     "tally": np.array([json.dumps({"counters": {
                         "fills": 1, "liquidations": 1, "rejects": 1, "stale": 0,
                         "strategy_errors": 0}, "skipped": 0})])})
    store.commit({"BTCUSDT": T0 + 1_199 * MIN}, buf.getvalue(), run_id="r")
    store.close()
    r = cli("status", "--store", url)
    assert r.code == 0, r.err
    line = next(ln for ln in r.out.splitlines() if ln.startswith("state "))
    assert ("equity 90,000.00, 1,200 bars, 1 fill, 1 liquidation, 1 reject, 1,200 decisions, "
            "last bar 2026-01-01T19:59:00Z") in line, line
    data = json.loads(cli("status", "--store", url, "--json").out)
    assert (data["fills"], data["liquidations"]) == (1, 1)
    assert (data["counters"]["fills"], data["counters"]["liquidations"]) == (1, 1)


# --------------------------------------------------------------------------- finding 1

def _two_accounts(url: str) -> None:
    """Runs of paper:binance (older) and paper:bybit (newest) in one store."""
    store = Store(url)
    store.open_run("paper", "paper:binance", ["BTCUSDT"], run_id="run-binance", created_ms=1_000)
    store.open_run("paper", "paper:bybit", ["BTCUSDT"], run_id="run-bybit", created_ms=2_000)
    store.close()


def _commands(url: str) -> list[tuple[str, str]]:
    store = Store(url)
    try:
        return [(c.run_id, c.kind) for r in ("run-binance", "run-bybit")
                for c in store.pending_commands(r) if c.run_id == r]
    finally:
        store.close()


def test_halt_and_status_address_the_configs_account(cli, url: str, tmp_path: Path) -> None:
    """With two accounts in one store, `halt` and `status` address the config's account
    (mode:exchange), not the newest run: before, the default config's halt stopped the
    bybit daemon and the binance one kept trading."""
    _two_accounts(url)
    bybit = tmp_path / "bybit.toml"
    bybit.write_text('[exchange]\nname = "bybit"\n')
    r = cli("halt", "--store", url, "--wait", "0")
    assert r.code == 0 and "recorded for run run-binance (account paper:binance)" in r.out, r.out
    assert _commands(url) == [("run-binance", "halt")]
    r = cli("--config", bybit, "halt", "--flatten", "--store", url, "--wait", "0")
    assert r.code == 0 and "run run-bybit (account paper:bybit)" in r.out
    r = cli("halt", "--resume", "--store", url, "--wait", "0")
    assert r.code == 0 and "run run-binance" in r.out
    assert _commands(url) == [("run-binance", "halt"), ("run-binance", "resume"),
                              ("run-bybit", "flatten")]
    r = cli("halt", "--resume", "--run", "run-bybit", "--store", url, "--wait", "0")
    assert r.code == 0 and "run run-bybit" in r.out
    assert _commands(url)[-1] == ("run-bybit", "resume")
    data = json.loads(cli("status", "--store", url, "--json").out)
    assert (data["run_id"], data["account"]) == ("run-binance", "paper:binance")
    assert json.loads(cli("--config", bybit, "status", "--store", url, "--json").out)[
        "run_id"] == "run-bybit"
    assert json.loads(cli("status", "--run", "run-bybit", "--store", url, "--json").out)[
        "run_id"] == "run-bybit"
    r = cli("status", "--store", url)
    assert r.out.startswith("run run-binance (paper, running): () /  on BTCUSDT; account "
                            "paper:binance\n")


def test_no_run_of_the_configs_account_names_the_accounts_present(cli, url: str,
                                                                 tmp_path: Path) -> None:
    _two_accounts(url)
    live = tmp_path / "live.toml"
    live.write_text('mode = "live"\n')
    for cmd in ("status", "halt"):
        r = cli("--config", live, cmd, "--store", url, "--wait", "0") if cmd == "halt" else \
            cli("--config", live, cmd, "--store", url)
        assert r.code == 2, r.out
        assert "no run of account live:binance" in r.err
        assert "it holds runs of paper:binance, paper:bybit: give --run RUN_ID" in r.err
        assert "Traceback" not in r.err
    assert _commands(url) == []
    for cmd in ("status", "halt"):
        r = cli(cmd, "--run", "nosuch", "--store", url)
        assert r.code == 2 and "--run nosuch: no such run in the store" in r.err


# --------------------------------------------------------------------------- finding 6

def test_a_telegram_chat_without_its_token_opens_no_run(cli, tmp_path: Path,
                                                        monkeypatch) -> None:
    """Refused before the store is opened (before, the run row was written, then the start
    failed and the run stayed `running`), and `config check` reports it."""
    monkeypatch.delenv("LIQBOT_TELEGRAM_TOKEN", raising=False)
    cfg = tmp_path / "tg.toml"
    cfg.write_text('[alerts]\ntelegram_chat_id = "-100123"\n')
    db = tmp_path / "s.db"
    r = cli("--config", cfg, "run", "--replay", "cascade-long", "--store", f"sqlite:///{db}")
    assert r.code == 2 and "telegram_chat_id is set but LIQBOT_TELEGRAM_TOKEN" in r.err
    assert not db.exists()
    r = cli("config", "check", cfg)
    assert r.code == 2 and "alerts.telegram_chat_id: set, but LIQBOT_TELEGRAM_TOKEN is not in " \
                           "the environment" in r.out, r.out
    monkeypatch.setenv("LIQBOT_TELEGRAM_TOKEN", "123456:test-token")
    assert cli("config", "check", cfg).code == 0


# --------------------------------------------------------------------------- finding 9

def _stopped(db: Path) -> str:
    """Mark the store's newest run `stopped` (as Ctrl-C leaves it); its id."""
    con = sqlite3.connect(db)
    try:
        run_id = str(con.execute("select run_id from runs order by created_ms desc, run_id desc"
                                 ).fetchone()[0])
        con.execute("update runs set status = 'stopped' where run_id = ?", (run_id,))
        con.commit()
        return run_id
    finally:
        con.close()


def _synth_run(cli, tmp_path: Path) -> tuple[tuple, Path]:
    """A finished 1-day replay of leverage 3 on its store: (the run's arguments, the store)."""
    ds = tmp_path / "ds"
    assert cli("data", "synth", "--seed", "3", "--days", "1", "--out", ds).code == 0
    db = tmp_path / "s.db"
    args = ("run", "--replay", str(ds), "--store", f"sqlite:///{db}", "--param", "leverage=3")
    assert cli(*args, "--preset", "balanced").code == 0
    return args, db


def test_the_preset_is_compared_by_the_policy_it_resolves_to(cli, tmp_path: Path) -> None:
    """`--preset config/risk/balanced.toml` after `--preset balanced` is the same run
    (before, it was abandoned as "differs in the risk preset" and bought its position
    again); another preset still starts a new one."""
    args, db = _synth_run(cli, tmp_path)
    run_id = _stopped(db)
    r = cli(*args, "--preset", "config/risk/balanced.toml")
    assert r.code == 0 and f"resuming run {run_id}" in r.err and "differs" not in r.err, r.err
    _stopped(db)
    r = cli(*args, "--preset", "conservative")
    assert r.code == 0 and f"run {run_id} (stopped) differs from this start in the risk " \
        "policy; the risk preset (balanced -> conservative): it is closed" in \
        " ".join(r.err.split()), r.err


def test_a_run_whose_strategy_kept_another_state_starts_anew_saying_why(cli,
                                                                      tmp_path: Path) -> None:
    """A run started by a version whose strategy kept another checkpoint state (`trend`
    went from 3 to 4 slots) resumed and failed on its checkpoint. The run's layout holds
    the strategy's state size: a stored run with another size is closed as abandoned, with
    the reason, and a new run starts."""
    import json as js
    args, db = _synth_run(cli, tmp_path)
    run_id = _stopped(db)
    con = sqlite3.connect(db)
    try:                                  # the stored run as an older version wrote it
        cfg = js.loads(con.execute("select config from runs where run_id = ?",
                                   (run_id,)).fetchone()[0])
        from bot.cli.run import _state_layout, _strategy_layout
        from strategies import find
        assert cfg["spec"]["layout"] == [*_state_layout(), _strategy_layout(find("hold")())]
        cfg["spec"]["layout"][-1] -= 1
        cfg["fingerprint"] = "an older version's"
        con.execute("update runs set config = ? where run_id = ?", (js.dumps(cfg), run_id))
        con.commit()
    finally:
        con.close()
    r = cli(*args, "--preset", "balanced")
    assert r.code == 0 and f"run {run_id} (stopped) differs from this start in liqbot's " \
        "state layout (another version): it is closed as abandoned" in " ".join(r.err.split())


def test_another_strategy_is_not_called_another_version(cli, tmp_path: Path) -> None:
    """`hold` then `trend` on the same store: the layout differs in the strategy's state
    size, which the strategy change explains ("liqbot's state layout (another version)"
    was named too, on the same build)."""
    args, db = _synth_run(cli, tmp_path)
    run_id = _stopped(db)
    r = cli(*args, "--strategy", "trend")
    assert r.code == 0
    assert f"run {run_id} (stopped) differs from this start in the strategy or its " \
           "parameters (hold(side=long, leverage=3.0, sizing=entry) -> trend(fast=60, " \
           "slow=240, leverage=3.0, allow_short=1, sizing=entry)): it is closed as " \
           "abandoned" in " ".join(r.err.split()), r.err


def test_a_resumed_run_is_running_again(cli, tmp_path: Path, monkeypatch) -> None:
    """Resumed after Ctrl-C, a run stayed `stopped` while it ran: status, /api/status and
    the dashboard said so, and the feed lag (read for running runs only) was never shown."""
    from bot.cli import run as run_cli
    args, db = _synth_run(cli, tmp_path)
    run_id = _stopped(db)
    seen = []
    serve = run_cli._serve

    async def watched(daemon, *a, **kw):
        st = Store(f"sqlite:///{db}")
        seen.append(st.get_run(run_id).status)
        st.close()
        return await serve(daemon, *a, **kw)

    monkeypatch.setattr(run_cli, "_serve", watched)
    r = cli(*args, "--preset", "balanced")
    assert r.code == 0 and f"resuming run {run_id}" in r.err, r.err
    assert seen == ["running"]


def test_status_shows_the_kill_switch_and_whether_a_daemon_holds_the_account(
        cli, tmp_path: Path) -> None:
    """`status` never showed the kill switch (the API and /metrics did), a run killed -9
    stays `running` in its row, and `halt` on a finished run waited its 5 s for no one."""
    args, db = _synth_run(cli, tmp_path)
    url = f"sqlite:///{db}"
    r = cli("status", "--store", url)
    assert r.code == 0 and "kill switch" not in r.out and "no daemon holds" not in r.out
    r = cli("halt", "--store", url)                     # the run is done: no daemon to wait for
    assert r.code == 0 and "no daemon is running on the account: its next start obeys it" \
        in " ".join(r.out.split()), r.out
    r = cli("status", "--store", url)
    assert "kill switch: halt pending" in r.out
    data = json.loads(cli("status", "--store", url, "--json").out)
    assert data["kill_switch"] == {"state": None, "pending": ["halt"]}
    assert data["daemon_alive"] is False
    con = sqlite3.connect(db)                           # as a kill -9 leaves the row
    con.execute("update runs set status = 'running'")
    con.commit()
    con.close()
    r = cli("status", "--store", url)
    assert "no daemon holds the account now: the run was killed" in " ".join(r.out.split())
    st = Store(url)                                     # a daemon holding the account
    st.acquire(data["account"])
    try:
        r = cli("status", "--store", url, "--json")
        assert json.loads(r.out)["daemon_alive"] is True
        assert "no daemon holds" not in cli("status", "--store", url).out
    finally:
        st.close()


def test_the_notice_of_what_differs_keeps_its_brackets(cli, tmp_path: Path) -> None:
    """Rich markup ate `[fees]` and `[fills]`: "in the fees (); the fill model ()"."""
    args, db = _synth_run(cli, tmp_path)
    run_id = _stopped(db)
    cfg = tmp_path / "ff.toml"
    cfg.write_text("[fees]\ntaker = 0.001\n[fills]\nhalf_spread_bps = 3\n")
    r = cli("--config", cfg, *args)
    assert r.code == 0
    assert f"run {run_id} (stopped) differs from this start in the fees ([fees]); the fill " \
           "model ([fills]): it is closed as abandoned" in " ".join(r.err.split()), r.err


# --------------------------------------------------------------------------- finding 11

def test_the_log_file_holds_the_runs_lines_and_its_id(cli, tmp_path: Path) -> None:
    """The run's start, resume, abandonment and final lines go to `logging.file` too (once
    on the console, as before), and every JSON record carries the run id."""
    ds = tmp_path / "ds"
    assert cli("data", "synth", "--seed", "3", "--days", "1", "--out", ds).code == 0
    log = tmp_path / "logs" / "lg.log"
    cfg = tmp_path / "lg.toml"
    cfg.write_text(f'[logging]\nfile = "{log}"\nformat = "json"\n')
    db = tmp_path / "s.db"
    args = ("--config", cfg, "run", "--replay", str(ds), "--store", f"sqlite:///{db}",
            "--param", "leverage=3")
    try:
        first = cli(*args)
        assert first.code == 0, first.err
        run_id = _stopped(db)
        resumed = cli(*args)
        assert resumed.code == 0
        _stopped(db)
        other = cli(*args[:-1], "leverage=4")
        assert other.code == 0
    finally:
        for h in list(logging.getLogger("liqbot").handlers):   # the file stays closed
            logging.getLogger("liqbot").removeHandler(h)
            h.close()
    records = [json.loads(x) for x in log.read_text().splitlines()]
    said = [x for x in records if x["logger"] == "liqbot.run"]
    final = [x for x in first.out.splitlines() if x.startswith(f"run {run_id} finished")]
    assert len(final) == 1
    msgs = [x["msg"] for x in said]
    assert msgs[0] == f"run {run_id}: paper, hold(side=long, leverage=3.0, sizing=entry), " \
                      "preset balanced, BTCUSDT, replay at speed 0"
    assert msgs[1] == final[0]                       # the final line, figures and all
    assert msgs[2].startswith(f"resuming run {run_id} after ")
    assert msgs[4].startswith(f"run {run_id} (stopped) differs from this start in the "
                              "strategy or its parameters (hold(side=long, leverage=3.0, "
                              "sizing=entry) -> hold(side=long, leverage=4.0, sizing=entry)): "
                              "it is closed as abandoned")
    new_id = msgs[5].split(":")[0].removeprefix("run ")
    assert new_id != run_id and msgs[6].startswith(f"run {new_id} finished in ")
    assert len(said) == 7
    # the run id on every record once the run is known: its own lines and the daemon's
    assert {x["run_id"] for x in said[:4]} == {run_id} and said[5]["run_id"] == new_id
    daemon = [x for x in records if x["logger"] == "liqbot.daemon"]
    assert daemon and all(x.get("run_id") in (run_id, new_id) for x in daemon)
    # the console prints each line once (not again through the log's console handler)
    assert first.err.count(f"run {run_id}: paper, hold") == 1
    assert first.out.count(f"run {run_id} finished") == 1


# --------------------------------------------------------------------------- finding 14

@pytest.mark.parametrize("speed", ["1e9", "1e300", "nan", "-1"])
def test_the_speed_error_names_its_bounds(cli, tmp_path: Path, speed: str) -> None:
    r = cli("run", "--replay", "cascade-long", "--speed", speed, "--store",
            f"sqlite:///{tmp_path}/s.db")
    assert r.code == 2
    assert "--speed: expected a finite number in [0, 1e9) (0 = as fast as possible), got " \
        in r.err, r.err


def test_config_check_refuses_the_speed_run_refuses(cli, tmp_path: Path) -> None:
    """`run.speed = 1e9` passed `config check` (<= 1e9) and then `run` refused it (< 1e9)."""
    p = tmp_path / "s.toml"
    p.write_text("[run]\nspeed = 1e9\n")
    r = cli("config", "check", p)
    assert r.code == 2 and "run.speed: expected less than 1000000000" in r.out, r.out
    p.write_text("[run]\nspeed = 999999999\n")
    assert cli("config", "check", p).code == 0
