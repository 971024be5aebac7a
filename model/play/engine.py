"""The engine: the player's notes in, ripieno's notes out, on the player's beat, one model stream for the session.

Clock-free and I/O-free: every method gets the time it happens at (real-time: `time.monotonic`,
offline: a virtual clock), notes leave through an `Output` (the scheduler's shell), and the
caller wakes the engine at `next_wakeup()`. So `ripieno run`, `ripieno continue` and
`ripieno-train eval` run the very same code.

Time: the model thinks in beats, the engine in seconds; a `Tempo` source (the player's own beat,
tracked from their onsets, or a MIDI clock, or Link) converts. A player's note is observed at
its note-on with its place on that beat (step since the last observed onset, position in the
beat and bar) and the duration it will probably have (the median of the player's recent held
times): waiting for the release would make accompaniment impossible and answers late.

Modes:
- `call`: once the player rested `silence_s`, an answer of about the phrase's length (at most
  `answer_s`) enters on the next beat (the next bar line, where the bar is known and near) and
  every later note sits where the model's beat-relative steps put it on the tracked grid. A
  ripieno note is planned (sampled and observed) a short lookahead before it sounds. Its onsets
  take the places in the beat the player's own onsets used (`player_grid`: the answer keeps the
  phrase's subdivision, and the player's grid when the tracker reads another metrical level); a
  grid point that has already passed is never played late: the next one is taken. The answer
  continues the lead (role PLAYER), in the player's register and key (`key_weights`), and stops
  the moment a key goes down.
- `accompany`: a supporting part under the player (role RIPIENO), struck with the player's own
  onsets, so it is on their grid by construction and knows the notes it sounds against: `bass`
  (one low note on each beat the player plays on), `chords` (two or three notes there), `voice`
  (a counter-voice note with every player onset). Its pitches come from the model's
  accompaniment readout, kept in register below the melody and, where possible, consonant
  with every player note sounding then (`harmony.consonant_with`).
- `off` (or disabled) only listens.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ripieno.model.events import DRUM_CHANNEL, NoteEvent, Role
from ripieno.model.harmony import CONSONANT

from .keys import Control, Event, KeyDown, KeyUp
from .player import CHORD_S as CHORD_ONSET_S
from .player import SUSTAIN_CC, Player
from .tempo import Tempo

log = logging.getLogger(__name__)

LOOKAHEAD_BEATS = 0.0625  # plan each ripieno note this long before it sounds (a 64th note)...
LOOKAHEAD_S = (0.02, 0.05)  # ...within these bounds in seconds
DEFAULT_PERIOD = 0.6  # seconds per beat before the tempo source knows better (100 bpm)
MIN_ANSWER_S = 0.5  # a one-note phrase still gets a short answer
TAIL_S = 0.4  # notes may ring this long past the end of an answer
MIN_NOTE_S = 0.05  # no shorter note leaves ripieno (a shorter one is a click on most synths)
OBSERVE_PER_S = 100  # player notes per second the stream takes in; a smash beyond is counted, not stepped
MAX_PLANS_PER_WAKE = 16  # model steps per poll() before yielding (the real-time shell asks for 1)
ACCOMPANY_VELOCITY = 0.85  # a supporting part sits a little under the player
ON_BEAT = 0.2  # a player onset within this many beats of a beat is on it (bass, chords strike there)
ACCOMPANY_STYLES = ("bass", "chords", "voice")
STRIKE = {"bass": 1, "chords": 3, "voice": 1}  # notes per strike
REGISTER_WIDEN = 7  # ripieno stays within the player's recent range widened by a fifth each side
REGISTER_SOFT = 5.0  # past the player's own range an answer's pitch weighs exp(-(semitones out / this)^2)
DISSONANT_WEIGHT = 0.01  # a pitch that clashes with a sounding player note keeps this share of its probability
HELD_MAX_S = 30.0  # a key "held" this long after its own press lost its note-off somewhere
FLOOD_MEMORY_S = 10.0  # held keys are not trusted this long after a smash (its tail may still trickle in)
BAR_ENTRY_BEATS = 1.0  # call mode enters on the bar line when it is at most this far after the next beat
ENTRY_LIFT = 1.15  # a residue mod 2 (3) holding this many times 1/2 (1/3) of a phrase's on-beat onsets is the beat
SIXTEENTHS = (0, 3, 6, 9)  # places in the beat, in twelfths
GRID_MIN_ONSETS = 6  # onsets before the player's subdivision of the beat is trusted (`player_grid`)
GRID_MIN_SHARE = 0.05  # ... and the share of them a place in the beat needs to be part of it
# An answer keeps the player's key (`key_weights`): measured on a quarter of the test split, key JSD
# answer vs prompt 0.144 / 0.077 / 0.061 at strength 0 / 0.5 / 1 (4-grams copied from the prompt
# 0.084 / 0.094 / 0.118; the sources' own 0.18): 0.5 keeps the key and barely adds copying.
KEY_STRENGTH = 0.5
KEY_FLOOR = 0.02  # a pitch class never played weighs as if it were 2 % of the notes
KEY_MIN_NOTES = 8
KEY_MEMORY = 64  # the player's last this-many pitches are their key


class Settings(Protocol):
    """The engine's part of the daemon's config (`daemon.config.EngineConfig` is one)."""

    mode: str
    temperature: float
    silence_s: float
    answer_s: float
    max_notes_per_s: float
    max_polyphony: int
    low_pitch: int
    high_pitch: int
    accompany: str  # bass | chords | voice
    variation: float  # 0 = an answer may echo the player's material, 1 = free


@dataclass(frozen=True)
class PlaySettings:
    """Settings for callers without a daemon config (eval, tests): the daemon's defaults."""

    mode: str = "call"
    temperature: float = 0.9
    silence_s: float = 0.8
    answer_s: float = 8.0
    max_notes_per_s: float = 24.0
    max_polyphony: int = 6
    low_pitch: int = 21
    high_pitch: int = 108
    accompany: str = "bass"
    variation: float = 0.25


