"""The daemon's scheduled jobs: one set of apscheduler triggers, two clocks.

Jobs (see `Daemon.jobs`): positioning polls, stale-feed watchdog, equity snapshots, the
funding-settlement check (00:00, 08:00, 16:00 UTC), the daily summary (00:00 UTC; on the
wall clock a minute later, when the 23:59 bar is in),
reconciliation, and the command poll (kill switch).

- Wall clock (exchange feed, and the command poll in every mode): apscheduler's
  `AsyncIOScheduler`. Every job has `coalesce=True` (runs missed while the loop was busy
  collapse into one run) and `misfire_grace_time` of 30 s (a run later than that is
  skipped: a late equity snapshot or summary is worth less than a correct one), and
  `max_instances=1`. Jobs run as tasks on the event loop (`_guarded`), between the bar
  loop's awaits, never beside it in a thread.
- Simulated clock (replay): `SimulatedScheduler` asks the SAME trigger objects for their
  fire times and runs each due job once per clock advance (the same coalescing), so a
  replayed day gets its funding checks, snapshots and summaries at the simulated times.
  The daemon advances it to a close once every symbol's bar closing then has been
  processed (`Daemon.run_jobs`), never between two symbols' bars of one minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

log = logging.getLogger("liqbot.scheduler")


@dataclass
class Job:
    name: str
    trigger: BaseTrigger
    func: Callable[[], object]
    wall: bool = False            # always on the wall clock (e.g. the command poll)


def every(seconds: float, start: datetime | None = None) -> IntervalTrigger:
    return IntervalTrigger(seconds=seconds, start_date=start, timezone=UTC)


def aligned(seconds: float) -> IntervalTrigger:
    """Every `seconds` on a grid fixed to the Unix epoch (60 s: each minute at :00): the
    same fire times whenever a run starts or resumes, so a resumed replay snapshots at
    the times an uninterrupted one does (anchored at each start, a restart shifted them)."""
    return every(seconds, to_dt(0))


def daily(hour: int = 0, minute: int = 0, second: int = 0) -> CronTrigger:
    return CronTrigger(hour=hour, minute=minute, second=second, timezone=UTC)


def settlements() -> CronTrigger:
    """Binance's 8-hourly funding settlements."""
    return CronTrigger(hour="0,8,16", minute=0, timezone=UTC)


def to_dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


class SimulatedScheduler:
    """Runs jobs at the fire times of their triggers on a clock the caller advances: each
    `advance(now)` runs the jobs due in (previous advance, now], the first window opening
    just AFTER `after_ms` (a run's start, or a resumed run's watermark bar open: a job due
    at the very instant a replay starts has nothing to report, and one due at the open of
    the watermark bar ran before that bar's commit). A job runs at the bar close that
    reaches its time, so after a restart the same bars give the same runs."""

    def __init__(self, jobs: list[Job], after_ms: int) -> None:
        self.jobs = jobs
        first = to_dt(after_ms + 1)           # every trigger here fires on whole seconds
        self._next = {j.name: j.trigger.get_next_fire_time(None, first) for j in jobs}
        self.runs: dict[str, int] = {j.name: 0 for j in jobs}

    def advance(self, now_ms: int) -> None:
        """Run every job due by `now_ms` once (coalescing missed runs), then reschedule it
        at its first fire time after `now_ms`."""
        now = to_dt(now_ms)
        for j in self.jobs:
            due = self._next[j.name]
            if due is None or due > now:
                continue
            while due is not None and due <= now:
                nxt = j.trigger.get_next_fire_time(due, now)
                due = nxt if nxt is None or nxt > due else None
            self._next[j.name] = due
            self._run(j)

    def _run(self, j: Job) -> None:
        self.runs[j.name] += 1
        try:
            j.func()
        except Exception:                     # a job must never stop the trading loop
            log.exception("job %s failed", j.name)


def wall_scheduler(jobs: list[Job]) -> AsyncIOScheduler:
    """An AsyncIOScheduler with the jobs (coalescing and misfire rules: module docstring)."""
    sched = AsyncIOScheduler(timezone=UTC)
    for j in jobs:
        sched.add_job(_guarded(j), j.trigger, id=j.name, coalesce=True, misfire_grace_time=30,
                      max_instances=1)
    return sched


def _guarded(j: Job) -> Callable[[], Coroutine[Any, Any, object]]:
    """The job as a coroutine function: apscheduler's AsyncIOExecutor runs those as tasks on
    the event loop, between the bar loop's awaits. A plain function would run in a worker
    thread, beside the bar loop: a command poll committing the store there discarded the
    rows the bar loop staged meanwhile (lost decisions, intents and fills)."""
    async def run() -> object:
        try:
            return j.func()
        except Exception:
            log.exception("job %s failed", j.name)
            return None
    run.__name__ = j.name
    return run


async def stop_wall(sched: AsyncIOScheduler) -> None:
    """Stop the wall-clock jobs: no new run starts, the runs already handed to the loop
    finish (each is one step: no job awaits), then the scheduler shuts down (cancelling a
    run not yet started is logged by apscheduler as an error with a traceback)."""
    if not sched.running:
        return
    sched.pause()                         # immediate: no job is handed to the loop after it
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(0)            # the runs already handed over take their one step
    sched.shutdown(wait=False)            # deferred to the loop by apscheduler ...
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(0)            # ... so let it run while the loop still lives
