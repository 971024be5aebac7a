"""MidiClock on its own: raw clock bytes with their arrival times in, the Tempo protocol out. Pure, no peers."""

from __future__ import annotations

import math
import random

import pytest

from ripieno.daemon.clock import CLOCK_STATUS, CONTINUE, SONG_POSITION, START, STALE_S, STOP, TICK, MidiClock
from ripieno.model.play.tempo import Tempo


class Clock:
    """A MIDI clock master on a virtual timeline: what it sends, MidiClock hears at that time."""

    def __init__(self, bpm: float, bar_beats: int = 4, jitter_s: float = 0.0, seed: int = 0) -> None:
        self.period = 60.0 / (bpm * 24)
        self.jitter_s = jitter_s
        self.rng = random.Random(seed)
        self.now = 10.0  # the master's own time of the next tick
        self.heard = 10.0  # what the follower's clock reads
        self.clock = MidiClock(bar_beats, now=lambda: self.heard)
        self.sent: list[float] = []  # exact (unjittered) times of the ticks

    def send(self, data: list[int]) -> None:
        self.clock.message(data, self.heard)

    def ticks(self, n: int) -> None:
        for _ in range(n):
            self.sent.append(self.now)
            self.heard = self.now + (self.rng.gauss(0.0, self.jitter_s) if self.jitter_s else 0.0)
            self.clock.message([TICK], self.heard)
            self.now += self.period
        self.heard = self.sent[-1]

    def wait(self, seconds: float) -> None:
        self.now += seconds
        self.heard += seconds


def test_midi_clock_is_a_tempo():
    c: Tempo = MidiClock()
    assert c.tempo_bpm is None and c.confidence == 0.0 and c.beat_at(0.0) is None and c.bar_beats == 4
    assert set(CLOCK_STATUS) == {0xF8, 0xFA, 0xFB, 0xFC, 0xF2}


@pytest.mark.parametrize("seed", range(5))
def test_100_bpm_with_1_ms_jitter_is_within_one_percent(seed):
    m = Clock(100.0, jitter_s=0.001, seed=seed)
    m.send([START])
    m.ticks(24 * 8)  # two bars
    c = m.clock
    assert c.tempo_bpm == pytest.approx(100.0, rel=0.01)
    assert c.tempo_bpm == pytest.approx(100.0, rel=0.001)  # in fact much closer: a line through 48 ticks
    assert c.confidence == 1.0
    # the phase too: the last tick sent (unjittered) is song position 191 clocks
    assert c.beat_at(m.sent[-1]) == pytest.approx(191 / 24, abs=0.0005 / (60 / 100))  # within 0.5 ms
    # and the next beats lie where the master will send them
    assert c.time_at(8.0) == pytest.approx(m.sent[-1] + m.period, abs=0.002)
    assert c.time_at(c.beat_at(12.345)) == pytest.approx(12.345)


def test_start_is_position_zero_at_the_next_tick_and_bars_are_counted_from_it():
    m = Clock(120.0, bar_beats=3)
    m.ticks(30)  # a DAW that sends clock while stopped: tempo known, position not
    c = m.clock
    assert c.tempo_bpm == pytest.approx(120.0)
    assert c.beat_at(m.heard) is None and c.confidence == 0.0 and not c.running
    m.send([START])
    assert c.running and c.confidence == 1.0
    first = m.now  # the next tick
    assert c.beat_at(first) == pytest.approx(0.0, abs=1e-6)
    assert c.time_at(0.0) == pytest.approx(first)
    m.ticks(24 * 4 + 12)
    assert c.beat_at(m.sent[-1]) == pytest.approx(107 / 24)
    assert c.beat_at(first + 0.5) == pytest.approx(1.0)
    assert c.bar_start(4.4) == 3 and c.bar_start(2.99) == 0 and c.bar_start(6.0) == 6
    assert c.time_at(6.0) == pytest.approx(first + 3.0)


