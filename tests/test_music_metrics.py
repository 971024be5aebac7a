"""The musical figures on small hand-made cases, computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ripieno.model.play.offline import Note
from ripieno.training import music_metrics as mm

STEP = 0.125  # a 16th at 120 qpm


def N(onset: float, pitch: int, duration: float = 0.1, velocity: int = 80) -> Note:
    return Note(onset, pitch, duration, velocity)


def grid_onsets(ks: list[int], phase: float = 0.0) -> list[float]:
    return [phase + k * STEP for k in ks]


# ----------------------------------------------------------------------------------- the grid


def test_grid_step() -> None:
    assert mm.grid_step(120) == pytest.approx(0.125)
    assert mm.grid_step(90) == pytest.approx(1 / 6)
    assert mm.grid_step(120 / 1.33) == pytest.approx(0.125 * 1.33)


def test_fit_grid_phase() -> None:
    assert mm.fit_grid_phase(grid_onsets([0, 1, 3, 7, 12, 13]), STEP) == 0.0  # quantised: exactly 0
    assert mm.fit_grid_phase(grid_onsets([2, 5, 9], phase=0.01), STEP) == pytest.approx(0.01)
    # just before a grid point maps to the top of [0, step), not to a negative phase
    assert mm.fit_grid_phase(grid_onsets([2, 5, 9], phase=-0.01), STEP) == pytest.approx(STEP - 0.01)
    # circular: -10 ms and +10 ms average to the grid point, not to half a step (arithmetic mean of phases)
    assert mm.fit_grid_phase([1 * STEP - 0.01, 3 * STEP + 0.01], STEP) == pytest.approx(0.0, abs=1e-9)
    assert mm.fit_grid_phase([], STEP) == 0.0
    # notes work as well as onsets
    assert mm.fit_grid_phase([N(0.51, 60), N(0.76, 62)], STEP) == pytest.approx(0.01)


def test_on_grid() -> None:
    # 0 and 20 ms are within 25 ms of a grid point; 30 ms and half a step (62.5 ms) are not
    assert mm.on_grid([0.0, 0.02, 0.03, 0.0625], STEP, 0.0) == pytest.approx(0.5)
    assert mm.on_grid([0.26, 0.385, 0.45], STEP, 0.01) == pytest.approx(2 / 3)  # grid at 0.01 + k/8; 0.45 is 60 ms off
    assert mm.on_grid([0.24, 0.49], STEP, 0.0) == 1.0  # below a grid point counts too
    assert math.isnan(mm.on_grid([], STEP, 0.0))


@pytest.mark.parametrize(
    ("num", "den", "want"),
    [(4, 4, 4), (3, 4, 4), (2, 4, 4), (6, 8, 6), (9, 8, 6), (12, 8, 6)]
    + [(3, 8, 2), (5, 8, 2), (7, 8, 2), (2, 2, 8), (3, 16, 1)],
)
def test_beat_sixteenths(num: int, den: int, want: int) -> None:
    assert mm.beat_sixteenths(num, den) == want


def test_beat_phase_six_eight() -> None:
    # a prompt with a two-16th pickup: beats (dotted quarters) at k = 2, 8, 14, 20; offbeat eighths at 4, 10, 16
    ks = [2, 4, 8, 10, 14, 16, 20]
    onsets = grid_onsets(ks, phase=0.01)
    # 6/8: residues mod 6 are 2,4,2,4,2,4,2 -> r = 2 (4 votes to 3)
    assert mm.beat_phase(onsets, STEP, 0.01, 6) == 2
    # the same onsets read in quarters (mod 4): 2,0,0,2,2,0,0 -> r = 0
    assert mm.beat_phase(onsets, STEP, 0.01, 4) == 0
    # small timing scatter does not change the grid index
    assert mm.beat_phase([o + 0.02 for o in onsets], STEP, 0.01, 6) == 2


def test_beat_phase_ties_and_empty() -> None:
    assert mm.beat_phase(grid_onsets([1, 3]), STEP, 0.0, 4) == 1  # one vote each for 1 and 3: the smallest
    assert mm.beat_phase(grid_onsets([3, 7, 2, 6]), STEP, 0.0, 4) == 2  # two each for 2 and 3
    assert mm.beat_phase(grid_onsets([3, 3, 3, 0]), STEP, 0.0, 4) == 3  # every onset votes, chord notes too
    assert mm.beat_phase([], STEP, 0.0, 4) == 0


def test_entry_beat_err() -> None:
    # 6/8 with beats at grid indices 2 + 6m (phase 0.01)
    assert mm.entry_beat_err(0.01 + 8 * STEP, STEP, 0.01, 6, 2) == pytest.approx(0.0, abs=1e-12)
    assert mm.entry_beat_err(0.01 + 5 * STEP, STEP, 0.01, 6, 2) == pytest.approx(0.5)  # 3 16ths from beats 2 and 8
    assert mm.entry_beat_err(0.01 + 3 * STEP, STEP, 0.01, 6, 2) == pytest.approx(1 / 6)
    assert mm.entry_beat_err(0.01 + 13 * STEP, STEP, 0.01, 6, 2) == pytest.approx(1 / 6)  # before the beat at 14
    # 4/4 beats at 0 + 4m: an onset 30 ms after beat 2 is 0.03 / 0.5 s of a beat off
    assert mm.entry_beat_err(1.03, STEP, 0.0, 4, 0) == pytest.approx(0.06)
    assert math.isnan(mm.entry_beat_err(None, STEP, 0.0, 4, 0))
    assert math.isnan(mm.entry_beat_err(float("nan"), STEP, 0.0, 4, 0))


# ---------------------------------------------------------------------------- tempo and key


def test_tempo_ratio() -> None:
    # prompt: quarters at 120 qpm (0.5 s), with a chord at 0 (repeated onset) and a 10 ms spread chord at 1.0
    prompt = [0.0, 0.0, 0.5, 1.0, 1.01, 1.5, 2.0]
    # answer: eighths (0.25 s), unsorted, one 20 ms grace (ignored)
    answer = [0.75, 0.0, 0.25, 0.5, 0.73]
    # prompt IOIs > 35 ms: 0.5, 0.5, 0.49, 0.5 -> median 0.5; answer: 0.25, 0.25, 0.23 -> 0.25
    assert mm.tempo_ratio(answer, prompt) == pytest.approx(0.5)
    assert mm.tempo_ratio(prompt, answer) == pytest.approx(2.0)
    # even count: median of 0.2, 0.4 is 0.3
    assert mm.tempo_ratio([0.0, 0.2, 0.6], [0.0, 0.3]) == pytest.approx(1.0)
    assert math.isnan(mm.tempo_ratio([1.0], prompt))  # one onset: no interval
    assert math.isnan(mm.tempo_ratio([1.0, 1.02], prompt))  # only a chord spread
    assert math.isnan(mm.tempo_ratio(answer, []))


def test_key_jsd() -> None:
    assert mm.key_jsd([60, 64, 67], [48, 76, 55]) == pytest.approx(0.0)  # same pitch classes, any octave
    assert mm.key_jsd([60, 62], [61, 63]) == pytest.approx(1.0)  # disjoint: 1 bit
    # counts per note: answer C C D = (2/3, 1/3), prompt C D = (1/2, 1/2), mixture (7/12, 5/12)
    want = 0.5 * (2 / 3 * math.log2(8 / 7) + 1 / 3 * math.log2(4 / 5)) + 0.5 * (
        0.5 * math.log2(6 / 7) + 0.5 * math.log2(6 / 5)
    )
    assert mm.key_jsd([60, 72, 62], [60, 62]) == pytest.approx(want)
    assert mm.key_jsd([N(0, 60), N(1, 62)], [N(0, 60), N(1, 62)]) == pytest.approx(0.0)  # notes too
    assert math.isnan(mm.key_jsd([], [60]))


def test_estimate_key() -> None:
    c_major = frozenset({0, 2, 4, 5, 7, 9, 11})
    assert mm.estimate_key([N(i, p) for i, p in enumerate([60, 62, 64, 65, 67, 69, 71])]) == (0, "major", c_major)
    # the same four pitches: long C E G is C major, a long A is A minor (the same scale)
    assert mm.estimate_key([N(0, 57, 0.1), N(0, 60, 4), N(0, 64, 4), N(0, 67, 4)]) == (0, "major", c_major)
    assert mm.estimate_key([N(0, 57, 4), N(0, 60, 1), N(0, 64, 1), N(0, 67, 0.1)]) == (9, "minor", c_major)
    tonic, mode, scale = mm.estimate_key([N(0, p, 1) for p in [62, 66, 69, 62, 64, 71, 73]])
    assert (tonic, mode) == (2, "major") and scale == frozenset({2, 4, 6, 7, 9, 11, 1})
    with pytest.raises(ValueError):
        mm.estimate_key([])


# ------------------------------------------------------------------------------- consonance


def test_consonance_intervals_use_abs() -> None:
    player = [N(0.0, 60, 1.0)]  # C4 held for a second
    # G4 over C4: abs(60 - 67) = 7, a fifth: consonant (a signed (p - r) % 12 would say 5)
    assert mm.consonance_counts([N(0.5, 67)], player) == (1, 1)
    # F4 over C4: 5, a fourth: dissonant (a signed (p - r) % 12 would say 7)
    assert mm.consonance_counts([N(0.5, 65)], player) == (0, 1)
    # F3 under C4 is a fifth below: consonant
    assert mm.consonance_counts([N(0.5, 53)], player) == (1, 1)
    # octaves and compound intervals: C5 (0), E5 (16 -> 4), A5 (21 -> 9), D5 (14 -> 2)
    assert mm.consonance_counts([N(0.1, 72), N(0.2, 76), N(0.3, 81), N(0.4, 74)], player) == (3, 4)


def test_consonance_sounding_window() -> None:
    player = [N(0.0, 60, 1.0)]
    # at the player's onset it sounds; at its end (1.0) it does not; before it nothing sounds
    assert mm.consonance_counts([N(0.0, 64), N(1.0, 66), N(-0.1, 66), N(2.0, 66)], player) == (1, 1)
    assert math.isnan(mm.consonance([N(1.0, 64)], player))  # the note ends exactly at the onset: none counted
    assert math.isnan(mm.consonance([], player))
    assert math.isnan(mm.consonance([N(0.5, 64)], []))


def test_consonance_every_sounding_note() -> None:
    player = [N(0.0, 60, 2.0), N(0.0, 64, 2.0), N(1.5, 67, 1.0)]
    # at 0.5 C4 and E4 sound: G4 is 7 and 3 (consonant); A4 is 9 and 5 (the fourth to E spoils it)
    assert mm.consonance_counts([N(0.5, 67), N(0.5, 69)], player) == (1, 2)
    # at 1.5 C4 E4 G4 sound: C5 (0, 8, 5) is dissonant with G4; E5 (4, 0, 9) is consonant
    assert mm.consonance_counts([N(1.5, 72), N(1.5, 76)], player) == (1, 2)
    assert mm.consonance([N(0.5, 67), N(0.5, 69), N(1.5, 72), N(1.5, 76)], player) == pytest.approx(0.5)


def test_random_diatonic_consonance() -> None:
    d_major = {2, 4, 6, 7, 9, 11, 1}
    player = [N(0.0, 60, 1.0), N(1.0, 64, 1.0)]
    # at 0.5, C4 sounds, the ripieno plays C5: the scale in its octave is 73 74 76 78 79 81 83,
    # intervals 13 14 16 18 19 21 23 -> 1 2 4 6 7 9 11: consonant 4, 7, 9 = 3/7
    # at 1.5, E4 sounds, the ripieno plays C4: 61 62 64 66 67 69 71 -> 3 2 0 2 3 5 7: 3, 0, 3, 7 = 4/7
    # at 3.0 nothing sounds: not counted
    rip = [N(0.5, 72), N(1.5, 60), N(3.0, 60)]
    assert mm.random_diatonic_consonance(rip, player, d_major) == pytest.approx((3 / 7 + 4 / 7) / 2)
    assert math.isnan(mm.random_diatonic_consonance([N(3.0, 60)], player, d_major))
    # a 12-note "scale" is the chromatic chance level: 0 3 4 7 8 9 of 12 = 1/2 with one sounding note
    assert mm.random_diatonic_consonance([N(0.5, 72)], player, range(12)) == pytest.approx(0.5)


# ------------------------------------------------------------------------ copying and texture


def test_copy_share() -> None:
    prompt = [60, 62, 64, 65, 67]
    # answer 4-grams: (60 62 64 65) is in the prompt, (62 64 65 60) is not
    assert mm.copy_share([60, 62, 64, 65, 60], prompt) == pytest.approx(0.5)
    assert mm.copy_share([64, 65, 67, 64, 65, 67], prompt, n=3) == pytest.approx(2 / 4)  # with repeats
    assert mm.copy_share([60, 62, 64, 65], [60, 62]) == 0.0  # a prompt too short has no n-grams
    assert math.isnan(mm.copy_share([60, 62, 64], prompt))


def test_copy_share_orders_notes_by_onset_then_pitch() -> None:
    prompt = [N(0, 60), N(1, 62), N(2, 64), N(3, 65)]
    # given out of order; the chord at 0 (64 over 60) reads 60 then 64
    answer = [N(3, 65), N(0, 64), N(1, 62), N(0, 60), N(2, 64)]  # -> 60 64 62 64 65
    assert mm.copy_share(answer, prompt, n=2) == pytest.approx(2 / 4)  # (62 64) and (64 65) are the prompt's
    assert mm.copy_share(list(reversed(prompt)), prompt) == 1.0


def test_density_ratio_and_range() -> None:
    assert mm.density_ratio([N(i, 60) for i in range(10)], 5.0, [N(i, 60) for i in range(8)], 8.0) == pytest.approx(2.0)
    assert mm.density_ratio(10, 5.0, 8, 8.0) == pytest.approx(2.0)
    assert math.isnan(mm.density_ratio(10, 5.0, 0, 8.0))
    assert math.isnan(mm.density_ratio(10, 0.0, 8, 8.0))
    # prompt 60..72 -> range [53, 79]: 53 and 79 are in, 52 and 80 are out
    assert mm.in_range_share([53, 79, 52, 80, 66], [60, 72, 65]) == pytest.approx(3 / 5)
    assert mm.in_range_share([N(0, 66)], [N(0, 60)], widen=0) == 0.0
    assert math.isnan(mm.in_range_share([], [60]))


# ---------------------------------------------------------------------------------- defects


def test_ghost_notes() -> None:
    assert mm.ghost_notes([N(0, 60, 0.0), N(0, 61, 0.029), N(0, 62, 0.030), N(0, 63, 0.5)]) == 2
    assert mm.ghost_notes([N(0, 60, 0.05)], min_s=0.1) == 1
    assert mm.ghost_notes([]) == 0


def test_doubled_strikes() -> None:
    # C4 held 0..1, struck again at 0.5 (counts); at 1.0 the first has ended, the second (0.5..0.7) too
    notes = [N(0.0, 60, 1.0), N(0.5, 60, 0.2), N(1.0, 60, 0.5)]
    assert mm.doubled_strikes(notes) == 1
    assert mm.doubled_strikes([N(0.0, 60, 1.0), N(0.2, 60, 0.1), N(0.4, 60, 0.1)]) == 2  # two strikes in one held note
    assert mm.doubled_strikes([N(0.0, 60, 0.5), N(0.0, 60, 0.5)]) == 1  # the same key twice at once
    assert mm.doubled_strikes([N(0.0, 60, 1.0), N(0.5, 62, 1.0)]) == 0  # other pitches may overlap
    assert mm.doubled_strikes(list(reversed(notes))) == 1  # order given does not matter
    assert mm.doubled_strikes([]) == 0


# ------------------------------------------------------------------------------ prompt helpers


def test_cut_prompt() -> None:
    notes = [N(0.0, 60, 1.0), N(7.5, 62, 1.0), N(8.0, 64, 1.0), N(9.0, 65, 1.0)]
    cut = mm.cut_prompt(notes, seconds=8.0)
    assert cut == [N(0.0, 60, 1.0), N(7.5, 62, 0.5)]
    assert all(isinstance(n, Note) for n in cut)
    assert mm.cut_prompt([], 8.0) == []


def test_humanise_seeded() -> None:
    notes = [N(0.0, 60, 0.5), N(0.0, 64, 0.5), N(0.5, 62, 0.25), N(1.0, 67, 1.0)]
    a = mm.humanise(notes, rng=7)
    assert a == mm.humanise(notes, rng=np.random.default_rng(7))  # a seed or a generator: the same
    assert a != mm.humanise(notes, rng=8)
    assert [n.onset for n in a] == sorted(n.onset for n in a)
    assert all(n.onset >= 0 and n.duration >= 0 for n in a)
    assert sorted(n.pitch for n in a) == [60, 62, 64, 67]
    by_pitch = {n.pitch: n for n in a}
    for n in notes:
        h = by_pitch[n.pitch]
        assert h.duration == pytest.approx(1.33 * n.duration)
        assert abs(h.onset - 1.33 * n.onset) < 0.012 * 6
    # no scatter: exactly the slower prompt
    assert mm.humanise(notes, slower=2.0, scatter_s=0.0, rng=0) == [
        N(0.0, 60, 1.0), N(0.0, 64, 1.0), N(1.0, 62, 0.5), N(2.0, 67, 2.0)
    ]


# ------------------------------------------------------------------------------- all together


def quantised_piece(seconds: float = 16.0, qpm: float = 120.0) -> list[Note]:
    """A C-major line on the 16th grid: eighths and 16ths, a chord on every bar's downbeat."""
    step = mm.grid_step(qpm)
    scale = [60, 62, 64, 65, 67, 69, 71, 72]
    pattern = [2, 2, 1, 1, 2, 4, 2, 1, 1]  # lengths in 16ths, 16 a bar
    notes, k, i = [], 0, 0
    while k * step < seconds:
        length = pattern[i % len(pattern)]
        notes.append(Note(k * step, scale[(3 * i) % len(scale)], length * step * 0.9, 80))
        if k % 16 == 0:
            notes.append(Note(k * step, 48, 16 * step, 70))
        k += length
        i += 1
    return notes


