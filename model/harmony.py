"""What the lead part sounds at an onset: the one function training, eval and the daemon share.

An accompaniment has to know which of the player's notes sound *now*, not only which came
before: a third against a held note is consonance, the same pitch a moment after its release
is not. `LeadNotes` keeps the lead (role PLAYER) notes heard so far with their ends, in beats,
and answers for an onset: the 12-bit mask of their pitch classes and the lowest of them. The
encoder computes its `lead` tokens through it for every event; the engine asks it which pitch
classes a note it is about to place would meet.
"""

from __future__ import annotations

CONSONANT = frozenset({0, 3, 4, 7, 8, 9})  # interval classes (abs semitones mod 12): unison/octave, thirds, fifth, sixths


def consonant_with(pitch: int, sounding: list[int] | tuple[int, ...]) -> bool:
    """True when `pitch` makes a consonance (CONSONANT) with every sounding pitch."""
    return all(abs(pitch - q) % 12 in CONSONANT for q in sounding)


class LeadNotes:
    """The lead notes still sounding, as (end, pitch); pruned as onsets move on."""

    __slots__ = ("_notes",)

    def __init__(self) -> None:
        self._notes: list[tuple[float, int]] = []

    def copy(self) -> LeadNotes:
        other = LeadNotes()
        other._notes = list(self._notes)
        return other

    def add(self, onset: float, end: float, pitch: int) -> None:
        """A lead note from onset to end (same clock or beat axis as the queries)."""
        self._notes = [(e, p) for e, p in self._notes if p != pitch]  # one key sounds once
        self._notes.append((max(end, onset), int(pitch)))

    def release(self, pitch: int, t: float) -> None:
        """The note of `pitch` ended at t (its real release, when known later than its estimate)."""
        self._notes = [(min(e, t) if p == pitch else e, p) for e, p in self._notes]

    def pitches(self, t: float) -> list[int]:
        """Lead pitches sounding at t (a note ending exactly at t no longer sounds)."""
        self._notes = [(e, p) for e, p in self._notes if e > t]
        return [p for _, p in self._notes]

    def at(self, t: float) -> tuple[int, int]:
        """(pitch-class mask, lowest sounding pitch class or -1) at t."""
        ps = self.pitches(t)
        if not ps:
            return 0, -1
        mask = 0
        for p in ps:
            mask |= 1 << (p % 12)
        return mask, min(ps) % 12
