"""The real-time shell of a `Performance`: the monotonic clock, one loop timer, a precise last stretch.

Everything musical happens in `model.play.performance.Performance` (engine + scheduler), the
same object `ripieno continue`, eval and the soak bench drive on a virtual clock; this host adds
only what real time needs. One timer is armed for the performance's next deadline (a note to
plan, a message due). The event loop's timers (`loop.call_at`, on `time.monotonic`) fire up to a
millisecond late: epoll rounds its timeout up to whole milliseconds. So for a message the timer
is armed `EARLY_S` before it is due and the last stretch is slept precisely (`time.sleep` is a
nanosleep), which blocks the loop for at most `EARLY_S` per timed message: with ripieno's few
dozen notes per second that is a few percent of the loop at most, for jitter well under a
millisecond. Messages leave through the performance's sink the moment they are due (before the
engine's model step of the same wake-up); how late each timed one really left is kept in
`lateness_us`, so the jitter is measured rather than assumed (`ripieno bench e2e`, the stop figures).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from ripieno.model.play.keys import Event
from ripieno.model.play.performance import Performance

LATENESS_RING = 4096
EARLY_S = 0.0012  # arm timers this much early for a message; the rest is a precise sleep


class RealtimeHost:
    """Drives a Performance on the monotonic clock; every message goes to `send` as it leaves."""

    def __init__(self, perf: Performance, send: Callable[[list[int]], None], loop: asyncio.AbstractEventLoop) -> None:
        self.perf = perf
        self.send = send
        self.loop = loop
        self.lateness_us: deque[float] = deque(maxlen=LATENESS_RING)
        self.stopped = False  # no more wake-ups (the session is silencing itself)
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at: float | None = None
        perf.sink = self._leave

    def _leave(self, msg: list[int], due: float | None) -> None:
        if due is not None:
            self.lateness_us.append((time.monotonic() - due) * 1e6)
        self.send(msg)

    def feed(self, event: Event) -> None:
        """A key or controller event at its (input-stamped) time; a cut it causes leaves at once."""
        self.perf.feed(event)

    def advance(self) -> None:
        """Give the performance its turn now (what is due leaves, the engine plans)."""
        self.perf.advance(time.monotonic())

    def arm(self) -> None:
        """One timer for the next deadline; call after anything that may have changed it."""
        t = None if self.stopped else self.perf.next_deadline()
        if t is not None and t == self.perf.scheduler.next_time():
            t -= EARLY_S  # a message: wake early, sleep the rest precisely
        if t == self._armed_at and self._timer is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._armed_at = t
        if t is not None:
            self._timer = self.loop.call_at(max(t, self.loop.time()), self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._armed_at = None
        due = self.perf.scheduler.next_time()
        if due is not None:
            wait = due - time.monotonic()
            if 0 < wait <= EARLY_S:
                time.sleep(wait)
        self.advance()
        self.arm()

    def close(self) -> None:
        self.stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
