"""MIDI files <-> note events, robust to what real files contain.

Real collections hold running status (mido decodes it), note-ons with velocity 0 meaning
note-off, a key struck again before its note-off (the old note ends where the new one starts),
note-offs that never come (the note lasts to the end of the file), data bytes above 127
(clipped), tempo changes (mido's merged iteration converts ticks to seconds through the tempo
map) and files that are simply broken. One bad file must never stop a run over a folder.
"""

from __future__ import annotations

import logging
from pathlib import Path

import mido
import numpy as np

from ripieno.model.events import COLUMNS, DRUM_CHANNEL
from ripieno.training.pieces import Piece, events_from_notes

log = logging.getLogger(__name__)

MIDI_SUFFIXES = (".mid", ".midi")


class MidiReadError(Exception):
    """A MIDI file that cannot be read; str() names the file and the reason in one line."""


def _open(path: Path) -> mido.MidiFile:
    try:
        return mido.MidiFile(str(path), clip=True)
    except FileNotFoundError as e:
        raise MidiReadError(f"{path}: no such file") from e
    except (OSError, EOFError, ValueError, KeyError, IndexError, TypeError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise MidiReadError(f"{path}: not a readable MIDI file ({reason})") from e


def read_midi(path: str | Path) -> np.ndarray:
    """(N, 5) float32 events of every non-drum channel of a MIDI file, ordered by onset then pitch.

    Times are seconds through the file's tempo map. May be empty (a file with no notes).
    """
    path = Path(path)
    mid = _open(path)
    if mid.type == 2:
        raise MidiReadError(f"{path}: type 2 (independent tracks) MIDI files are not supported")
    notes: list[tuple[float, int, float, int]] = []  # onset, pitch, duration, velocity
    sounding: dict[tuple[int, int], tuple[float, int]] = {}  # (channel, pitch) -> (onset, velocity)
    now = 0.0
    try:
        for msg in mid:  # merged tracks, msg.time = seconds since the previous message
            now += msg.time
            if msg.type not in ("note_on", "note_off") or msg.channel == DRUM_CHANNEL:
                continue
            key = (msg.channel, msg.note)
            started = sounding.pop(key, None)
            if started is not None:  # a note-off, or the same key struck again: the old note ends here
                notes.append((started[0], msg.note, now - started[0], started[1]))
            if msg.type == "note_on" and msg.velocity > 0:
                sounding[key] = (now, msg.velocity)
    except (ValueError, KeyError, IndexError, TypeError, EOFError) as e:
        raise MidiReadError(f"{path}: corrupt track data ({e})") from e
    for (_, pitch), (onset, vel) in sounding.items():  # note-offs that never came
        notes.append((onset, pitch, max(0.0, now - onset), vel))
    if not notes:
        return np.zeros((0, len(COLUMNS)), dtype=np.float32)
    onset, pitch, dur, vel = (np.array(c) for c in zip(*notes, strict=True))
    events, _ = events_from_notes(onset, pitch, dur, vel)
    return events


def midi_files(folder: str | Path) -> list[Path]:
    """Every .mid/.midi under folder, recursively, in a stable order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MidiReadError(f"{folder}: not a directory")
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in MIDI_SUFFIXES)


def read_midi_dir(folder: str | Path) -> list[Piece]:
    """A Piece per readable, non-empty MIDI file under folder; the others skipped with a warning each."""
    folder = Path(folder)
    pieces: list[Piece] = []
    skipped = 0
    for f in midi_files(folder):
        try:
            events = read_midi(f)
        except MidiReadError as e:
            log.warning("skipped %s", e)
            skipped += 1
            continue
        if len(events) == 0:
            log.warning("skipped %s: no notes", f)
            skipped += 1
            continue
        pieces.append(Piece(f.relative_to(folder).as_posix(), str(folder), events))
    if skipped:
        log.warning("%d of %d MIDI files skipped (broken or empty)", skipped, skipped + len(pieces))
    return pieces


def write_midi(path: str | Path, events: np.ndarray, channel: int = 0, bpm: float = 120.0, ticks_per_beat: int = 480) -> None:
    """Write (N, 5) events as a one-track MIDI file (e.g. a prompt and its continuation)."""
    ev = np.asarray(events, dtype=np.float64).reshape(-1, len(COLUMNS))
    tempo = mido.bpm2tempo(bpm)
    onset = np.cumsum(ev[:, 1])
    to_tick = lambda s: int(round(mido.second2tick(float(s), ticks_per_beat, tempo)))  # noqa: E731
    # (tick, order, msg): at one tick the offs of earlier notes go first so a re-struck key
    # sounds again, then the note-ons, then the offs of zero-length notes
    timeline = []
    for t, row in zip(onset, ev, strict=True):
        pitch, vel = int(np.clip(row[0], 0, 127)), int(np.clip(row[3], 1, 127))
        on, off = to_tick(t), to_tick(t + max(0.0, row[2]))
        timeline.append((on, 1, mido.Message("note_on", channel=channel, note=pitch, velocity=vel)))
        timeline.append((max(off, on), 0 if off > on else 2, mido.Message("note_off", channel=channel, note=pitch, velocity=0)))
    timeline.sort(key=lambda x: (x[0], x[1]))
    track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=tempo, time=0)])
    last = 0
    for tick, _, msg in timeline:
        track.append(msg.copy(time=tick - last))
        last = tick
    track.append(mido.MetaMessage("end_of_track", time=0))
    mid = mido.MidiFile(type=1, ticks_per_beat=ticks_per_beat)
    mid.tracks.append(track)
    mid.save(str(path))
