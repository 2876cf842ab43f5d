"""The daemon's status as plain data: one implementation for `liqbot status` (reading the
store) and the HTTP API (`/api/status`, which may add the running daemon's live numbers).

JSON keys are documented in README ("liqbot status") and docs/operations.md. Units: equity
and notionals in quote, prices quote/base, distances in % of the mark and in ATRs, feed lag
in seconds, times as ISO-8601 UTC strings.
"""

from __future__ import annotations

import io
import json
import time
from typing import Any

import numpy as np

from bot.data.dataset import iso
from bot.risk import engine as en
from bot.risk.reasons import reason_names


def status_data(store: Any, run: Any, interval_ms: int = 60_000,
                feed_now_ms: int | None = None) -> dict[str, Any]:
    """What `liqbot status` shows for `run` (a `bot.store.tables.Run`), as JSON-ready data.
    `feed_now_ms`: the running daemon's feed clock (`/api/status`); without it the clock is
    known only for a running exchange-feed run (`feed_clock_ms`), and `feed_lag_s` is None
    otherwise. Every figure is read in ONE read transaction (`Store.snapshot`): the run row,
    counts, decisions, checkpoint, watermarks and positions of one commit, even while a
    daemon commits."""
    with store.snapshot():
        return _status_data(store, store.get_run(run.run_id) or run, interval_ms, feed_now_ms)


def _status_data(store: Any, run: Any, interval_ms: int, feed_now_ms: int | None
                 ) -> dict[str, Any]:
    s = store.summary(run.run_id)
    cp = store.load_checkpoint(run.run_id)      # read once: it can be megabytes
    wm = s["last_watermark"]
    # each symbol's decision at its own last bar: a symbol whose replayed data ended (or
    # whose feed died) weeks before the others still shows (until 2026-12-07 only the
    # last day's decisions were read, and it vanished)
    per_symbol = store.last_decisions(run.run_id, s["watermarks"])
    dec = max(per_symbol.values(), key=lambda d: (d.bar_ts, d.symbol), default=None)
    # the account's state: the most severe of the symbols still trading (within a day of
    # the last bar), not the state of whichever symbol sorts last at that bar
    current = [d.state for d in per_symbol.values() if wm is not None and
               d.bar_ts >= wm - 86_400_000]
    nums = dict(dec.numbers) if dec is not None else {}
    eq = s["last_equity"]
    # the equity at the last processed bar, as its decision recorded it (what the final
    # line of `liqbot run` prints); the last snapshot (`equity_snapshot`) can be older: a
    # stop leaves the last minute's jobs to the restart (until 2026-12-06 status showed it)
    equity = nums.get("equity")
    if equity is None:
        equity = eq["equity"] if eq else run.wallet
    positions = []
    for p in s["positions"]:
        if not p["qty"]:
            continue
        d = per_symbol.get(p["symbol"])
        pn = dict(d.numbers) if d is not None else nums
        positions.append({**p, **liq_distance(pn.get("mark"), p.get("liq_price"), pn.get("atr"))})
    counts = s["counts"]
    return {
        "run_id": run.run_id, "mode": run.mode, "account": run.account, "status": run.status,
        "strategy": run.strategy, "params": run.params, "preset": run.preset,
        "symbols": run.symbols,
        "state": en.STATE_NAMES[max(current)] if current else None,
        "equity": equity,
        "equity_snapshot": None if eq is None else {"equity": eq["equity"], "ts": iso(eq["ts"])},
        # order fills and liquidations apart, as the final line of `liqbot run` counts them
        "fills": counts["fills"] - counts["liquidations"],
        "liquidations": counts["liquidations"], "decisions": counts["decisions"],
        "orders": counts["intents"], "open_orders": counts["open_intents"],
        **run_counts(cp),
        "positions": positions,
        "last_decision": None if dec is None else _decision(store, run.run_id, dec),
        "by_symbol": {sym: {**_decision(store, run.run_id, d),
                            "mark": d.numbers.get("mark"), "atr": d.numbers.get("atr"),
                            "crowding": {"long": d.numbers.get("crowd_long"),
                                         "short": d.numbers.get("crowd_short")},
                            "clusters": {"below": d.numbers.get("cluster_below"),
                                         "above": d.numbers.get("cluster_above")}}
                      for sym, d in sorted(per_symbol.items())},
        "crowding": {"long": nums.get("crowd_long"), "short": nums.get("crowd_short")},
        "clusters": {"below": nums.get("cluster_below"), "above": nums.get("cluster_above")},
        "kill_switch": kill_switch(store, run, cp),
        "last_bar": None if wm is None else iso(wm),
        "feed_lag_s": feed_lag_s(s["watermarks"], interval_ms,
                                 feed_clock_ms(run) if feed_now_ms is None else feed_now_ms),
    }


