"""Where the beat is: the one interface the engine places its beat-relative notes through.

Three sources implement it (`[tempo] source` in config): the player's own onsets
(`beat.BeatTracker`), a DAW's MIDI clock (`ripieno.daemon.clock.MidiClock`) and Ableton Link
(`ripieno.daemon.link.LinkTempo`). Beat positions are continuous beat counts on the source's
own axis (integers are beats); `time_at` and `beat_at` are inverse at the current estimate,
and extrapolate at the current tempo, so a planned note keeps its place while nothing new is
heard. A fixed `SteadyTempo` serves tests and files whose tempo is known.
"""

from __future__ import annotations

import math
from typing import Protocol


class Tempo(Protocol):
    @property
    def tempo_bpm(self) -> float | None:
        """Beats per minute now; None until a beat is known."""

    @property
    def confidence(self) -> float:
        """0..1: how sure the source is of its beat (a clock that runs: 1)."""

    @property
    def bar_beats(self) -> int:
        """Beats per bar; 0 = unknown (the player source does not guess bars)."""

    def beat_at(self, t: float) -> float | None:
        """Continuous beat position at time t (seconds, the caller's clock); None until a beat is known."""

    def time_at(self, beat: float) -> float:
        """The time of beat position `beat` at the current estimate (only valid once a beat is known)."""

    def bar_start(self, beat: float) -> float | None:
        """Beat position of the bar line at or before `beat`; None when bars are unknown."""

    def onset(self, t: float, velocity: int = 64) -> None:
        """A player's key press at t (sources that follow a clock ignore it)."""

    # Optional attribute `hears_player` (bool, default False): the beat is read from the player's
    # own onsets (`BeatTracker`), so it may sit at another metrical level than the player's music;
    # a clock's or Link's beat is the grid itself.


class SteadyTempo:
    """A fixed tempo and phase: beat 0 at `origin` seconds (files of known tempo, tests)."""

    def __init__(self, bpm: float, origin: float = 0.0, bar_beats: int = 0, confidence: float = 1.0) -> None:
        if not (bpm > 0 and math.isfinite(bpm)):
            raise ValueError(f"tempo must be a positive number of beats per minute, got {bpm}")
        self.period = 60.0 / bpm
        self.origin = origin
        self._bar = int(bar_beats)
        self._confidence = confidence

    @property
    def tempo_bpm(self) -> float:
        return 60.0 / self.period

    @property
    def confidence(self) -> float:
        return self._confidence

    @property
    def bar_beats(self) -> int:
        return self._bar

    def beat_at(self, t: float) -> float:
        return (t - self.origin) / self.period

    def time_at(self, beat: float) -> float:
        return self.origin + beat * self.period

    def bar_start(self, beat: float) -> float | None:
        return math.floor(beat / self._bar + 1e-9) * self._bar if self._bar > 0 else None

    def onset(self, t: float, velocity: int = 64) -> None:
        pass