def test_time_figures_quantised_continuation() -> None:
    piece = quantised_piece()
    prompt = mm.cut_prompt(piece, 8.0)
    answer = [n for n in piece if n.onset >= 8.0]
    f = mm.time_figures(prompt, answer, 120.0, 4, 4)
    assert set(f) == {"on_grid", "entry_beat_err", "tempo_ratio", "key_jsd"}
    assert f["on_grid"] == 1.0
    assert f["entry_beat_err"] == pytest.approx(0.0, abs=1e-9)  # it comes in on bar 5's downbeat
    assert f["tempo_ratio"] == pytest.approx(1.0)
    assert f["key_jsd"] < 0.05
    # the same answer half a 16th late: every onset off the grid, and an eighth of a beat late
    late = [Note(n.onset + STEP / 2, n.pitch, n.duration, n.velocity) for n in answer]
    g = mm.time_figures(prompt, late, 120.0, 4, 4)
    assert g["on_grid"] == 0.0 and g["entry_beat_err"] == pytest.approx(0.125)


def test_time_figures_humanised_prompt() -> None:
    piece = mm.humanise(quantised_piece(), rng=3)
    prompt = mm.cut_prompt(piece, 8.0 * 1.33)
    answer = [n for n in piece if n.onset >= 8.0 * 1.33]
    f = mm.time_figures(prompt, answer, 120.0 / 1.33, 4, 4)
    assert f["on_grid"] > 0.9  # 12 ms scatter against a 25 ms tolerance
    assert f["entry_beat_err"] < 0.1
    assert f["tempo_ratio"] == pytest.approx(1.0, abs=0.1)


def test_time_figures_empty_answer() -> None:
    f = mm.time_figures(mm.cut_prompt(quantised_piece(), 8.0), [], 120.0, 6, 8)
    assert all(math.isnan(v) for v in f.values())