def run_counts(cp: tuple[int, bytes] | None) -> dict[str, Any]:
    """From a run's checkpoint (`Store.load_checkpoint`: (bar, blob) or None), the run's
    bars processed and counters (fills, liquidations, rejects, stale,
    strategy_errors, skipped) over all its lives, as its last checkpoint holds them
    (`Daemon.checkpoint`: each symbol's `meta:SYMBOL` = [last bar, bars, ...], the `tally`
    JSON's `counters` and `skipped`): `bars_processed` 0 and `counters` None before the
    first checkpoint; `counters` None too for a checkpoint older than them. Read with numpy
    alone: a store reader need not import the daemon's trading code."""
    if cp is None:
        return {"bars_processed": 0, "counters": None}
    with np.load(io.BytesIO(cp[1]), allow_pickle=False) as z:
        bars = sum(int(z[k][1]) for k in z.files if k.startswith("meta:"))
        tally = json.loads(str(z["tally"][0])) if "tally" in z.files else {}
    counters = tally.get("counters")
    if counters is not None:
        counters = {**counters, "skipped": int(tally.get("skipped", 0))}
    return {"bars_processed": bars, "counters": counters}


def checkpoint_switch(blob: bytes) -> tuple[bool, bool]:
    """(halted, flatten) as a daemon checkpoint recorded the operator's kill switch (its
    `scalars` = [seq, halted, flatten]; a blob without them, none)."""
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        if "scalars" not in z.files:
            return False, False
        halted, flatten = (bool(v) for v in z["scalars"][1:3])
    return halted, flatten


def kill_switch(store: Any, run: Any, cp: tuple[int, bytes] | None) -> dict[str, Any]:
    """The operator's kill switch of `run`: `state` "halt", "flatten" or None as its daemon
    last obeyed it (its checkpoint `cp`, `Store.load_checkpoint`; before the first one, the
    run row, where an inherited
    switch waits), and `pending` the commands no daemon has obeyed yet, oldest first
    ("halt", "flatten", "resume"; `liqbot halt` with no daemon running leaves them there
    for the next start)."""
    if cp is not None:
        halted, flatten = checkpoint_switch(cp[1])
    else:
        row = (run.config or {}).get("kill_switch")
        halted, flatten = row is not None, row == "flatten"
    return {"state": ("flatten" if flatten else "halt") if halted else None,
            "pending": [c.kind for c in store.pending_commands(run.run_id)]}


def feed_clock_ms(run: Any) -> int | None:
    """The feed clock of `run` as seen from the store alone: wall time for a running run on
    the exchange feed (its clock is wall time); None for a replay (its simulated clock lives
    only in the daemon: `/api/status`, `liqbot status --http`), for a run that is not
    running (done, stopped, abandoned: no feed is running) and for a run that did not record
    its source (drills, older runs)."""
    source = ((run.config or {}).get("spec") or {}).get("source") or {}
    if run.status != "running" or "exchange" not in source:
        return None
    return int(time.time() * 1000)


def feed_lag_s(watermarks: dict[str, int], interval_ms: int, now_ms: int | None
               ) -> float | None:
    """Feed clock minus the close of the last processed bar, in seconds (docs/operations.md,
    as `liqbot_feed_lag_seconds`), of the symbol furthest behind (as `live.feed_lag_s`);
    None without a feed clock or a processed bar. Before 2026-12-06 this was wall time minus
    the close, which on a replay is the data's age (months), not a lag."""
    if now_ms is None or not watermarks:
        return None
    return max(0.0, (now_ms - min(watermarks.values()) - interval_ms) / 1000.0)


def liq_distance(mark: float | None, liq_price: float | None, atr: float | None
                 ) -> dict[str, float | None]:
    """Distance from the mark to a liquidation price: % of the mark and in ATRs (None when
    a number is missing)."""
    if not (mark and liq_price):
        return {"mark": mark, "liq_distance_pct": None, "liq_distance_atr": None}
    gap = abs(mark - liq_price)
    return {"mark": mark, "liq_distance_pct": gap / mark * 100.0,
            "liq_distance_atr": gap / atr if atr else None}


def _decision(store: Any, run_id: str, dec: Any) -> dict[str, Any]:
    return {"ts": iso(dec.bar_ts), "symbol": dec.symbol, "state": en.STATE_NAMES[dec.state],
            "reasons": reason_names(dec.reasons), "text": last_text(store, run_id, dec),
            "target_notional": dec.target_notional, "allowed_notional": dec.allowed_notional}


def last_text(store: Any, run_id: str, dec: Any) -> str:
    """The decision's text, or the last non-empty text of its symbol within a day (texts are
    rendered only when the decision changes)."""
    if dec.text:
        return str(dec.text)
    for d in reversed(store.decisions(run_id, since_ts=max(0, dec.bar_ts - 86_400_000))):
        if d.symbol == dec.symbol and d.text:
            return str(d.text)
    return ""


def decision_row(d: Any) -> dict[str, Any]:
    """One stored decision as JSON for `/api/decisions` (bar_ts in ms and ISO)."""
    n = d.numbers or {}
    return {"bar_ts": int(d.bar_ts), "ts": iso(d.bar_ts), "symbol": d.symbol,
            "state": en.STATE_NAMES[d.state], "reasons": reason_names(d.reasons), "text": d.text,
            "target_notional": d.target_notional, "allowed_notional": d.allowed_notional,
            "mark": n.get("mark"), "atr": n.get("atr"), "equity": n.get("equity"),
            "liq_price": n.get("liq_price"), "cluster_below": n.get("cluster_below"),
            "cluster_above": n.get("cluster_above"), "crowd_long": n.get("crowd_long"),
            "crowd_short": n.get("crowd_short")}
