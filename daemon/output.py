"""The real-time shell around the scheduler: a loop timer sends each message when it is due.

The event loop's timers (`loop.call_at`, on `time.monotonic`) fire up to a millisecond late:
epoll rounds its timeout up to whole milliseconds. So the timer is armed `EARLY_S` before the
message is due and the last stretch is slept precisely (`time.sleep` is a nanosleep), which
blocks the loop for at most `EARLY_S` per timed message: with ripieno's few dozen notes per
second that is a few percent of the loop at most, for jitter well under a millisecond. How
late each message really left is kept in `lateness_us`, so the jitter is measured rather than
assumed (`ripieno bench e2e`, the stop log line).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from ripieno.model.play.scheduler import Scheduler

LATENESS_RING = 4096
EARLY_S = 0.0012  # arm timers this much early; the rest is a precise sleep


class RealtimeOutput:
    """Implements the engine's Output: plans go to the scheduler, due messages to `send`."""

    def __init__(self, scheduler: Scheduler, send: Callable[[list[int]], None], loop: asyncio.AbstractEventLoop) -> None:
        self.scheduler = scheduler
        self.send = send
        self.loop = loop
        self.lateness_us: deque[float] = deque(maxlen=LATENESS_RING)
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at: float | None = None

    def note(self, on: float, off: float, pitch: int, velocity: int) -> None:
        self.scheduler.add(on, off, pitch, velocity)
        self._arm()

    def cut(self) -> None:
        for msg in self.scheduler.cut():
            self.send(msg)
        self._arm()

    def panic(self) -> None:
        for msg in self.scheduler.panic():
            self.send(msg)
        self._arm()

    def _arm(self) -> None:
        t = self.scheduler.next_time()
        if t == self._armed_at and self._timer is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._armed_at = t
        if t is not None:
            self._timer = self.loop.call_at(t - EARLY_S, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._armed_at = None
        due = self.scheduler.next_time()
        if due is not None:
            wait = due - time.monotonic()
            if 0 < wait <= EARLY_S:
                time.sleep(wait)
        for when, msg in self.scheduler.due(time.monotonic()):
            self.lateness_us.append((time.monotonic() - when) * 1e6)
            self.send(msg)
        self._arm()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
