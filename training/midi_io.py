"""MIDI files <-> note events, robust to what real files contain.

Real collections hold running status (mido decodes it), note-ons with velocity 0 meaning
note-off, a key struck again before its note-off (the old note ends where the new one starts),
note-offs that never come (the note lasts to the end of the file), data bytes above 127
(clipped), tempo and time-signature changes (events are in beats of the file's metre, read
from ticks and time-signature meta events; seconds go through the tempo map) and files that
are simply broken. One bad file must never stop a run over a folder.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Metre:
    """A file's time signatures as (tick, numerator, denominator), first at tick 0."""

    signatures: tuple[tuple[int, int, int], ...]
    ticks_per_beat: int  # MIDI's "beat" is the quarter note

    def beats(self, tick: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(onset in metre beats, position in the bar in beats, bar length in beats) at each tick.

        Bars are counted from each time signature's tick; the beat is the metre's (a dotted
        quarter in 6/8, 9/8 and 12/8, else the denominator's note), as in the corpus.
        """
        from ripieno.training.corpus import beat_quarters

        t = np.asarray(tick, dtype=np.float64)
        starts = np.array([s[0] for s in self.signatures], dtype=np.float64)
        i = np.clip(np.searchsorted(starts, t, side="right") - 1, 0, len(starts) - 1)
        tpb = float(self.ticks_per_beat)
        beat_t = np.array([beat_quarters(n, d) * tpb for _, n, d in self.signatures])
        bar_t = np.array([n * 4.0 / d * tpb for _, n, d in self.signatures])
        elapsed = np.concatenate([[0.0], np.cumsum(np.diff(starts) / beat_t[:-1])])  # beats at each signature
        since = t - starts[i]
        onset_b = elapsed[i] + since / beat_t[i]
        pos = np.mod(since, bar_t[i]) / beat_t[i]
        return onset_b, pos, bar_t[i] / beat_t[i]


@dataclass
class MidiNotes:
    """Every pitched note of a file: ticks, seconds (through the tempo map) and its track/channel part."""

    tick: np.ndarray
    end_tick: np.ndarray
    onset_s: np.ndarray
    duration_s: np.ndarray
    pitch: np.ndarray
    velocity: np.ndarray
    part: np.ndarray  # 0 = the first track (or channel) with notes: the lead
    metre: Metre
    qpm: float  # the first tempo of the file


def read_notes(path: str | Path) -> MidiNotes:
    """The notes of a MIDI file in ticks and seconds, with its metre and parts. Raises MidiReadError.

    A file without time signature is read as 4/4, and the log says so. Parts: the first track
    that has notes is the lead (part 0) and every other track an accompaniment part; a file of
    one track tells its parts by channel the same way.
    """
    path = Path(path)
    mid = _open(path)
    if mid.type == 2:
        raise MidiReadError(f"{path}: type 2 (independent tracks) MIDI files are not supported")
    raw: list[tuple[int, int, int, int, int, int]] = []  # tick on, tick off, pitch, velocity, track, channel
    sigs: list[tuple[int, int, int]] = []
    tempos: list[tuple[int, int]] = []
    try:
        for k, track in enumerate(mid.tracks):
            tick = 0
            sounding: dict[tuple[int, int], tuple[int, int]] = {}
            for msg in track:
                tick += msg.time
                if msg.type == "time_signature":
                    sigs.append((tick, msg.numerator, msg.denominator))
                elif msg.type == "set_tempo":
                    tempos.append((tick, msg.tempo))
                if msg.type not in ("note_on", "note_off") or msg.channel == DRUM_CHANNEL:
                    continue
                key = (msg.channel, msg.note)
                started = sounding.pop(key, None)
                if started is not None:  # a note-off, or the same key struck again: the old note ends here
                    raw.append((started[0], tick, msg.note, started[1], k, msg.channel))
                if msg.type == "note_on" and msg.velocity > 0:
                    sounding[key] = (tick, msg.velocity)
            for (ch, pitch), (t0, vel) in sounding.items():  # note-offs that never came
                raw.append((t0, tick, pitch, vel, k, ch))
    except (ValueError, KeyError, IndexError, TypeError, EOFError, AttributeError) as e:
        raise MidiReadError(f"{path}: corrupt track data ({e})") from e
    # damaged meta data would otherwise turn into infinite or NaN beats and seconds
    for _, n, d in sigs:
        if not (1 <= n <= 64 and 1 <= d <= 64):
            raise MidiReadError(f"{path}: corrupt time signature (numerator {n}, denominator {d})")
    if any(u <= 0 for _, u in tempos) or mid.ticks_per_beat < 1:
        raise MidiReadError(f"{path}: corrupt tempo or ticks per beat")
    sigs = sorted({s[0]: s for s in sigs}.values())
    if not sigs or sigs[0][0] > 0:
        if not sigs:
            log.info("%s: no time signature, read as 4/4", path)
        sigs.insert(0, (0, 4, 4))
    tempos = sorted(tempos) or [(0, 500_000)]
    if tempos[0][0] > 0:
        tempos.insert(0, (0, 500_000))
    tpb = mid.ticks_per_beat
    metre = Metre(tuple(sigs), tpb)
    qpm = 60e6 / tempos[0][1]
    if not raw:
        z = np.zeros(0)
        return MidiNotes(z, z, z, z, z.astype(np.int64), z.astype(np.int64), z.astype(np.int64), metre, qpm)
    on, off, pitch, vel, track, ch = (np.array(c, dtype=np.int64) for c in zip(*raw, strict=True))
    tracks = sorted(set(track.tolist()), key=lambda k: on[track == k].min())
    if len(tracks) > 1:
        part = (track != tracks[0]).astype(np.int64)
    else:
        chans = sorted(set(ch.tolist()), key=lambda c: on[ch == c].min())
        part = (ch != chans[0]).astype(np.int64)
    seconds = _seconds(tempos, tpb)
    onset_s, end_s = seconds(on), seconds(off)
    return MidiNotes(on, off, onset_s, end_s - onset_s, pitch, vel, part, metre, qpm)


def _seconds(tempos: list[tuple[int, int]], tpb: int):
    """A function ticks -> seconds through a tempo map [(tick, microseconds per beat), ...]."""
    ticks = np.array([t for t, _ in tempos], dtype=np.float64)
    us = np.array([u for _, u in tempos], dtype=np.float64)
    start_s = np.concatenate([[0.0], np.cumsum(np.diff(ticks) * us[:-1] / tpb / 1e6)])

    def f(tick: np.ndarray) -> np.ndarray:
        t = np.asarray(tick, dtype=np.float64)
        i = np.clip(np.searchsorted(ticks, t, side="right") - 1, 0, len(ticks) - 1)
        return start_s[i] + (t - ticks[i]) * us[i] / tpb / 1e6

    return f


def read_midi(path: str | Path) -> np.ndarray:
    """(N, 7) float32 events of every non-drum channel of a MIDI file, in beats of its metre,
    with its parts as roles (the first track or channel is the lead). May be empty."""
    notes = read_notes(path)
    if len(notes.pitch) == 0:
        return np.zeros((0, len(COLUMNS)), dtype=np.float32)
    onset_b, pos, bar = notes.metre.beats(notes.tick)
    end_b, _, _ = notes.metre.beats(notes.end_tick)
    events, _ = events_from_notes(onset_b, notes.pitch, end_b - onset_b, notes.velocity, notes.part, pos, bar)
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


def write_midi(path: str | Path, events: np.ndarray, channel: int = 0, bpm: float = 120.0, ticks_per_beat: int = 480, beat_quarters: float = 1.0) -> None:
    """Write (N, 7) events (beats) as a MIDI file at `bpm` quarter notes per minute: the lead on
    track 1, an accompaniment (role 1) on track 2 and the next channel, a time signature when
    the events know their bar, so `read_midi` gives the same events back."""
    ev = np.asarray(events, dtype=np.float64).reshape(-1, len(COLUMNS))
    tempo = mido.bpm2tempo(bpm)
    onset = np.cumsum(ev[:, 1])
    tpb_beat = ticks_per_beat * beat_quarters
    to_tick = lambda b: int(round(float(b) * tpb_beat))  # noqa: E731
    meta = [mido.MetaMessage("set_tempo", tempo=tempo, time=0)]
    bars = ev[:, 6][ev[:, 6] > 0]
    if len(bars):
        n = int(round(bars[0]))
        num, den = (n * 3, 8) if beat_quarters == 1.5 else (n, int(round(4 / beat_quarters)))
        meta.append(mido.MetaMessage("time_signature", numerator=num, denominator=den, time=0))
        # the first bar line: a pickup starts late in its bar
        first_pos = float(ev[0, 5]) % n if np.isfinite(ev[0, 5]) else 0.0
        onset = onset + first_pos
    mid = mido.MidiFile(type=1, ticks_per_beat=ticks_per_beat)
    for role in (0, 1):
        rows = ev[:, 4] == role
        if role == 1 and not rows.any():
            break
        # (tick, order, msg): at one tick the offs of earlier notes go first so a re-struck key
        # sounds again, then the note-ons, then the offs of zero-length notes
        timeline = []
        ch = (channel + role) % 16
        for t, row in zip(onset[rows], ev[rows], strict=True):
            pitch, vel = int(np.clip(row[0], 0, 127)), int(np.clip(row[3], 1, 127))
            on, off = to_tick(t), to_tick(t + max(0.0, row[2]))
            timeline.append((on, 1, mido.Message("note_on", channel=ch, note=pitch, velocity=vel)))
            timeline.append((max(off, on), 0 if off > on else 2, mido.Message("note_off", channel=ch, note=pitch, velocity=0)))
        timeline.sort(key=lambda x: (x[0], x[1]))
        track = mido.MidiTrack(list(meta) if role == 0 else [])
        last = 0
        for tick, _, msg in timeline:
            track.append(msg.copy(time=tick - last))
            last = tick
        track.append(mido.MetaMessage("end_of_track", time=0))
        mid.tracks.append(track)
    mid.save(str(path))
