"""The note event: what the player plays and what ripieno answers, with timing in seconds.

Seconds at the boundary (not ticks or beats) because the daemon lives in wall-clock time;
the encoding decides how the network sees them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

DRUM_CHANNEL = 9  # MIDI channel 10, zero-based: ignored everywhere


class Role(IntEnum):
    PLAYER = 0
    RIPIENO = 1


@dataclass(frozen=True, slots=True)
class NoteEvent:
    """One note. step = seconds since the previous event's onset (0 inside a chord)."""

    pitch: int
    step: float
    duration: float
    velocity: int
    role: Role = Role.PLAYER


# Column order of the float32 arrays that pieces are stored and batched as.
COLUMNS = ("pitch", "step", "duration", "velocity", "role")


def events_to_array(events: Iterable[NoteEvent]) -> np.ndarray:
    """(N, 5) float32 array in COLUMNS order."""
    rows = [(e.pitch, e.step, e.duration, e.velocity, int(e.role)) for e in events]
    return np.asarray(rows, dtype=np.float32).reshape(-1, len(COLUMNS))


def array_to_events(arr: np.ndarray) -> list[NoteEvent]:
    return [NoteEvent(int(r[0]), float(r[1]), float(r[2]), int(r[3]), Role(int(r[4]))) for r in np.asarray(arr)]


def from_onsets(notes: Iterable[tuple[float, int, float, int]], role: Role = Role.PLAYER) -> list[NoteEvent]:
    """Events from (onset_s, pitch, duration_s, velocity) notes, ordered by onset then pitch."""
    ordered = sorted(notes, key=lambda n: (n[0], n[1]))
    out: list[NoteEvent] = []
    prev = None
    for onset, pitch, dur, vel in ordered:
        step = 0.0 if prev is None else max(0.0, onset - prev)
        out.append(NoteEvent(int(pitch), float(step), max(0.0, float(dur)), int(vel), role))
        prev = onset
    return out