def test_start_without_clock_before_it_expects_the_first_tick_at_once():
    m = Clock(120.0)
    m.send([START])
    m.ticks(6)
    c = m.clock
    assert c.tempo_bpm == pytest.approx(120.0)
    assert c.beat_at(m.sent[0]) == pytest.approx(0.0, abs=1e-6)
    assert 0.0 < c.confidence < 1.0  # half a beat of ticks for full confidence
    m.ticks(6)
    assert c.confidence == 1.0


def test_stop_keeps_the_position_and_continue_resumes_there():
    m = Clock(120.0)
    m.send([START])
    m.ticks(48)  # positions 0..47: two beats
    c = m.clock
    m.send([STOP])
    assert not c.running and c.confidence == 0.0
    assert c.position == 2.0  # Continue resumes at clock 48
    # stopped: nothing new is extrapolated, whatever the time asked
    assert c.beat_at(m.heard) == 2.0 and c.beat_at(m.heard + 10.0) == 2.0
    m.ticks(30)  # the master keeps sending clock while stopped
    assert c.beat_at(m.heard) == 2.0 and c.tempo_bpm == pytest.approx(120.0)
    # time_at while stopped is nominal: as if Continue came before the next tick
    assert c.time_at(2.0) == pytest.approx(m.now)
    m.send([CONTINUE])
    resume = m.now
    assert c.running and c.confidence == 1.0
    m.ticks(12)
    assert c.beat_at(resume) == pytest.approx(2.0, abs=1e-6)
    assert c.beat_at(m.sent[-1]) == pytest.approx(2.0 + 11 / 24)
    m.send([CONTINUE])  # while running: changes nothing
    assert c.beat_at(m.sent[-1]) == pytest.approx(2.0 + 11 / 24)
    m.send([START])  # Start always starts from the top
    m.ticks(1)
    assert c.beat_at(m.sent[-1]) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(("lsb", "msb", "beat"), [(16, 0, 4.0), (0, 0, 0.0), (1, 0, 0.25), (0, 1, 32.0), (127, 127, 16383 / 4)])
def test_song_position_pointer_is_the_beat_of_the_next_tick(lsb, msb, beat):
    m = Clock(120.0)
    m.ticks(24)
    m.send([SONG_POSITION, lsb, msb])
    c = m.clock
    assert c.beat_at(m.heard) is None  # stopped, never started: the position is told, not yet played
    assert c.position == beat
    m.send([CONTINUE])
    m.ticks(1)
    assert c.beat_at(m.sent[-1]) == pytest.approx(beat, abs=1e-6)
    m.ticks(6)
    assert c.beat_at(m.sent[-1]) == pytest.approx(beat + 0.25, abs=1e-6)


def test_song_position_while_stopped_moves_where_continue_resumes():
    m = Clock(120.0)
    m.send([START])
    m.ticks(30)
    m.send([STOP])
    m.send([SONG_POSITION, 16, 0])  # the DAW's cursor moved to bar 2 (4/4)
    c = m.clock
    assert c.beat_at(m.heard) == 4.0
    m.send([CONTINUE])
    m.ticks(1)
    assert c.beat_at(m.sent[-1]) == pytest.approx(4.0, abs=1e-6)
    m.send([SONG_POSITION, 32, 0])  # sent while running (not by the book): the next tick jumps there
    m.ticks(1)
    assert c.beat_at(m.sent[-1]) == pytest.approx(8.0, abs=1e-6)


