"""A real HTTP server on 127.0.0.1 (random port) in a background thread, for download and
fetch tests. Tests never reach the internet."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web


@contextmanager
def serve(app: web.Application) -> Iterator[str]:
    """Run `app` on 127.0.0.1; yields its base URL."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    box: dict[str, object] = {}

    async def start() -> None:
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        box["runner"] = runner
        box["port"] = runner.addresses[0][1]
        started.set()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10), "test HTTP server did not start"
    try:
        yield f"http://127.0.0.1:{box['port']}"
    finally:
        fut = asyncio.run_coroutine_threadsafe(box["runner"].cleanup(), loop)  # type: ignore[attr-defined]
        fut.result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
