"""Reading a user's JSON file with errors that name the file and the problem."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bot.errors import DataError


def read_json(path: Path, what: str) -> Any:
    """Parsed JSON of `path`; a DataError saying which `what` could not be read and why."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataError(str(path), f"cannot read {what} ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise DataError(str(path), f"not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except UnicodeDecodeError as exc:
        raise DataError(str(path), f"not valid JSON (not UTF-8 text: byte {exc.start})") from None
    except RecursionError:
        raise DataError(str(path), "not valid JSON (nested too deeply)") from None