def test_a_clock_that_stops_loses_confidence_and_a_fresh_one_is_followed_again():
    m = Clock(120.0)
    m.send([START])
    m.ticks(48)
    c = m.clock
    last = m.heard
    assert c.confidence == 1.0
    assert c.confidence_at(last + 0.05) == 1.0  # a few ticks late: still fine
    falling = [c.confidence_at(last + dt) for dt in (0.1, 0.2, 0.3, 0.4)]
    assert falling == sorted(falling, reverse=True) and 0.0 < falling[-1] < falling[0] < 1.0
    assert c.confidence_at(last + STALE_S) == 0.0 and c.confidence_at(last + 60.0) == 0.0
    m.wait(2.0)
    assert c.confidence == 0.0
    assert c.tempo_bpm == pytest.approx(120.0)  # the last tempo stays known
    m.send([START])  # a drum machine: clock only while playing, at a new tempo
    m2 = Clock(90.0)
    first = m.heard + 0.0005
    for k in range(48):
        c.message([TICK], first + k * m2.period)
    assert c.tempo_bpm == pytest.approx(90.0, rel=1e-6)
    assert c.beat_at(first) == pytest.approx(0.0, abs=1e-6)
    assert c.confidence_at(first + 47 * m2.period) == 1.0


def test_a_tempo_jump_is_followed_within_a_few_ticks():
    m = Clock(120.0)
    m.send([START])
    m.ticks(48)
    c = m.clock
    fast = 60.0 / (160.0 * 24)
    t = m.sent[-1]
    for _ in range(6):
        t += fast
        c.message([TICK], t)
    assert c.tempo_bpm == pytest.approx(160.0, rel=0.01)
    assert c.beat_at(t) == pytest.approx(53 / 24, abs=1e-3)


def lossy(m: Clock, n: int, lost: set[int]) -> None:
    """n ticks of m's clock, of which those numbered in `lost` (0 = the next one) never arrive."""
    for k in range(n):
        m.sent.append(m.now)
        m.heard = m.now + (m.rng.gauss(0.0, m.jitter_s) if m.jitter_s else 0.0)
        if k not in lost:
            m.clock.message([TICK], m.heard)
        m.now += m.period


@pytest.mark.parametrize("lost", [{30}, {30, 31}, {30, 31, 32, 33}, {30, 32}, {30, 40, 50}, {47}])
def test_lost_ticks_do_not_put_the_beat_behind(lost):
    """A JACK xrun drops a cycle's events: without this, every later note sat 21-42 ms late (measured)."""
    m = Clock(120.0, jitter_s=0.0005, seed=3)
    m.send([START])
    lossy(m, 96 + 1, lost)  # 0..96; the last arrives
    c = m.clock
    assert c.beat_at(m.sent[-1]) == pytest.approx(96 / 24, abs=0.002)
    assert c.tempo_bpm == pytest.approx(120.0, rel=0.002)


def test_five_percent_of_ticks_lost_at_random_with_jitter():
    m = Clock(100.0, jitter_s=0.001, seed=11)
    m.send([START])
    rng = random.Random(5)
    n = 24 * 16
    lost = {k for k in range(1, n - 2) if rng.random() < 0.05}
    lossy(m, n, lost)
    assert m.clock.beat_at(m.sent[-1]) == pytest.approx((n - 1) / 24, abs=0.003)
    assert m.clock.tempo_bpm == pytest.approx(100.0, rel=0.01)


def test_a_late_tick_and_one_on_its_heels_are_not_a_loss():
    m = Clock(120.0)
    m.send([START])
    m.ticks(48)
    c = m.clock
    late = m.now + m.period * 0.95  # a callback that waited almost a period ...
    c.message([TICK], late)
    m.now += m.period
    m.heard = m.now + 0.0003  # ... and the next tick right behind it
    c.message([TICK], m.heard)
    m.now += m.period
    m.ticks(6)
    assert c.beat_at(m.sent[-1]) == pytest.approx(55 / 24, abs=1e-3)


def test_a_tempo_halving_is_a_new_tempo_not_lost_ticks():
    m = Clock(120.0)
    m.send([START])
    m.ticks(48)
    c = m.clock
    slow = Clock(60.0)
    t = m.sent[-1]
    for _ in range(12):
        t += slow.period
        c.message([TICK], t)
    assert c.tempo_bpm == pytest.approx(60.0, rel=0.01)
    assert c.beat_at(t) == pytest.approx(59 / 24, abs=1e-3)  # every tick counted once


