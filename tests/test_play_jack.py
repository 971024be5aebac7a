"""The engine on the player's beat through real JACK: `[tempo] source = "player"` (the default).

The keyboard plays on absolute deadlines from a thread of its own, so its onsets sit on an exact
grid; a tap (a second JACK input on the keyboard's port) hears them as ripieno:in does, which
gives the grid's phase after JACK's delivery, the way tests/test_tempo_jack.py takes the clock's.
The synth stamps what ripieno plays. The model is the tiny untrained checkpoint of the other JACK
tests: what it plays is noise, but when it plays is the engine's.
"""

from __future__ import annotations

import itertools
import statistics
import threading
import time
from dataclasses import dataclass

import pytest

from peers import Received, Synth, start_wired, wait_until
from tiny_model import tiny_checkpoint

# The JACK flake of tests/test_daemon_jack.py (a client whose process cycle never runs) applies here too.
pytestmark = pytest.mark.flaky(reruns=2, reruns_delay=1)

GRID_TOLERANCE_S = 0.012
STRIKE_SLACK_S = 0.003  # accompaniment latency, reported: one JACK period (ripieno's output leaves in the next cycle) + this
ON_GRID_S = 0.025  # the issues' definition of an onset on the grid


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.safetensors")


def config(model, mode: str = "call", extra: str = "") -> str:
    return (f'[midi]\napi = "jack"\n'
            f'[engine]\nmode = "{mode}"\nmodel = "{model}"\nsilence_s = 0.4\nanswer_s = 6.0\nseed = 5\n{extra}'
            f'[tempo]\nsource = "player"\n')


@dataclass
class Heard:
    t: float  # arrival by JACK's clock
    msg: list[int]
    stamp: float  # when the Python callback ran


class JackStamped(Synth):
    """A synth that also knows when JACK delivered each message, not only when its Python callback ran.

    rtmidi's JACK input gives every message its delta from the previous one, read with
    jack_get_time() in JACK's process cycle, before the callback waits for this process's GIL.
    Summed up, the deltas are the arrival times up to one offset; a Python stamp is never earlier
    than its arrival, so the offset is the least (stamp - summed delta) over all messages. (The
    wait measured here was under 0.1 ms even on a loaded box; this keeps it out of the measure.)
    """

    def __init__(self, client: str, port: str = "in") -> None:
        self.deltas: list[float] = []
        super().__init__(client, port)

    def _on(self, event: tuple[list[int], float], _data: object) -> None:
        now = time.monotonic()
        with self._lock:
            self.received.append(Received(now, list(event[0])))
            self.deltas.append(float(event[1]))

    def clear(self) -> None:
        with self._lock:  # the deltas left still chain: their unknown start is in the offset
            self.received.clear()
            self.deltas.clear()

    def delivered(self) -> list[Heard]:
        """Every message with its time of arrival by JACK's clock (on time.monotonic's axis)."""
        with self._lock:
            got, deltas = list(self.received), list(self.deltas)
        summed = list(itertools.accumulate(deltas))
        if not got:
            return []
        offset = min(r.t - c for r, c in zip(got, summed))
        return [Heard(c + offset, r.msg, r.t) for r, c in zip(got, summed)]

    def delivered_note_ons(self, period: float) -> list[Heard]:
        """The note-ons as a synth plays them, by JACK's clock. When a client misses its cycle (an
        xrun: jackd logs "client = ... was not finished"), JACK hands on its port buffer as it was,
        so the same note-on can arrive again within a period with no note-off between: one note."""
        out: list[Heard] = []
        last_on: dict[int, float] = {}
        for r in self.delivered():
            kind, pitch = r.msg[0] & 0xF0, r.msg[1] if len(r.msg) > 1 else -1
            if kind == 0x90 and r.msg[2] > 0:
                if pitch in last_on and r.t - last_on[pitch] < period:
                    continue
                last_on[pitch] = r.t
                out.append(r)
            elif kind == 0x80 or kind == 0x90:
                last_on.pop(pitch, None)
        return out


@pytest.fixture
def tap(jack, keyboard):
    """Hears the keyboard as ripieno:in does."""
    t = JackStamped("testplaytap")
    jack.wait_for_port(t.port)
    jack.connect(keyboard.port, t.port)
    yield t
    t.close()


@pytest.fixture
def stamped_synth(jack):
    s = JackStamped("testplaysynth")
    jack.wait_for_port(s.port)
    yield s
    s.close()


