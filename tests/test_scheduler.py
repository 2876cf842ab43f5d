"""The daemon's schedules: the same apscheduler triggers on the wall clock (freezegun) and on
the replay clock (SimulatedScheduler)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from freezegun import freeze_time

from bot.runtime import scheduler as sc

DAY = 86_400_000
T0 = int(datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC).timestamp() * 1000)   # 00:00:30 UTC


def test_simulated_clock_fires_at_the_trigger_times_and_coalesces():
    runs: dict[str, list[int]] = {"daily": [], "settle": [], "min": []}
    clock = {"now": T0}
    jobs = [sc.Job("daily", sc.daily(), lambda: runs["daily"].append(clock["now"])),
            sc.Job("settle", sc.settlements(), lambda: runs["settle"].append(clock["now"])),
            sc.Job("min", sc.every(60, sc.to_dt(T0)), lambda: runs["min"].append(clock["now"]))]
    sim = sc.SimulatedScheduler(jobs, T0)
    # three days of 1m bar closes
    for k in range(1, 3 * 1440 + 1):
        clock["now"] = T0 + k * 60_000
        sim.advance(clock["now"])
    day0 = T0 - 30_000
    assert runs["daily"] == [day0 + d * DAY + 30_000 for d in (1, 2, 3)]
    settle = [day0 + h * 3_600_000 + 30_000 for h in range(8, 3 * 24 + 1, 8)]
    assert runs["settle"] == settle                      # 08:00, 16:00, 00:00 ... 9 times
    assert len(runs["min"]) == 3 * 1440                  # once per simulated minute
    # a jump over many fire times runs each job ONCE (coalescing), then reschedules after it
    jumped: list[int] = []
    sim2 = sc.SimulatedScheduler([sc.Job("settle", sc.settlements(),
                                         lambda: jumped.append(1))], T0)
    sim2.advance(T0 + 2 * DAY)
    assert jumped == [1]
    sim2.advance(T0 + 2 * DAY + 8 * 3_600_000)
    assert jumped == [1, 1]


def test_a_failing_job_never_stops_the_others(caplog):
    ran: list[str] = []

    def boom() -> None:
        raise RuntimeError("job failure")

    sim = sc.SimulatedScheduler([sc.Job("boom", sc.every(60, sc.to_dt(T0)), boom),
                                 sc.Job("ok", sc.every(60, sc.to_dt(T0)),
                                        lambda: ran.append("ok"))], T0)
    sim.advance(T0 + 60_000)
    assert ran == ["ok"] and sim.runs["boom"] == 1
    assert any("job boom failed" in r.getMessage() for r in caplog.records)


def test_wall_scheduler_next_run_times_under_freezegun():
    """On the wall clock: the next daily summary, settlement and interval runs, and the
    misfire/coalescing settings every job gets."""
    with freeze_time("2026-03-05 07:59:30", tz_offset=0):
        async def go() -> dict[str, datetime]:
            jobs = [sc.Job("daily", sc.daily(), lambda: None),
                    sc.Job("settle", sc.settlements(), lambda: None),
                    sc.Job("poll", sc.every(300), lambda: None)]
            sched = sc.wall_scheduler(jobs)
            sched.start(paused=True)
            out = {j.id: j.next_run_time for j in sched.get_jobs()}
            for j in sched.get_jobs():
                assert j.coalesce is True and j.misfire_grace_time == 30 and \
                    j.max_instances == 1
            sched.shutdown(wait=False)
            return out

        nxt = asyncio.run(go())
    assert nxt["daily"] == datetime(2026, 3, 6, 0, 0, tzinfo=UTC)
    assert nxt["settle"] == datetime(2026, 3, 5, 8, 0, tzinfo=UTC)
    assert nxt["poll"] == datetime(2026, 3, 5, 8, 4, 30, tzinfo=UTC)


def test_wall_jobs_run_on_the_event_loop_thread_and_stop_without_a_traceback(caplog):
    """A job run in a worker thread (apscheduler's default for a plain function) raced the
    bar loop: the command poll's store commit discarded rows the loop staged meanwhile.
    Jobs now run as tasks on the loop, and stopping leaves no 'Error running job'."""
    import threading

    threads: list[int] = []

    async def main() -> int:
        sched = sc.wall_scheduler([sc.Job("probe", sc.every(0.01),
                                          lambda: threads.append(threading.get_ident()))])
        sched.start()
        while len(threads) < 3:
            await asyncio.sleep(0.005)
        await sc.stop_wall(sched)
        assert not sched.running
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert set(threads) == {loop_thread}
    assert "Error running job" not in caplog.text and "CancelledError" not in caplog.text
