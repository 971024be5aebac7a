"""Following a DAW's or drum machine's MIDI clock: a `Tempo` (ripieno.model.play.tempo) fed raw bytes.

Pure: no I/O, no threads. `message(data, t)` takes the bytes of one MIDI event and the time it
arrived (the caller's clock, `time.monotonic()` in the daemon); every other method is a question
about that clock at a time the caller names. Only `confidence` (a property, as the protocol has
it) reads the clock itself, through the `now` callable given at construction.

What it understands (MIDI 1.0 system real-time and the one system-common message that matters):
    0xF8  timing clock, 24 per quarter note      0xFA  Start: song position 0, running
    0xFC  Stop: stopped, position kept           0xFB  Continue: running from the kept position
    0xF2 lsb msb  Song Position Pointer: the position in 16ths (6 clocks each), 14 bits
Everything else (notes, MTC, sysex, stray data bytes, an SPP without its two data bytes) is
ignored; real-time bytes are read wherever they appear in `data`, as MIDI allows.

The axis. A beat is a quarter note (24 clocks); beat 0 is song position 0. As the MIDI spec has
it, the first clock after Start *is* position 0, and after a Song Position Pointer and Continue
the next clock is that position: so "SPP 16" puts beat 4 (16 sixteenths) at the next tick.
Bars are `bar_beats` long and start at beat 0 (`[tempo] beats_per_bar`).

Smoothing. Tick times are fitted with a least-squares line (time against tick count) over the
last FIT_TICKS ticks (two beats): with 1 ms of Gaussian jitter per tick the tempo comes out within
0.1 % at 100 bpm, and the phase within a fraction of a millisecond. Ticks far off the line
(OUTLIER_PERIODS: a callback that waited for the GIL) are left out of it. A run of ticks far from
the line (a tempo jump), a gap longer than STALE_S, or a first tick after Start off the old phase
restarts the fit; until MIN_TICKS ticks are in it again, the last known tempo continues from the
newest tick.

Lost ticks. A tick that never arrived (a JACK xrun drops a cycle's events; measured in this
project's tests on a loaded 2-core box: with jackd logging xruns, ripieno's answers sat one or two
ticks, 21-45 ms, behind the clock's grid) would put every later note late. So a tick k whole
ticks behind the line (within SLIP_TOLERANCE), right after one on it, with the next tick
agreeing, counts as k lost ticks, and the position moves on by k (`lost_ticks` counts them); the
same jump ahead of the line takes back a loss that was none. A single late tick followed by one
back on the line (a delayed callback) is no loss and changes nothing; a tempo change drifts off
the line tick by tick and is a refit instead.

Running and stopped (defined here, since the protocol leaves it open):
- Before any Start or Continue the song position is unknown: ticks give the tempo, but
  `beat_at` is None and `confidence` 0. (ripieno started in the middle of a song waits for the
  next Start, or for an SPP and Continue.)
- Running: `beat_at(t)` follows the fitted line and extrapolates from the newest tick at the
  fitted tempo; `time_at` is its inverse.
- Stopped: the song does not move. `beat_at(t)` is the kept position (where Continue will
  resume) for every t: nothing new is extrapolated. `time_at(beat)` answers "when would `beat`
  sound if Continue came before the next tick": a nominal time, which is why `confidence` is 0.
  The tempo stays known (many DAWs keep sending clock while stopped, and it keeps the fit fresh).
- `confidence`: 0 unless running with a known tempo; 1 while ticks arrive regularly (after half
  a beat of them); when they stop it holds for a few ticks' worth of time and then falls
  linearly to 0 at STALE_S (0.5 s) after the last tick.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Sequence

TICK, START, CONTINUE, STOP, SONG_POSITION = 0xF8, 0xFA, 0xFB, 0xFC, 0xF2
CLOCK_STATUS = frozenset({TICK, START, CONTINUE, STOP, SONG_POSITION})  # what the daemon routes here

CLOCKS_PER_BEAT = 24
CLOCKS_PER_SIXTEENTH = 6
FIT_TICKS = 48  # the least-squares window: two beats
MIN_TICKS = 4  # ticks in the window before the line is trusted over the last known tempo
FULL_TICKS = 12  # ticks in the window for full confidence (half a beat)
STALE_S = 0.5  # no tick for this long: confidence 0, and the next tick starts a fresh fit
HOLD_TICKS = 4.0  # confidence holds at 1 for this many tick periods without a tick
JUMP_PERIODS = 0.5  # a tick this far off the line (in tick periods) ...
JUMP_RUN = 3  # ... this many times in a row: the tempo jumped, refit from those ticks
OUTLIER_PERIODS = 0.25  # a tick this far off the fitted line (in periods, or OUTLIER_S) is left out of it
OUTLIER_S = 0.003
SLIP_TOLERANCE = 0.35  # ticks: how close to a whole number of ticks off the line means lost ticks
MIN_PERIOD_S = 60.0 / (CLOCKS_PER_BEAT * 1000.0)  # faster than 1000 bpm is not a clock: ignored as a fit


def _line(points: Sequence[tuple[int, float]]) -> tuple[float, float, float] | None:
    """Least squares t = t_mean + (n - n_mean) * period: (n_mean, t_mean, period), or None for no clock."""
    k = len(points)
    mn = sum(x for x, _ in points) / k
    mt = sum(y for _, y in points) / k
    sxx = sum((x - mn) ** 2 for x, _ in points)
    sxy = sum((x - mn) * (y - mt) for x, y in points)
    slope = sxy / sxx if sxx > 0 else 0.0
    return (mn, mt, slope) if slope >= MIN_PERIOD_S else None


class MidiClock:
    """A MIDI clock follower that implements the `Tempo` protocol (see the module docstring)."""

    def __init__(self, bar_beats: int = 4, now: Callable[[], float] = time.monotonic) -> None:
        self._bar = int(bar_beats)
        self._now = now
        self._n = -1  # count of the newest tick received (all ticks, running or not)
        self._last_t: float | None = None  # arrival time of the newest tick
        self._window: deque[tuple[int, float]] = deque(maxlen=FIT_TICKS)
        self._off_line = 0  # consecutive ticks far from the fitted line
        self._pending: list[int] = []  # ticks since the last one on the line: how many ticks each came late
        self._base_r = 0.0  # offset from the line (in ticks) of the last tick taken as on it
        self._resync = False  # the next tick is the first after Start, Continue or a jump
        self.lost_ticks = 0  # net ticks counted in that never arrived (see the module docstring)
        # the fitted line: tick count n sounds at t_ref + (n - n_ref) * period
        self._n_ref = 0.0
        self._t_ref = 0.0
        self._period: float | None = None  # seconds per tick
        self.running = False
        self.started = False  # a Start or Continue was seen: the song position is known
        self._anchor = (0, 0)  # (tick count, song position in clocks) while running
        self._kept = 0  # song position in clocks where Continue resumes (valid while stopped)

    # --------------------------------------------------------------------------------- input

    def message(self, data: Sequence[int], t: float) -> None:
        """One MIDI event's bytes and its arrival time; whatever is not clock is ignored, never raised on."""
        try:
            t = float(t)
        except (TypeError, ValueError):
            return
        if not math.isfinite(t):
            return
        i, n = 0, len(data)
        while i < n:
            b = data[i]
            if not isinstance(b, int) or not 0 <= b <= 0xFF:
                i += 1
                continue
            if b == TICK:
                self._tick(t)
            elif b == START:
                self._start(t, 0)
            elif b == CONTINUE:
                if not self.running:
                    self._start(t, self._kept)
            elif b == STOP:
                self._stop()
            elif b == SONG_POSITION:
                if i + 2 < n and all(isinstance(x, int) and 0 <= x < 0x80 for x in data[i + 1:i + 3]):
                    self._song_position(data[i + 1] | data[i + 2] << 7)
                    i += 3
                    continue
            i += 1

    def _tick(self, t: float) -> None:
        fitted = self._period is not None and len(self._window) >= MIN_TICKS
        if self._last_t is not None and t - self._last_t > STALE_S:
            self._window.clear()  # the clock paused: the line through the old ticks says nothing now
            self._off_line = 0
            fitted = False
        resync, self._resync = self._resync, False
        n = self._n + 1
        r = 0.0  # how far behind the line this tick is, in ticks
        if fitted:
            assert self._period is not None
            r = (t - self._t_ref) / self._period - (n - self._n_ref)
        if fitted and not resync:  # across a Start, a refit or a pause an offset says nothing of losses
            k = self._lost_before(r)
            if k:
                # the ticks since the last one on the line each came a whole number of ticks later
                # than the one before, and this one agrees with the latest: the ticks between were
                # lost on the way (a JACK xrun, a busy USB bus), and the song went on without us
                pending = self._pending
                kept = [self._window.pop() for _ in range(len(pending))][::-1]
                for (n_old, t_old), shift in zip(kept, pending):
                    self._window.append((n_old + shift, t_old))
                n += k
                r -= k
                self.lost_ticks += k
                self._off_line = 0
                self._pending = []
        else:
            self._pending = []
        if not self._pending:
            self._base_r = r
        self._n = n
        self._last_t = t
        if fitted:
            self._off_line = self._off_line + 1 if abs(r) > JUMP_PERIODS else 0
            if resync and self._off_line:  # a master that restarts its clock's phase with Start
                self._window.clear()
                self._off_line = 0
            elif self._off_line >= JUMP_RUN:  # a new tempo: keep only the ticks that showed it
                recent = list(self._window)[-(JUMP_RUN - 1):]
                self._window.clear()
                self._window.extend(recent)
                self._off_line, self._pending = 0, []  # what looked like losses was the new tempo
                self._period = None  # the old tempo is wrong now: measure it from those ticks
                self._resync = True
        self._window.append((n, t))
        self._fit()

    def _lost_before(self, r: float) -> int:
        """Ticks lost before the pending ones, confirmed by this tick's offset r (0: none, or not yet).

        Each tick is compared with the last one on the line (`_base_r`): a tempo change drifts
        away from it tick by tick, a loss jumps by whole ticks at once and then stays there. A jump
        the other way (k < 0) takes back a loss that was none (two ticks that both came a period
        late) or drops a tick that came twice.
        """
        rel = r - self._base_r
        k = round(rel)
        whole = abs(rel - k) < SLIP_TOLERANCE
        if self._pending and whole and k == self._pending[-1]:
            return k  # this tick agrees with the latest jump: confirmed
        last = self._pending[-1] if self._pending else 0
        if whole and k != 0 and (k > last >= 0 or k < last <= 0):
            self._pending.append(k)  # a (further) jump: wait for the next tick to agree
        else:
            self._pending = []  # back on the line, or neither: a tick that came late, nothing lost
        return 0

    def _fit(self) -> None:
        w = self._window
        newest_n, newest_t = w[-1]
        if len(w) >= MIN_TICKS:
            line = _line(w)
            if line is not None:
                # once more without the ticks far off that line (a callback that waited): they are not the clock
                mn, mt, slope = line
                far = max(OUTLIER_S, OUTLIER_PERIODS * slope)
                kept = [(x, y) for x, y in w if abs(y - mt - (x - mn) * slope) <= far]
                if MIN_TICKS <= len(kept) < len(w):
                    line = _line(kept) or line
                self._n_ref, self._t_ref, self._period = line
                return
        # too few ticks for a line (or a nonsense one): the last known tempo, from the newest tick
        self._n_ref, self._t_ref = float(newest_n), newest_t
        if self._period is None and len(w) >= 2:
            slope = (newest_t - w[0][1]) / (newest_n - w[0][0])
            self._period = slope if slope >= MIN_PERIOD_S else None

    def _start(self, t: float, position: int) -> None:
        """Start (position 0) or Continue (the kept position): the next tick sounds `position`."""
        if self._last_t is None or t - self._last_t > STALE_S:
            # no tick flowing: the first one follows the Start at once, so expect it now
            self._n_ref, self._t_ref = float(self._n + 1), t
        self.running = True
        self.started = True
        self._anchor = (self._n + 1, position)
        self._resync = True

    def _stop(self) -> None:
        if self.running:
            self._kept = self._position_after(self._n)
        self.running = False

    def _song_position(self, sixteenths: int) -> None:
        clocks = sixteenths * CLOCKS_PER_SIXTEENTH
        if self.running:  # not sent while running by the book; some masters do: a jump at the next tick
            self._anchor = (self._n + 1, clocks)
            self._resync = True
        else:
            self._kept = clocks

    def _position_after(self, n: int) -> int:
        """Song position (clocks) of the tick after tick count n, while running."""
        n0, p0 = self._anchor
        return p0 + max(0, n + 1 - n0)

    # ------------------------------------------------------------------------ Tempo protocol

    @property
    def tempo_bpm(self) -> float | None:
        return None if self._period is None else 60.0 / (CLOCKS_PER_BEAT * self._period)

    @property
    def confidence(self) -> float:
        return self.confidence_at(self._now())

    def confidence_at(self, t: float) -> float:
        """How sure the beat is at time t: 0 unless running with a known tempo (see the module docstring)."""
        if not self.running or self._period is None or self._last_t is None:
            return 0.0
        gap = t - self._last_t
        hold = min(HOLD_TICKS * self._period, STALE_S / 2)
        fresh = 1.0 if gap <= hold else max(0.0, 1.0 - (gap - hold) / (STALE_S - hold))
        return fresh * min(1.0, len(self._window) / FULL_TICKS)

    @property
    def bar_beats(self) -> int:
        return self._bar

    @property
    def position(self) -> float:
        """Where the song stands while stopped (beats): where Continue resumes."""
        return self._kept / CLOCKS_PER_BEAT

    def beat_at(self, t: float) -> float | None:
        if not self.started or self._period is None:
            return None
        if not self.running:
            return self._kept / CLOCKS_PER_BEAT
        n0, p0 = self._anchor
        ticks = self._n_ref + (t - self._t_ref) / self._period
        return (p0 + ticks - n0) / CLOCKS_PER_BEAT

    def time_at(self, beat: float) -> float:
        if self._period is None:
            raise ValueError("MidiClock.time_at: no tempo known yet (check beat_at first)")
        if self.running:
            n0, p0 = self._anchor
        else:  # nominal: as if Continue came before the next tick
            n0, p0 = self._n + 1, self._kept
        n = n0 + (beat * CLOCKS_PER_BEAT - p0)
        return self._t_ref + (n - self._n_ref) * self._period

    def bar_start(self, beat: float) -> float | None:
        return math.floor(beat / self._bar + 1e-9) * self._bar if self._bar > 0 else None

    def onset(self, t: float, velocity: int = 64) -> None:
        """The player's key presses do not move a clock."""
