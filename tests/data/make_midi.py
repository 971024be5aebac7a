"""Writes the small hand-made MIDI files in tests/data/midi (run: python tests/data/make_midi.py).

Written here note by note (nothing from any collection), in the shapes real files take: a song
whose phrases repeat (what online learning is for), a four-voice chorale-like progression on
four channels, and a waltz in 3/4 with melody, bass, a drum channel (to be ignored) and a tempo change.
The song and the chorale carry no time signature (read as 4/4, as files without one are).
"""

from __future__ import annotations

from pathlib import Path

import mido

TPB = 480
HERE = Path(__file__).parent / "midi"


def track(notes: list[tuple[int, float]], channel: int, start: float = 0.0, velocity: int = 80) -> list[tuple[int, mido.Message]]:
    """(tick, message) pairs for (pitch, beats) notes one after another; pitch None = rest."""
    out, beat = [], start
    for pitch, beats in notes:
        if pitch is not None:
            on, off = int(beat * TPB), int((beat + beats) * TPB) - 10
            out.append((on, mido.Message("note_on", channel=channel, note=pitch, velocity=velocity)))
            out.append((off, mido.Message("note_off", channel=channel, note=pitch, velocity=0)))
        beat += beats
    return out


def save(name: str, events: list[tuple[int, mido.Message]], tempos: list[tuple[int, int]], metre: tuple[int, int] | None = None) -> None:
    timed = [(t, 0, mido.MetaMessage("set_tempo", tempo=tempo)) for t, tempo in tempos]
    if metre is not None:
        timed.insert(0, (0, 0, mido.MetaMessage("time_signature", numerator=metre[0], denominator=metre[1])))
    timed += [(t, 1 if m.type == "note_off" else 2, m) for t, m in events]
    timed.sort(key=lambda x: (x[0], x[1]))
    trk, last = mido.MidiTrack(), 0
    for t, _, m in timed:
        trk.append(m.copy(time=t - last))
        last = t
    mid = mido.MidiFile(type=1, ticks_per_beat=TPB)
    mid.tracks.append(trk)
    mid.save(str(HERE / name))


def song() -> None:
    a = [(67, 1), (67, 0.5), (69, 0.5), (71, 1), (67, 1), (72, 1), (71, 0.5), (69, 0.5), (67, 2)]
    a2 = [(67, 1), (67, 0.5), (69, 0.5), (71, 1), (67, 1), (69, 1), (66, 1), (67, 2)]
    b = [(74, 1.5), (72, 0.5), (71, 1), (72, 1), (74, 1), (71, 0.5), (69, 0.5), (67, 2)]
    b2 = [(76, 1), (74, 1), (72, 1), (71, 1), (69, 1), (66, 1), (67, 2)]
    save("song_aabb.mid", track(a + a2 + a + a2 + b + b2 + b + b2, 0), [(0, mido.bpm2tempo(108))])


def chorale() -> None:
    # I IV V I | vi ii V I in G, four voices, half notes, fermata-like long last chord
    sop = [(71, 2), (72, 2), (74, 2), (71, 2), (76, 2), (72, 2), (74, 2), (79, 4)]
    alt = [(67, 2), (67, 2), (66, 2), (67, 2), (67, 2), (69, 2), (66, 2), (71, 4)]
    ten = [(62, 2), (64, 2), (62, 2), (62, 2), (64, 2), (64, 2), (62, 2), (62, 4)]
    bas = [(43, 2), (48, 2), (50, 2), (55, 2), (52, 2), (45, 2), (50, 2), (43, 4)]
    ev = track(sop, 0) + track(alt, 1) + track(ten, 2) + track(bas, 3)
    save("chorale_like.mid", ev + track(sop, 0, start=18) + track(alt, 1, start=18) + track(ten, 2, start=18) + track(bas, 3, start=18), [(0, mido.bpm2tempo(72))])


def waltz() -> None:
    mel = [(72, 2), (76, 1), (79, 2), (76, 1), (77, 2), (74, 1), (71, 3), (72, 2), (76, 1), (79, 2), (84, 1), (83, 1.5), (81, 0.5), (79, 1), (72, 3)]
    bass = []
    for root in (48, 48, 43, 43, 48, 48, 43, 48):
        bass += [(root, 1), (root + 16, 1), (root + 19, 1)]
    drums = track([(42, 1)] * 24, 9, velocity=60)
    save("waltz_two_tempi.mid", track(mel, 0) + track(bass, 1, velocity=60) + drums, [(0, mido.bpm2tempo(150)), (12 * TPB, mido.bpm2tempo(120))], metre=(3, 4))


if __name__ == "__main__":
    HERE.mkdir(parents=True, exist_ok=True)
    song()
    chorale()
    waltz()
