"""The engine: the player's notes in, ripieno's notes out, one model stream for the whole session.

Clock-free and I/O-free: every method gets the time it happens at (real-time: `time.monotonic`,
offline: a virtual clock), notes leave through an `Output` (the scheduler's shell), and the
caller wakes the engine at `next_wakeup()`. So `ripieno run` and `ripieno continue` run the
very same code.

How the stream sees the conversation (one model step per note, never re-reading history):
- A player's note is observed at its note-on, with the duration it will probably have (the
  median of the player's recent held times): waiting for the release would make accompaniment
  impossible and answers late. Its step is the time since the previous observed onset.
- A ripieno note is observed when it is planned, `LOOKAHEAD_S` before it sounds, with the
  timing it will really have (after tempo scaling and limits). Planning one note at a time that
  close to its onset keeps each loop callback to one model step, and if the player interrupts,
  at most the notes inside the lookahead were observed without sounding.
- Planned ripieno notes lie slightly in the future, so a player's note arriving meanwhile can
  have a step below zero; it is observed with step 0 (the onsets are that close anyway).

Modes: `call` answers once the player rested `silence_s` with about the phrase's length
(at most `answer_s`), at the player's pulse and dynamics, and stops the moment a key goes down;
`accompany` plays along on the player's pulse grid while notes keep coming and stops
`follow` seconds after the last one; `off` (or disabled) only listens.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ripieno.model.events import DRUM_CHANNEL, NoteEvent, Role

from .keys import Control, Event, KeyDown, KeyUp
from .player import CHORD_S, SUSTAIN_CC, Player
from .tempo import Tempo

log = logging.getLogger(__name__)

LOOKAHEAD_S = 0.03  # plan each ripieno note this long before it sounds
MIN_ANSWER_S = 0.5  # a one-note phrase still gets a short answer
TAIL_S = 0.4  # notes may ring this long past the end of an answer
OBSERVE_PER_S = 100  # player notes per second the stream takes in; a smash beyond is counted, not stepped
MAX_PLANS_PER_WAKE = 16  # model steps per poll() before yielding (the real-time shell asks for 1)
ACCOMPANY_VELOCITY = 0.85  # a second voice sits a little under the player
HELD_MAX_S = 30.0  # a key "held" this long with nothing else happening lost its note-off somewhere
FLOOD_MEMORY_S = 10.0  # held keys are not trusted this long after a smash (its tail may still trickle in)


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


class StreamLike(Protocol):
    def observe(self, event: NoteEvent) -> Any: ...

    def sample(self, temperature: float, rng: np.random.Generator, top_p: float | None = None, low: int = 0, high: int = 127) -> NoteEvent: ...

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
    """An answer (call) or a run of accompaniment being planned note by note."""

    start: float
    end: float  # no onset at or after this
    cursor: float  # onset of the last planned note (the start before the first)
    first: bool = True
    waiting: bool = False  # sampled past the end: nothing to do until the end moves or comes


def clamp(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else hi if x > hi else x


def tempo_scale(player_ioi: float | None, model_steps: list[float]) -> float:
    """Factor that brings the model's beat to the player's: their median beat over the model's, 0.5-2."""
    if player_ioi is None or len(model_steps) < 4:
        return 1.0
    return clamp(player_ioi / statistics.median(model_steps), 0.5, 2.0)


def scaled_velocity(model_velocity: int, model_mean: float, player_mean: float, factor: float = 1.0) -> int:
    """The model's accent pattern around the player's loudness."""
    return int(clamp(round(model_velocity * player_mean / max(model_mean, 1.0) * factor), 1, 127))


