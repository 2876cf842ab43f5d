"""`liqbot run`, `liqbot status`, `liqbot halt`: the daemon and its controls."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bot.cli.backtest import _fees, _params
from bot.cli.paths import check_log_file, check_number, check_wallet, console, dumps
from bot.cli.tiers import TiersOption, brackets_for
from bot.config import Config, load_config, load_credentials
from bot.data.dataset import iso
from bot.errors import ConfigError, LiqbotError, exc_text
from bot.mechanics import brackets as br
from bot.risk.policy import load_policy
from bot.runtime import logs
from bot.runtime.status import status_data
from bot.text import count as _count

log = logging.getLogger("liqbot.run")


def _replay_bars(sources: list[str], cfg: Config) -> dict[str, Any]:
    from backtests.scenarios import load_scenario
    from bot.cli.backtest import configured_data

    out: dict[str, Any] = {}
    for src in sources:
        if not src.strip():                   # Path("") is ".": "error: .: not a dataset"
            raise LiqbotError("--replay: empty; give a dataset directory or a scenario "
                              "(cascade-long, calm, synthetic:SEED[:CROWDING[:DAYS]])")
        ds = configured_data(cfg) if src == "synthetic" else load_scenario(src, "--replay")
        if ds.bars.symbol in out:
            raise LiqbotError(f"--replay {src}: symbol {ds.bars.symbol} is already replayed by "
                              "another --replay; give one dataset per symbol")
        if len(ds.bars) < 2:
            raise LiqbotError(f"--replay {src}: fewer than 2 bars")
        out[ds.bars.symbol] = ds.bars
    # one account, one clock: the replays must share a bar grid and overlap in time
    from backtests.portfolio import check_alignment
    check_alignment(list(out.values()), [f"--replay {s}" for s in sources])
    # in symbol order: the account's slots follow it, so `--replay A --replay B` and
    # `--replay B --replay A` are the same run (and resume each other)
    return {s: out[s] for s in sorted(out)}


#: what each part of a run's spec is, for the message naming what changed
SPEC_PARTS = {"strategy": "the strategy or its parameters", "preset": "the risk preset",
              "policy": "the risk policy", "wallet": "the wallet", "source": "the data",
              "fills": "the fill model ([fills])", "fees": "the fees ([fees])",
              "layout": "liqbot's state layout (another version)"}


def spec_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between a stored run's spec and this start's, in words: the data by
    symbol (added, removed, other bars), every other part by name. The preset is compared
    by the policy it resolves to, not by its spelling: `--preset balanced` and `--preset
    config/risk/balanced.toml` are the same run (until 2026-12-06 the second abandoned it)."""
    new = json.loads(json.dumps(new, sort_keys=True, default=str))
    out = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) == new.get(key):
            continue
        if key == "preset" and old.get("policy") is not None \
                and old.get("policy") == new.get("policy"):
            continue
        a, b = old.get(key), new.get(key)
        if key == "layout" and isinstance(a, list) and isinstance(b, list) and \
                a[:-1] == b[:-1] and old.get("strategy") != new.get("strategy"):
            continue            # only the strategy's own state size: another strategy
        if key == "source" and isinstance(a, dict) and isinstance(a.get("replay"), list):
            out.append(f"the data (--replay {' '.join(map(str, a['replay']))}, recorded by "
                       "path before liqbot compared the data itself)")
        elif key == "source" and isinstance(a, dict) and isinstance(b, dict) \
                and isinstance(a.get("replay"), dict) and isinstance(b.get("replay"), dict):
            ra, rb = a["replay"], b["replay"]
            words = [f"{s} added" for s in sorted(set(rb) - set(ra))] + \
                    [f"{s} removed" for s in sorted(set(ra) - set(rb))] + \
                    [f"{s} other bars" for s in sorted(set(ra) & set(rb)) if ra[s] != rb[s]]
            out.append(f"the data ({', '.join(words)})")
        elif key in ("strategy", "preset", "wallet") and a is not None and b is not None:
            shown = [f"{v:,.10g}" if isinstance(v, int | float) else str(v) for v in (a, b)]
            out.append(f"{SPEC_PARTS[key]} ({shown[0]} -> {shown[1]})")
        else:
            out.append(SPEC_PARTS.get(key, key))
    return out


