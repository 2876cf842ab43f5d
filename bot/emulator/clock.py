"""The simulated exchange clock: replays [start_ms, end_ms] at `speed` simulated ms per wall
ms, pausable and movable by hand (the admin endpoint), never past `end_ms`."""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class SimClock:
    """int64 ms UTC simulated time. Running: advances at `speed` x wall time; paused: stands
    still until `advance`/`set`/`resume`. `wall` is injectable for tests."""

    def __init__(self, start_ms: int, end_ms: int, speed: float = 1.0, paused: bool = False,
                 wall: Callable[[], float] = time.monotonic) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self.start_ms, self.end_ms, self.speed = int(start_ms), int(end_ms), float(speed)
        self._wall = wall
        self._base_sim = float(start_ms)
        self._base_wall = wall()
        self.paused = paused

    def now_ms(self) -> int:
        return min(self.unclamped_ms(), self.end_ms)

    def unclamped_ms(self) -> int:
        """Simulated now without the stop at `end_ms`: the time a client of the venue
        lives in, which goes on after the data ends (the venue's market does not)."""
        t = self._base_sim
        if not self.paused:
            t += (self._wall() - self._base_wall) * 1000.0 * self.speed
        return int(t)

    def _rebase(self, sim_ms: float) -> None:
        self._base_sim = float(min(max(sim_ms, self.start_ms), self.end_ms))
        self._base_wall = self._wall()

    def pause(self) -> None:
        self._rebase(self.now_ms())
        self.paused = True

    def resume(self) -> None:
        self._rebase(self.now_ms())
        self.paused = False

    def set(self, sim_ms: int) -> None:
        """Jump to `sim_ms` (clamped to the span); never backwards (no un-happening)."""
        self._rebase(max(sim_ms, self.now_ms()))

    def advance(self, ms: int) -> None:
        self.set(self.now_ms() + int(ms))

    def set_speed(self, speed: float) -> None:
        if not (speed > 0 and math.isfinite(speed)):      # NaN and inf too
            raise ValueError(f"speed must be > 0, got {speed}")
        self._rebase(self.now_ms())
        self.speed = float(speed)

    @property
    def finished(self) -> bool:
        return self.now_ms() >= self.end_ms
