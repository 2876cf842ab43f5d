"""Shared fixtures: the real data folder (skipped when absent) and an in-process CLI runner."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from bot.cli import main
from bot.store import mask_url

SHARED = Path(os.environ.get("LIQBOT_SHARED_DATA",
                             Path(__file__).resolve().parents[1].parent / "shared" / "data"))
KLINES = SHARED / "binance_um" / "klines_1m"


def shared_file(*parts: str) -> Path:
    """Path under ../shared/data, skipping the test with a reason when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real market data not available at {path} (../shared/data is not beside "
                    "this clone; see README 'Data' for `liqbot data download`)")
    return path


PG_BASE = os.environ.get("LIQBOT_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
_pg_status: list[str | None] = []


def _pg_unavailable() -> str | None:
    """None when PostgreSQL answers, else the skip reason (checked once per session)."""
    if not _pg_status:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            _pg_status.append("psycopg not installed (pip install -e '.[postgres]')")
            return _pg_status[0]
        try:
            engine = create_engine(PG_BASE, connect_args={"connect_timeout": 3})
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            engine.dispose()
            _pg_status.append(None)
        except Exception as exc:  # any failure means: not available here
            first = str(getattr(exc, "orig", exc)).splitlines()[0]
            _pg_status.append(f"PostgreSQL not reachable at {mask_url(PG_BASE)}: {first}")
    return _pg_status[0]


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path):
    """A fresh, empty store URL: a file under tmp_path, or a dedicated PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/nested/dir/liqbot.db"
        return
    reason = _pg_unavailable()
    if reason:
        pytest.skip(reason)
    schema = f"liqbot_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_BASE, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{PG_BASE}?options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    """Run `liqbot ARGS...` in-process; returns exit code and captured output."""
    monkeypatch.setenv("COLUMNS", "200")

    def run(*args: str) -> CliResult:
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:
            code = int(exc.code or 0)
        cap = capsys.readouterr()
        return CliResult(code, cap.out, cap.err)

    return run
