"""The real-time shell around the scheduler: a loop timer sends each message when it is due.

The event loop's timers (`loop.call_at`, on `time.monotonic`) fire within about a millisecond
(epoll's timeout resolution); how late each message really left is kept in `lateness_us`
so the jitter is measured rather than assumed (`ripieno bench e2e`, the stop log line).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from .scheduler import Scheduler

LATENESS_RING = 4096


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
            self._timer = self.loop.call_at(t, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._armed_at = None
        for when, msg in self.scheduler.due(time.monotonic()):
            self.lateness_us.append((time.monotonic() - when) * 1e6)
            self.send(msg)
        self._arm()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