class StreamLike(Protocol):
    def observe(self, event: NoteEvent, learn: bool | None = None) -> Any: ...

    def sample(self, temperature: float, rng: np.random.Generator, top_p: float | None = None, low: int = 0, high: int = 127,
               pitch_weights: np.ndarray | None = None, role: Role = Role.PLAYER, variation: float = 0.0) -> NoteEvent: ...

    def reset(self) -> None: ...


class Output(Protocol):
    """Where planned notes go: the scheduler behind a real-time or offline shell."""

    def note(self, on: float, off: float, pitch: int, velocity: int) -> None: ...

    def cut(self) -> None: ...

    def panic(self) -> None: ...


class Counters(Protocol):
    notes_in: int
    notes_out: int
    dropped: int

    def add_step(self, us: float) -> None: ...


@dataclass
class _Counters:
    notes_in: int = 0
    notes_out: int = 0
    dropped: int = 0

    def add_step(self, us: float) -> None:
        pass


@dataclass
class Plan:
    """A call-mode answer being planned note by note, in beats of the tempo source."""

    start: float  # beat of the first note
    end: float  # no onset at or after this beat
    cursor: float  # beat of the last planned note (the start before the first)
    first: bool = True
    grid: tuple[int, ...] = SIXTEENTHS  # places in the beat (twelfths) an onset may take: the player's own


def player_grid(positions: list[float]) -> tuple[int, ...]:
    """The places in the beat (twelfths, sorted, 0 always) the player's onsets at these beat
    positions used: an answer keeps the player's subdivision of the beat.

    Musically, the answer's rhythm speaks the phrase's language (no triplets after straight
    eighths). It is also what keeps the answer on the player's grid when the tempo source's beat
    is not a power-of-two multiple of the metre's (a tracker that reads a 4/4 tune's dotted
    quarters): the player's onsets are on the player's grid whatever the tracker calls a beat.
    With too few onsets to tell (< GRID_MIN_ONSETS), the sixteenths of the beat.
    """
    if len(positions) < GRID_MIN_ONSETS:
        return SIXTEENTHS
    counts = np.zeros(12)
    for b in positions:
        counts[int(round((b - math.floor(b)) * 12)) % 12] += 1
    used = {r for r in range(12) if counts[r] >= max(2.0, GRID_MIN_SHARE * len(positions))}
    return tuple(sorted(used | {0}))


