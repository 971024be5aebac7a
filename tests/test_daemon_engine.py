"""The engine on a virtual clock with a tiny real model: modes, interruption, limits, smash, panic."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from ripieno.daemon.config import Config, EngineConfig
from ripieno.model.play.performance import Performance, run_virtual
from ripieno.model.play.engine import Engine, harmony_weights, key_weights, next_on_grid, player_grid, register_weights, scaled_velocity
from ripieno.model.harmony import consonant_with
from ripieno.model.play.tempo import SteadyTempo
from ripieno.model.play.keys import Event, KeyDown, KeyUp
from ripieno.model import checkpoint
from ripieno.model.stream import Stream
from tiny_model import tiny_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return checkpoint.load(tiny_checkpoint(tmp_path_factory.mktemp("m") / "tiny.safetensors"))


def make(ckpt, seed: int = 1, tempo=None, **engine_kw) -> tuple[Engine, Performance]:
    """The engine and its host (the one every clock drives: `model.play.performance`)."""
    cfg = dataclasses.replace(EngineConfig(), **engine_kw)
    perf = Performance(cfg, Stream(ckpt), np.random.default_rng(seed), tempo=tempo)
    return perf.engine, perf


def phrase(t0: float, pitches: list[int], step: float = 0.25, dur: float = 0.2, vel: int = 90, ch: int = 0) -> list[Event]:
    evs: list[Event] = []
    for i, p in enumerate(pitches):
        t = t0 + i * step
        evs += [KeyDown(t, ch, p, vel), KeyUp(t + dur, ch, p, dur)]
    return sorted(evs, key=lambda e: (e.t, isinstance(e, KeyDown)))


def drive(engine: Engine, out: Performance, inputs: list[Event], until: float) -> None:
    """Virtual time up to `until`, through the same driver `continue` and eval use."""
    assert out.engine is engine
    run_virtual(out, inputs, until)
    out.clock = max(out.clock, until)


def ons(out: Performance) -> list[tuple[float, list[int]]]:
    return [(t, m) for t, m in out.sent if m[0] & 0xF0 == 0x90 and m[2] > 0]


def sounding(out: Performance) -> set[int]:
    on: set[int] = set()
    for _, m in out.sent:
        if m[0] & 0xF0 == 0x90 and m[2] > 0:
            on.add(m[1])
        elif m[0] & 0xF0 == 0x80:
            on.discard(m[1])
        elif m[0] & 0xF0 == 0xB0 and m[1] in (120, 123):
            on.clear()
    return on


def test_call_answers_after_the_rest_and_never_during_the_phrase(ckpt):
    engine, out = make(ckpt, silence_s=0.5)
    notes = phrase(1.0, [60, 62, 64, 65, 67, 69, 71, 72])  # 1.0 .. 2.95
    drive(engine, out, notes, until=12.0)
    answer = ons(out)
    assert answer, "no answer"
    last_release = max(e.t for e in notes)
    assert min(t for t, _ in answer) >= last_release + 0.5
    beat = 60.0 / engine.tempo.tempo_bpm
    # enters on the next beat of the phrase's beat residue (mod 2 or 3: at most three beats on), about the phrase's length
    assert max(t for t, _ in answer) <= last_release + 0.5 + 3 * beat + 1.95 + 0.05
    assert sounding(out) == set() and out.scheduler.open == set()


def test_call_stops_the_moment_the_player_plays_again(ckpt):
    engine, out = make(ckpt, silence_s=0.3, max_notes_per_s=50.0)
    drive(engine, out, phrase(0.0, [60, 64, 67, 72] * 4, step=0.2), until=3.5)
    t = 3.5
    while not (ons(out) and out.scheduler.open) and t < 8.0:  # until the answer is under way and sounding
        t += 0.01
        drive(engine, out, [], until=t)
    assert ons(out) and engine.plan is not None
    out.sent.clear()
    was_sounding = set(out.scheduler.open)
    assert was_sounding
    drive(engine, out, [KeyDown(t, 0, 50, 80)], until=t)
    assert {m[1] for _, m in out.sent if m[0] & 0xF0 == 0x80} == was_sounding
    assert all(u == t for u, _ in out.sent)
    drive(engine, out, [KeyUp(t + 0.05, 0, 50, 0.05)], until=t + 0.05 + 0.29)
    assert ons(out) == [] and out.scheduler.open == set()


def test_accompany_plays_during_the_phrase_and_falls_silent_soon_after(ckpt):
    engine, out = make(ckpt, mode="accompany", max_notes_per_s=50.0)
    notes = phrase(0.0, [60, 62, 64, 65, 67, 65, 64, 62] * 3, step=0.25)  # 0 .. 5.75
    drive(engine, out, notes, until=12.0)
    times = [t for t, _ in ons(out)]
    assert sum(1 for t in times if t < 5.75) >= 3, times
    assert max(times) <= 5.75 + 2.0
    assert sounding(out) == set()


def test_limits_rate_range_polyphony_and_velocity(ckpt):
    engine, out = make(ckpt, silence_s=0.2, max_notes_per_s=8.0, max_polyphony=2, low_pitch=48, high_pitch=60, answer_s=20.0)
    drive(engine, out, phrase(0.0, [70, 72, 74] * 20, step=0.15, vel=30), until=40.0)
    answer = ons(out)
    assert len(answer) >= 8
    times = [t for t, _ in answer]
    assert max(sum(1 for u in times if t <= u < t + 1.0) for t in times) <= 8
    assert all(48 <= m[1] <= 60 for _, m in answer)
    assert np.mean([m[2] for _, m in answer]) < 60  # soft player, soft answer
    open_: set[int] = set()
    for _, m in out.sent:  # never more than 2 voices at once
        if m[0] & 0xF0 == 0x90:
            open_.add(m[1])
        elif m[0] & 0xF0 == 0x80:
            open_.discard(m[1])
        assert len(open_) <= 2


def test_smash_is_not_answered_with_a_wall_and_the_next_phrase_is_answered(ckpt):
    engine, out = make(ckpt, silence_s=0.5)
    rng = np.random.default_rng(0)
    smash: list[Event] = []
    for k in range(1500):
        t, ch, p = k / 1500, int(rng.integers(16)), int(rng.integers(128))
        smash += [KeyDown(t, ch, p, int(rng.integers(1, 128))), KeyUp(t + 0.01, ch, p, 0.01)]
    smash.sort(key=lambda e: e.t)
    drive(engine, out, smash, until=6.0)
    assert len(ons(out)) <= 36
    assert engine.stats.dropped > 0  # most of the smash never became model steps
    out.sent.clear()
    drive(engine, out, phrase(6.0, [60, 62, 64, 65, 67]), until=12.0)
    assert len(ons(out)) >= 1


def test_mode_change_and_panic_silence_everything(ckpt):
    engine, out = make(ckpt, mode="accompany")
    drive(engine, out, phrase(0.0, [60, 62, 64, 65] * 4, step=0.2), until=2.0)
    assert out.scheduler.open or out.scheduler.planned
    engine.set_state("call", enabled=True, temperature=0.9, silence_s=0.8)
    assert [m for _, m in out.sent[-3:]] == [[0xB0, 64, 0], [0xB0, 123, 0], [0xB0, 120, 0]]
    assert out.scheduler.open == set() and out.scheduler.planned == []
    assert engine.plan is None


def test_off_mode_listens_without_playing(ckpt):
    engine, out = make(ckpt, mode="off")
    drive(engine, out, phrase(0.0, [60, 62, 64]), until=5.0)
    assert ons(out) == [] and engine.stats.notes_in == 3


def test_long_session_stays_finite_and_bounded(ckpt):
    engine, out = make(ckpt, mode="accompany", max_notes_per_s=40.0)
    rng = np.random.default_rng(5)
    notes = phrase(0.0, [int(p) for p in rng.integers(40, 90, 3000)], step=0.1, dur=0.08)
    drive(engine, out, notes, until=305.0)
    assert engine.stats.notes_out > 500  # a bass note on most beats of 300 s
    assert all(math.isfinite(x) for x in engine.stream.h.ravel()) if hasattr(engine.stream, "h") else True
    assert len(engine.recent_out) <= 40 and len(engine.model_velocities) <= 32 and len(out.scheduler.planned) < 50
    assert len(engine.ours) < 200


def test_pure_helpers():
    assert scaled_velocity(100, 100.0, 40.0) == 40
    assert Config().engine.mode == "call" and Config().engine.accompany == "bass"
    w = harmony_weights([64, 67], 40, 80)  # E and G sound
    assert w[60] == 1.0 and w[52] == 1.0  # C makes a third/sixth and a fifth/fourth... C-E 4, C-G 7: consonant
    assert w[62] < 0.1 and w[65] < 0.1 and w[69] < 0.1  # D (a second), F (a second), A (a second with G)
    assert w[39] == 0.0 and w[81] == 0.0  # outside the range
    assert harmony_weights([], 0, 127).min() == 1.0


def _on_grid(times: list[float], origin: float, period: float, division: float = 0.25, tol: float = 0.002) -> bool:
    return all(abs((t - origin) / period / division - round((t - origin) / period / division)) * period * division <= tol for t in times)


def test_call_answer_sits_on_the_tempo_grid_and_enters_on_a_beat(ckpt):
    tempo = SteadyTempo(90.0, origin=0.0)  # a clock-like source: beat k at k * 2/3 s
    period = 60.0 / 90.0
    engine, out = make(ckpt, silence_s=0.5, tempo=tempo)
    notes = phrase(period, [60, 62, 64, 65, 67, 65, 64, 62], step=period / 2, dur=period / 2 - 0.02)
    drive(engine, out, notes, until=20.0)
    answer = [t for t, _ in ons(out)]
    assert answer
    first = answer[0]
    assert abs(first / period - round(first / period)) < 1e-6, "the answer must enter on a beat"
    # every onset is a grid value of the model's steps (twelfths of a beat) or a catch-up sixteenth
    assert all(abs(t / period * 12 - round(t / period * 12)) < 1e-6 for t in answer)


def test_a_grid_point_already_past_is_never_played_late(ckpt):
    tempo = SteadyTempo(120.0, origin=0.0)
    engine, out = make(ckpt, silence_s=0.3, tempo=tempo)
    drive(engine, out, phrase(0.5, [60, 62, 64, 65], step=0.25), until=1.6)
    t = 1.6
    while engine.plan is None and t < 5.0:  # until the answer has begun
        t += 0.01
        drive(engine, out, [], until=t)
    assert engine.plan is not None
    # the loop was busy: the next poll comes 130 ms after the next note was due to be planned
    late = tempo.time_at(engine.plan.cursor) + 0.13
    out.advance(late)
    planned = [p for p in out.scheduler.planned if not p.started]
    assert planned, "nothing planned after the late wake-up"
    for p in planned:
        assert p.on >= late, "a note planned into the past would sound late"
        x = p.on / 0.5  # beats at 120 bpm
        assert abs(x * 12 - round(x * 12)) < 1e-6 and round((x - math.floor(x)) * 12) % 12 in engine.plan.grid, "off the grid"


def test_the_players_subdivision_is_the_answers_grid():
    assert player_grid([0.0, 0.5, 1.0]) == (0, 3, 6, 9)  # too few onsets to tell: sixteenths
    assert player_grid([k * 0.5 for k in range(12)]) == (0, 6)  # eighths
    assert player_grid([k / 3 + 0.01 for k in range(12)]) == (0, 4, 8)  # triplets, a little late
    assert player_grid([k * 0.5 for k in range(40)] + [0.25]) == (0, 6)  # one stray sixteenth is not a habit
    assert next_on_grid(1.2, (0, 6)) == 1.0 and next_on_grid(1.3, (0, 6)) == 1.5 and next_on_grid(1.9, (0, 6)) == 2.0
    assert next_on_grid(1.2, (0, 6), after=1.0) == 1.5  # a step always moves on
    assert next_on_grid(1.95, (0, 4, 8), after=1.9) == 2.0


def test_an_answer_stays_on_the_players_grid_when_the_beat_is_read_at_another_level(ckpt):
    """A tracker that calls three of the player's eighths a beat (a dotted-quarter reading of a 4/4
    tune): the model's steps are fractions of that beat, yet every answer onset lands on the
    player's eighths, because the answer takes its places in the beat from the player's onsets."""
    eighth = 0.25

    class MisreadTracker(SteadyTempo):
        hears_player = True  # a beat read from the player's onsets, here at the wrong level

    tempo = MisreadTracker(60.0 / (3 * eighth), origin=0.0)
    engine, out = make(ckpt, silence_s=0.3, tempo=tempo)
    drive(engine, out, phrase(0.0, [60, 62, 64, 65, 67, 65, 64, 62, 60, 62, 64, 62], step=eighth, dur=0.2), until=10.0)
    answer = [t for t, _ in ons(out) if t > 3.0]
    assert len(answer) >= 3, answer
    for on in answer:
        assert abs(on / eighth - round(on / eighth)) < 1e-6, (on, engine.plan and engine.plan.grid)


def test_accompaniment_strikes_with_on_beat_onsets_under_the_melody_and_consonant(ckpt):
    tempo = SteadyTempo(100.0, origin=0.0)
    period = 0.6
    melody = [72, 74, 76, 77, 79, 77, 76, 74] * 3
    inputs = phrase(0.0, melody, step=period / 2, dur=period / 2 - 0.01)  # eighths: every other one on a beat
    engine, out = make(ckpt, mode="accompany", tempo=tempo)
    drive(engine, out, inputs, until=20.0)
    part = ons(out)
    assert len(part) >= 8
    for t, m in part:
        assert abs(t / period - round(t / period)) < 1e-9, "bass strikes on the beat"
        sounding = [e.pitch for e in inputs if isinstance(e, KeyDown) and e.t <= t < e.t + period / 2 - 0.01]
        assert sounding and m[1] < min(sounding), "under the melody"
        assert m[1] >= min(melody) - 7, "within a fifth of the player's range"
    consonant = sum(consonant_with(m[1], [e.pitch for e in inputs if isinstance(e, KeyDown) and e.t <= t < e.t + period / 2 - 0.01]) for t, m in part)
    assert consonant / len(part) >= 0.9  # an untrained model, and still consonant: the engine's harmony guard


@pytest.mark.parametrize("style", ["chords", "voice"])
def test_accompaniment_styles_respect_polyphony_and_never_double_a_pitch(ckpt, style):
    engine, out = make(ckpt, mode="accompany", accompany=style, max_polyphony=2, tempo=SteadyTempo(100.0))
    drive(engine, out, phrase(0.0, [72, 74, 76, 77] * 6, step=0.3, dur=0.25), until=20.0)
    part = ons(out)
    assert part
    open_: set[int] = set()
    for _, m in out.sent:
        if m[0] & 0xF0 == 0x90 and m[2] > 0:
            assert m[1] not in open_, "a pitch struck again while it sounds"
            open_.add(m[1])
        elif m[0] & 0xF0 == 0x80:
            open_.discard(m[1])
        assert len(open_) <= 2
    if style == "voice":  # a note with every player onset
        assert len(part) >= 20


def test_keys_whose_note_off_was_lost_in_a_smash_stop_blocking_the_answer(ckpt):
    engine, out = make(ckpt, silence_s=0.5)
    smash: list[Event] = [KeyDown(k / 1500, k % 16 if k % 16 != 9 else 0, 20 + k % 80, 90) for k in range(1500)]  # no note-offs at all
    drive(engine, out, smash, until=1.2)
    assert engine.player.held > 0 and ons(out) == []
    drive(engine, out, [], until=4.0)
    assert ons(out), "ripieno waited forever for keys whose note-off never came"


def test_without_a_flood_a_held_key_keeps_ripieno_listening(ckpt):
    engine, out = make(ckpt, silence_s=0.5)
    drive(engine, out, [*phrase(0.0, [60, 62, 64]), KeyDown(0.8, 0, 67, 90)], until=10.0)
    assert ons(out) == []  # the player holds the last note: no answer over it


def test_call_waits_for_the_sustain_pedal_to_lift_before_answering(ckpt):
    from ripieno.model.play.keys import Control

    engine, out = make(ckpt, silence_s=0.5)
    notes = phrase(1.0, [60, 62, 64, 65])  # last release at 1.95
    pedal = [Control(0.9, 0, 64, 127), Control(3.0, 0, 64, 0)]
    drive(engine, out, sorted(notes + pedal, key=lambda e: e.t), until=8.0)
    answer = ons(out)
    assert answer, "no answer after the pedal was lifted"
    assert answer[0][0] >= 3.0 + 0.5, f"answered over the pedal's ring at {answer[0][0]:.2f}"
    assert answer[0][0] < 3.0 + 0.5 + 60.0 / engine.tempo.tempo_bpm + 0.05  # on the next beat


def test_a_foot_resting_on_the_pedal_does_not_silence_ripieno_for_good(ckpt):
    from ripieno.model.play.keys import Control
    from ripieno.model.play.player import PEDAL_RING_S

    engine, out = make(ckpt, silence_s=0.5)
    notes = phrase(1.0, [60, 62, 64, 65])  # last release at 1.95
    drive(engine, out, sorted(notes + [Control(0.9, 0, 64, 100)], key=lambda e: e.t), until=10.0)
    answer = ons(out)
    assert answer, "a held pedal silenced ripieno for good"
    rest = 1.95 + PEDAL_RING_S + 0.5
    assert rest <= answer[0][0] < rest + 60.0 / engine.tempo.tempo_bpm + 0.05, answer[0][0]  # on the next beat after the ring


def _answered_between(out, lo: float, hi: float) -> bool:
    return any(lo <= t < hi for t, _ in ons(out))


def test_a_lost_note_off_stops_blocking_answers_30_s_after_its_own_press_while_the_player_plays_on(ckpt):
    """Issue #15: one lost release silenced call mode for as long as the player kept playing (the
    stale-key clock restarted at every key). Now the key stops counting HELD_MAX_S after its press."""
    engine, out = make(ckpt, silence_s=0.3)
    inputs: list[Event] = [KeyDown(0.0, 0, 50, 90)]  # its KeyUp never arrives
    for k in range(12):  # a short phrase every 3.5 s, each followed by a rest that would be answered
        inputs += phrase(0.5 + 3.5 * k, [60, 62, 64], step=0.2, dur=0.15)
    inputs.sort(key=lambda e: (e.t, isinstance(e, KeyDown)))
    drive(engine, out, inputs, until=44.0)
    assert not _answered_between(out, 0.0, 30.0), "answered while a key was (apparently) held"
    assert _answered_between(out, 30.0, 36.0), "still silent long after the lost key's own press"


def test_a_key_pressed_again_without_its_release_counts_once(ckpt):
    engine, out = make(ckpt, silence_s=0.3)
    inputs: list[Event] = [KeyDown(0.0, 0, 50, 90), KeyDown(1.0, 0, 50, 90), KeyUp(1.2, 0, 50, 0.2)]
    inputs += phrase(1.5, [60, 62, 64, 65], step=0.2, dur=0.15)
    drive(engine, out, inputs, until=5.0)
    assert _answered_between(out, 2.3, 5.0), "the re-pressed key still blocks the answer"


def test_key_weights_follow_the_players_pitch_classes():
    from ripieno.model.play.engine import KEY_FLOOR

    assert key_weights([60, 62, 64], 0.5) is None  # too few notes to know a key
    c_major = [60, 62, 64, 65, 67, 69, 71, 72] * 2 + [60, 64, 67] * 3
    w = key_weights(c_major, 0.5)
    assert w.shape == (128,) and w[60] == w.max() == 1.0  # C, the most used
    assert w[61] == pytest.approx((KEY_FLOOR / (7 / 25 + KEY_FLOOR)) ** 0.5)  # C#, never played: rarer, still possible
    assert 0 < w[61] < w[62] < w[60] and w[61 + 12] == w[61]
    assert key_weights(c_major, 0.0) is None


def test_register_weights_keep_an_answer_in_the_players_range_with_a_soft_edge():
    assert register_weights([]) is None
    w = register_weights([60, 67, 64], soft=5.0)
    assert w.shape == (128,) and (w[60:68] == 1.0).all()  # anywhere the player went, not only their notes
    assert w[71] == pytest.approx(np.exp(-(4 / 5) ** 2)) and w[56] == w[71]  # a third past either edge
    assert w[74] < 0.15 and w[53] < 0.15 and w[40] < 1e-6  # a fifth out is rare, two octaves out never


def test_an_answer_stays_in_the_players_key(ckpt):
    """An untrained model's answer (variation 1: the network alone, no copying of the phrase), after
    a phrase on a pentatonic scale, keeps to it more often with the key's weights than without."""
    penta = [60, 62, 64, 67, 69, 72, 69, 67, 64, 62] * 2
    inside = {}
    for strength in (0.0, 4.0):
        engine, out = make(ckpt, silence_s=0.3, variation=1.0)
        import ripieno.model.play.engine as eng

        old, eng.KEY_STRENGTH = eng.KEY_STRENGTH, strength
        try:
            drive(engine, out, phrase(0.0, penta, step=0.25, dur=0.2), until=12.0)
        finally:
            eng.KEY_STRENGTH = old
        notes = [m[1] for t, m in ons(out) if t > 5.0]
        inside[strength] = sum(p % 12 in (0, 2, 4, 7, 9) for p in notes) / max(len(notes), 1)
    assert inside[4.0] > inside[0.0] + 0.2, inside


def test_an_answer_enters_where_the_players_beats_and_a_three_quarter_beat_meet(ckpt):
    """A tracker whose beat is three quarters of the player's (it meets the player's beat every four
    of its own): the answer enters on one of those meeting points, i.e. on the player's beat."""
    quarter = 0.6
    tempo = SteadyTempo(60.0 / (0.75 * quarter), origin=0.0)
    melody = [60, 64, 67, 72, 67, 64, 60, 62, 64, 65, 67, 69, 67]
    for length in (10, 11, 12, 13):  # phrases that end at different places of the four-beat cycle
        engine, out = make(ckpt, silence_s=0.3, tempo=tempo)
        drive(engine, out, phrase(0.0, melody[:length], step=quarter, dur=0.5), until=14.0)
        first = min(t for t, _ in ons(out) if t > (length - 1) * quarter)
        assert abs(first / quarter - round(first / quarter)) < 1e-6, (length, first)
