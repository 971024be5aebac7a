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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mido
import numpy as np

from ripieno.model.events import DRUM_CHANNEL

from .config import Config
from .engine import Engine
from .listener import Event, KeyDown, KeyUp
from .scheduler import Scheduler, Timed

log = logging.getLogger(__name__)

TICKS_PER_BEAT = 480
TEMPO = 500_000  # microseconds per beat (120 bpm): seconds map to ticks 1:960
MAX_WAKES = 1_000_000  # a bound on the virtual-clock loop, far above any real continuation


class ContinueError(Exception):
    """A prompt or output that cannot be used; str() is the one line for the user."""


@dataclass(frozen=True, order=True)
class Note:
    onset: float
    pitch: int
    duration: float
    velocity: int


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
        raise ContinueError(f"{path}: not a readable MIDI file ({exc})") from None
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


def prompt_events(notes: list[Note]) -> list[Event]:
    """Notes as the listener would report them: presses and releases, in time order (releases first)."""
    evs: list[tuple[float, int, Event]] = []
    for n in notes:
        evs.append((n.onset, 1, KeyDown(n.onset, 0, n.pitch, n.velocity)))
        evs.append((n.onset + n.duration, 0, KeyUp(n.onset + n.duration, 0, n.pitch, n.duration)))
    evs.sort(key=lambda e: (e[0], e[1]))
    return [e for _, _, e in evs]


class OfflineOutput:
    """The engine's Output on a virtual clock: the scheduler's messages are recorded, not sent."""

    def __init__(self, scheduler: Scheduler, clock: list[float]) -> None:
        self.scheduler = scheduler
        self.clock = clock
        self.sent: list[Timed] = []

    def note(self, on: float, off: float, pitch: int, velocity: int) -> None:
        self.scheduler.add(on, off, pitch, velocity)

    def cut(self) -> None:
        self.sent += [(self.clock[0], m) for m in self.scheduler.cut()]

    def panic(self) -> None:
        self.sent += [(self.clock[0], m) for m in self.scheduler.panic()]

    def flush(self, now: float) -> None:
        self.sent += self.scheduler.due(now)


def notes_from_messages(sent: list[Timed]) -> list[Note]:
    """Pair note-ons with their note-offs; anything left open is closed at the last message."""
    notes: list[Note] = []
    open_: dict[int, tuple[float, int]] = {}
    end = max((t for t, _ in sent), default=0.0)
    for t, msg in sent:
        kind = msg[0] & 0xF0
        if kind == 0x90 and msg[2] > 0:
            if msg[1] in open_:
                t0, v = open_.pop(msg[1])
                notes.append(Note(t0, msg[1], t - t0, v))
            open_[msg[1]] = (t, msg[2])
        elif kind == 0x80 or kind == 0x90:
            if msg[1] in open_:
                t0, v = open_.pop(msg[1])
                notes.append(Note(t0, msg[1], t - t0, v))
    notes += [Note(t0, p, end - t0, v) for p, (t0, v) in open_.items()]
    return sorted(notes)


def run_offline(
    prompt: list[Note],
    stream: Any,
    cfg: Config,
    rng: np.random.Generator,
    seconds: float | None = None,
    events: int | None = None,
) -> list[Note]:
    """The continuation ripieno plays after (call) or along with (accompany) the prompt."""
    clock = [0.0]
    scheduler = Scheduler(cfg.midi.channel - 1, cfg.engine.max_polyphony)
    out = OfflineOutput(scheduler, clock)
    answer_len = seconds if seconds is not None else (3600.0 if events is not None else None)
    engine = Engine(cfg.engine, stream, out, rng, max_events=events, answer_len=answer_len)
    inputs = prompt_events(prompt)
    silence_s = engine.silence_s
    engine.silence_s = float("inf")  # rests inside the prompt are not the player handing over
    i = 0
    for _ in range(MAX_WAKES):
        candidates = [t for t in (engine.next_wakeup(), scheduler.next_time()) if t is not None and t != float("inf")]
        if i < len(inputs):
            candidates.append(inputs[i].t)
        if not candidates:
            break
        now = max(clock[0], min(candidates))
        clock[0] = now
        while i < len(inputs) and inputs[i].t <= now:
            engine.handle(inputs[i])
            i += 1
        if i == len(inputs):
            engine.silence_s = silence_s
        engine.poll(now)
        out.flush(now)
    out.flush(float("inf"))
    out.sent += [(clock[0], m) for m in scheduler.cut()]
    return notes_from_messages(out.sent)


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
    cont = run_offline(prompt, stream, cfg, rng, seconds, events)
    write_midi(out_path, prompt, cont, cfg.midi.channel - 1)
    if png:
        from .pianoroll import draw

        draw(png, [dataclasses.astuple(n) for n in prompt], [dataclasses.astuple(n) for n in cont])
    print(f"{out_path}: {len(prompt)} prompt notes + {len(cont)} ripieno notes ({cfg.engine.mode})")
    return 0