def run_choices(cfg: Config, strategy: str | None, param: list[str] | None,
                preset: str | None, wallet: float | None,
                speed: float | None) -> tuple[Any, str, Any, float, float]:
    """(strategy, preset name, policy, wallet, speed) from the options, falling back to the
    [run] config section; `run` and `drill` read their shared options here. Bad values exit
    2 naming the option."""
    from strategies import find

    rc = cfg.run
    given = _params(param or [])
    # a value read from the [run] section is named by its key, not by the option: message
    # prefix as the option writes it -> the same with the key
    keys = {option: key for option, key, value in (
        ("--wallet", "run.wallet", wallet), ("--speed", "run.speed", speed),
        ("--strategy", "run.strategy", strategy), ("--preset", "run.preset", preset))
        if value is None}
    try:
        speed = rc.speed if speed is None else speed
        wallet = rc.wallet if wallet is None else wallet
        check_wallet(wallet)
        if not (speed >= 0 and speed < 1e9):
            raise LiqbotError(f"--speed: expected a finite number in [0, 1e9) (0 = as fast as "
                              f"possible), got {speed:g}")
        cls = find(strategy or rc.strategy)
        params = {k: str(v) for k, v in rc.params.items()}
        if strategy is not None and strategy != rc.strategy and params:
            # run.params were written for run.strategy: the ones --strategy also has are
            # kept (a leverage set in the config is not dropped for the default), the rest
            # named (until 2026-12-06 all were dropped silently: 3x in the config ran 5x)
            known = {*cls.PARAMS, "sizing"}
            dropped = sorted(set(params) - known - set(given))
            params = {k: v for k, v in params.items() if k in known}
            if dropped:
                console(stderr=True).print(
                    f"note: run.params {', '.join(dropped)} not used: --strategy {cls.name} "
                    f"has no such parameter (they are {rc.strategy}'s)", markup=False)
        for k in set(params) - set(given):
            keys[f"--param {k}:"] = f"run.params.{k}:"
            unknown = f": {cls.name} has no parameter {k!r}"
            keys["--param" + unknown] = "run.params" + unknown
        params.update(given)
        preset_name = preset or rc.preset
        strat = cls.from_strings(params)
        strat.stream()       # no streaming form: refused here, before a run is opened
        return strat, preset_name, load_policy(preset_name), wallet, speed
    except ConfigError:                     # a preset file's own problems name its keys
        raise
    except LiqbotError as exc:
        text = str(exc)
        for option, key in keys.items():
            if text.startswith(option):
                raise LiqbotError(key + text[len(option):]) from None
        raise


def _strategy_layout(strat: Any) -> int:
    """Size of the strategy stream's checkpointed state (its step form's state, else its
    WINDOW): a version whose built-in strategy keeps another state (`trend` 3 -> 4 slots on
    2026-12-06) starts a new run instead of failing on the old checkpoint."""
    form = strat.step_form()
    return len(form.init) if form is not None else int(strat.WINDOW or 0)


def _state_layout() -> list[int]:
    """Sizes of every checkpointed state layout: a run is resumed only by code whose
    checkpoints it can read (after an upgrade that changed them, a new run starts)."""
    from bot.execution import kernel as kn
    from bot.mechanics import fills as fl
    from bot.risk import engine as en
    from bot.risk import inputs as ri
    from bot.signals import detectors as dt
    from bot.signals import heatmap as hm
    from bot.signals import positioning as ps
    from bot.signals import stream as ss

    return [kn.N_K, kn.N_FP, ss.N_X, ss.N_OUT, en.N_POLICY, en.N_DECISION, en.N_SIG, ri.N_RS,
            dt.N_DS, ps.N_PS, ss.N_HS, fl.N_FS, hm.N_META]


