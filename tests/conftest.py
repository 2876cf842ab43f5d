"""Shared fixtures: the real data folder (skipped when absent) and an in-process CLI runner."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot.cli import main

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
