"""Timed note output and the open-note tracker: the one place that decides what is sounding.

Pure: it never sends and never reads a clock. `due(now)` returns the messages whose time has
come, `cut`/`panic` return the messages that silence ripieno at once; `performance.Performance`
hands them to its host (real-time: `daemon/output.py`, virtual: `run_virtual`), which sends or records them. Every note-on that leaves
here is tracked until its note-off has left too, so a panic can always close it.

Same pitch twice on one channel cannot both sound in MIDI: a new note cuts the old one short.
More than `max_polyphony` notes at once: the oldest sounding note is cut short (voice stealing).
"""

from __future__ import annotations

from dataclasses import dataclass

ALL_SOUND_OFF, RESET_CONTROLLERS, ALL_NOTES_OFF, SUSTAIN = 120, 121, 123, 64


@dataclass(slots=True)
class Planned:
    on: float
    off: float
    pitch: int
    velocity: int
    started: bool = False


Timed = tuple[float, list[int]]  # (when it was due, MIDI bytes)


class Scheduler:
    def __init__(self, channel: int, max_polyphony: int = 64) -> None:
        self.channel = channel  # 0-15
        self.max_polyphony = max_polyphony
        self.planned: list[Planned] = []
        self.open: set[int] = set()  # pitches ripieno has switched on and not yet off

    def _on(self, p: Planned) -> list[int]:
        return [0x90 | self.channel, p.pitch, p.velocity]

    def _off(self, pitch: int) -> list[int]:
        return [0x80 | self.channel, pitch, 0]

    def add(self, on: float, off: float, pitch: int, velocity: int) -> None:
        """Plan a note; where it overlaps a planned note of the same pitch, the earlier one ends first."""
        off = max(off, on + 0.005)
        for q in self.planned:
            if q.pitch != pitch:
                continue
            if q.on <= on < q.off:
                q.off = on
            elif on <= q.on < off:
                off = q.on
        if off <= on:
            return
        self.planned.append(Planned(on, off, pitch, max(1, min(127, velocity))))

    def next_time(self) -> float | None:
        times = [p.off if p.started else p.on for p in self.planned]
        return min(times) if times else None

    def _next_due(self, now: float) -> tuple[float, int, Planned] | None:
        """The earliest message due by now: (time, 0 = off / 1 = on, note); offs first at equal times."""
        best: tuple[float, int, Planned] | None = None
        for p in self.planned:
            t, kind = (p.off, 0) if p.started else (p.on, 1)
            if t <= now and (best is None or (t, kind) < best[:2]):
                best = (t, kind, p)
        return best

    def due(self, now: float) -> list[Timed]:
        """Messages due by now, in time order, tracked as sent. A note-on beyond the polyphony
        limit first ends the oldest sounding voice (voice stealing)."""
        out: list[Timed] = []
        while (nxt := self._next_due(now)) is not None:
            t, kind, p = nxt
            if kind == 0:
                self.planned.remove(p)
                self.open.discard(p.pitch)
                out.append((t, self._off(p.pitch)))
                continue
            sounding = [q for q in self.planned if q.started]
            if len(sounding) >= self.max_polyphony:
                oldest = min(sounding, key=lambda q: q.on)
                self.planned.remove(oldest)
                self.open.discard(oldest.pitch)
                out.append((t, self._off(oldest.pitch)))
            p.started = True
            self.open.add(p.pitch)
            out.append((t, self._on(p)))
        return out

    def planned_after(self, t: float) -> int:
        return sum(1 for p in self.planned if p.on >= t)

    def cut(self) -> list[list[int]]:
        """Stop now: forget every planned note, note-off every sounding one."""
        self.planned.clear()
        msgs = [self._off(pitch) for pitch in sorted(self.open)]
        self.open.clear()
        return msgs

    def panic(self) -> list[list[int]]:
        """`cut`, then sustain off, all notes off and all sound off on ripieno's channel."""
        cc = 0xB0 | self.channel
        return self.cut() + [[cc, SUSTAIN, 0], [cc, ALL_NOTES_OFF, 0], [cc, ALL_SOUND_OFF, 0]]
