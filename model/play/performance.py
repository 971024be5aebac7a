"""One host for the engine: `Performance` = engine + scheduler behind feed / next_deadline / advance.

Whatever clock drives it — `ripieno continue`'s and eval's virtual one (`run_virtual`), the soak
bench's, the tests' — talks to the engine through these three calls only, so they all play the
same way: `feed(event)` hands over a key press, release or controller at its time,
`next_deadline()` says when the engine next needs a turn (a planned note to sample, a message
due), `advance(t)` gives it that turn and returns the messages that became due by t. The engine
writes into the Performance (it is the engine's Output); every message it produced is returned
by the next host call and appended to `sent` at once unless `keep=False` (a week-long soak keeps
nothing). A host that must play each message the moment it leaves (the real-time shell,
`daemon/output.py`: the monotonic clock, one loop timer and the ports around the same engine)
gives a `sink` instead: it then gets every message as it leaves, with the time it was due (None for
a cut or a panic, which leave at once), including those of engine calls made between host calls
(a setting changed over MQTT panics). `advance` sends what is due before the engine plans and what
became due after, so a due note never waits behind a model step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from .engine import MAX_PLANS_PER_WAKE, Counters, Engine, Settings
from .keys import Event
from .scheduler import Scheduler, Timed
from .tempo import Tempo

MAX_WAKES = 1_000_000  # a bound on one virtual-clock run, far above any real continuation

Sink = Callable[[list[int], "float | None"], None]  # (message, when it was due; None: at once)


class Performance:
    """The engine and its scheduler on a caller's clock (seconds, never going back)."""

    def __init__(
        self,
        settings: Settings,
        stream: Any,
        rng: np.random.Generator,
        *,
        channel: int = 0,
        stats: Counters | None = None,
        tempo: Tempo | None = None,
        max_events: int | None = None,
        answer_len: float | None = None,
        plans_per_wake: int = MAX_PLANS_PER_WAKE,
        keep: bool = True,
        sink: Sink | None = None,
    ) -> None:
        self.clock = 0.0
        self.scheduler = Scheduler(channel, settings.max_polyphony)
        self.keep = keep
        self.sink = sink
        self.sent: list[Timed] = []
        self._new: list[Timed] = []
        self.engine = Engine(settings, stream, self, rng, stats, max_events=max_events, answer_len=answer_len,
                             plans_per_wake=plans_per_wake, tempo=tempo)

    # -------------------------------------------------------------------------------- host API

    def feed(self, event: Event) -> list[Timed]:
        """The player's event at its time (the clock moves there, never back); messages it caused (a cut)."""
        self.clock = max(self.clock, event.t)
        self.engine.handle(event)
        return self._take()

    def next_deadline(self) -> float | None:
        """When the engine next needs `advance` (a note to plan or a message due); None: nothing to do."""
        ts = [t for t in (self.engine.next_wakeup(), self.scheduler.next_time()) if t is not None and math.isfinite(t)]
        return min(ts) if ts else None

    def advance(self, t: float) -> list[Timed]:
        """Let the engine plan up to t and return the messages due by then (those due already leave
        before the engine's model step, the ones it planned for now after it)."""
        self.clock = max(self.clock, t)
        self._emit(self.scheduler.due(self.clock))
        self.engine.poll(self.clock)
        self._emit(self.scheduler.due(self.clock))
        return self._take()

    def close(self) -> list[Timed]:
        """Everything still scheduled leaves now, every sounding note closed."""
        self._emit(self.scheduler.due(math.inf))
        self._emit([(self.clock, m) for m in self.scheduler.cut()], timed=False)
        return self._take()

    def _emit(self, messages: list[Timed], timed: bool = True) -> None:
        """Messages that left (recorded at once: a setting changed between calls panics too).
        timed: they were due at their time (False: a cut or panic, leaving now)."""
        if self.keep:
            self.sent += messages
        sink = self.sink
        if sink is None:
            self._new += messages
            return
        for when, msg in messages:
            sink(msg, when if timed else None)

    def _take(self) -> list[Timed]:
        new, self._new = self._new, []
        return new

    # ------------------------------------------------------------------ the engine's Output side

    def note(self, on: float, off: float, pitch: int, velocity: int) -> None:
        self.scheduler.add(on, off, pitch, velocity)

    def cut(self) -> None:
        self._emit([(self.clock, m) for m in self.scheduler.cut()], timed=False)

    def panic(self) -> None:
        self._emit([(self.clock, m) for m in self.scheduler.panic()], timed=False)


def run_virtual(perf: Performance, inputs: Iterable[Event], until: float = math.inf, on_inputs_done: Any = None) -> None:
    """The virtual clock: jump from one thing to do to the next (an input, the engine's deadline)
    up to `until`. `on_inputs_done()` runs once every input was fed (e.g. the prompt is over)."""
    events = list(inputs)
    i = 0
    done = False
    for _ in range(MAX_WAKES):
        cands = [t for t in (perf.next_deadline(), events[i].t if i < len(events) else None) if t is not None and t <= until]
        if not cands:
            break
        now = max(perf.clock, min(cands))
        while i < len(events) and events[i].t <= now:
            perf.feed(events[i])
            i += 1
        if i == len(events) and not done:
            done = True
            if on_inputs_done is not None:
                on_inputs_done()
        perf.advance(now)
