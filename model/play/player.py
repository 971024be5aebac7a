"""What ripieno knows about the player: pulse, dynamics, typical note length, the current phrase.

Robust statistics over the last few notes (medians, not means): one stray long rest or a
chord's near-zero steps should not swing the tempo ripieno answers at.
"""

from __future__ import annotations

import statistics
from collections import deque

CHORD_S = 0.035  # onsets closer than this are one chord, not a beat
WINDOW = 16
SUSTAIN_CC = 64
# A held sustain pedal keeps the phrase sounding, so call mode does not answer over its ring; but
# a foot left resting on the pedal must not silence ripieno for good: this long after the last
# key event, a held pedal stops counting and the rest begins.
PEDAL_RING_S = 3.0


class Player:
    """Running estimates from the player's key presses and releases."""

    def __init__(self) -> None:
        self.iois: deque[float] = deque(maxlen=WINDOW)
        self.velocities: deque[int] = deque(maxlen=WINDOW)
        self.durations: deque[float] = deque(maxlen=WINDOW)
        self.last_onset: float | None = None
        self.last_release: float | None = None
        self.keys: dict[int, float] = {}  # sounding keys: pitch (or a stand-in) -> press time
        self._anonymous = 0
        self.phrase_start: float | None = None  # first onset of the phrase not yet answered
        self.phrase_notes = 0
        self.last_event: float | None = None  # last press or release
        self.pedal_down = False
        self.pedal_up_at: float | None = None  # when the sustain pedal was last lifted
        self.pitches: deque[int] = deque(maxlen=2 * WINDOW)  # recent pitches: the player's register
        self.chord_sizes: deque[int] = deque(maxlen=WINDOW)  # notes per recent onset: the player's texture
        self.last_pitch: int | None = None

    def key_down(self, t: float, velocity: int, pitch: int | None = None) -> None:
        if self.last_onset is not None and CHORD_S <= t - self.last_onset <= 2.0:
            self.iois.append(t - self.last_onset)
        if self.last_onset is None or t - self.last_onset >= CHORD_S:
            self.last_onset = t
            self.chord_sizes.append(1)
        else:
            self.chord_sizes[-1] += 1
        self.velocities.append(velocity)
        if pitch is not None:
            self.pitches.append(pitch)
            self.last_pitch = pitch
        if pitch is None:  # a key without a pitch (tests, old callers): counted on its own
            self._anonymous -= 1
            pitch = self._anonymous
        self.keys[pitch] = t  # pressed again without a release: its note-off was lost, it counts once
        self.last_event = t
        if self.phrase_start is None:
            self.phrase_start = t
        self.phrase_notes += 1

    @property
    def held(self) -> int:
        """Keys sounding now (each key once, however often it was pressed without a release)."""
        return len(self.keys)

    def key_up(self, t: float, held_s: float, pitch: int | None = None) -> None:
        if pitch is not None:
            self.keys.pop(pitch, None)
        elif self.keys:
            self.keys.pop(min(self.keys, key=self.keys.__getitem__))
        self.durations.append(held_s)
        self.last_release = t
        self.last_event = t

    def release_all(self) -> None:
        self.keys.clear()
        self.pedal_down = False

    def release_older(self, t: float) -> list[int]:
        """Count keys pressed before t as released (their note-offs were lost); returns their pitches."""
        old = [k for k, pressed in self.keys.items() if pressed < t]
        for k in old:
            del self.keys[k]
        return old

    def pedal(self, t: float, value: int) -> None:
        """Sustain pedal (CC64): >= 64 is down. Lifting it ends the ring: the rest starts then."""
        down = value >= 64
        if self.pedal_down and not down:
            self.pedal_up_at = t
        self.pedal_down = down

    def ioi(self, default: float = 0.25) -> float:
        """Median inter-onset interval of recent beats (chord notes excluded): the player's pulse."""
        return statistics.median(self.iois) if self.iois else default

    def chord_size(self) -> int:
        """The largest chord among the player's recent onsets (1: a melody): answers keep within it."""
        return max(self.chord_sizes) if self.chord_sizes else 1

    def velocity(self, default: int = 80) -> float:
        return statistics.fmean(self.velocities) if self.velocities else default

    def duration(self, default: float = 0.2) -> float:
        """Typical held time: the duration a note is observed with before its release is known."""
        return statistics.median(self.durations) if self.durations else default

    def rested_since(self) -> float | None:
        """When the current rest began (all keys up and the pedal lifted, or held PEDAL_RING_S past
        the last key event), or None while a key is held or nothing was played."""
        if self.held or self.last_onset is None:
            return None
        rest = max(self.last_onset, self.last_release or self.last_onset)
        if self.pedal_down:
            return rest + PEDAL_RING_S
        if self.pedal_up_at is not None:  # a lift before the last key event changes nothing
            return max(rest, min(self.pedal_up_at, rest + PEDAL_RING_S))
        return rest

    def phrase_length(self) -> float:
        """Seconds from the phrase's first onset to its end (last release, at least the last onset + a note)."""
        if self.phrase_start is None or self.last_onset is None:
            return 0.0
        end = max(self.last_release or 0.0, self.last_onset + self.duration())
        return max(0.0, end - self.phrase_start)

    def close_phrase(self) -> None:
        """The phrase was answered (or abandoned): the next key press starts a new one."""
        self.phrase_start = None
        self.phrase_notes = 0
