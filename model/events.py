"""The note event: what the player plays and what ripieno answers, with timing in beats.

Beats, not seconds, because music is written and heard against a beat: the daemon's tempo
source turns beats into wall-clock time at the boundary (and back for what the player plays),
so the model is the same at any tempo. Each event also says where it falls in the metre:
`pos` is its position in beats (since the bar line when `bar` > 0, else on any beat axis, of
which only the fraction inside the beat counts), `bar` the bar's length in beats (0: unknown).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

DRUM_CHANNEL = 9  # MIDI channel 10, zero-based: ignored everywhere


class Role(IntEnum):
    """Which part a note belongs to: the lead (the player's melody, or an answer that continues
    it) or the supporting part ripieno plays under the player in accompaniment."""

    PLAYER = 0
    RIPIENO = 1


@dataclass(frozen=True, slots=True)
class NoteEvent:
    """One note. step = beats since the previous event's onset (0 inside a chord)."""

    pitch: int
    step: float
    duration: float
    velocity: int
    role: Role = Role.PLAYER
    pos: float = math.nan
    bar: float = 0.0


# Column order of the float32 arrays that pieces are stored and batched as.
COLUMNS = ("pitch", "step", "duration", "velocity", "role", "pos", "bar")


def events_to_array(events: Iterable[NoteEvent]) -> np.ndarray:
    """(N, 7) float32 array in COLUMNS order."""
    rows = [(e.pitch, e.step, e.duration, e.velocity, int(e.role), e.pos, e.bar) for e in events]
    return np.asarray(rows, dtype=np.float32).reshape(-1, len(COLUMNS))


def array_to_events(arr: np.ndarray) -> list[NoteEvent]:
    return [NoteEvent(int(r[0]), float(r[1]), float(r[2]), int(r[3]), Role(int(r[4])), float(r[5]), float(r[6])) for r in np.asarray(arr)]
