"""`feed_lag_s` of `liqbot status` read from the store: the feed clock minus the last
processed close, known from the store only for a running exchange-feed run (wall time);
None for a replay, a run that is not running, or a run that did not record its source.
Before, it was wall time minus the last close: 29 million seconds on a replay of 2026 data."""

from __future__ import annotations

import dataclasses
import json
import time

import pytest

from backtests.scenarios import load_scenario
from bot.data import dataset as ds_io
from bot.runtime.status import feed_lag_s, status_data
from bot.store import Store

EXCHANGE = {"spec": {"source": {"exchange": "binance", "symbols": ["BTCUSDT"]}}}
REPLAY = {"spec": {"source": {"replay": ["calm"]}}}


def test_a_finished_replay_has_no_feed_lag(cli, tmp_path) -> None:
    ds = load_scenario("calm")
    ds_io.save(dataclasses.replace(ds, bars=ds.bars.take(slice(0, 60))), tmp_path / "calm60")
    url = f"sqlite:///{tmp_path}/r.db"
    r = cli("run", "--replay", tmp_path / "calm60", "--store", url)
    assert r.code == 0, r.out + r.err
    r = cli("status", "--store", url, "--json")
    assert r.code == 0, r.err
    st = json.loads(r.out)
    assert st["status"] == "done" and st["decisions"] == 60
    assert st["last_bar"] == "2026-01-01T00:59:00Z"
    assert st["feed_lag_s"] is None              # was ~29,300,000 (wall time - 2026-01-01)


def _store_with_bar(tmp_path, config: dict, bar_ts: dict[str, int]) -> tuple[Store, object]:
    store = Store(f"sqlite:///{tmp_path}/s.db")
    run = store.open_run("paper", "paper:binance", list(bar_ts), "hold", {}, "balanced",
                         1000.0, config)
    store.commit(bar_ts)
    return store, run


def test_a_running_exchange_feed_run_lags_by_wall_time(tmp_path) -> None:
    now = int(time.time() * 1000)
    last = now - now % 60_000 - 5 * 60_000         # a bar that closed 4 minutes ago or more
    store, run = _store_with_bar(tmp_path, EXCHANGE, {"BTCUSDT": last, "ETHUSDT": last - 60_000})
    try:
        lag = status_data(store, run)["feed_lag_s"]
        # ETH is a bar further behind: the lag is its own (as live.feed_lag_s)
        expect = (now - (last - 60_000) - 60_000) / 1000
        assert expect <= lag <= expect + 30
        # the running daemon's feed clock, when given, is used as it is (/api/status)
        assert status_data(store, run, 60_000, last + 60_000)["feed_lag_s"] == 60.0
        store.set_run_status(run.run_id, "stopped")
        assert status_data(store, store.get_run(run.run_id))["feed_lag_s"] is None
    finally:
        store.close()


@pytest.mark.parametrize("config", [REPLAY, {}], ids=["replay", "no-source"])
def test_a_running_replay_lag_is_unknown_from_the_store(tmp_path, config) -> None:
    store, run = _store_with_bar(tmp_path, config, {"BTCUSDT": 1_767_225_600_000})
    try:
        assert run.status == "running"
        assert status_data(store, run)["feed_lag_s"] is None
        # with the replay's own clock (the daemon's), the lag: 2 bars after the close
        assert status_data(store, run, 60_000, 1_767_225_600_000 + 180_000)["feed_lag_s"] \
            == 120.0
    finally:
        store.close()


def test_feed_lag_s_definition() -> None:
    assert feed_lag_s({}, 60_000, 10**12) is None
    assert feed_lag_s({"A": 0}, 60_000, None) is None
    assert feed_lag_s({"A": 0, "B": 60_000}, 60_000, 180_000) == 120.0
    assert feed_lag_s({"A": 120_000}, 60_000, 150_000) == 0.0      # clock behind the store