def next_on_grid(beat: float, grid: tuple[int, ...], after: float | None = None) -> float:
    """The grid point nearest `beat` (or the first one after `after`, when the nearest is not)."""
    base = math.floor(beat)
    points = [base + r / 12 for r in grid] + [base + 1.0]
    best = min(points, key=lambda x: abs(x - beat))
    if after is not None and best <= after + 1e-9:
        k = math.floor(after)
        later = [k + r / 12 for r in grid] + [k + 1 + r / 12 for r in grid]
        best = min(x for x in later if x > after + 1e-9)
    return best


def clamp(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else hi if x > hi else x


def scaled_velocity(model_velocity: int, model_mean: float, player_mean: float, factor: float = 1.0) -> int:
    """The model's accent pattern around the player's loudness."""
    return int(clamp(round(model_velocity * player_mean / max(model_mean, 1.0) * factor), 1, 127))


def key_weights(pitches: Iterable[int], strength: float) -> np.ndarray | None:
    """(128,) weights that keep an answer in the player's key: each pitch class weighs by how often
    the player used it, relative to the most used, to the power `strength` (0 = no effect).

    A floor (KEY_FLOOR, as if each class had been heard that often) keeps a pitch class the player
    never touched possible, only rarer: a modulation or a blue note can still come from the model.
    None (no preference) before the player has played KEY_MIN_NOTES notes."""
    pcs = [p % 12 for p in pitches]
    if strength <= 0.0 or len(pcs) < KEY_MIN_NOTES:
        return None
    h = np.bincount(pcs, minlength=12) / len(pcs) + KEY_FLOOR
    w12 = (h / h.max()) ** strength
    return np.tile(w12, 11)[:128]


def register_weights(pitches: Iterable[int], soft: float = REGISTER_SOFT) -> np.ndarray | None:
    """(128,) weights that keep an answer where the player plays: 1 inside the player's recent range,
    falling off as exp(-(d / soft)^2) d semitones beyond it (a third out: 0.7, a fifth out: 0.14).

    The hard limit stays `Engine._range` (the range widened by a fifth); this only makes the edge
    soft, so an answer can reach past the phrase now and then but does not climb out of it note by
    note (heard in docs/examples' ballad before it: an answer that drifted up an octave in 7 s).
    Measured on the test split (two seeds): key JSD 0.01 lower, tempo ratio as close or closer,
    on-grid within 0.015 except 0.8x with scatter in one seed (0.908 -> 0.879).
    None before the player has played anything."""
    ps = list(pitches)
    if not ps or soft <= 0.0:
        return None
    lo, hi = min(ps), max(ps)
    p = np.arange(128)
    d = np.maximum(lo - p, 0) + np.maximum(p - hi, 0)
    return np.exp(-((d / soft) ** 2))


def harmony_weights(sounding: list[int], low: int, high: int) -> np.ndarray:
    """(128,) weights: 1 for pitches consonant with every sounding pitch, DISSONANT_WEIGHT for the rest."""
    w = np.full(128, DISSONANT_WEIGHT)
    pcs = np.arange(128)
    ok = np.ones(128, dtype=bool)
    for q in sounding:
        ok &= np.isin(np.abs(pcs - q) % 12, tuple(CONSONANT))
    w[ok] = 1.0
    w[:low] = 0.0
    w[high + 1 :] = 0.0
    return w


class Engine:
    def __init__(
        self,
        cfg: Settings,
        stream: StreamLike,
        output: Output,
        rng: np.random.Generator,
        stats: Counters | None = None,
        max_events: int | None = None,
        answer_len: float | None = None,
        plans_per_wake: int = MAX_PLANS_PER_WAKE,
        tempo: Tempo | None = None,
    ) -> None:
        if cfg.accompany not in ACCOMPANY_STYLES:
            raise ValueError(f"accompany must be one of {', '.join(ACCOMPANY_STYLES)}, got {cfg.accompany!r}")
        self.cfg = cfg
        self.stream = stream
        self.output = output
        self.rng = rng
        self.stats: Counters = stats if stats is not None else _Counters()
        self.mode = cfg.mode
        self.enabled = True
        self.temperature = cfg.temperature
        self.silence_s = cfg.silence_s
        self.accompany = cfg.accompany
        self.variation = cfg.variation
        self.answer_len = answer_len  # `continue --seconds`: every answer this long instead of the phrase's
        self.events_left = max_events  # `continue --events`: total ripieno notes, None = unbounded
        self.plans_per_wake = plans_per_wake
        if tempo is None:
            from .beat import BeatTracker

            tempo = BeatTracker()
        self.tempo: Tempo = tempo
        self.player = Player()
        self.plan: Plan | None = None
        self.last_beat: float | None = None  # beat of the last event the stream observed
        self.first_onset: float | None = None  # the first player onset (the beat axis before the source knows one)
        self.model_velocities: deque[int] = deque(maxlen=32)
        self.recent_out: deque[float] = deque()  # ripieno onsets of the last second (rate limit)
        self.recent_in: deque[float] = deque()  # observed player onsets of the last second
        self.flood_at: float | None = None  # last note beyond OBSERVE_PER_S (a smash)
        self.held: dict[int, float] = {}  # the player's sounding keys: pitch -> onset
        self.ours: list[tuple[float, float, int]] = []  # ripieno's planned notes (on, off, pitch), pruned
        self.struck_beat: float | None = None  # the beat an accompaniment last struck on
        self.phrase_onsets: deque[float] = deque(maxlen=64)  # the phrase's onsets, for where its beats fall
        self.key_pitches: deque[int] = deque(maxlen=KEY_MEMORY)  # the player's recent pitches: their key
        self.recent_onsets: deque[float] = deque(maxlen=48)  # the player's recent onsets (chords once): their subdivision

    # ---------------------------------------------------------------------------------- control

    @property
    def active(self) -> bool:
        return self.enabled and self.mode != "off"

    def set_state(self, mode: str, *, enabled: bool, temperature: float, silence_s: float,
                  variation: float | None = None, accompany: str | None = None) -> None:
        """Live settings, by name past the mode (two floats passed by position could be swapped
        silently); a change of mode or enabled silences ripieno first. `variation` (0..1) and
        `accompany` (an `ACCOMPANY_STYLES` name) change only when given."""
        if accompany is not None and accompany not in ACCOMPANY_STYLES:
            raise ValueError(f"accompany must be one of {', '.join(ACCOMPANY_STYLES)}, got {accompany!r}")
        if mode != self.mode or enabled != self.enabled:
            self.output.panic()
            self.plan = None
            self.ours.clear()
            self.player.close_phrase()
            log.info("mode %s, %s", mode, "enabled" if enabled else "disabled")
        self.mode, self.enabled = mode, enabled
        self.temperature, self.silence_s = temperature, silence_s
        if variation is not None:
            self.variation = variation
        if accompany is not None:
            self.accompany = accompany

    def panic(self) -> None:
        self.output.panic()
        self.plan = None
        self.ours.clear()
        self.player.close_phrase()

    def reset(self) -> None:
        """Forget the conversation: silence, fresh model state, fresh estimates."""
        self.panic()
        self.stream.reset()
        self.player = Player()
        self.last_beat = None
        self.model_velocities.clear()
        self.recent_onsets.clear()
        self.key_pitches.clear()

    def swap_stream(self, stream: StreamLike) -> None:
        """A newly loaded model takes over (with a fresh state: it never heard this session)."""
        self.output.cut()
        self.plan = None
        self.ours.clear()
        self.stream = stream
        self.last_beat = None

    def output_lost(self) -> None:
        self.panic()

    def input_lost(self, ups: list[KeyUp]) -> None:
        for up in ups:
            self.player.key_up(up.t, up.held_s, up.pitch)
        self.player.release_all()
        self.held.clear()

    # ------------------------------------------------------------------------------------- time

    @property
    def period(self) -> float:
        bpm = self.tempo.tempo_bpm
        return 60.0 / bpm if bpm else DEFAULT_PERIOD

    def beat_at(self, t: float) -> float:
        """The beat position of t: the tempo source's, or a default pulse from the first onset until it knows one."""
        b = self.tempo.beat_at(t)
        if b is not None:
            return b
        return (t - (self.first_onset if self.first_onset is not None else t)) / DEFAULT_PERIOD

    def time_at(self, beat: float) -> float:
        if self.tempo.beat_at(0.0) is not None:
            return self.tempo.time_at(beat)
        return (self.first_onset or 0.0) + beat * DEFAULT_PERIOD

    def _place(self, beat: float) -> tuple[float, float]:
        """(pos, bar) of a beat for the model: the position in the bar when bars are known, else the beat itself."""
        bar = self.tempo.bar_beats
        start = self.tempo.bar_start(beat) if bar > 0 else None
        return (beat - start, float(bar)) if start is not None else (beat, 0.0)

    def _lookahead(self) -> float:
        return clamp(LOOKAHEAD_BEATS * self.period, *LOOKAHEAD_S)

    # ------------------------------------------------------------------------------------ input

    def handle(self, ev: Event) -> None:
        if isinstance(ev, KeyDown):
            self.key_down(ev)
        elif isinstance(ev, KeyUp):
            self.player.key_up(ev.t, ev.held_s, ev.pitch)
            self.held.pop(ev.pitch, None)
        elif isinstance(ev, Control):
            if ev.number == SUSTAIN_CC and ev.channel != DRUM_CHANNEL:
                self.player.pedal(ev.t, ev.value)
            # mapped controllers are commands (service); the rest belong to the synth

    def key_down(self, ev: KeyDown) -> None:
        if self.mode == "call":
            self.output.cut()  # the player speaks: ripieno stops at once (ringing tails too) and listens
            self.plan = None
            self.ours.clear()
        if self.first_onset is None:
            self.first_onset = ev.t
        self.tempo.onset(ev.t, ev.velocity)
        self.player.key_down(ev.t, ev.velocity, ev.pitch)
        self.held[ev.pitch] = ev.t
        self.key_pitches.append(ev.pitch)
        self.stats.notes_in += 1
        if self._admit(self.recent_in, ev.t, OBSERVE_PER_S):
            beat = self.beat_at(ev.t)
            self.phrase_onsets.append(ev.t)
            if not self.recent_onsets or ev.t - self.recent_onsets[-1] >= CHORD_ONSET_S:
                self.recent_onsets.append(ev.t)
            pos, bar = self._place(beat)
            duration = self.player.duration() / self.period
            self._observe(NoteEvent(ev.pitch, self._step_to(beat), duration, ev.velocity, Role.PLAYER, pos, bar), beat, learn=True)
            if self.active and self.mode == "accompany":
                self._accompany(ev.t, beat)
        else:
            self.stats.dropped += 1
            self.flood_at = ev.t

    # ----------------------------------------------------------------------------- accompaniment

    def _accompany(self, t: float, beat: float) -> None:
        """Strike the supporting part with this player onset, when the style plays here."""
        if self.tempo.beat_at(t) is None:
            return  # no beat yet: a part that does not know where the beat is would only guess
        nearest = round(beat)
        on_beat = abs(beat - nearest) <= ON_BEAT
        if self.accompany != "voice":
            if not on_beat or self.struck_beat == nearest:
                return
        self.struck_beat = nearest if on_beat else self.struck_beat
        top = max(self.held) if self.held else self.player.last_pitch
        low, high = self._range()
        high = min(high, (top if top is not None else high) - 1)  # under the melody
        if high < low:
            return
        sounding = sorted(self.held)
        for _ in range(STRIKE[self.accompany]):
            if not self._strike(t, beat, low, high, sounding):
                break

    def _strike(self, t: float, beat: float, low: int, high: int, sounding: list[int]) -> bool:
        """One accompaniment note at t (now): sampled, observed, sent. False when nothing fits."""
        if self.events_left is not None and self.events_left <= 0:
            return False
        mine = self._ours_at(t)
        if len(mine) >= self.cfg.max_polyphony or self._rate_ok(t) > t:
            return False
        weights = harmony_weights(sounding, low, high)
        for p in mine:
            weights[p] = 0.0  # never strike a pitch ripieno already sounds
        if not weights.any():
            return False
        t0 = time.perf_counter()
        ev = self.stream.sample(self.temperature, self.rng, low=low, high=high, pitch_weights=weights, role=Role.RIPIENO)
        self.stats.add_step((time.perf_counter() - t0) * 1e6)
        if weights[ev.pitch] <= 0.0:
            return False
        self.model_velocities.append(ev.velocity)
        if self.accompany == "voice":  # a counter-voice moves with the player: at most to their next onset
            dur_beats = clamp(ev.duration, 0.25, max(self.player.ioi() / self.period, 0.25))
        else:  # the part holds at least to the next beat (a bass that rings), at most two beats
            dur_beats = clamp(ev.duration, max(1.0 - (beat - math.floor(beat)), 0.5), 2.0)
        duration = max(dur_beats * self.period, MIN_NOTE_S)
        velocity = scaled_velocity(ev.velocity, statistics.fmean(self.model_velocities), self.player.velocity(), ACCOMPANY_VELOCITY)
        self._send(t, t + duration, ev.pitch, velocity)
        pos, bar = self._place(beat)
        self._observe(NoteEvent(ev.pitch, self._step_to(beat), dur_beats, velocity, Role.RIPIENO, pos, bar), beat, learn=False)
        return True

    # ----------------------------------------------------------------------------------- timing

    def _stale_at(self) -> float | None:
        """When keys still "held" stop counting: their note-offs were lost (a smash through a busy
        JACK graph loses events; a cable pulled mid-note too). After a flood, one rest of
        `silence_s` without any key event; otherwise each key HELD_MAX_S after its own press, however
        much else is played meanwhile (a key pressed again without a release counts once, from then)."""
        p = self.player
        if not p.held or p.last_event is None:
            return None
        if self._after_flood():
            return p.last_event + self.silence_s
        return min(p.keys.values()) + HELD_MAX_S

    def _after_flood(self) -> bool:
        """The player's last key event came soon after a smash (whose tail may still trickle in)."""
        last = self.player.last_event
        return self.flood_at is not None and last is not None and last - self.flood_at <= FLOOD_MEMORY_S

    def _expire_stale(self, now: float) -> None:
        t = self._stale_at()
        if t is None or now < t:
            return
        if self._after_flood():
            log.debug("%d held keys without note-off after a flood: counted as released", self.player.held)
            self.player.release_all()
            self.held.clear()
        else:
            lost = self.player.release_older(now - HELD_MAX_S + 1e-9)
            for k in lost:
                self.held.pop(k, None)
            log.debug("keys %s held %.0f s without a note-off: counted as released", lost, HELD_MAX_S)

    def next_wakeup(self) -> float | None:
        """When `poll` has something to do next (None: only input can change anything)."""
        if not self.active or self.mode != "call":
            return None
        if self.plan is None and self.player.held:
            return self._stale_at()
        if self.plan is not None:
            return min(self.time_at(self.plan.end), self.time_at(self.plan.cursor) - self._lookahead())
        if self.player.phrase_start is not None:
            rest = self.player.rested_since()
            if rest is not None:
                return rest + self.silence_s
        return None

    def poll(self, now: float) -> None:
        if not self.active or self.mode != "call":
            return
        if self.plan is None:
            self._expire_stale(now)
            rest = self.player.rested_since()
            if self.player.phrase_start is not None and rest is not None and now >= rest + self.silence_s:
                self._begin_answer(now)
        if self.plan is not None:
            self._fill(now)
            if self.plan is not None and now >= self.time_at(self.plan.end):
                self.plan = None

    def _entry_group(self) -> tuple[int, int]:
        """(group, residue): where the player's onsets said the beat really is, when the source's beat
        is a fraction of the metre's (a tracker that hears the eighths of a 2/4 tune, or of a jig).

        The phrase's onsets are placed on the source's grid as it stands now (a tracker may have
        renumbered its beats since), those on a beat counted by beat number mod 2, 3 and 4; when
        one residue clearly holds most of them, the answer enters on a beat of that residue (the
        grid point the player's notes fall on most often), else on the next beat, group 1. Mod 4
        catches a tracker whose beat is three quarters of the metre's (the two meet every four of
        its beats) and a player who marks the bar's first beat; measured on the test split, entry
        error 0.041 / 0.082 / 0.090 -> 0.035 / 0.064 / 0.089 beat (as written / slower / faster).
        """
        v = np.zeros(12)
        for t in self.phrase_onsets:
            b = self.beat_at(t)
            if abs(b - round(b)) <= ON_BEAT / 2:
                v[int(round(b)) % 12] += 1.0
        best = (1, 0, 0.0)
        for group in (2, 3, 4):
            counts = np.array([v[r::group].sum() for r in range(group)])
            total = counts.sum()
            if total < 4:
                continue
            lift = counts.max() / total * group  # 1 = no residue stands out
            if lift >= ENTRY_LIFT and lift > best[2]:
                best = (group, int(counts.argmax()), lift)
        return best[0], best[1]

    def _begin_answer(self, now: float) -> None:
        """The answer enters on the next beat (or the bar line just after it) and lasts about the phrase."""
        length = self.answer_len or clamp(self.player.phrase_length(), MIN_ANSWER_S, self.cfg.answer_s)
        start = math.ceil(self.beat_at(now + self._lookahead()) - 1e-6)
        group, residue = self._entry_group()
        while start % group != residue % group:
            start += 1
        bar = self.tempo.bar_beats
        if bar > 0:
            line = self.tempo.bar_start(start)
            if line is not None and line < start:
                line += bar
            if line is not None and line - start <= BAR_ENTRY_BEATS:
                start = line
        # The player's subdivision when the beat is read from their onsets; a clock's (or Link's)
        # sixteenths are the grid itself, whatever the player does against it.
        grid = player_grid([self.beat_at(t) for t in self.recent_onsets]) if getattr(self.tempo, "hears_player", False) else SIXTEENTHS
        self.plan = Plan(start=start, end=start + length / self.period, cursor=start, grid=grid)
        self.player.close_phrase()
        self.phrase_onsets.clear()
        log.debug("answering for %.2f s from beat %.2f", length, start)

    def _fill(self, now: float) -> None:
        plan = self.plan
        assert plan is not None
        for _ in range(self.plans_per_wake):
            if self.time_at(plan.cursor) - self._lookahead() > now:
                return
            if self.events_left is not None and self.events_left <= 0:
                self.plan = None
                return
            if not self._plan_one(plan, now):
                self.plan = None
                return

    def _plan_one(self, plan: Plan, now: float) -> bool:
        """Sample the answer's next note and schedule it on the grid; False when it would start past the end."""
        low, high = self._range()
        t0 = time.perf_counter()
        weights = key_weights(self.key_pitches, KEY_STRENGTH)
        register = register_weights(self.player.pitches)
        if register is not None:
            weights = register if weights is None else weights * register
        sounding = self._ours_at(self.time_at(plan.cursor))
        if sounding:
            weights = np.ones(128) if weights is None else weights.copy()
            weights[sounding] = 0.0  # never strike a pitch ripieno still sounds (a doubled note is a click)
        ev = self.stream.sample(self.temperature, self.rng, low=low, high=high, pitch_weights=weights, role=Role.PLAYER, variation=self.variation)
        self.stats.add_step((time.perf_counter() - t0) * 1e6)
        self.model_velocities.append(ev.velocity)
        if plan.first:
            beat = plan.start
        elif ev.step == 0:
            beat = plan.cursor  # part of the chord just planned
        else:  # the model's step, on the player's subdivision of the beat
            beat = next_on_grid(plan.cursor + ev.step, plan.grid, after=plan.cursor)
        earliest = self.beat_at(now + self._lookahead() / 2)
        if beat < earliest:  # never late: the next grid point that can still be played on time
            beat = next_on_grid(earliest, plan.grid, after=earliest - 1e-6)
        onset = self.time_at(beat)
        allowed = self._rate_ok(onset)
        if allowed > onset:  # over max_notes_per_s: the next grid point it allows
            beat = next_on_grid(self.beat_at(allowed), plan.grid, after=self.beat_at(allowed) - 1e-6)
            onset = self.time_at(beat)
        if onset >= self.time_at(plan.end):
            return False
        if self.ours and ev.step == 0:
            together = sum(1 for on, _, _ in self.ours if abs(on - onset) < 1e-9)
            if together >= min(self.player.chord_size(), self.cfg.max_polyphony) or len(self._ours_at(onset)) >= self.cfg.max_polyphony:
                plan.cursor, plan.first = beat, False  # chords no larger than the player's (and polyphony): not planned
                return True
        duration = clamp(ev.duration * self.period, MIN_NOTE_S, 4.0)
        off = min(onset + duration, self.time_at(plan.end) + TAIL_S)
        velocity = scaled_velocity(ev.velocity, statistics.fmean(self.model_velocities), self.player.velocity())
        self._send(onset, max(off, onset + MIN_NOTE_S), ev.pitch, velocity)
        pos, bar = self._place(beat)
        self._observe(NoteEvent(ev.pitch, self._step_to(beat), (off - onset) / self.period, velocity, Role.PLAYER, pos, bar), beat, learn=False)
        plan.cursor = beat
        plan.first = False
        return True

    # ---------------------------------------------------------------------------------- helpers

    def _range(self) -> tuple[int, int]:
        """ripieno's pitch range now: the config's, narrowed to the player's recent range widened by a fifth."""
        lo, hi = self.cfg.low_pitch, self.cfg.high_pitch
        if self.player.pitches:
            lo = max(lo, min(self.player.pitches) - REGISTER_WIDEN)
            hi = min(hi, max(self.player.pitches) + REGISTER_WIDEN)
        return (lo, hi) if lo <= hi else (self.cfg.low_pitch, self.cfg.high_pitch)

    def _send(self, on: float, off: float, pitch: int, velocity: int) -> None:
        self.output.note(on, off, pitch, velocity)
        self.ours.append((on, off, pitch))
        self.recent_out.append(on)
        self.stats.notes_out += 1
        if self.events_left is not None:
            self.events_left -= 1

    def _ours_at(self, t: float) -> list[int]:
        """ripieno's pitches sounding (or planned to sound) at t."""
        self.ours = [n for n in self.ours if n[1] > t - 10.0]
        return [p for on, off, p in self.ours if on <= t < off]

    def _step_to(self, beat: float) -> float:
        return 0.0 if self.last_beat is None else max(0.0, beat - self.last_beat)

    def _observe(self, ev: NoteEvent, beat: float, learn: bool) -> None:
        t0 = time.perf_counter()
        self.stream.observe(ev, learn=learn)
        self.stats.add_step((time.perf_counter() - t0) * 1e6)
        self.last_beat = beat if self.last_beat is None else max(self.last_beat, beat)

    def _rate_ok(self, t: float) -> float:
        """Earliest time at or after t when one more ripieno note keeps within max_notes_per_s."""
        window = self.recent_out
        while window and window[0] <= t - 1.0:
            window.popleft()
        limit = int(self.cfg.max_notes_per_s)
        if len(window) < max(1, limit):
            return t
        return window[len(window) - max(1, limit)] + 1.0

    @staticmethod
    def _admit(window: deque[float], t: float, per_s: int) -> bool:
        while window and window[0] <= t - 1.0:
            window.popleft()
        if len(window) >= per_s:
            return False
        window.append(t)
        return True
