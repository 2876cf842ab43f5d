"""The daemon's logging: text or JSON lines, and a filter that keeps secrets out.

Every record passes `SecretFilter`, which replaces any known secret value (API key, secret,
passphrase, token from the environment or the credentials file) and URL userinfo with
`***` in the message and its arguments, so not even an exception text can leak one.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from pathlib import Path

from bot.config import SECRET_ENV

_USERINFO = re.compile(r"(\w+://)([^/@\s:]+):([^/@\s]+)@")


class SecretFilter(logging.Filter):
    """Masks secret values and URL passwords in every record."""

    def __init__(self, secrets: list[str] | None = None) -> None:
        super().__init__()
        found = [os.environ.get(v, "") for v in SECRET_ENV.values()]
        self.secrets = sorted({s for s in [*found, *(secrets or [])] if len(s) >= 4},
                              key=len, reverse=True)

    def mask(self, text: str) -> str:
        for s in self.secrets:
            text = text.replace(s, "***")
        return _USERINFO.sub(r"\1\2:***@", text)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.mask(record.getMessage())
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = self.mask(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts (ms UTC), level, logger, msg, and structured extras."""

    EXTRAS = ("symbol", "bar_ts", "reasons")

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": int(record.created * 1000), "level": record.levelname,
               "logger": record.name, "msg": record.getMessage()}
        for k in self.EXTRAS:
            if hasattr(record, k):
                out[k] = getattr(record, k)
        if record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out)


def setup(level: str = "INFO", fmt: str = "text", file: Path | None = None,
          secrets: list[str] | None = None) -> None:
    """Configure the `liqbot` loggers (stderr, plus `file` when given)."""
    root = logging.getLogger("liqbot")
    root.setLevel(level)
    for h in list(root.handlers):
        root.removeHandler(h)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(file, encoding="utf-8"))
    flt = SecretFilter(secrets)
    for h in handlers:
        h.addFilter(flt)
        h.setFormatter(JsonFormatter() if fmt == "json" else
                       logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(h)
    root.propagate = False