def snap(t: float, anchor: float, grid: float, earliest: float) -> float:
    """t moved to the nearest point of the grid through anchor, never before earliest."""
    k = round((t - anchor) / grid)
    s = anchor + k * grid
    while s < earliest:
        s += grid
    return s


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
        self.cfg = cfg
        self.stream = stream
        self.output = output
        self.rng = rng
        self.stats: Counters = stats if stats is not None else _Counters()
        self.mode = cfg.mode
        self.enabled = True
        self.temperature = cfg.temperature
        self.silence_s = cfg.silence_s
        self.answer_len = answer_len  # `continue --seconds`: every answer this long instead of the phrase's
        self.events_left = max_events  # `continue --events`: total ripieno notes, None = unbounded
        self.plans_per_wake = plans_per_wake
        self.tempo = tempo  # where the beat is (None: the player's onsets, tracked here)
        self.player = Player()
        self.plan: Plan | None = None
        self.last_onset: float | None = None  # onset of the last event the stream observed
        self.model_steps: deque[float] = deque(maxlen=32)
        self.model_velocities: deque[int] = deque(maxlen=32)
        self.recent_out: deque[float] = deque()  # ripieno onsets of the last second (rate limit)
        self.recent_in: deque[float] = deque()  # observed player onsets of the last second
        self.flood_at: float | None = None  # last note beyond OBSERVE_PER_S (a smash)

    # ---------------------------------------------------------------------------------- control

    @property
    def active(self) -> bool:
        return self.enabled and self.mode != "off"

    def set_state(self, mode: str, enabled: bool, temperature: float, silence_s: float) -> None:
        """Live settings; a change of mode or enabled silences ripieno first."""
        if mode != self.mode or enabled != self.enabled:
            self.output.panic()
            self.plan = None
            self.player.close_phrase()
            log.info("mode %s, %s", mode, "enabled" if enabled else "disabled")
        self.mode, self.enabled = mode, enabled
        self.temperature, self.silence_s = temperature, silence_s

    def panic(self) -> None:
        self.output.panic()
        self.plan = None
        self.player.close_phrase()

    def reset(self) -> None:
        """Forget the conversation: silence, fresh model state, fresh estimates."""
        self.panic()
        self.stream.reset()
        self.player = Player()
        self.last_onset = None
        self.model_steps.clear()
        self.model_velocities.clear()

    def swap_stream(self, stream: StreamLike) -> None:
        """A newly loaded model takes over (with a fresh state: it never heard this session)."""
        self.output.cut()
        self.plan = None
        self.stream = stream
        self.last_onset = None

    def output_lost(self) -> None:
        self.panic()

    def input_lost(self, ups: list[KeyUp]) -> None:
        for up in ups:
            self.player.key_up(up.t, up.held_s)
        self.player.release_all()

    # ------------------------------------------------------------------------------------ input

    def handle(self, ev: Event) -> None:
        if isinstance(ev, KeyDown):
            self.key_down(ev)
        elif isinstance(ev, KeyUp):
            self.player.key_up(ev.t, ev.held_s)
        elif isinstance(ev, Control):
            if ev.number == SUSTAIN_CC and ev.channel != DRUM_CHANNEL:
                self.player.pedal(ev.t, ev.value)
            # mapped controllers are commands (service); the rest belong to the synth

    def key_down(self, ev: KeyDown) -> None:
        if self.mode == "call":
            self.output.cut()  # the player speaks: ripieno stops at once (ringing tails too) and listens
            self.plan = None
        self.player.key_down(ev.t, ev.velocity)
        self.stats.notes_in += 1
        if self._admit(self.recent_in, ev.t, OBSERVE_PER_S):
            self._observe(NoteEvent(ev.pitch, self._step_to(ev.t), self.player.duration(), ev.velocity, Role.PLAYER), ev.t)
        else:
            self.stats.dropped += 1
            self.flood_at = ev.t
        if self.active and self.mode == "accompany":
            self._follow(ev.t)

    def _follow(self, t: float) -> None:
        """Accompaniment keeps going while the player does, and stops `follow` s after the last note."""
        follow = clamp(2.0 * self.player.ioi(), 0.5, 2.0)
        if self.plan is None:
            start = t + LOOKAHEAD_S
            self.plan = Plan(start=start, end=t + follow, cursor=start)
        else:
            self.plan.end = max(self.plan.end, t + follow)
            self.plan.waiting = False

    # ----------------------------------------------------------------------------------- timing

    def _stale_at(self) -> float | None:
        """When keys still "held" stop counting: their note-offs were lost (a smash through a busy
        JACK graph loses events; a cable pulled mid-note too). After a flood, one rest of
        `silence_s` without any key event; otherwise HELD_MAX_S of nothing at all."""
        p = self.player
        if not p.held or p.last_event is None:
            return None
        flooded = self.flood_at is not None and p.last_event - self.flood_at <= FLOOD_MEMORY_S
        return p.last_event + (self.silence_s if flooded else HELD_MAX_S)

    def _expire_stale(self, now: float) -> None:
        t = self._stale_at()
        if t is not None and now >= t:
            log.debug("%d held keys without note-off: counted as released", self.player.held)
            self.player.release_all()
            self.player.last_release = now

    def next_wakeup(self) -> float | None:
        """When `poll` has something to do next (None: only input can change anything)."""
        if not self.active:
            return None
        if self.mode == "call" and self.plan is None and self.player.held:
            return self._stale_at()
        if self.plan is not None:
            if self.plan.waiting:
                return self.plan.end
            return min(self.plan.end, self.plan.cursor - LOOKAHEAD_S)
        if self.mode == "call" and self.player.phrase_start is not None:
            rest = self.player.rested_since()
            if rest is not None:
                return rest + self.silence_s
        return None

    def poll(self, now: float) -> None:
        if not self.active:
            return
        if self.mode == "call" and self.plan is None:
            self._expire_stale(now)
            rest = self.player.rested_since()
            if self.player.phrase_start is not None and rest is not None and now >= rest + self.silence_s:
                length = self.answer_len or clamp(self.player.phrase_length(), MIN_ANSWER_S, self.cfg.answer_s)
                start = now + LOOKAHEAD_S
                self.plan = Plan(start=start, end=start + length, cursor=start)
                self.player.close_phrase()
                log.debug("answering for %.2f s", length)
        if self.plan is not None:
            self._fill(now)
            if self.plan is not None and now >= self.plan.end:
                self.plan = None

    def _fill(self, now: float) -> None:
        plan = self.plan
        assert plan is not None
        for _ in range(self.plans_per_wake):
            if plan.waiting or plan.cursor - LOOKAHEAD_S > now:
                return
            if self.events_left is not None and self.events_left <= 0:
                self.plan = None
                return
            if not self._plan_one(plan, now):
                plan.waiting = True
                if self.mode == "call":
                    self.plan = None
                return

    def _plan_one(self, plan: Plan, now: float) -> bool:
        """Sample one note and schedule it; False when it would start past the plan's end."""
        t0 = time.perf_counter()
        ev = self.stream.sample(self.temperature, self.rng, low=self.cfg.low_pitch, high=self.cfg.high_pitch)
        self.stats.add_step((time.perf_counter() - t0) * 1e6)
        if ev.step >= CHORD_S:
            self.model_steps.append(ev.step)
        self.model_velocities.append(ev.velocity)
        scale = tempo_scale(self.player.ioi() if self.player.iois else None, list(self.model_steps))
        earliest = now + LOOKAHEAD_S / 2
        if plan.first:
            onset = max(plan.start, earliest)
        else:
            onset = max(plan.cursor + ev.step * scale, earliest)
        accompany = self.mode == "accompany"
        if accompany and self.player.last_onset is not None:
            onset = snap(onset, self.player.last_onset, self.player.ioi() / 2, earliest)
        onset = max(onset, self._rate_ok(onset))
        if onset >= plan.end:
            return False
        duration = clamp(ev.duration * scale, 0.05, 4.0)
        off = min(onset + duration, plan.end + TAIL_S)
        velocity = scaled_velocity(
            ev.velocity, statistics.fmean(self.model_velocities), self.player.velocity(), ACCOMPANY_VELOCITY if accompany else 1.0
        )
        self.output.note(onset, off, ev.pitch, velocity)
        played = NoteEvent(ev.pitch, self._step_to(onset), off - onset, velocity, Role.RIPIENO)
        self._observe(played, onset)
        self.recent_out.append(onset)
        self.stats.notes_out += 1
        if self.events_left is not None:
            self.events_left -= 1
        plan.cursor = onset
        plan.first = False
        return True

    # ---------------------------------------------------------------------------------- helpers

    def _step_to(self, t: float) -> float:
        return 0.0 if self.last_onset is None else max(0.0, t - self.last_onset)

    def _observe(self, ev: NoteEvent, onset: float) -> None:
        t0 = time.perf_counter()
        self.stream.observe(ev)
        self.stats.add_step((time.perf_counter() - t0) * 1e6)
        self.last_onset = onset if self.last_onset is None else max(self.last_onset, onset)

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
