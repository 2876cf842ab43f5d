"""Store URLs: normalise the driver, and mask passwords in everything shown or stored.

A store URL may carry a password (`postgresql+psycopg://user:pw@host/db`). It must never
reach a message, a log line or the database, so every place that names a URL goes through
`mask_url`, and any text that could echo it (a driver's error) through `scrub`.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from bot.errors import LiqbotError

SUPPORTED = "sqlite:///path/to/file.db or postgresql+psycopg://user@host:5432/dbname"

_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s]*)@")
_PW_QUERY = re.compile(r"(?i)(password=)[^&\s]*")
_SECRET_KEY = re.compile(r"(?i)(secret|password|passwd|passphrase|token|api_?key|private)")


def mask_url(url: str | URL) -> str:
    """The URL with its password (userinfo or `password=` query) replaced by ***."""
    text = url.render_as_string(hide_password=False) if isinstance(url, URL) else str(url)
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    return _PW_QUERY.sub(r"\1***", text)


def parse_url(url: str) -> URL:
    """Parse and normalise a store URL; `postgres(ql)://` gets the psycopg (v3) driver.

    Raises LiqbotError naming the masked URL for anything but SQLite or PostgreSQL.
    """
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise LiqbotError(f"store URL {mask_url(url)!r} is not valid ({exc}); expected "
                          f"{SUPPORTED}") from None
    backend = parsed.get_backend_name()
    if backend == "postgres":
        backend = "postgresql"
    if backend == "postgresql":
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        if parsed.query:          # the driver ignores them with a raw SQLAlchemy warning
            raise LiqbotError(f"store URL {mask_url(url)!r}: a SQLite store takes no query "
                              f"options (got {', '.join(sorted(parsed.query))}); expected "
                              "sqlite:///PATH")
        if parsed.drivername != "sqlite":
            parsed = parsed.set(drivername="sqlite")
        return parsed
    raise LiqbotError(f"store URL {mask_url(url)!r}: unsupported database {backend!r}; expected "
                      f"{SUPPORTED}")


def scrub(text: str, url: URL) -> str:
    """Remove the URL's password from free text (a driver error message)."""
    if url.password:
        text = text.replace(str(url.password), "***")
    return mask_url(text)


def scrub_config(value: Any) -> Any:
    """A copy of a config tree with secret-looking keys blanked and URL passwords masked."""
    if isinstance(value, dict):
        return {k: ("***" if isinstance(k, str) and _SECRET_KEY.search(k) and v not in (None, "")
                    else scrub_config(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub_config(v) for v in value]
    if isinstance(value, str) and "://" in value:
        return mask_url(value)
    return value