class Performance:
    """Notes (onset in beats, pitch, duration in beats) played at `bpm` on absolute deadlines."""

    def __init__(self, keyboard, notes: list[tuple[float, int, float]], bpm: float, lead_in_s: float = 0.3) -> None:
        self.keyboard = keyboard
        self.beat_s = 60.0 / bpm
        self.notes = notes
        self.lead_in_s = lead_in_s
        self.t0 = 0.0  # when beat 0 was meant to leave the keyboard
        self.lateness: list[float] = []  # each message: sent - due

    def due(self, beat: float) -> float:
        return self.t0 + beat * self.beat_s

    def play(self) -> None:
        """Blocks until the last note-off left (the sends come from a thread that does nothing else)."""
        msgs = sorted([(b, 1, [0x90, p, 90]) for b, p, _ in self.notes] + [(b + d, 0, [0x80, p, 0]) for b, p, d in self.notes])
        self.t0 = time.monotonic() + self.lead_in_s

        def run() -> None:
            for beat, _, msg in msgs:
                due = self.due(beat)
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                self.lateness.append(self.keyboard.send(msg) - due)

        th = threading.Thread(target=run, name="keyboard-player", daemon=True)
        th.start()
        th.join(60)

    def heard_zero(self, tap: JackStamped, period: float) -> tuple[float, float]:
        """(beat 0 as the tap heard the grid, the delivery delay): each onset heard against the one it was sent as."""
        onsets = [self.due(b) for b, _, _ in self.notes]
        heard = [r.t for r in tap.delivered_note_ons(period)]
        # by time, not by count: an xrun drops a cycle's events, at the tap as at ripieno
        assert len(heard) >= 0.75 * len(onsets), f"the tap heard {len(heard)} of {len(onsets)} onsets"
        delivery = statistics.median(h - min(onsets, key=lambda s: abs(h - s)) for h in heard)
        return self.t0 + delivery, delivery

    def kept_time(self, max_s: float = 0.010) -> str | None:
        late = sorted(self.lateness)
        if late[len(late) // 2] >= 0.001 or late[-1] >= max_s:
            return f"the keyboard thread ran late (p50 {late[len(late) // 2] * 1e3:.2f} ms, max {late[-1] * 1e3:.2f} ms): this measures the test"
        return None


def xruns(jack, since: int = 0) -> int:
    """XRun lines jackd logged (after the first `since`; its log is block-buffered, so roughly): a box
    too busy for JACK shows here, and with it late, repeated or lost messages."""
    try:
        return max(0, jack.log_path.read_text(errors="replace").count("XRun") - since)
    except OSError:
        return 0


def off_grid(t: float, zero: float, unit: float) -> float:
    return ((t - zero + unit / 2) % unit) - unit / 2


# 12 notes of quarters and eighths at 90 bpm (positions and lengths in beats), then a rest.
PHRASE_90 = [(0.0, 60, 0.5), (1.0, 62, 0.5), (2.0, 64, 0.3), (2.5, 65, 0.3), (3.0, 67, 0.5), (4.0, 65, 0.5),
             (5.0, 64, 0.3), (5.5, 62, 0.3), (6.0, 60, 0.3), (6.5, 64, 0.3), (7.0, 67, 0.5), (8.0, 72, 0.3)]


def test_call_answer_enters_on_the_players_beat_and_stays_on_their_grid(jack, daemon, keyboard, stamped_synth, tap, model):
    synth = stamped_synth
    d = start_wired(daemon, jack, keyboard, synth, config(model))
    xruns0 = xruns(jack)
    perf = Performance(keyboard, PHRASE_90, bpm=90.0)
    perf.play()
    phrase_end = time.monotonic()
    assert synth.note_ons() == [], "ripieno played over the player"
    wait_until(lambda: synth.note_ons(), 5, what="an answer")
    # An untrained model's steps can be beats long: wait out the whole answer (silence_s, up to a beat
    # to its entry, at most answer_s) and the tail its notes may ring (engine.TAIL_S).
    time.sleep(max(0.0, phrase_end + 0.4 + perf.beat_s + 6.0 + 0.4 + 0.3 - time.monotonic()))
    sounding = synth.sounding()  # before the stop, whose panic would close anything left
    period = jack.period / jack.rate
    answer = [n.t for n in synth.delivered_note_ons(period) if n.t > phrase_end]
    late = perf.kept_time()
    assert late is None, late
    assert len(answer) >= 3, f"{len(answer)} notes: too few to tell a grid from chance\n{d.log()[-2000:]}"
    zero, delivery = perf.heard_zero(tap, period)
    beat = perf.beat_s
    # The answer follows the model's beat-relative steps, which live on a twelfth-of-a-beat grid
    # (ARCHITECTURE: encoding), and an untrained model's steps are as often triplets (4/12) as
    # sixteenths (3/12): a note is on the grid when it is on the phrase's 16th grid or its twelfths.
    # The entry is the engine's own choice, not the model's, and always a beat: that is checked
    # on the quarter grid alone.
    on16 = [off_grid(t, zero, beat / 4) for t in answer]
    on12 = [off_grid(t, zero, beat / 12) for t in answer]
    nearest = [a if abs(a) <= abs(b) else b for a, b in zip(on16, on12)]
    entry = off_grid(answer[0], zero, beat)
    report = (f"{len(answer)} answer notes, at beats {[round((t - zero) / beat, 3) for t in answer]} of the phrase's grid; "
              f"off its 16ths (ms) {[round(o * 1e3, 1) for o in on16]}, off its twelfths {[round(o * 1e3, 1) for o in on12]}; "
              f"entry {entry * 1e3:.1f} ms off the beat; the phrase heard {delivery * 1e3:.2f} ms after it was sent; "
              f"jackd logged {xruns(jack, xruns0)} xrun lines meanwhile")
    print(report)
    assert abs(entry) <= GRID_TOLERANCE_S, report
    assert all(abs(o) <= GRID_TOLERANCE_S for o in nearest), report
    assert sounding == set(), f"still sounding after the answer: {sounding}\n{report}"
    assert d.stop() == 0, d.log()[-2000:]


# A melody of quarters at 100 bpm, every note on a beat.
MELODY_100 = [(float(k), p, 0.7) for k, p in enumerate([67, 69, 71, 72, 74, 72, 71, 69, 67, 71, 74, 79])]


@pytest.mark.parametrize("style", ["bass", "chords", "voice"])
def test_accompaniment_strikes_with_the_players_beats_below_the_melody_and_closes_every_note(jack, daemon, keyboard, stamped_synth, tap, model, style):
    synth = stamped_synth
    d = start_wired(daemon, jack, keyboard, synth, config(model, "accompany", f'accompany = "{style}"\n'))
    xruns0 = xruns(jack)
    perf = Performance(keyboard, MELODY_100, bpm=100.0)
    perf.play()
    time.sleep(2.5)  # the last notes ring out (at most two beats), then nothing may sound
    late = perf.kept_time()
    assert late is None, late
    period = jack.period / jack.rate
    melody = tap.delivered_note_ons(period)
    assert len(melody) == len(MELODY_100), f"the tap heard {len(melody)} of {len(MELODY_100)} notes"
    part = synth.delivered_note_ons(period)
    callback_wait = [round((n.stamp - n.t) * 1e3, 2) for n in part]
    rows = []
    for n in part:
        with_ = [m for m in melody if m.t <= n.t]
        assert with_, f"a part note at {n.t} before the first melody note\n{d.log()[-2000:]}"
        m = with_[-1]
        rows.append((melody.index(m), round((n.t - m.t) * 1e3, 2), n.msg[1], m.msg[1]))
    sounding = synth.sounding()  # before the stop, whose panic would close anything left
    assert d.stop() == 0, d.log()[-2000:]
    stats = [line[line.index("stats {"):] for line in d.log().splitlines() if "stats {" in line] or ["no stats"]
    report = (f"{style}: {len(part)} part notes (melody note, ms after it, part pitch, melody pitch): {rows}; "
              f"JACK period {period * 1e3:.2f} ms, jackd logged {xruns(jack, xruns0)} xrun lines meanwhile; "
              f"the synth's callback waited (ms) {callback_wait}; ripieno's own {stats[-1]}")
    print(report)
    assert sounding == set(), f"stuck after the phrase: {sounding}\n{report}"
    # The part plays along (not a vacuous pass). Not with every note: it needs a beat to strike on
    # (the tracker has one from the second onset on), and chords skip a strike while the last
    # ones still ring at max_polyphony.
    struck = {i for i, _, _, _ in rows}
    assert len(struck) >= len(MELODY_100) // 2, report
    per_strike = {"bass": 1, "chords": 3, "voice": 1}[style]  # notes struck with one melody note, at most
    assert max(sum(1 for r in rows if r[0] == i) for i in struck) <= per_strike, report
    # Struck with the player's note, so on the player's grid: within the agreed on-grid tolerance
    # (25 ms) after it, never before. How soon (the goal is one JACK period: ripieno's output leaves
    # in the next cycle) is a latency figure, printed in the report above and measured by
    # `ripieno bench e2e`, not a timed assertion: on this 2-core VM a strike came 8-14 ms late now
    # and then (a box busy with other work; the first strike of a fresh daemon, whose beat tracker's
    # first induction takes ~3 ms cold), while most land in the next cycle.
    assert all(0.0 <= ms <= ON_GRID_S * 1e3 for _, ms, _, _ in rows), report
    within_period = sum(ms <= (period + STRIKE_SLACK_S) * 1e3 for _, ms, _, _ in rows)
    print(f"{style}: {within_period} of {len(rows)} part notes within one period + {STRIKE_SLACK_S * 1e3:.0f} ms")
    assert all(p < top for _, _, p, top in rows), report
