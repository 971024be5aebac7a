"""Following an Ableton Link session: a `Tempo` (ripieno.model.play.tempo) over the `aalink` package.

aalink (`pip install 'ripieno[link]'`, GPL-3.0 like Link itself) wraps Ableton Link for asyncio:
`Link(bpm)` made on a running loop, `.enabled`, `.beat` and `.phase` now, `.tempo`, `.quantum`,
`.num_peers`. Link keeps its own clock; ripieno's callers speak `time.monotonic()`. So each
question samples Link's beat "now" together with the caller's clock and extrapolates at the
session's tempo, which is exactly the protocol's promise (a planned note keeps its place while
nothing new is heard). Samples are reused for SAMPLE_S, so `beat_at` and `time_at` asked
together are exact inverses.

- beat: Link's beat; its phase against the quantum (`[tempo] beats_per_bar`) is shared by every
  peer, so bar lines are the multiples of the quantum.
- tempo_bpm: the session's tempo (ripieno never sets it: it follows).
- confidence: 1 while at least one other peer is in the session, 0 alone: alone, Link's
  timeline is only ripieno's own metronome, which the player cannot hear, and nothing to follow.
- onset: ignored (the beat belongs to the session).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

INITIAL_BPM = 120.0  # the tempo of a session ripieno starts alone; peers that join bring theirs
SAMPLE_S = 0.002  # a sample of Link's beat is reused this long


class LinkTempo:
    """Link's session beat as a Tempo. `link`: an aalink.Link-like object (made here when None)."""

    def __init__(self, bar_beats: int = 4, link: Any = None, now: Callable[[], float] = time.monotonic) -> None:
        if link is None:
            from aalink import Link  # the caller checked it is installed (tempo_source.check)

            link = Link(INITIAL_BPM)  # needs the running loop: aalink resolves futures on it
            link.enabled = True
        self.link = link
        self._bar = int(bar_beats)
        self.link.quantum = self._bar
        self._now = now
        self._sample: tuple[float, float, float] | None = None  # (caller's time, Link beat, bpm)

    def _sampled(self) -> tuple[float, float, float]:
        t = self._now()
        s = self._sample
        if s is not None and 0.0 <= t - s[0] < SAMPLE_S:
            return s
        before = t
        beat = float(self.link.beat)
        after = self._now()
        bpm = float(self.link.tempo)
        self._sample = ((before + after) / 2, beat, bpm)
        return self._sample

    @property
    def tempo_bpm(self) -> float | None:
        bpm = float(self.link.tempo)
        return bpm if bpm > 0 and math.isfinite(bpm) else None

    @property
    def confidence(self) -> float:
        return 1.0 if self.link.enabled and self.link.num_peers > 0 else 0.0

    @property
    def bar_beats(self) -> int:
        return self._bar

    def beat_at(self, t: float) -> float | None:
        t0, beat, bpm = self._sampled()
        if not (bpm > 0 and math.isfinite(bpm)):
            return None
        return beat + (t - t0) * bpm / 60.0

    def time_at(self, beat: float) -> float:
        t0, b0, bpm = self._sampled()
        if not (bpm > 0 and math.isfinite(bpm)):
            raise ValueError("LinkTempo.time_at: the Link session has no tempo")
        return t0 + (beat - b0) * 60.0 / bpm

    def bar_start(self, beat: float) -> float | None:
        return math.floor(beat / self._bar + 1e-9) * self._bar if self._bar > 0 else None

    def onset(self, t: float, velocity: int = 64) -> None:
        """The player's key presses do not move a Link session."""

    def close(self) -> None:
        """Leave the session (no more network traffic)."""
        self.link.enabled = False
