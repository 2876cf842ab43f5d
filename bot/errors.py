"""Error types a user can act on.

The CLI turns any `LiqbotError` into exit code 2 and a one-paragraph message (never a
traceback); anything else is a bug and exits 1.
"""

from __future__ import annotations

import re


class LiqbotError(Exception):
    """A problem with the user's input (usage, config, data), not with liqbot itself."""


class UserCodeError(LiqbotError):
    """An error raised in the user's own code (a strategy of theirs): exit 2 naming it;
    `--debug` prints the original traceback (their code, so theirs to read)."""


class ConfigError(LiqbotError):
    """Invalid configuration. `problems` holds one `key.path: expected X, got Y` line each."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} config problem(s):\n{lines}")


class DataError(LiqbotError):
    """Bad market data. Names the file, the row (1-based line in the file) and the column.

    `row` and `column` are None when the problem concerns the file as a whole
    (a truncated zip, a checksum mismatch).
    """

    def __init__(
        self, file: str, problem: str, row: int | None = None, column: str | None = None
    ) -> None:
        self.file = file
        self.row = row
        self.column = column
        self.problem = problem
        where = file
        if row is not None:
            where += f", row {row}"
        if column is not None:
            where += f", column {column}"
        super().__init__(f"{where}: {problem}")


def exc_text(exc: BaseException, limit: int = 200) -> str:
    """An exchange error for messages, logs and events: its type and message, with every
    query string cut (a signed request's URL carries its signature, which can be replayed
    inside the request's recvWindow), at most `limit` characters of message."""
    text = re.sub(r"\?\S*", "?...", str(exc))[:limit]
    return f"{type(exc).__name__}: {text}"
