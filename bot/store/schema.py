"""Schema versioning: create an empty store at CURRENT_VERSION, migrate older ones, refuse newer.

`MIGRATIONS[i]` takes a store from version i+1 to i+2 on an open connection; they all run
in the one transaction that opened the store, so a failed migration leaves the old schema.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import Connection, Float, String, inspect, select, text

from bot.errors import LiqbotError
from bot.store.tables import TABLES, Fill, Holder, Intent, Meta

log = logging.getLogger("liqbot.store")


def _v1_to_v2(conn: Connection) -> None:
    """v2: limit price on intents, an index for open-intent lookups, the lock holders table."""
    float_sql = Float().compile(dialect=conn.dialect)
    conn.execute(text(f"ALTER TABLE intents ADD COLUMN price {float_sql}"))
    for index in Intent.__table__.indexes:  # type: ignore[attr-defined]
        index.create(conn, checkfirst=True)
    Holder.__table__.create(conn, checkfirst=True)  # type: ignore[attr-defined]


def _v2_to_v3(conn: Connection) -> None:
    """v3: an index on fills.client_id (an intent's filled quantity is summed over them)."""
    for index in Fill.__table__.indexes:  # type: ignore[attr-defined]
        index.create(conn, checkfirst=True)


def _v3_to_v4(conn: Connection) -> None:
    """v4: `intents.reason`, why an intent was closed without a fill (a replayed symbol's
    data ended before the open it waited for: `cancelled`); NULL for older rows."""
    string_sql = String().compile(dialect=conn.dialect)
    conn.execute(text(f"ALTER TABLE intents ADD COLUMN reason {string_sql}"))


MIGRATIONS: list[Callable[[Connection], None]] = [_v1_to_v2, _v2_to_v3, _v3_to_v4]
CURRENT_VERSION = 1 + len(MIGRATIONS)


def read_version(conn: Connection) -> int | None:
    """The store's schema version, or None for a database without liqbot tables."""
    names = set(inspect(conn).get_table_names())
    if "meta" not in names:
        if names & set(TABLES):
            raise LiqbotError("has liqbot tables but no meta table: not a liqbot store, or a "
                              "damaged one; use another database or schema")
        return None
    row = conn.execute(select(Meta.value).where(Meta.key == "schema_version")).first()  # type: ignore[arg-type]
    if row is None:
        raise LiqbotError("meta table has no schema_version: not a liqbot store, or a damaged one")
    return int(row[0])


def _set_version(conn: Connection, version: int) -> None:
    table = TABLES["meta"]
    done = conn.execute(table.update().where(table.c.key == "schema_version")
                        .values(value=str(version)))
    if done.rowcount == 0:
        conn.execute(table.insert().values(key="schema_version", value=str(version)))


def ensure_schema(conn: Connection, where: str) -> int:
    """Create, migrate or refuse the store on `conn` (inside a transaction); returns the
    version found (0 for a new store). `where` is the masked URL, for messages."""
    try:
        found = read_version(conn)
    except LiqbotError as exc:
        raise LiqbotError(f"store {where}: {exc}") from None
    if found is None:
        for table in TABLES.values():
            table.create(conn, checkfirst=True)
        _set_version(conn, CURRENT_VERSION)
        log.info("store %s: created schema version %d", where, CURRENT_VERSION)
        return 0
    if found > CURRENT_VERSION:
        raise LiqbotError(f"store {where} has schema version {found}, newer than this liqbot "
                          f"understands (version {CURRENT_VERSION}); upgrade liqbot to open it")
    if found < 1:
        raise LiqbotError(f"store {where}: invalid schema version {found}")
    for version in range(found, CURRENT_VERSION):
        log.warning("store %s: migrating schema version %d -> %d", where, version, version + 1)
        MIGRATIONS[version - 1](conn)
        _set_version(conn, version + 1)
    return found
