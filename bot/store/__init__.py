"""The daemon's durable store: sqlmodel tables on SQLite (default) or PostgreSQL, batched
idempotent writes, schema versioning and exclusive account ownership."""

from __future__ import annotations

from bot.store.schema import CURRENT_VERSION, MIGRATIONS
from bot.store.store import STAGEABLE, Store, now_ms
from bot.store.tables import (
    COMMAND_KINDS,
    INTENT_STATUSES,
    OPEN_STATUSES,
    Checkpoint,
    Command,
    Decision,
    EquityPoint,
    Event,
    Fill,
    FundingPayment,
    Holder,
    Intent,
    Meta,
    Position,
    Run,
    Watermark,
    client_order_id,
)
from bot.store.urls import mask_url

__all__ = [
    "COMMAND_KINDS", "CURRENT_VERSION", "INTENT_STATUSES", "MIGRATIONS", "OPEN_STATUSES",
    "STAGEABLE", "Checkpoint", "Command", "Decision", "EquityPoint", "Event", "Fill",
    "FundingPayment", "Holder", "Intent", "Meta", "Position", "Run", "Store", "Watermark",
    "client_order_id", "mask_url", "now_ms",
]