def _fingerprint(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_command(
    ctx: typer.Context,
    replay: Annotated[list[str] | None, typer.Option(
        "--replay", help="replay a dataset directory or scenario (cascade-long, calm, "
                         "synthetic:SEED[:CROWDING[:DAYS]], or 'synthetic' = config data) "
                         "instead of the exchange feed; repeat for several symbols")] = None,
    speed: Annotated[float | None, typer.Option(
        "--speed", help="replay speed: 0 = as fast as possible, 60 = an hour per minute")] = None,
    strategy: Annotated[str | None, typer.Option("--strategy", help="default: config run.strategy")]
    = None,
    param: Annotated[list[str] | None, typer.Option("--param", help="k=v (repeatable)")] = None,
    preset: Annotated[str | None, typer.Option("--preset", help="default: config run.preset")]
    = None,
    wallet: Annotated[float | None, typer.Option("--wallet", help="paper wallet (quote)")] = None,
    store_url: Annotated[str | None, typer.Option("--store", help="default: config store.url")]
    = None,
    live: Annotated[bool, typer.Option("--live", help='live trading (also needs mode = "live")')]
    = False,
    http: Annotated[str | None, typer.Option(
        "--http", help="serve the dashboard, REST API and /metrics on HOST:PORT (default host "
                       "127.0.0.1; any other host needs LIQBOT_HTTP_TOKEN)")] = None,
    preflight: Annotated[bool, typer.Option(
        "--preflight", help="with --live: print balance, margin mode, leverage, brackets and "
                            "caps, send nothing, exit")] = False,
    tiers: TiersOption = None,
) -> None:
    """Run the trading daemon: paper by default, on the exchange feed or a replay. With
    --replay it ends by itself when the data ends. Restarting with the same options on the
    same store resumes the run where it stopped."""
    from bot.execution import kernel as kn
    from bot.runtime.daemon import Daemon, check_live_allowed, percentiles
    from bot.runtime.replay import ReplayFeed
    from bot.store import Store

    cfg_path = (ctx.obj or {}).get("config") if ctx.obj else None
    fees, cfg = _fees(cfg_path)
    check_live_allowed(cfg.mode, live)
    if preflight and not live:
        raise LiqbotError("--preflight: only with --live (it checks the live account)")
    if live and tiers is not None:
        raise LiqbotError("--tiers with --live: a live run trades on the exchange's own "
                          "leverage brackets, read at start-up")
    if live and replay:
        raise LiqbotError("--live with --replay: a live run trades the exchange's own feed; "
                          "to trade a dataset against the local emulator use `liqbot drill`")
    if speed is not None and not replay:
        raise LiqbotError("--speed: only with --replay (the exchange feed runs at the "
                          "market's pace)")
    if live and wallet is not None:
        raise LiqbotError("--wallet: a paper wallet; a live run trades the account's own "
                          "balance (see `liqbot run --live --preflight`)")
    rc = cfg.run
    strat, preset_name, policy, wallet, speed = run_choices(cfg, strategy, param, preset,
                                                            wallet, speed)
    creds = load_credentials(cfg)
    secrets = [] if creds is None else [c.get_secret_value() for c in
                                        (creds.api_key, creds.api_secret, creds.api_passphrase)
                                        if c is not None]
    import os

    from bot.runtime.alerts import TELEGRAM_TOKEN_ENV, Alerts
    tg_token = os.environ.get(TELEGRAM_TOKEN_ENV) or None
    check_log_file(cfg.logging.file)
    # built (and so checked: a Telegram chat without its token) before a run row is opened;
    # until 2026-12-06 after it, and the refused run stayed `running`. Its run id comes below
    alerts = Alerts(cfg.alerts, "", tg_token)
    logs.setup(cfg.logging.level, cfg.logging.format, cfg.logging.file,
               secrets + ([tg_token] if tg_token else []))
    bind = None
    if http is not None:
        from bot.runtime.http import bind_token, parse_bind
        host, port = parse_bind(http)
        bind = (host, port, bind_token(host))
    if live:
        if creds is None:
            raise LiqbotError("--live: no credentials; set LIQBOT_API_KEY and LIQBOT_API_SECRET "
                              "or exchange.credentials_file (mode 0600)")
        _check_caps(cfg)
        if preflight:
            asyncio.run(_preflight(cfg, creds))
            return
    if replay:
        replayed = _replay_bars(replay, cfg)
        feed: Any = ReplayFeed(replayed, speed)
        # what the data is, not how it was named: a trailing slash or another order of
        # --replay resumes; other bars under the same name do not
        source = {"replay": {s: b.digest() for s, b in replayed.items()}}
    else:
        from bot.runtime.exchange_feed import ExchangeFeed
        d = cfg.download
        # the market data comes from where the orders go: with `live.rest_url` (an
        # emulator) its REST and streams, never the venue's (until 2026-12-07 the feed read
        # download.ccxt_base_url and the venue's streams while the broker traded the URL)
        feed = ExchangeFeed(list(cfg.exchange.symbols), exchange=cfg.exchange.name,
                            rest_base_url=cfg.live.rest_url or d.ccxt_base_url,
                            ws_base_url=cfg.live.ws_url if cfg.live.rest_url else None,
                            timeout_s=d.timeout_s)
        source = {"exchange": cfg.exchange.name, "symbols": list(cfg.exchange.symbols)}
    # paper trades on the tables a live start would, at the leverage it would set
    brackets = asyncio.run(_exchange_brackets(cfg, creds, list(feed.symbols))) if live \
        else {s: brackets_for(s, tiers, leverage=cfg.live.leverage) for s in feed.symbols}
    fp = kn.fill_params(cfg.fills, fees, 0.05, strat.sizing)
    store_url = _store_url(store_url, cfg.store.url)
    store = Store(store_url)
    account = account_of(cfg)
    try:
        store.acquire(account)
    except BaseException:
        store.close()
        raise
    con = console(stderr=True)
    run_log = RunLog()
    try:
        spec = {"strategy": strat.describe(), "preset": preset_name, "wallet": wallet,
                "source": source, "fills": cfg.fills.model_dump(), "fees": vars(fees),
                "policy": policy.model_dump(),
                "layout": [*_state_layout(), _strategy_layout(strat)]}
        fp_id = _fingerprint(spec)
        # a replay started before 2026-12-06 recorded its --replay text, not its data: the
        # same command resumes it (what the data is was not recorded, so not checked)
        legacy = _fingerprint({**spec, "source": {"replay": replay}}) if replay else fp_id
        prev = store.latest_run(account)
        # a run that was killed ("running") or stopped by a signal ("stopped") resumes with
        # the same options; a finished replay ("done") starts afresh
        resumable = prev is not None and prev.status in ("running", "stopped")
        resume = resumable and prev is not None and (
            prev.config.get("fingerprint") == fp_id or
            # its symbols then kept the --replay order: resumed only if it is the same
            (prev.config.get("fingerprint") == legacy and prev.symbols == list(feed.symbols)) or
            # the same but for the preset's spelling (its policy is the same)
            (bool(prev.config.get("spec")) and not spec_changes(prev.config["spec"], spec)))
        if resume:
            run = prev
            if run is not None and run.status != "running":   # a stopped run runs again
                store.set_run_status(run.run_id, "running")
        else:
            if resumable and prev is not None:
                store.set_run_status(prev.run_id, "abandoned")
                changed = spec_changes(prev.config.get("spec") or {}, spec) \
                    if prev.config.get("spec") else ["the options"]
                run_log.say(con, f"run {prev.run_id} ({prev.status}) differs from this start "
                                 f"in {'; '.join(changed)}: it is closed as abandoned (its "
                                 "rows are kept) and a new run starts")
            # the kill switch goes into the new run's row, written in one transaction, so a
            # kill -9 at any point cannot lose it; the old run's commands are acked after
            switch = _kill_switch_of(store, prev.run_id) if prev is not None else None
            run = store.open_run(cfg.mode, account, list(feed.symbols), strat.name,
                                 strat.params, preset_name, wallet,
                                 {"fingerprint": fp_id, "spec": spec, "kill_switch": switch})
            if prev is not None:
                for cmd in store.pending_commands(prev.run_id):
                    if cmd.run_id == prev.run_id:
                        store.ack_command(cmd.id)
            if switch:
                run_log.run_id = run.run_id
                run_log.say(con, f"kill switch: run {prev.run_id} was halted"  # type: ignore[union-attr]
                                 f"{' (flatten)' if switch == 'flatten' else ''}; the new run "
                                 f"{run.run_id} starts halted (liqbot halt --resume lifts it)")
        assert run is not None
        run_log.run_id = alerts.run_id = run.run_id
        broker = _live_broker(cfg, creds, list(feed.symbols), brackets, feed.interval_ms) \
            if live else None
        daemon = Daemon(run_id=run.run_id, feed=feed, store=store, strategy=strat,
                        policy=policy.to_array(), fp=fp, brackets=brackets, wallet=wallet,
                        settings=rc, broker=broker)
        cp = store.load_checkpoint(run.run_id) if resume else None
        if cp is None and run.config.get("kill_switch"):     # inherited, not yet checkpointed
            # (until the first checkpoint the run row holds the switch: the daemon writes a
            # command obeyed before it there, in the commit that acks the command)
            daemon.halted, daemon.flatten = True, run.config["kill_switch"] == "flatten"
            store.stage("events", {"run_id": run.run_id, "event_key": "kill-switch-inherited",
                                   "ts": int(time.time() * 1000), "kind": "command",
                                   "message": f"kill switch {run.config['kill_switch']} "
                                              "inherited from the previous run"})
        if cp is not None:
            daemon.restore(cp[1])
            if hasattr(feed, "seek"):
                feed.seek({s: x.last_ts for s, x in daemon.state.items()})
            run_log.say(con, f"resuming run {run.run_id} after {iso(cp[0])}"
                             + (" (halted)" if daemon.halted else ""))
        else:
            head = (f"resuming run {run.run_id} from its start (it had committed no bar); "
                    if resume else f"run {run.run_id}: ")
            run_log.say(con, f"{head}{cfg.mode}, {strat.describe()}, preset {preset_name}, "
                             f"{', '.join(feed.symbols)}"
                             + (f", replay at speed {speed:,.10g}" if replay
                                else ", exchange feed"))
        t0 = time.perf_counter()
        try:
            asyncio.run(_serve(daemon, bool(replay), alerts, bind, store_url, con))
        except BaseException:
            # not running any more (a feed that cannot start, a port in use, a bug): the
            # same options resume it, as after Ctrl-C
            with contextlib.suppress(Exception):
                store.set_run_status(run.run_id, "stopped")
            raise
        dt = time.perf_counter() - t0
        ended = bool(replay) and not daemon.stopping
        store.set_run_status(run.run_id, "done" if ended else "stopped")
        eq, _ = daemon.equity()
        lat = percentiles(daemon.latency_ns)
        # the run's figures (all its lives: a resumed run says what an uninterrupted one
        # does), then what this process did in its wall time
        n = daemon.run_counts()
        here = daemon.process_count("bars")
        extra = [_count(n[k], noun) + after for k, noun, after in EXTRA_COUNTS if n[k]]
        run_log.say(
            console(),
            f"run {run.run_id} {'finished' if ended else 'stopped'} "
            + (f"(resumed: {here:,} bars in {dt:.1f} s by this process)" if daemon.restored
               else f"in {dt:.1f} s")
            + f": {_count(n['bars'], 'bar')}, {_count(n['orders'], 'order')}, "
            f"{_count(n['fills'], 'fill')}, {_count(n['liquidations'], 'liquidation')}, "
            f"equity {eq:,.2f}"
            + "".join(f", {e}" for e in extra)
            + (f"; bar close -> intent p50 {lat['p50_us']:.0f} us, p99 {lat['p99_us']:.0f} us"
               if lat["n"] else ""))
    finally:
        run_log.close()
        store.close()


#: the run's counters shown after fills and liquidations when not 0 (the final line of
#: `liqbot run`, `liqbot status`): key, noun, words after it
EXTRA_COUNTS = (("rejects", "reject", ""), ("stale", "stale-feed check", ""),
                ("strategy_errors", "strategy error", ""), ("skipped", "malformed bar", " skipped"))

#: a record of a line `liqbot run` prints itself: the console's log handler leaves it out
_PRINTED = "liqbot_printed"


def account_of(cfg: Config) -> str:
    """The account a daemon with this config trades and locks in its store: "MODE:EXCHANGE"
    ("paper:binance"). `status` and `halt` address its newest run by default."""
    return f"{cfg.mode}:{cfg.exchange.name}"


class _HandlerFilter(logging.Filter):
    def __init__(self, owner: RunLog, console: bool) -> None:
        super().__init__()
        self.owner, self.console = owner, console

    def filter(self, record: logging.LogRecord) -> bool:
        if self.owner.run_id is not None and not hasattr(record, "run_id"):
            record.run_id = self.owner.run_id
        return not (self.console and getattr(record, _PRINTED, False))


class RunLog:
    """While `liqbot run` runs, on the `liqbot` log handlers: every record carries the run's
    id once it is known (`run_id`, a key of JSON lines), and the lines `liqbot run` prints
    (`say`: the run and its start or resume, a run abandoned, the final figures) are
    logged too, for a log file (`logging.file`), not a second time on the console. Until
    2026-12-06 they went to the console only."""

    def __init__(self) -> None:
        self.run_id: str | None = None
        self._undo: list[tuple[logging.Handler, logging.Filter]] = []
        for h in logging.getLogger("liqbot").handlers:
            f = _HandlerFilter(self, console=not isinstance(h, logging.FileHandler))
            h.addFilter(f)
            self._undo.append((h, f))

    def say(self, con: Console, text: str) -> None:
        """Print `text` as it is (no markup: `[fees]` stays) and log it at INFO."""
        con.print(text, markup=False)
        log.info(text, extra={_PRINTED: True})

    def close(self) -> None:
        """Take the filters off the handlers again."""
        for h, f in self._undo:
            h.removeFilter(f)
        self._undo.clear()


def _kill_switch_of(store: Any, old: str) -> str | None:
    """The kill switch belongs to the account, not to one run: "halt" or "flatten" when the
    previous run had obeyed one (its checkpoint, or its row before its first checkpoint) or
    had one pending (`liqbot halt` sent while no daemon ran), else None. Only `liqbot halt
    --resume` lifts it."""
    from bot.runtime.status import kill_switch

    row = store.get_run(old)
    state = kill_switch(store, row, store.load_checkpoint(old))["state"] \
        if row is not None else None
    halted, flatten = state is not None, state == "flatten"
    for cmd in store.pending_commands(old):
        if cmd.run_id != old:                 # a command for any run: the new run reads it
            continue
        if cmd.kind == "resume":
            halted = flatten = False
        else:
            halted, flatten = True, flatten or cmd.kind == "flatten"
    return ("flatten" if flatten else "halt") if halted else None


def _store_url(flag_value: str | None, default: str) -> str:
    """The store URL a daemon runs on: `--store` (refused when given empty: it silently
    meant the config's store.url) or `default`; an in-memory SQLite database is refused (it
    dies with the process: nothing to resume, no kill switch, `status` and the HTTP reader
    cannot see it)."""
    from bot.store.urls import mask_url, parse_url

    if flag_value is not None and not flag_value.strip():
        raise LiqbotError("--store: empty; give a store URL (sqlite:///PATH or "
                          "postgresql://HOST/DB), or leave it out for the config's store.url")
    url = flag_value or default
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise LiqbotError(f"store {mask_url(url)!r}: an in-memory SQLite database dies with "
                          "the process (no resume, no kill switch, nothing for `liqbot "
                          "status` to read); give a file, sqlite:///PATH")
    return url


def _sqlite_path_hint(database: str) -> str:
    """Where a relative SQLite path resolved, for a "no such file" message: three slashes
    (sqlite:///tmp/x.db) are relative to the working directory."""
    from pathlib import Path

    p = Path(database)
    return "" if p.is_absolute() else (f"; looked for {p.resolve()}: sqlite:///PATH is relative "
                                       "to the working directory, sqlite:////PATH absolute")


def _check_caps(cfg: Config) -> None:
    missing = [k for k in ("max_order_notional", "max_day_notional")
               if getattr(cfg.live, k) is None]
    if missing:
        raise LiqbotError("--live: " + ", ".join(f"live.{k}" for k in missing) + " must be set "
                          "in the config (quote notional caps no strategy passes)")


def _exchange(cfg: Config, creds: Any) -> tuple[Any, Any]:
    """The ccxt.pro instance of the configured venue (testnet, or an emulator by URL) and
    its row of `bot.execution.venues`. Secrets go to ccxt only."""
    import ccxt.pro as ccxt_pro

    from bot.execution.venues import venue_for
    venue = venue_for(cfg.exchange.name)
    ex = getattr(ccxt_pro, venue.ccxt_id)({
        "apiKey": creds.api_key.get_secret_value(), "secret": creds.api_secret.get_secret_value(),
        "enableRateLimit": True, "timeout": int(cfg.download.timeout_s * 1000)})
    if cfg.exchange.testnet:
        ex.set_sandbox_mode(True)
    if cfg.live.rest_url:
        from bot.emulator.server import point_ccxt
        point_ccxt(ex, cfg.live.rest_url, cfg.live.ws_url)
    return ex, venue


async def _exchange_brackets(cfg: Config, creds: Any, symbols: list[str]
                             ) -> dict[str, br.Brackets]:
    """Each symbol's leverage brackets as the exchange publishes them for this account
    (ccxt `fetch_leverage_tiers`), checked by `brackets.from_ccxt`, as the account may use
    them at the leverage it sets (`live.leverage`, `brackets.at_leverage`). A live run
    trades on these and on nothing assumed: no answer, no run."""
    import ccxt

    from bot.execution.live import exchange_brackets
    ex, venue = _exchange(cfg, creds)
    try:
        got = await exchange_brackets(ex, venue, symbols, _live_settings(cfg))
    except ccxt.BaseError as exc:
        raise LiqbotError(f"--live: could not read the leverage brackets from the exchange "
                          f"({exc_text(exc)}); liqbot does not trade "
                          "live on assumed margin tiers") from None
    finally:
        await ex.close()
    return {s: br.at_leverage(b, cfg.live.leverage) for s, b in got.items()}


def _live_settings(cfg: Config) -> Any:
    from bot.execution.live import LiveSettings
    lc = cfg.live
    return LiveSettings(leverage=lc.leverage, margin_mode=lc.margin_mode,
                        max_order_notional=float(lc.max_order_notional or 0.0),
                        max_day_notional=float(lc.max_day_notional or 0.0),
                        reconcile_s=cfg.run.reconcile_every_s, attempts=lc.order_attempts,
                        use_ws=lc.user_stream)


def _live_broker(cfg: Config, creds: Any, symbols: list[str], brackets: dict[str, Any],
                 interval_ms: int) -> Any:
    from bot.execution.live import LiveBroker
    ex, venue = _exchange(cfg, creds)
    return LiveBroker(ex, venue, symbols, [brackets[s] for s in symbols], interval_ms,
                      _live_settings(cfg))


async def _preflight(cfg: Config, creds: Any) -> None:
    """`run --live --preflight`: read-only requests, printed; no order, no setting."""
    symbols = list(cfg.exchange.symbols)
    brackets = await _exchange_brackets(cfg, creds, symbols)   # what a live start would read
    broker = _live_broker(cfg, creds, symbols, brackets, 60_000)
    try:
        info = await broker.preflight()
    except Exception as exc:
        import ccxt
        if isinstance(exc, (ccxt.BaseError, ValueError, KeyError, TypeError)):
            raise LiqbotError(f"--preflight: the exchange answered {exc_text(exc)}") from None
        raise
    finally:
        await broker.close()
    con = console()
    lc = cfg.live
    con.print(f"preflight {info['exchange']}{' (testnet)' if cfg.exchange.testnet else ''}: "
              f"wallet {info['wallet']:,.2f}, available {info['available']:,.2f}")
    for s, v in info["symbols"].items():
        b = brackets[s]
        limit = br.position_limit(b, lc.leverage)
        tiers = ", ".join(f"<= {c:,.0f}: mmr {m:.2%}" for c, m in zip(b.cap[:4], b.mmr[:4],
                                                                   strict=True))
        con.print(f"{s}: position {v['position']:+.6f}, margin mode {v['margin_mode']}, "
                  f"leverage {v['leverage']} (would set {lc.margin_mode} {lc.leverage}x: "
                  f"position limit {limit:,.0f}); brackets {tiers}")
    con.print(f"caps: {lc.max_order_notional:,.2f} per order, {lc.max_day_notional:,.2f} per "
              "UTC day (reduce-only exempt); nothing was sent")


async def _serve(daemon: Any, simulated: bool, alerts: Any, bind: tuple[str, int, str | None]
                 | None, store_url: str, con: Console) -> None:
    """The daemon with its alert worker and (with --http) the HTTP server on one loop."""
    server = None
    if alerts.enabled:
        daemon.listeners.append(alerts.listener)
        await alerts.start()
    if bind is not None:
        import logging

        from bot.runtime.http import StatusServer
        from bot.runtime.metrics import ErrorCounter
        errors = ErrorCounter()
        logging.getLogger("liqbot").addHandler(errors)
        server = StatusServer(daemon, store_url, bind[0], bind[1], bind[2], alerts, errors)
        con.print(f"dashboard {await server.start()}/ (API /api/status, metrics /metrics)")
    try:
        await daemon.run(simulated=simulated)
    finally:
        if server is not None:
            await server.stop()
        await alerts.stop()
        await daemon.feed.close()           # the exchange feed's ccxt clients and streams


def _store_and_run(store_url: str | None, ctx: typer.Context, run_id: str | None) -> tuple[
        Any, Any, Config]:
    """(store, run, config) for `status` and `halt`: the run `run_id`, else the newest run of
    the config's account (`account_of`; until 2026-12-06 the newest of any account, so with
    two accounts in one store `halt` stopped the other daemon). Exit 2 when there is none,
    naming the accounts the store holds."""
    from pathlib import Path

    from bot.store import Store
    from bot.store.urls import mask_url, parse_url

    cfg = load_config((ctx.obj or {}).get("config") if ctx.obj else None)
    url = _store_url(store_url, cfg.store.url)
    parsed = parse_url(url)                 # status and halt read a store, never create one
    if parsed.get_backend_name() == "sqlite" and not Path(str(parsed.database)).exists():
        raise LiqbotError(f"no store at {mask_url(url)} (no such file"
                          f"{_sqlite_path_hint(str(parsed.database))}); give the --store a "
                          "daemon runs with (`liqbot run --store URL`)")
    store = Store(url, create=False)
    try:
        account = account_of(cfg)
        run = store.get_run(run_id) if run_id else store.latest_run(account)
        if run is None:
            if run_id:
                raise LiqbotError(f"--run {run_id}: no such run in the store {store.url}")
            held = store.accounts()
            if held:
                raise LiqbotError(
                    f"no run of account {account} (the config's mode:exchange) in the store "
                    f"{store.url}; it holds runs of {', '.join(held)}: give --run RUN_ID, or "
                    "the --config of that account")
            raise LiqbotError(f"no run in the store {store.url}; start one with `liqbot run`")
    except BaseException:
        store.close()
        raise
    return store, run, cfg


def status_command(
    ctx: typer.Context,
    store_url: Annotated[str | None, typer.Option("--store", help="default: config store.url")]
    = None,
    run_id: Annotated[str | None, typer.Option(
        "--run", help="default: the newest run of the config's account (mode:exchange)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    http: Annotated[str | None, typer.Option(
        "--http", help="read a running daemon's /api/status at this URL instead of the store "
                       "(token from LIQBOT_HTTP_TOKEN)")] = None,
) -> None:
    """The daemon's state: mode, run, risk state, equity, positions with liquidation
    distance, the last decision and why, crowding, nearest clusters, feed lag."""
    if http is not None:
        given = [o for o, v in (("--store", store_url), ("--run", run_id)) if v is not None]
        if given:
            raise LiqbotError(f"{' and '.join(given)} with --http: the daemon at the URL "
                              "reports its own run; give one or the other")
        data = _remote_status(http)
    else:
        store, run, _ = _store_and_run(store_url, ctx, run_id)
        try:
            data = status_data(store, run)
            # the run row says `running` after a kill -9; the account lock says if a
            # daemon is alive (the HTTP API is served by the daemon itself: it is)
            data["daemon_alive"] = store.daemon_holds(run.account)
        finally:
            store.close()
    con = console()
    if as_json:
        print(dumps(data))
        return
    params = ", ".join(f"{k}={v}" for k, v in (data.get("params") or {}).items())
    account = f"; account {data['account']}" if data.get("account") else ""
    con.print(f"[bold]run {data['run_id']}[/] ({data['mode']}, {data['status']}): "
              + escape(f"{data['strategy']}({params}) / {data['preset']} on "
                       f"{', '.join(data['symbols'])}{account}"))
    if data["status"] == "running" and data.get("daemon_alive") is False:
        con.print("no daemon holds the account now: the run was killed (kill -9, a crash, "
                  "a reboot); the same `liqbot run` command resumes it", markup=False)
    switch = data.get("kill_switch") or {}
    if switch.get("state") or switch.get("pending"):
        con.print("kill switch: " + "; ".join(
            ([f"{switch['state']} (obeyed)"] if switch.get("state") else []) +
            ([f"{', '.join(switch['pending'])} pending (the daemon reads it within a second, "
              "or at its next start)"] if switch.get("pending") else [])), markup=False)
    # order fills and liquidations apart, as the final line of `liqbot run` says them (a
    # daemon before 2026-12-06 answered `--http` with liquidations among its fills)
    counters = data.get("counters") or {}    # the run's (every life), from its checkpoint
    liqs = data.get("liquidations", counters.get("liquidations", 0))
    more = (f", {_count(liqs, 'liquidation')}" if liqs else "") + "".join(
        f", {_count(counters[k], noun)}{after}" for k, noun, after in EXTRA_COUNTS
        if counters.get(k))
    con.print(f"state [bold]{data['state'] or '- (no bar processed yet)'}[/], equity "
              f"{data['equity']:,.2f}, {_count(data.get('bars_processed', 0), 'bar')}, "
              f"{_count(data['fills'], 'fill')}{more}, {_count(data['decisions'], 'decision')}, "
              f"last bar {data['last_bar'] or '-'}"
              + (f" (feed lag {data['feed_lag_s']:,.1f} s)" if data.get("feed_lag_s") is not None
                 else ""))
    # each symbol's last decision (its text, or its state when no rule bound), then the
    # positions, then each symbol's crowding and nearest clusters: every line names its
    # symbol (a run trades several)
    by_symbol = data.get("by_symbol") or {}
    for sym, d in by_symbol.items():
        con.print(f"{sym} at {d['ts']}: {d['text'] or d['state'] + ': no rule binding'}")
    t = Table("symbol", "leg", "qty", "entry", "liq price", "distance %", "distance ATR")
    for p in data["positions"]:
        t.add_row(p["symbol"], "main" if p["slot"] % 2 == 0 else "hedge", f"{p['qty']:+.6f}",
                  f"{p['entry']:,.2f}", _fmt(p.get("liq_price"), "{:,.2f}"),
                  _fmt(p["liq_distance_pct"], "{:.2f}"), _fmt(p["liq_distance_atr"], "{:.1f}"))
    con.print(t if data["positions"] else "no open position")
    for sym, d in by_symbol.items():
        c, k = d["crowding"], d["clusters"]
        con.print(f"{sym} crowding long {_fmt(c['long'], '{:.2f}')} short "
                  f"{_fmt(c['short'], '{:.2f}')}; nearest clusters below "
                  f"{_fmt(k['below'], '{:,.2f}')} above {_fmt(k['above'], '{:,.2f}')}")


def _remote_status(url: str) -> dict[str, Any]:
    """GET URL/api/status with the bearer token from LIQBOT_HTTP_TOKEN (if set)."""
    import os
    import urllib.error
    import urllib.request

    from bot.runtime.http import TOKEN_ENV
    if not url.startswith(("http://", "https://")):
        raise LiqbotError(f"--http {url!r}: expected a URL like http://127.0.0.1:8080")
    req = urllib.request.Request(url.rstrip("/") + "/api/status")
    token = os.environ.get(TOKEN_ENV)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 (http/https only)
            data: dict[str, Any] = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        hint = f" (set {TOKEN_ENV})" if exc.code == 401 else ""
        raise LiqbotError(f"--http {url}: HTTP {exc.code}{hint}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise LiqbotError(f"--http {url}: cannot read the status "
                          f"({getattr(exc, 'reason', None) or type(exc).__name__})") from None
    return data


def _fmt(v: Any, f: str) -> str:
    return "-" if v is None else f.format(v)


def halt_command(
    ctx: typer.Context,
    flatten: Annotated[bool, typer.Option("--flatten", help="also close every position")]
    = False,
    resume: Annotated[bool, typer.Option("--resume", help="lift a halt")] = False,
    store_url: Annotated[str | None, typer.Option("--store", help="default: config store.url")]
    = None,
    run_id: Annotated[str | None, typer.Option(
        "--run", help="default: the newest run of the config's account (mode:exchange)")] = None,
    wait: Annotated[float, typer.Option("--wait", help="seconds to wait for the daemon")] = 5.0,
) -> None:
    """Kill switch: the running daemon of the config's account stops trading (reduce-only;
    --flatten closes everything) within a second, and records it."""
    check_number(wait, "--wait", 0, 3600)
    if flatten and resume:
        raise LiqbotError("--flatten and --resume contradict each other")
    store, run, _ = _store_and_run(store_url, ctx, run_id)
    try:
        kind = "resume" if resume else "flatten" if flatten else "halt"
        cid = store.push_command(kind, run.run_id)
        # no daemon holds the account (stopped, done, killed): nothing to wait for
        alive = store.daemon_holds(run.account)
        deadline = time.monotonic() + (max(0.0, wait) if alive else 0.0)
        obeyed = False
        while time.monotonic() < deadline:
            if not any(c.id == cid for c in store.pending_commands(run.run_id)):
                obeyed = True
                break
            time.sleep(0.1)
    finally:
        store.close()
    con = console()
    if obeyed:
        con.print(f"{kind}: obeyed by run {run.run_id} (account {run.account})", markup=False)
    else:
        con.print(f"{kind}: recorded for run {run.run_id} (account {run.account}); "
                  + (f"the running daemon had not obeyed it within {wait:g} s (it will when "
                     "it next reads its commands, or at its next start)" if alive else
                     "no daemon is running on the account: its next start obeys it"),
                  markup=False)


def register(app: typer.Typer) -> None:
    app.command("run", short_help="Run the trading daemon (paper by default; exchange feed "
                "or --replay).")(run_command)
    app.command("status", short_help="The daemon's state, positions, last decision and "
                "why.")(status_command)
    app.command("halt", short_help="Kill switch: stop (or flatten) the running daemon within "
                "a second.")(halt_command)
