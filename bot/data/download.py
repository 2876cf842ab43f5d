"""`liqbot data download`: Binance Vision daily/monthly zips, verified against `.CHECKSUM`.

URL layout (data.binance.vision, USD-M futures):
    {base}/data/futures/um/{daily|monthly}/{kind}/{SYMBOL}/[{interval}/]{file}.zip
with `file` = `SYMBOL-1m-2025-10-08` for kline kinds and `SYMBOL-{kind}-2025-10-08`
otherwise; `{file}.zip.CHECKSUM` holds "sha256  {file}.zip". Whole calendar months use the
monthly file, the remaining days the daily ones; fundingRate exists monthly only, metrics
and liquidationSnapshot daily only. Files already present with the right checksum are
skipped (resume); downloads go to a temporary name and are renamed when verified.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import aiohttp
from asyncio_throttle import Throttler

from bot.data.binance_vision import KLINE_KINDS, SPECS, interval_ms
from bot.errors import DataError, LiqbotError

#: A symbol becomes a URL path segment and a file name: letters and digits only.
SYMBOL = re.compile(r"^[A-Z0-9]{2,20}$")

DAILY_ONLY = frozenset({"metrics", "liquidationSnapshot"})
MONTHLY_ONLY = frozenset({"fundingRate"})


@dataclass(frozen=True)
class VisionFileRef:
    """One file to fetch: its URL path (below the base URL) and local file name."""

    period: str      # "daily" | "monthly"
    kind: str
    url_path: str
    name: str


def _month_end(d: date) -> date:
    nxt = (d.replace(day=28) + timedelta(days=4)).replace(day=1)
    return nxt - timedelta(days=1)


def plan(symbol: str, kind: str, interval: str | None, start: date, end: date) -> list[VisionFileRef]:
    """The files covering [start, end] (inclusive dates), monthly where a whole month fits."""
    if kind not in SPECS:
        raise LiqbotError(f"--kind: unknown kind {kind[:40]!r}; expected one of "
                          f"{', '.join(SPECS)}")
    if end < start:
        raise LiqbotError(f"--to {end} is before --from {start}")
    if kind in KLINE_KINDS:
        if interval is None:
            raise LiqbotError(f"--interval is required for {kind}")
        interval_ms(interval, "--interval")
    symbol = symbol.strip().upper()
    if not SYMBOL.fullmatch(symbol):
        raise LiqbotError(f"--symbol: expected a symbol like BTCUSDT (2-20 letters and digits; it "
                          f"becomes a URL and a file name), got {symbol[:40]!r}")
    refs: list[VisionFileRef] = []
    d = start
    while d <= end:
        m_end = _month_end(d)
        whole_month = d.day == 1 and m_end <= end
        use_monthly = kind in MONTHLY_ONLY or (whole_month and kind not in DAILY_ONLY)
        if use_monthly:
            refs.append(_ref(symbol, kind, interval, "monthly", d.strftime("%Y-%m")))
            d = m_end + timedelta(days=1)
        else:
            refs.append(_ref(symbol, kind, interval, "daily", d.isoformat()))
            d += timedelta(days=1)
    return refs


def _ref(symbol: str, kind: str, interval: str | None, period: str, stamp: str) -> VisionFileRef:
    if kind in KLINE_KINDS:
        name = f"{symbol}-{interval}-{stamp}.zip"
        path = f"data/futures/um/{period}/{kind}/{symbol}/{interval}/{name}"
    else:
        name = f"{symbol}-{kind}-{stamp}.zip"
        path = f"data/futures/um/{period}/{kind}/{symbol}/{name}"
    return VisionFileRef(period, kind, path, name)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def parse_checksum(text: str, url: str) -> str:
    """The hex digest from a `.CHECKSUM` file ("<sha256>  <file name>")."""
    token = text.strip().split()[0] if text.strip() else ""
    if len(token) != 64 or any(c not in "0123456789abcdefABCDEF" for c in token):
        raise DataError(url, f"malformed CHECKSUM file: {text.strip()[:80]!r}")
    return token.lower()


def _check_zip(body: bytes, url: str) -> None:
    """A .zip that cannot be read (cut short, an HTML page) is refused here, not at import:
    its .CHECKSUM matching says only that both came from the same place."""
    try:
        with zipfile.ZipFile(io.BytesIO(body)) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise DataError(url, f"not a readable zip archive ({exc}); nothing was written") \
            from None
    if bad is not None:
        raise DataError(url, f"zip member {bad} is damaged (CRC mismatch); nothing was written")


async def _get(session: aiohttp.ClientSession, throttler: Throttler, url: str,
               retries: int) -> bytes:
    delay = 0.5
    for attempt in range(retries + 1):
        async with throttler:
            try:
                async with session.get(url) as resp:
                    if resp.status == 404:
                        raise DataError(url, "not published (HTTP 404): the exchange has no file "
                                             "for this date, kind or symbol")
                    if resp.status >= 500 or resp.status == 429:
                        raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status)
                    if resp.status != 200:
                        raise DataError(url, f"HTTP {resp.status}")
                    return await resp.read()
            except (TimeoutError, aiohttp.ClientError) as exc:
                if attempt == retries:
                    status = getattr(exc, "status", None)
                    why = f"HTTP {status}" if status else type(exc).__name__
                    raise DataError(url, f"download failed after {retries + 1} attempts "
                                         f"({why})") from None
        await asyncio.sleep(delay)
        delay *= 2
    raise AssertionError("unreachable")


async def download(
    refs: list[VisionFileRef], out: Path, base_url: str, *, requests_per_second: float = 5.0,
    timeout_s: float = 30.0, retries: int = 3,
    on_done: Callable[[VisionFileRef, str], None] | None = None,
) -> list[Path]:
    """Fetch and verify every file; returns local paths (out/{kind}/{name}).

    `on_done(ref, status)` is called with status "downloaded" or "present" (progress bars).
    """
    base = base_url.rstrip("/")
    throttler = Throttler(rate_limit=max(1, int(requests_per_second)), period=1.0)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    sem = asyncio.Semaphore(4)

    root = out.resolve()

    async def one(session: aiohttp.ClientSession, ref: VisionFileRef) -> Path:
        dest = out / ref.kind / ref.name
        if not dest.resolve().is_relative_to(root):  # plan() validates; belt and braces
            raise LiqbotError(f"--out: {ref.name!r} would be written outside {out}")
        url = f"{base}/{ref.url_path}"
        async with sem:
            expected = parse_checksum(
                (await _get(session, throttler, url + ".CHECKSUM", retries)).decode(
                    "utf-8", "replace"), url + ".CHECKSUM")
            if dest.is_file() and _sha256(dest) == expected:
                if on_done:
                    on_done(ref, "present")
                return dest
            body = await _get(session, throttler, url, retries)
        got = hashlib.sha256(body).hexdigest()
        if got != expected:
            raise DataError(url, f"checksum mismatch: expected sha256 {expected} (from "
                                 f".CHECKSUM), got {got}")
        if ref.name.endswith(".zip"):
            _check_zip(body, url)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_suffix(dest.suffix + ".part")
        tmp.write_bytes(body)
        tmp.replace(dest)
        if on_done:
            on_done(ref, "downloaded")
        return dest

    async with aiohttp.ClientSession(timeout=timeout) as session:
        return list(await asyncio.gather(*(one(session, r) for r in refs)))
