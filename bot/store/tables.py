"""The store's tables (schema version 4: `bot.store.schema`) as sqlmodel classes.

Units: timestamps int64 ms UTC (BigInteger: PostgreSQL's INTEGER is 32-bit), qty base
(signed: + long, - short), prices quote/base, notionals and money quote. Every table has a
natural primary key, so re-inserting a row a crash already made durable is a no-op.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, LargeBinary, Table
from sqlmodel import Field, SQLModel


class Meta(SQLModel, table=True):
    """Key/value facts about the store itself (`schema_version`)."""

    __tablename__ = "meta"
    key: str = Field(primary_key=True)
    value: str


class Run(SQLModel, table=True):
    """One daemon run: what it trades and with which settings (never secrets)."""

    __tablename__ = "runs"
    run_id: str = Field(primary_key=True)
    created_ms: int = Field(sa_type=BigInteger)
    mode: str                                   # paper | live
    account: str                                # account key (exchange:label), not a credential
    symbols: list[str] = Field(default_factory=list, sa_type=JSON)
    strategy: str = ""
    params: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    preset: str = ""
    wallet: float = 0.0                         # starting wallet, quote
    status: str = "running"
    config: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)


class Watermark(SQLModel, table=True):
    """The last bar (open time) fully processed for a symbol of a run."""

    __tablename__ = "watermarks"
    run_id: str = Field(primary_key=True)
    symbol: str = Field(primary_key=True)
    bar_ts: int = Field(sa_type=BigInteger)


class Checkpoint(SQLModel, table=True):
    """The daemon's opaque state snapshot (account arrays, engine state, pending orders)."""

    __tablename__ = "checkpoints"
    run_id: str = Field(primary_key=True)
    bar_ts: int = Field(sa_type=BigInteger)
    blob: bytes = Field(sa_type=LargeBinary)


class Decision(SQLModel, table=True):
    """One risk decision per run, symbol and bar; `numbers` holds the decision vector."""

    __tablename__ = "decisions"
    run_id: str = Field(primary_key=True)
    symbol: str = Field(primary_key=True)
    bar_ts: int = Field(primary_key=True, sa_type=BigInteger)
    state: int
    reasons: int                                # bit mask of bot.risk.engine.R_*
    text: str = ""
    target_notional: float | None = None        # quote, signed
    allowed_notional: float | None = None       # quote, signed
    numbers: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)


class Intent(SQLModel, table=True):
    """An order intent, durable before the order is sent; `client_id` is its exchange id."""

    __tablename__ = "intents"
    __table_args__ = (Index("ix_intents_run_status", "run_id", "status"),)
    client_id: str = Field(primary_key=True, max_length=36)
    run_id: str
    symbol: str
    bar_ts: int = Field(sa_type=BigInteger)
    slot: int = 0
    qty: float                                  # base, signed
    reduce_only: bool = False
    order_type: str = "market"
    price: float | None = None                  # limit price quote/base (v2); None = market
    status: str = "new"                         # new|sent|filled|partial|cancelled|rejected
    filled_qty: float = 0.0                     # base, signed like qty
    reason: str | None = None                   # why it was closed unfilled (v4), e.g. data end
    created_ms: int = Field(sa_type=BigInteger)
    updated_ms: int = Field(sa_type=BigInteger)


class Fill(SQLModel, table=True):
    """One execution (exchange trade id or the paper broker's id)."""

    __tablename__ = "fills"
    # an intent's filled quantity is summed over its fills (bot.store.store)
    __table_args__ = (Index("ix_fills_client_id", "client_id"),)
    fill_id: str = Field(primary_key=True)
    client_id: str
    run_id: str
    symbol: str
    ts: int = Field(sa_type=BigInteger)
    qty: float                                  # base, signed
    price: float                                # quote/base
    fee: float = 0.0                            # quote, + paid
    liquidation: bool = False
    slippage: float = 0.0                       # quote


class Position(SQLModel, table=True):
    """Latest position of a slot (upserted)."""

    __tablename__ = "positions"
    run_id: str = Field(primary_key=True)
    symbol: str = Field(primary_key=True)
    slot: int = Field(primary_key=True)
    qty: float                                  # base, signed
    entry: float = 0.0                          # quote/base
    liq_price: float | None = None              # quote/base; None = none
    updated_ms: int = Field(sa_type=BigInteger)


class EquityPoint(SQLModel, table=True):
    """Account equity = wallet + unrealised PnL (quote) at a time."""

    __tablename__ = "equity"
    run_id: str = Field(primary_key=True)
    ts: int = Field(primary_key=True, sa_type=BigInteger)
    equity: float
    wallet: float
    upnl: float


class FundingPayment(SQLModel, table=True):
    """A funding settlement applied to the account (payment quote, + paid, - received)."""

    __tablename__ = "funding"
    run_id: str = Field(primary_key=True)
    symbol: str = Field(primary_key=True)
    ts: int = Field(primary_key=True, sa_type=BigInteger)
    rate: float                                 # per interval
    mark: float                                 # quote/base
    payment: float                              # quote


class Event(SQLModel, table=True):
    """A notable happening; `event_key` (caller-given) makes replays idempotent."""

    __tablename__ = "events"
    run_id: str = Field(primary_key=True)
    event_key: str = Field(primary_key=True)
    ts: int = Field(sa_type=BigInteger)
    kind: str
    message: str
    data: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)


class Command(SQLModel, table=True):
    """An operator command for a daemon (`run_id` None = any run)."""

    __tablename__ = "commands"
    id: int | None = Field(default=None, primary_key=True)
    run_id: str | None = None
    created_ms: int = Field(sa_type=BigInteger)
    kind: str                                   # halt | flatten | resume
    consumed_ms: int | None = Field(default=None, sa_type=BigInteger)


class Holder(SQLModel, table=True):
    """Who holds an account's exclusive lock (for the refusal message only; v2)."""

    __tablename__ = "holders"
    account: str = Field(primary_key=True)
    pid: int
    host: str
    started_ms: int = Field(sa_type=BigInteger)


MODELS: tuple[type[SQLModel], ...] = (Meta, Run, Watermark, Checkpoint, Decision, Intent, Fill,
                                      Position, EquityPoint, FundingPayment, Event, Command, Holder)
TABLES: dict[str, Table] = {m.__tablename__: m.__table__ for m in MODELS}  # type: ignore[attr-defined]
MODEL_BY_NAME: dict[str, type[SQLModel]] = {m.__tablename__: m for m in MODELS}  # type: ignore[misc]

COMMAND_KINDS = ("halt", "flatten", "resume")
INTENT_STATUSES = ("new", "sent", "filled", "partial", "cancelled", "rejected")
OPEN_STATUSES = ("new", "sent", "partial")

CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,36}$")


def client_order_id(run_id: str, seq: int) -> str:
    """Deterministic exchange client order id for the `seq`-th intent of a run.

    'lq' + 12 hex of the run id + '-' + seq: at most 35 chars of [A-Za-z0-9_-] (Binance
    allows 36), the same on every restart, distinct across runs.
    """
    if seq < 0:
        raise ValueError(f"intent sequence must be >= 0, got {seq}")
    return f"lq{hashlib.blake2b(run_id.encode(), digest_size=6).hexdigest()}-{seq}"
