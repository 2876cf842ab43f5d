"""The daemon's durable store: staged rows committed together, idempotent on replay.

Writes are batched for throughput: `stage*` buffers rows in memory, `commit` writes every
staged row, the watermarks and the checkpoint in ONE transaction. Inserts are
`ON CONFLICT DO NOTHING` on each table's natural key, so a crash that replays bars already
made durable changes nothing. The daemon commits immediately whenever an intent is staged
(`urgent`), before the order is sent. Not thread-safe: one Store per thread/event loop.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, create_engine, event, func, text
from sqlalchemy import select as sql_select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL
from sqlalchemy.exc import (
    ArgumentError,
    DatabaseError,
    InterfaceError,
    NoSuchModuleError,
    OperationalError,
)
from sqlalchemy.pool import StaticPool
from sqlmodel import Session, SQLModel, col, select

from bot.errors import LiqbotError
from bot.store.lock import AccountLock, AdvisoryLock, FileLock
from bot.store.schema import ensure_schema, read_version
from bot.store.tables import (
    CLIENT_ID_RE,
    COMMAND_KINDS,
    INTENT_STATUSES,
    MODEL_BY_NAME,
    OPEN_STATUSES,
    TABLES,
    Checkpoint,
    Command,
    Decision,
    EquityPoint,
    Event,
    Fill,
    FundingPayment,
    Holder,
    Intent,
    Position,
    Run,
    Watermark,
)
from bot.store.urls import mask_url, parse_url, scrub, scrub_config

log = logging.getLogger("liqbot.store")

# tables rows can be staged into (append-only; positions go through stage_position)
STAGEABLE = ("decisions", "intents", "fills", "equity", "funding", "events")
_SCHEMA_LOCK_KEY = 0x6C71626F74  # 'lqbot': serialises concurrent schema creation on PostgreSQL
_DB_ERRORS = (OperationalError, InterfaceError)


def now_ms() -> int:
    """Wall clock, int ms UTC."""
    return time.time_ns() // 1_000_000


def _plain(value: Any) -> Any:
    """JSON-ready copy: numpy scalars/arrays to Python, non-finite floats to None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):                 # numpy scalar or array
        return _plain(value.tolist())
    return value


def _dumps(value: Any) -> str:
    """JSON for JSON columns; NaN/inf become null (PostgreSQL's json rejects them)."""
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError):
        return json.dumps(_plain(value), allow_nan=False, separators=(",", ":"))


class _Spec:
    """Per-table staging facts: column defaults, required columns, float and JSON columns."""

    def __init__(self, name: str) -> None:
        table = TABLES[name]
        model = MODEL_BY_NAME[name]
        self.name = name
        self.columns = frozenset(table.c.keys())
        self.defaults: dict[str, Any] = {}
        self.required: set[str] = set()
        for fname, finfo in model.model_fields.items():
            if finfo.is_required():
                self.required.add(fname)
            elif finfo.default_factory is not None:
                self.defaults[fname] = finfo.default_factory()  # type: ignore[call-arg]
            else:
                self.defaults[fname] = finfo.default
        self.scalar = tuple(c.name for c in table.c if _python_type(c.type) in (int, float, bool))


def _python_type(column_type: Any) -> type | None:
    try:
        return column_type.python_type  # type: ignore[no-any-return]
    except NotImplementedError:
        return None


def _version_or_damaged(conn: Any) -> int | None:
    """`read_version`, with a damaged store as -1 (ensure_schema then words the refusal)."""
    try:
        return read_version(conn)
    except LiqbotError:
        return -1


