"""The engine on a virtual clock: notes in, notes out, in milliseconds and the same for the same seed.

The prompt's notes are fed to the engine as key presses and releases at their times; the
clock then jumps from one thing to do to the next (a prompt event, an engine wake-up, a
scheduled message). `ripieno continue`, `ripieno-train eval` and the tests drive the engine
through `performance.Performance` and its one virtual-clock driver, so what they measure is what
the daemon plays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .engine import Settings
from .keys import Event, KeyDown, KeyUp
from .performance import Performance, run_virtual
from .scheduler import Timed


@dataclass(frozen=True, order=True)
class Note:
    onset: float
    pitch: int
    duration: float
    velocity: int


def prompt_events(notes: list[Note]) -> list[Event]:
    """Notes as the listener would report them: presses and releases, in time order.

    At one instant the releases of earlier notes come first (a key struck again sounds again),
    then the presses, then the releases of notes that last no time at all (a unison of two
    voices on one channel in a DAW export): a press and its release at the same instant are a
    press, then a release, never a key left held.
    """
    evs: list[tuple[float, int, Event]] = []
    for n in notes:
        evs.append((n.onset, 1, KeyDown(n.onset, 0, n.pitch, n.velocity)))
        evs.append((n.onset + n.duration, 0 if n.duration > 0 else 2, KeyUp(n.onset + n.duration, 0, n.pitch, n.duration)))
    evs.sort(key=lambda e: (e[0], e[1]))
    return [e for _, _, e in evs]


def notes_from_messages(sent: list[Timed]) -> list[Note]:
    """Pair note-ons with their note-offs; anything left open is closed at the last message."""
    notes: list[Note] = []
    open_: dict[int, tuple[float, int]] = {}
    end = max((t for t, _ in sent), default=0.0)
    for t, msg in sent:
        kind = msg[0] & 0xF0
        if kind == 0x90 and msg[2] > 0:
            if msg[1] in open_:
                t0, v = open_.pop(msg[1])
                notes.append(Note(t0, msg[1], t - t0, v))
            open_[msg[1]] = (t, msg[2])
        elif kind == 0x80 or kind == 0x90:
            if msg[1] in open_:
                t0, v = open_.pop(msg[1])
                notes.append(Note(t0, msg[1], t - t0, v))
    notes += [Note(t0, p, end - t0, v) for p, (t0, v) in open_.items()]
    return sorted(notes)


def run_offline(
    prompt: list[Note],
    stream: Any,
    settings: Settings,
    rng: np.random.Generator,
    seconds: float | None = None,
    events: int | None = None,
    channel: int = 0,
) -> list[Note]:
    """The continuation ripieno plays after (call) or along with (accompany) the prompt."""
    answer_len = seconds if seconds is not None else (3600.0 if events is not None else None)
    perf = Performance(settings, stream, rng, channel=channel, max_events=events, answer_len=answer_len)
    engine = perf.engine
    silence_s = engine.silence_s
    engine.silence_s = float("inf")  # rests inside the prompt are not the player handing over

    def prompt_over() -> None:
        engine.silence_s = silence_s

    run_virtual(perf, prompt_events(prompt), on_inputs_done=prompt_over)
    perf.close()
    return notes_from_messages(perf.sent)
