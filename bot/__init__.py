"""liqbot: perpetual-futures trading with liquidation-aware risk controls."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

try:
    __version__ = version("liqbot")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+src"


def _configure_numba_cache() -> None:
    """Point numba's on-disk cache at a directory keyed by the project's sources.

    Numba invalidates a cached kernel when ITS file changes, not when a function it calls
    in another module does: after an edit or an upgrade, the backtest loop could keep
    running an old risk engine. Hashing every source file of bot/, strategies/ and
    backtests/ into the cache path makes any change start from a clean cache (one
    recompilation); identical sources share it. `NUMBA_CACHE_DIR` set by the user wins.
    """
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    here = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for root in (here, here.parent / "strategies", here.parent / "backtests"):
        if root.is_dir():
            for path in sorted(root.rglob("*.py")):
                h.update(str(path.relative_to(root.parent)).encode())
                h.update(path.read_bytes())
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "liqbot" / "numba"
    target = base / h.hexdigest()[:16]
    try:
        target.mkdir(parents=True, exist_ok=True)
        os.utime(target)
        # drop caches of other source versions unused for a day: another process of
        # another version (a second checkout, a running daemon) may still be using one
        cutoff = time.time() - 86_400
        for old in base.iterdir():
            if old != target and old.is_dir() and old.stat().st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True)
    except OSError:
        return                               # read-only home: numba's default applies
    os.environ["NUMBA_CACHE_DIR"] = str(target)
    # numba reads the variable when it is imported; not imported here (0.4 s, and `liqbot
    # --help` needs no numba); imported already (a library user's), set its config too
    numba_config = sys.modules.get("numba.core.config")
    if numba_config is not None:
        numba_config.CACHE_DIR = str(target)


_configure_numba_cache()
