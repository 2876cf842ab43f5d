"""Exclusive ownership of an account within a store, released by the OS when the holder dies.

SQLite: `flock` on `<db>.lock.<account hash>` beside the database (per open file, so even a
second Store in the same process is refused). PostgreSQL: a session advisory lock on a
dedicated connection kept open; the server drops it when the connection dies (kill -9
closes the socket). The lock is the truth; the `holders` row only names the holder.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path
from typing import Protocol

from sqlalchemy import Connection, Engine, text


def account_hash(account: str) -> str:
    """12 hex chars naming an account in file names and lock keys."""
    return hashlib.sha256(account.encode()).hexdigest()[:12]


class AccountLock(Protocol):
    """A held lock; `release` is idempotent."""

    def release(self) -> None: ...


class FileLock:
    """flock on a file beside the SQLite database."""

    def __init__(self, fd: int, path: Path) -> None:
        self._fd: int | None = fd
        self.path = path

    @staticmethod
    def path_for(db_path: Path, account: str) -> Path:
        """The lock file of `account` beside the database."""
        return db_path.with_name(f"{db_path.name}.lock.{account_hash(account)}")

    @classmethod
    def try_acquire(cls, db_path: Path, account: str) -> FileLock | None:
        """The lock, or None when another open file (any process) holds it."""
        path = cls.path_for(db_path, account)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return cls(fd, path)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class AdvisoryLock:
    """pg_try_advisory_lock held by a dedicated connection for the life of the lock."""

    def __init__(self, conn: Connection, key: int) -> None:
        self._conn: Connection | None = conn
        self.key = key

    @classmethod
    def try_acquire(cls, engine: Engine, account: str) -> AdvisoryLock | None:
        """The lock, or None when another session holds it. The key mixes in the schema, so
        stores in different schemas of one database do not exclude each other."""
        conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            schema = conn.execute(text("SELECT current_schema()")).scalar_one()
            digest = hashlib.sha256(f"liqbot:{schema}:{account}".encode()).digest()
            key = int.from_bytes(digest[:8], "big", signed=True)
            got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar_one()
        except BaseException:
            conn.close()
            raise
        if not got:
            conn.close()
            return None
        return cls(conn, key)

    def release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
            finally:
                self._conn.close()  # the session lock dies with the connection anyway
                self._conn = None