def test_a_master_that_restarts_its_clock_phase_with_start_is_followed_at_once():
    m = Clock(120.0)
    m.ticks(48)  # clock while stopped
    m.send([START])
    m.now += m.period * 0.6  # the first clock after Start comes off the old phase (and near 2 periods)
    m.now += m.period
    m.ticks(2)
    c = m.clock
    assert c.beat_at(m.sent[-2]) == pytest.approx(0.0, abs=1e-3)  # not read as a lost tick
    assert c.beat_at(m.sent[-1]) == pytest.approx(1 / 24, abs=1e-3)


@pytest.mark.parametrize("garbage", [
    [], [0x90, 60, 100], [0x80, 60, 0], [0xB0, 64, 127], [0xF1, 0x20],  # notes, CC, MTC quarter frame
    [0xF2], [0xF2, 16], [0xF2, 0x90, 1], [0xF2, 1, 0x90],  # song position without its data bytes
    [0xF0, 1, 2, 0xF7], [0xFE], [0xFF], [0xF9], [0xFD], [0xF4], [0xF5], [0xF6], [0x7F, 0x00],
    [256, -1, 0xF3, 5], ["x", None, 3.5],
])
def test_garbage_is_ignored(garbage):
    m = Clock(120.0)
    m.send([START])
    m.ticks(24)
    c = m.clock
    before = (c.tempo_bpm, c.beat_at(m.heard), c.running, c.position)
    c.message(garbage, m.heard)
    c.message([TICK], float("nan"))
    c.message([TICK], "soon")  # type: ignore[arg-type]
    assert (c.tempo_bpm, c.beat_at(m.heard), c.running, c.position) == before
    m.ticks(1)
    assert c.beat_at(m.sent[-1]) == pytest.approx(1.0, abs=1e-6)


def test_real_time_bytes_inside_other_bytes_are_read():
    m = Clock(120.0)
    m.ticks(24)
    c = m.clock
    c.message([0x90, 60, START, 100], m.heard)  # real-time may interleave with any message
    assert c.running
    c.message([0xF2, 16, 0, STOP], m.heard)  # in order: a jump to beat 4 at the next tick, then Stop
    assert not c.running and c.position == 4.0
    c.message([SONG_POSITION, 8, 0], m.heard)
    assert c.position == 2.0


def test_onset_does_not_move_a_clock_and_nothing_is_ever_non_finite():
    m = Clock(120.0)
    m.send([START])
    m.ticks(48)
    c = m.clock
    before = c.beat_at(m.heard)
    c.onset(m.heard, 100)
    assert c.beat_at(m.heard) == before
    for t in (m.heard, m.heard + 1e6, 0.0):
        assert math.isfinite(c.beat_at(t))
    with pytest.raises(ValueError, match="no tempo"):
        MidiClock().time_at(1.0)


def test_lost_ticks_are_counted():
    m = Clock(120.0)
    m.send([START])
    lossy(m, 60, {30, 31, 45})
    assert m.clock.lost_ticks == 3


def test_two_ticks_a_period_late_are_taken_back_when_the_clock_is_on_time_again():
    """Looks like a lost tick (two ticks agreeing, a period behind) until the next ticks say otherwise."""
    m = Clock(120.0)
    m.send([START])
    m.ticks(48)
    c = m.clock
    for _ in range(2):
        c.message([TICK], m.now + m.period)  # stamped a whole period late, both
        m.sent.append(m.now)
        m.now += m.period
    assert c.lost_ticks == 1  # taken for a loss, for now
    m.ticks(4)
    assert c.lost_ticks == 0
    assert c.beat_at(m.sent[-1]) == pytest.approx(53 / 24, abs=1e-3)


def test_a_tick_that_came_twice_is_dropped():
    m = Clock(120.0)
    m.send([START])
    m.ticks(48)
    c = m.clock
    c.message([TICK], m.sent[-1] + 0.0002)  # the same tick again
    m.ticks(4)
    assert c.beat_at(m.sent[-1]) == pytest.approx(51 / 24, abs=1e-3) and c.lost_ticks == -1
