"""`ripieno continue`: the real-time engine run offline on a virtual clock, MIDI file in, MIDI file out.

The prompt's notes are fed to the engine as key presses and releases at their times; the
clock then jumps from one thing to do to the next (a prompt event, an engine wake-up, a
scheduled message), so the run takes milliseconds and the same seed gives the same file.
In call mode the continuation starts after `silence_s` of rest at the prompt's end; in
accompany mode ripieno plays along with the prompt (the file holds both, overlapping).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import mido

from ripieno.model.events import DRUM_CHANNEL
from ripieno.model.play.offline import Note, run_offline

from .config import Config

log = logging.getLogger(__name__)

TICKS_PER_BEAT = 480
TEMPO = 500_000  # microseconds per beat (120 bpm): seconds map to ticks 1:960


class ContinueError(Exception):
    """A prompt or output that cannot be used; str() is the one line for the user."""


def describe(exc: BaseException) -> str:
    """An exception in a few words: its message, or its type's name when it has none (mido's
    `EOFError()` on a cut-off file would otherwise read "()")."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def read_prompt(path: str | Path) -> list[Note]:
    """Every pitched note of a MIDI file (all tracks, tempo map applied, drums skipped), closed.

    Notes still held at the end are closed at the last event; overlapping same-key notes are split.
    """
    try:
        mid = mido.MidiFile(str(path))
        messages = list(mid)
    except FileNotFoundError:
        raise ContinueError(f"{path}: no such file") from None
    except (OSError, EOFError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise ContinueError(f"{path}: not a readable MIDI file ({describe(exc)})") from None
    notes: list[Note] = []
    held: dict[tuple[int, int], tuple[float, int]] = {}
    t = 0.0
    for msg in messages:
        t += msg.time
        if msg.type not in ("note_on", "note_off") or msg.channel == DRUM_CHANNEL:
            continue
        key = (msg.channel, msg.note)
        if key in held:
            t0, vel = held.pop(key)
            notes.append(Note(t0, msg.note, t - t0, vel))
        if msg.type == "note_on" and msg.velocity > 0:
            held[key] = (t, msg.velocity)
    for (_, pitch), (t0, vel) in held.items():
        notes.append(Note(t0, pitch, t - t0, vel))
    if not notes:
        raise ContinueError(f"{path}: no notes to continue")
    return sorted(notes)


def write_midi(path: str | Path, prompt: list[Note], continuation: list[Note], channel: int) -> None:
    """Type-1 file: tempo track, the prompt (channel 1) and ripieno (its channel), every note closed."""
    def seconds_to_ticks(s: float) -> int:
        return int(round(s * 1e6 / TEMPO * TICKS_PER_BEAT))

    def track(name: str, notes: list[Note], ch: int) -> mido.MidiTrack:
        evs: list[tuple[int, int, mido.Message]] = []
        for n in notes:
            on, off = seconds_to_ticks(n.onset), max(seconds_to_ticks(n.onset + n.duration), seconds_to_ticks(n.onset) + 1)
            evs.append((on, 1, mido.Message("note_on", channel=ch, note=n.pitch, velocity=n.velocity)))
            evs.append((off, 0, mido.Message("note_off", channel=ch, note=n.pitch, velocity=0)))
        evs.sort(key=lambda e: (e[0], e[1], e[2].note))
        tr = mido.MidiTrack([mido.MetaMessage("track_name", name=name, time=0)])
        last = 0
        for tick, _, msg in evs:
            tr.append(msg.copy(time=tick - last))
            last = tick
        tr.append(mido.MetaMessage("end_of_track", time=0))
        return tr

    mid = mido.MidiFile(type=1, ticks_per_beat=TICKS_PER_BEAT)
    mid.tracks.append(mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=TEMPO, time=0), mido.MetaMessage("end_of_track", time=0)]))
    mid.tracks.append(track("prompt", prompt, 0))
    mid.tracks.append(track("ripieno", continuation, channel))
    try:
        mid.save(str(path))
    except OSError as exc:
        raise ContinueError(f"{path}: cannot write: {exc}") from None


def main(cfg: Config, prompt_path: str, out_path: str, seconds: float | None, events: int | None,
         seed: int | None, png: str | None) -> int:
    """The command: read, continue, write (and draw); prints a one-line summary on stdout."""
    from .service import load_stream, make_rng, single_thread

    single_thread()
    prompt = read_prompt(prompt_path)
    stream = load_stream(cfg.engine.model)
    rng = make_rng(cfg.engine.seed if seed is None else seed)
    cont = run_offline(prompt, stream, cfg.engine, rng, seconds, events, channel=cfg.midi.channel - 1)
    write_midi(out_path, prompt, cont, cfg.midi.channel - 1)
    if png:
        from .pianoroll import DrawError, draw

        try:
            draw(png, [dataclasses.astuple(n) for n in prompt], [dataclasses.astuple(n) for n in cont])
        except DrawError as exc:
            raise ContinueError(f"{png}: cannot write the piano roll ({out_path} was written): {exc}") from None
    print(f"{out_path}: {len(prompt)} prompt notes + {len(cont)} ripieno notes ({cfg.engine.mode})")
    return 0