class Store:
    """Durable store at `url` (`sqlite:///path` or `postgresql+psycopg://...`). With
    `create=False` (status, halt: readers) a database without liqbot's tables is refused,
    not given them: a typo in a database name must not write into someone else's."""

    def __init__(self, url: str, create: bool = True) -> None:
        self._url: URL = parse_url(url)
        self.url = mask_url(self._url)
        self._db_path: Path | None = None
        self._engine = self._create_engine(wal=create)
        self._specs = {name: _Spec(name) for name in STAGEABLE}
        self._staged: dict[str, list[dict[str, Any]]] = {name: [] for name in STAGEABLE}
        self._positions: dict[tuple[str, str, int], dict[str, Any]] = {}
        self._intent_updates: dict[str, dict[str, Any]] = {}
        self._acks: dict[int, int] = {}                  # command id -> consumed_ms
        self._switches: dict[str, str | None] = {}       # run id -> its row's kill_switch
        self._locks: dict[str, AccountLock] = {}
        self._tls = threading.local()                    # .snap: this thread's `snapshot`
        self.run_id: str | None = None
        self.urgent = False                      # an intent is staged: commit before sending
        self._build_statements()
        # DatabaseError: a file that is not a SQLite database, or a damaged one
        try:
            with self._guard("open", DatabaseError), self._write() as conn:
                if self.dialect == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"),
                                 {"k": _SCHEMA_LOCK_KEY})
                if not create and _version_or_damaged(conn) is None:
                    raise LiqbotError(f"no liqbot store at {self.url} (the database has no "
                                      "liqbot tables; nothing was written to it); give the "
                                      "--store a daemon runs with (`liqbot run --store URL`)")
                ensure_schema(conn, self.url)
        except BaseException:
            self._engine.dispose()
            raise

    # ------------------------------------------------------------------ setup

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    def _create_engine(self, wal: bool = True) -> Engine:
        url = self._url
        kwargs: dict[str, Any] = {"json_serializer": _dumps}
        if url.get_backend_name() == "sqlite":
            database = url.database or ""
            if database in ("", ":memory:"):
                kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
            else:
                self._db_path = Path(database).expanduser().resolve()
                try:
                    self._db_path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise LiqbotError(f"store {self.url}: cannot create directory "
                                      f"{self._db_path.parent}: {exc.strerror}") from None
                url = url.set(database=str(self._db_path))
                kwargs["connect_args"] = {"timeout": 30.0}
        else:
            kwargs["pool_pre_ping"] = True
            if "connect_timeout" not in url.query:
                kwargs["connect_args"] = {"connect_timeout": 10}
        try:
            engine = create_engine(url, **kwargs)
        except ImportError as exc:
            raise LiqbotError(f"store {self.url}: database driver missing ({exc.name}); install "
                              "liqbot[postgres] for PostgreSQL") from None
        except (ArgumentError, NoSuchModuleError, ValueError) as exc:
            raise LiqbotError(f"store {self.url}: cannot use this URL: "
                              f"{scrub(str(exc), self._url)}") from None
        if engine.dialect.name == "sqlite":
            _sqlite_events(engine, wal)
        return engine

    def _build_statements(self) -> None:
        ins = sqlite.insert if self.dialect == "sqlite" else postgresql.insert
        self._insert = {name: ins(TABLES[name]).on_conflict_do_nothing() for name in STAGEABLE}

        def upsert(name: str, keys: Sequence[str]) -> Any:
            stmt = ins(TABLES[name])
            cols = [c.name for c in TABLES[name].c if c.name not in keys]
            return stmt.on_conflict_do_update(index_elements=list(keys),
                                              set_={c: stmt.excluded[c] for c in cols})

        self._upsert_position = upsert("positions", ("run_id", "symbol", "slot"))
        self._upsert_watermark = upsert("watermarks", ("run_id", "symbol"))
        self._upsert_checkpoint = upsert("checkpoints", ("run_id",))
        self._upsert_holder = upsert("holders", ("account",))
        intents, fills = TABLES["intents"], TABLES["fills"]
        # an intent's filled quantity is the sum of its fills in the store (this batch's
        # inserts come first in the same transaction): an order executed as several trades,
        # over one bar or several, adds up; a fill staged twice is stored once
        filled = (sql_select(func.coalesce(func.sum(fills.c.qty), 0.0))
                  .where(fills.c.client_id == bindparam("b_client_id")).scalar_subquery())
        commands = TABLES["commands"]
        self._ack = (commands.update()
                     .where(commands.c.id == bindparam("b_id"), commands.c.consumed_ms.is_(None))
                     .values(consumed_ms=bindparam("b_ts")))
        # a reason given replaces the stored one; none given keeps it
        self._update_intent = (intents.update()
                               .where(intents.c.client_id == bindparam("b_client_id"))
                               .values(status=bindparam("b_status"), filled_qty=filled,
                                       updated_ms=bindparam("b_updated_ms"),
                                       reason=func.coalesce(bindparam("b_reason"),
                                                            intents.c.reason)))

    @contextlib.contextmanager
    def _guard(self, action: str, *more: type[Exception]) -> Iterator[None]:
        """Turn connection-level failures (and `more`) into LiqbotError naming the masked URL."""
        try:
            yield
        except (*_DB_ERRORS, *more) as exc:
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
            raise LiqbotError(f"store {self.url}: {action} failed: "
                              f"{scrub(reason[0] if reason else type(exc).__name__, self._url)}"
                              ) from None

    @contextlib.contextmanager
    def _write(self) -> Iterator[Connection]:
        """One write transaction (BEGIN IMMEDIATE on SQLite: no read-to-write upgrade race)."""
        with self._engine.connect() as conn:
            conn = conn.execution_options(liqbot_write=True)
            with conn.begin():
                yield conn

    def _session(self) -> Session:
        return Session(self._engine, expire_on_commit=False)

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Session]:
        """The session of a read: the open `snapshot`'s, else a session of its own."""
        snap = getattr(self._tls, "snap", None)
        if snap is not None:
            yield snap
            return
        with self._session() as s:
            yield s

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """Every read inside the block sees ONE commit: the read methods share one read
        transaction (SQLite: a deferred BEGIN, whose WAL snapshot is fixed at its first
        read; PostgreSQL: REPEATABLE READ, read only) until the block ends; a daemon's
        commits in the meantime are not seen. Re-entrant. `liqbot status` and `/api/status`
        read in one (until 2026-12-06 each figure had its own transaction, and a daemon
        committing in between mixed two commits: 24,844 decisions beside 25,238 bars)."""
        if getattr(self._tls, "snap", None) is not None:
            yield
            return
        with self._guard("read"), self._engine.connect() as conn:
            if self.dialect == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ",
                                              postgresql_readonly=True)
            with conn.begin(), Session(bind=conn, expire_on_commit=False) as s:
                self._tls.snap = s          # per thread: another thread's reads stay its own
                try:
                    yield
                finally:
                    self._tls.snap = None

    # ------------------------------------------------------------------ staging

    def stage(self, table: str | type[SQLModel], row: Mapping[str, Any]) -> None:
        """Buffer one row for `table` (name or model): decisions, intents, fills, equity,
        funding, events. Missing optional columns take their defaults; numpy scalars are
        converted; NaN floats become NULL. An intent sets `urgent`."""
        name = table if isinstance(table, str) else table.__tablename__  # type: ignore[attr-defined]
        spec = self._specs.get(name)
        if spec is None:
            raise ValueError(f"cannot stage into {name!r}; stageable: {', '.join(STAGEABLE)} "
                             "(positions: stage_position)")
        if not spec.required <= row.keys() or not row.keys() <= spec.columns:
            missing = sorted(spec.required - row.keys())
            unknown = sorted(set(row.keys()) - spec.columns)
            raise ValueError(f"{name} row: missing {missing}, unknown {unknown}")
        full = {**spec.defaults, **row}
        for c in spec.scalar:
            v = full[c]
            if v is not None and type(v) not in (int, float, bool):
                full[c] = v = v.item() if hasattr(v, "item") else v
            if type(v) is float and v != v:
                full[c] = None
        if name == "intents":
            if not CLIENT_ID_RE.match(full["client_id"]):
                raise ValueError(f"client_id {full['client_id']!r}: needs 1-36 chars of "
                                 "[A-Za-z0-9_-]")
            if full["status"] not in INTENT_STATUSES:
                raise ValueError(f"intent status {full['status']!r} not in {INTENT_STATUSES}")
            self.urgent = True
        self._staged[name].append(full)

    def stage_position(self, run_id: str, symbol: str, slot: int, qty: float, entry: float,
                       liq_price: float | None, updated_ms: int) -> None:
        """Buffer the latest position of a slot (upsert; last staged wins)."""
        liq = None if liq_price is None or not math.isfinite(float(liq_price)) else float(liq_price)
        self._positions[(run_id, symbol, int(slot))] = {
            "run_id": run_id, "symbol": symbol, "slot": int(slot), "qty": float(qty),
            "entry": float(entry), "liq_price": liq, "updated_ms": int(updated_ms)}

    def stage_intent_update(self, client_id: str, status: str, updated_ms: int,
                            reason: str | None = None) -> None:
        """Buffer a status change of an intent (applied after this batch's inserts); its
        `filled_qty` becomes the sum of the fills stored under its client id. `reason`
        (why it closed without a fill, say) is stored with it; None keeps the stored one."""
        if status not in INTENT_STATUSES:
            raise ValueError(f"intent status {status!r} not in {INTENT_STATUSES}")
        self._intent_updates[client_id] = {"b_client_id": client_id, "b_status": status,
                                           "b_updated_ms": int(updated_ms), "b_reason": reason}

    def pending(self) -> int:
        """Rows staged and not yet committed."""
        return (sum(len(rows) for rows in self._staged.values()) + len(self._positions)
                + len(self._intent_updates) + len(self._acks) + len(self._switches))

    def discard(self) -> int:
        """Drop every staged row (after a commit failure the caller will not retry)."""
        n = self.pending()
        for rows in self._staged.values():
            rows.clear()
        self._positions.clear()
        self._intent_updates.clear()
        self._acks.clear()
        self._switches.clear()
        self.urgent = False
        return n

    def commit(self, watermarks: Mapping[str, int] | None = None, checkpoint: bytes | None = None,
               *, checkpoint_ts: int | None = None, run_id: str | None = None) -> int:
        """Write staged rows + watermarks + checkpoint in ONE transaction; returns rows staged.

        `run_id` defaults to the run of `open_run`. `checkpoint_ts` (bar open time the blob
        describes) defaults to the highest watermark. On failure nothing is written and the
        staged rows are kept (retry or `discard`).
        """
        rid = run_id or self.run_id
        if (watermarks or checkpoint is not None) and rid is None:
            raise ValueError("commit with watermarks/checkpoint needs a run_id (or open_run first)")
        if checkpoint is not None and checkpoint_ts is None:
            if not watermarks:
                raise ValueError("checkpoint needs checkpoint_ts or watermarks")
            checkpoint_ts = max(watermarks.values())
        n = self.pending()
        if n == 0 and not watermarks and checkpoint is None:
            return 0
        with self._guard("commit"), self._write() as conn:
            for name in STAGEABLE:
                rows = self._staged[name]
                if rows:
                    conn.execute(self._insert[name], rows)
            if self._positions:
                conn.execute(self._upsert_position, list(self._positions.values()))
            if self._intent_updates:
                conn.execute(self._update_intent, list(self._intent_updates.values()))
            if watermarks:
                conn.execute(self._upsert_watermark,
                             [{"run_id": rid, "symbol": s, "bar_ts": int(ts)}
                              for s, ts in watermarks.items()])
            if self._acks:
                conn.execute(self._ack, [{"b_id": k, "b_ts": v} for k, v in self._acks.items()])
            for rid_, switch in self._switches.items():
                runs = TABLES["runs"]
                cfg = conn.execute(sql_select(runs.c.config).where(runs.c.run_id == rid_)
                                   ).scalar_one_or_none()
                conn.execute(runs.update().where(runs.c.run_id == rid_)
                             .values(config={**(cfg or {}), "kill_switch": switch}))
            if checkpoint is not None:
                conn.execute(self._upsert_checkpoint,
                             [{"run_id": rid, "bar_ts": int(checkpoint_ts),  # type: ignore[arg-type]
                               "blob": bytes(checkpoint)}])
        self.discard()
        return n

    # ------------------------------------------------------------------ runs

    def open_run(self, mode: str, account: str, symbols: Sequence[str], strategy: str = "",
                 params: Mapping[str, Any] | None = None, preset: str = "", wallet: float = 0.0,
                 config: Mapping[str, Any] | None = None, run_id: str | None = None,
                 created_ms: int | None = None) -> Run:
        """Record a run (or return the existing one with this `run_id`) and make it this
        Store's default run. Secret-looking config keys and URL passwords are masked."""
        if mode not in ("paper", "live"):
            raise LiqbotError(f"run mode must be 'paper' or 'live', got {mode!r}")
        created = now_ms() if created_ms is None else int(created_ms)
        if run_id is None:
            stamp = datetime.fromtimestamp(created / 1000, UTC).strftime("%Y%m%dT%H%M%S")
            run_id = f"{mode}-{stamp}-{os.urandom(3).hex()}"
        row = {"run_id": run_id, "created_ms": created, "mode": mode, "account": account,
               "symbols": list(symbols), "strategy": strategy,
               "params": _plain(dict(params or {})), "preset": preset, "wallet": float(wallet),
               "status": "running", "config": _plain(scrub_config(dict(config or {})))}
        ins = sqlite.insert if self.dialect == "sqlite" else postgresql.insert
        with self._guard("open_run"), self._write() as conn:
            conn.execute(ins(TABLES["runs"]).on_conflict_do_nothing(), [row])
        self.run_id = run_id
        run = self.get_run(run_id)
        assert run is not None
        return run

    def set_run_status(self, run_id: str, status: str) -> None:
        """Change a run's status (running, stopped, halted, ...) immediately."""
        runs = TABLES["runs"]
        with self._guard("set_run_status"), self._write() as conn:
            conn.execute(runs.update().where(runs.c.run_id == run_id).values(status=status))

    def get_run(self, run_id: str) -> Run | None:
        with self._guard("read"), self._reading() as s:
            return s.get(Run, run_id)

    def accounts(self) -> list[str]:
        """The accounts that have runs in this store, sorted."""
        with self._guard("read"), self._reading() as s:
            return sorted(str(a) for a in s.exec(select(Run.account).distinct()).all())

    def latest_run(self, account: str | None = None) -> Run | None:
        """The most recently created run (of `account` when given)."""
        q = select(Run).order_by(col(Run.created_ms).desc(), col(Run.run_id).desc()).limit(1)
        if account is not None:
            q = q.where(Run.account == account)
        with self._guard("read"), self._reading() as s:
            return s.exec(q).first()

    # ------------------------------------------------------------------ restart state

    def load_checkpoint(self, run_id: str) -> tuple[int, bytes] | None:
        """(bar_ts, blob) of the last committed checkpoint, or None."""
        with self._guard("read"), self._reading() as s:
            cp = s.get(Checkpoint, run_id)
        return None if cp is None else (int(cp.bar_ts), bytes(cp.blob))

    def watermarks(self, run_id: str) -> dict[str, int]:
        """symbol -> last processed bar open time."""
        with self._guard("read"), self._reading() as s:
            rows = s.exec(select(Watermark).where(Watermark.run_id == run_id)).all()
        return {w.symbol: int(w.bar_ts) for w in rows}

    def open_intents(self, run_id: str) -> list[Intent]:
        """Intents not yet final (new, sent, partial), oldest first: to reconcile on restart."""
        q = (select(Intent).where(Intent.run_id == run_id, col(Intent.status).in_(OPEN_STATUSES))
             .order_by(col(Intent.created_ms), col(Intent.client_id)))
        return self._all(q)

    def intent(self, client_id: str) -> Intent | None:
        with self._guard("read"), self._reading() as s:
            return s.get(Intent, client_id)

    def intents(self, run_id: str) -> list[Intent]:
        return self._all(select(Intent).where(Intent.run_id == run_id)
                         .order_by(col(Intent.created_ms), col(Intent.client_id)))

    def fills(self, run_id: str) -> list[Fill]:
        return self._all(select(Fill).where(Fill.run_id == run_id)
                         .order_by(col(Fill.ts), col(Fill.fill_id)))

    def decisions(self, run_id: str, since_ts: int | None = None) -> list[Decision]:
        """Decisions of a run, by bar then symbol; `since_ts` keeps bar_ts >= since_ts."""
        q = select(Decision).where(Decision.run_id == run_id)
        if since_ts is not None:
            q = q.where(Decision.bar_ts >= since_ts)
        return self._all(q.order_by(col(Decision.bar_ts), col(Decision.symbol)))

    def last_decisions(self, run_id: str, marks: dict[str, int]) -> dict[str, Decision]:
        """Each symbol's newest decision at or after `marks[symbol]` (its watermark, the
        last bar committed for it; a stale-feed decision is stamped after it, off the bar
        grid), by symbol; a symbol without one is left out."""
        out = {}
        for sym, ts in sorted(marks.items()):
            got = self._all(select(Decision).where(Decision.run_id == run_id,
                                                   Decision.symbol == sym,
                                                   Decision.bar_ts >= int(ts))
                            .order_by(col(Decision.bar_ts).desc()).limit(1))
            if got:
                out[sym] = got[0]
        return out

    def equity(self, run_id: str) -> list[EquityPoint]:
        return self._all(select(EquityPoint).where(EquityPoint.run_id == run_id)
                         .order_by(col(EquityPoint.ts)))

    def funding(self, run_id: str) -> list[FundingPayment]:
        return self._all(select(FundingPayment).where(FundingPayment.run_id == run_id)
                         .order_by(col(FundingPayment.ts), col(FundingPayment.symbol)))

    def events(self, run_id: str) -> list[Event]:
        return self._all(select(Event).where(Event.run_id == run_id)
                         .order_by(col(Event.ts), col(Event.event_key)))

    def positions(self, run_id: str) -> list[Position]:
        return self._all(select(Position).where(Position.run_id == run_id)
                         .order_by(col(Position.symbol), col(Position.slot)))

    def _all(self, query: Any) -> list[Any]:
        with self._guard("read"), self._reading() as s:
            return list(s.exec(query).all())

    # ------------------------------------------------------------------ commands

    def push_command(self, kind: str, run_id: str | None = None, created_ms: int | None = None) -> int:
        """Queue an operator command (halt | flatten | resume); returns its id."""
        if kind not in COMMAND_KINDS:
            raise LiqbotError(f"unknown command {kind!r}; expected one of {', '.join(COMMAND_KINDS)}")
        commands = TABLES["commands"]
        ts = now_ms() if created_ms is None else int(created_ms)
        with self._guard("push_command"), self._write() as conn:
            res = conn.execute(commands.insert().values(run_id=run_id, created_ms=ts, kind=kind))
            return int(res.inserted_primary_key[0])  # type: ignore[index]

    def pending_commands(self, run_id: str) -> list[Command]:
        """Unconsumed commands for this run or for any run, oldest first."""
        q = (select(Command)
             .where(col(Command.consumed_ms).is_(None),
                    (Command.run_id == run_id) | col(Command.run_id).is_(None))
             .order_by(col(Command.id)))
        return self._all(q)

    def stage_ack(self, command_id: int, consumed_ms: int, *, run_id: str | None = None,
                  kill_switch: str | None = None) -> None:
        """Consume a command in the NEXT commit's transaction, with the state it changed
        (the checkpoint): acked apart from it, a kill -9 between the two lost the command.
        `run_id` also writes that run row's `kill_switch` ("halt", "flatten" or None) in
        the same transaction: a run with no checkpoint yet keeps its operator switch there."""
        self._acks[int(command_id)] = int(consumed_ms)
        if run_id is not None:
            self._switches[run_id] = kill_switch

    def ack_staged(self, command_id: int) -> bool:
        """`stage_ack` was called for this command and its commit has not happened yet."""
        return int(command_id) in self._acks

    def ack_command(self, command_id: int, consumed_ms: int | None = None) -> bool:
        """Mark a command consumed; False when it was already consumed or does not exist."""
        commands = TABLES["commands"]
        ts = now_ms() if consumed_ms is None else int(consumed_ms)
        with self._guard("ack_command"), self._write() as conn:
            res = conn.execute(commands.update()
                               .where(commands.c.id == command_id, commands.c.consumed_ms.is_(None))
                               .values(consumed_ms=ts))
            return res.rowcount == 1

    # ------------------------------------------------------------------ status

    def summary(self, run_id: str) -> dict[str, Any]:
        """What `liqbot status` prints: run, row counts (`fills` = every fill row,
        `liquidations` = those of them that are liquidations), last decision/equity,
        positions, watermarks (JSON-ready), all read in one `snapshot`."""
        with self.snapshot():
            run = self.get_run(run_id)
            if run is None:
                raise LiqbotError(f"store {self.url}: no run {run_id!r}")
            with self._guard("read"), self._reading() as s:
                def count(model: Any, *where: Any) -> int:
                    return int(s.exec(select(func.count()).select_from(model)
                                      .where(model.run_id == run_id, *where)).one())

                counts = {"decisions": count(Decision), "intents": count(Intent),
                          "fills": count(Fill), "events": count(Event),
                          "liquidations": count(Fill, col(Fill.liquidation).is_(True)),
                          "open_intents": count(Intent, col(Intent.status).in_(OPEN_STATUSES))}
                last_dec = s.exec(select(Decision).where(Decision.run_id == run_id)
                                  .order_by(col(Decision.bar_ts).desc(), col(Decision.symbol))
                                  .limit(1)).first()
                last_eq = s.exec(select(EquityPoint).where(EquityPoint.run_id == run_id)
                                 .order_by(col(EquityPoint.ts).desc()).limit(1)).first()
                cp = s.get(Checkpoint, run_id)
            marks = self.watermarks(run_id)
            positions = [p.model_dump() for p in self.positions(run_id)]
        return {
            "run": run.model_dump(),
            "counts": counts,
            "last_decision": None if last_dec is None else last_dec.model_dump(),
            "last_equity": None if last_eq is None else last_eq.model_dump(),
            "positions": positions,
            "watermarks": marks,
            "last_watermark": max(marks.values()) if marks else None,
            "checkpoint_ts": None if cp is None else int(cp.bar_ts),
        }

    # ------------------------------------------------------------------ ownership

    def acquire(self, account: str) -> None:
        """Exclusive ownership of `account` in this store until `release`/`close`/death.

        Raises LiqbotError naming the holder when another daemon (process or Store) has it.
        """
        if account in self._locks:
            return
        with self._guard("acquire"):
            lock = self._try_lock(account)
            if lock is None:
                with self._session() as s:
                    h = s.get(Holder, account)
                who = ("an unknown process" if h is None else
                       f"pid {h.pid} on host {h.host}")
                since = "" if h is None else " since " + datetime.fromtimestamp(
                    h.started_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
                raise LiqbotError(f"another liqbot daemon ({who}) holds account {account!r} "
                                  f"in this store ({self.url}){since}; stop it first (or use "
                                  "another account or store)")
            try:
                with self._write() as conn:
                    conn.execute(self._upsert_holder, [{"account": account, "pid": os.getpid(),
                                                        "host": socket.gethostname(),
                                                        "started_ms": now_ms()}])
            except BaseException:
                lock.release()
                raise
        self._locks[account] = lock
        log.info("store %s: acquired account %s", self.url, account)

    def daemon_holds(self, account: str) -> bool:
        """Whether a daemon (another process or Store) holds `account` now: the lock is
        tried and released at once (a killed daemon's lock died with it). No lock file is
        created beside a SQLite store where none was: no daemon ever ran there."""
        if account in self._locks:
            return True
        if self._db_path is not None and not FileLock.path_for(self._db_path, account).exists():
            return False
        with self._guard("read"):
            lock = self._try_lock(account)
        if lock is None:
            return True
        lock.release()
        return False

    def _try_lock(self, account: str) -> AccountLock | None:
        """`account`'s lock if no one else holds it, else None: a file lock beside a SQLite
        file, a session advisory lock on PostgreSQL, a lock private to this Store for an
        in-memory SQLite database."""
        if self._db_path is not None:
            return FileLock.try_acquire(self._db_path, account)
        if self.dialect == "postgresql":
            return AdvisoryLock.try_acquire(self._engine, account)
        return _ProcessLock()

    def release(self, account: str) -> None:
        lock = self._locks.pop(account, None)
        if lock is not None:
            lock.release()

    def close(self) -> None:
        """Release every account lock and the connections. Staged rows are NOT committed."""
        for account in list(self._locks):
            with contextlib.suppress(Exception):
                self.release(account)
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _ProcessLock:
    """In-memory SQLite: the database exists only inside this Store, nobody else can open it."""

    def release(self) -> None:
        return None


def _sqlite_events(engine: Engine, wal: bool = True) -> None:
    """WAL + synchronous=NORMAL (a committed transaction survives a process kill), and
    explicit BEGIN so DDL and DML share transactions (pysqlite's implicit BEGIN skips DDL).
    `wal=False` for a reader (`Store(create=False)`): WAL is a property of the FILE, set by
    the daemon's store when it creates it; setting it from a reader rewrote a foreign
    database before the reader could refuse it."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        if wal:
            cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("liqbot_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
