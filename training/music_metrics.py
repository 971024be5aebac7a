"""Musical figures of an answer against its prompt: timing, key, consonance, copying, texture, defects.

`ripieno-train eval` and an independent evaluation read the same numbers, so each definition
here is the single agreed one (see each function's docstring). Notes are anything with
`onset`, `pitch`, `duration` (seconds) and `velocity` attributes, such as
`ripieno.model.play.offline.Note`; functions named `*_onsets` / `*_pitches` take plain numbers
or such notes. Everything is a pure function of its arguments (numpy only), so the figures
are the same on every machine and for every caller.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import numpy as np

from ripieno.model.harmony import consonant_with  # one definition for the engine's guard and the figures
from ripieno.model.play.offline import Note
from ripieno.training.metrics import jsd

GRID_TOL_S = 0.025  # an onset within 25 ms of a grid point is "on the grid"
MIN_IOI_S = 0.035  # inter-onset intervals up to 35 ms are chord spread, not tempo
MAJOR_STEPS = (0, 2, 4, 5, 7, 9, 11)
MINOR_STEPS = (0, 2, 3, 5, 7, 8, 10)  # natural minor
# Krumhansl-Kessler key profiles, index 0 = tonic
KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
NAN = float("nan")


class NoteLike(Protocol):
    onset: float
    pitch: int
    duration: float
    velocity: int


def _values(xs: Iterable[Any], attr: str, dtype: type = np.float64) -> np.ndarray:
    """Plain numbers as they are, or the `attr` of note-like objects: callers may pass either."""
    xs = list(xs)
    if xs and hasattr(xs[0], attr):
        xs = [getattr(x, attr) for x in xs]
    return np.asarray(xs, dtype=dtype).reshape(-1)


def _arrays(notes: Iterable[NoteLike]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(onsets, pitches, durations) of notes as arrays."""
    notes = list(notes)
    on = np.array([n.onset for n in notes], dtype=np.float64)
    pi = np.array([n.pitch for n in notes], dtype=np.int64)
    du = np.array([n.duration for n in notes], dtype=np.float64)
    return on, pi, du


# ----------------------------------------------------------------------------------- the grid


def grid_step(qpm: float) -> float:
    """Seconds per 16th note at `qpm` quarter notes a minute: the finest grid most music sits on."""
    return 60.0 / qpm / 4.0


def fit_grid_phase(prompt_onsets: Iterable[Any], step: float) -> float:
    """The grid's offset in [0, step) that the prompt's onsets sit on: their circular mean phase.

    Circular, so onsets just before and just after a grid point average to that point rather
    than to half a step. A quantised prompt gives 0. No onsets (or a resultant of zero) gives 0.
    """
    on = _values(prompt_onsets, "onset")
    if on.size == 0:
        return 0.0
    ang = 2.0 * np.pi * np.mod(on, step) / step
    s, c = float(np.mean(np.sin(ang))), float(np.mean(np.cos(ang)))
    if math.hypot(s, c) < 1e-12:
        return 0.0
    phase = (math.atan2(s, c) / (2.0 * np.pi) * step) % step
    if phase < 1e-9 or step - phase < 1e-9:  # float noise around a grid point is the grid point
        return 0.0
    return float(phase)


def _grid_pos(onsets: np.ndarray, step: float, phase: float) -> np.ndarray:
    """Onsets in grid steps from the fitted grid's origin (continuous)."""
    return (onsets - phase) / step


def on_grid(onsets: Iterable[Any], step: float, phase: float, tol: float = GRID_TOL_S) -> float:
    """Share of onsets within `tol` seconds of a grid point: does the answer keep the prompt's grid? NaN if none."""
    on = _values(onsets, "onset")
    if on.size == 0:
        return NAN
    x = _grid_pos(on, step, phase)
    dist = np.abs(x - np.rint(x)) * step
    return float(np.mean(dist <= tol + 1e-9))


def beat_sixteenths(numerator: int, denominator: int) -> int:
    """The metre's beat in 16ths: a dotted quarter (6) in 6/8, 9/8, 12/8, else the denominator's note (16/den)."""
    if denominator == 8 and numerator in (6, 9, 12):
        return 6
    return max(1, int(round(16 / denominator)))


def beat_phase(prompt_onsets: Iterable[Any], step: float, phase: float, beat16: int) -> int:
    """Which residue r (0..beat16-1) of grid indices the prompt's onsets land on most: where its beats are.

    Grid index k = rint((onset - phase) / step); each onset given counts once (a chord's notes
    each count). Ties go to the smallest r; no onsets gives 0.
    """
    on = _values(prompt_onsets, "onset")
    if on.size == 0 or beat16 <= 1:
        return 0
    k = np.rint(_grid_pos(on, step, phase)).astype(np.int64)
    counts = np.bincount(np.mod(k, beat16), minlength=beat16)
    return int(np.argmax(counts))  # argmax takes the first of equal counts


def entry_beat_err(first_answer_onset: float | None, step: float, phase: float, beat16: int, r: int) -> float:
    """Distance in beats (0..0.5) of the answer's first onset to the nearest beat: does it come in on the beat?

    Beats lie at phase + (r + m * beat16) * step. NaN when there is no answer onset.
    """
    if first_answer_onset is None or not math.isfinite(first_answer_onset):
        return NAN
    y = ((first_answer_onset - phase) / step - r) / beat16
    return float(abs(y - round(y)))


# ---------------------------------------------------------------------------- tempo and key


def _median_ioi(onsets: np.ndarray) -> float:
    """Median interval between successive distinct onsets, counting only intervals > 35 ms; NaN if none."""
    d = np.diff(np.unique(onsets))
    d = d[d > MIN_IOI_S]
    return float(np.median(d)) if d.size else NAN


def tempo_ratio(answer_onsets: Iterable[Any], prompt_onsets: Iterable[Any]) -> float:
    """Answer's median inter-onset interval over the prompt's: 1 keeps the tempo, > 1 is slower; NaN without IOIs."""
    a = _median_ioi(_values(answer_onsets, "onset"))
    p = _median_ioi(_values(prompt_onsets, "onset"))
    if not (math.isfinite(a) and math.isfinite(p)) or p <= 0:
        return NAN
    return a / p


def pc_histogram(pitches: Iterable[Any], weights: Iterable[float] | None = None) -> np.ndarray:
    """12 pitch-class counts (or summed weights): the key content of a passage."""
    pc = np.mod(_values(pitches, "pitch", np.int64), 12)
    w = None if weights is None else np.asarray(list(weights), dtype=np.float64)
    return np.bincount(pc, weights=w, minlength=12).astype(np.float64)


def key_jsd(answer_pitches: Iterable[Any], prompt_pitches: Iterable[Any]) -> float:
    """JSD in bits of answer vs prompt pitch-class histograms (counts per note): same key? NaN if one is empty."""
    return jsd(pc_histogram(answer_pitches), pc_histogram(prompt_pitches))


# ------------------------------------------------------------------------------- consonance


def _counted(ripieno: Sequence[NoteLike], player: Sequence[NoteLike]) -> list[tuple[int, np.ndarray]]:
    """For each ripieno note with a player note sounding at its onset: (its pitch, the sounding player pitches).

    Sounding means player onset <= t < player onset + duration, so a note ending at t does not count.
    """
    p_on, p_pi, p_du = _arrays(player)
    p_end = p_on + p_du
    out = []
    for n in ripieno:
        t = float(n.onset)
        mask = (p_on <= t) & (t < p_end)
        if mask.any():
            out.append((int(n.pitch), p_pi[mask]))
    return out


def consonance_counts(ripieno_notes: Sequence[NoteLike], player_notes: Sequence[NoteLike]) -> tuple[int, int]:
    """(consonant, counted) ripieno onsets against the player notes sounding there; see `consonance`."""
    counted = _counted(ripieno_notes, player_notes)
    good = sum(consonant_with(int(r), s.tolist()) for r, s in counted)
    return good, len(counted)


def consonance(ripieno_notes: Sequence[NoteLike], player_notes: Sequence[NoteLike]) -> float:
    """Share of ripieno onsets (one per note) consonant with every player note sounding there; NaN if none sound.

    The interval is abs(player - ripieno) mod 12, so a fifth is consonant whichever part is above
    and a fourth above the bass is not.
    """
    good, n = consonance_counts(ripieno_notes, player_notes)
    return good / n if n else NAN


def random_diatonic_consonance(
    ripieno_notes: Sequence[NoteLike], player_notes: Sequence[NoteLike], key_pc_set: Iterable[int]
) -> float:
    """The consonance a random note of the key's scale would score at the same onsets: the chance level.

    Exact expectation over the scale's pitch classes (uniform), each placed in the MIDI octave of
    the ripieno note it replaces (12 * (r // 12) + pc), so the register stays the ripieno's.
    NaN if no onset is counted.
    """
    pcs = sorted({int(p) % 12 for p in key_pc_set})
    if not pcs:
        raise ValueError("empty key pitch-class set")
    counted = _counted(ripieno_notes, player_notes)
    if not counted:
        return NAN
    total = 0.0
    for r, sounding in counted:
        base = r - r % 12
        total += sum(consonant_with(base + pc, sounding.tolist()) for pc in pcs) / len(pcs)
    return total / len(counted)


def estimate_key(notes: Sequence[NoteLike]) -> tuple[int, str, frozenset[int]]:
    """(tonic pitch class, "major" | "minor", scale pitch classes) by Krumhansl-Kessler correlation.

    The pitch-class histogram is weighted by duration (held notes define a key more than
    passing ones); all-zero durations fall back to counts. The best of the 24 rotated profiles
    wins, majors before minors and lower tonics first on ties; the minor scale is the natural minor.
    """
    on, pi, du = _arrays(notes)
    if pi.size == 0:
        raise ValueError("no notes to estimate a key from")
    w = np.clip(du, 0.0, None)
    hist = pc_histogram(pi, w if w.sum() > 0 else None)
    if np.allclose(hist, hist[0]):
        raise ValueError("a flat pitch-class histogram has no key")
    best: tuple[float, int, str] | None = None
    for mode, prof in (("major", KK_MAJOR), ("minor", KK_MINOR)):
        for tonic in range(12):
            r = float(np.corrcoef(hist, np.roll(prof, tonic))[0, 1])
            if best is None or r > best[0]:
                best = (r, tonic, mode)
    assert best is not None
    _, tonic, mode = best
    steps = MAJOR_STEPS if mode == "major" else MINOR_STEPS
    return tonic, mode, frozenset((tonic + s) % 12 for s in steps)


# ------------------------------------------------------------------------ copying and texture


def _ordered_pitches(xs: Iterable[Any]) -> list[int]:
    """Pitches in onset order (ties by pitch) for notes; plain pitches in the order given."""
    xs = list(xs)
    if xs and hasattr(xs[0], "pitch"):
        return [int(n.pitch) for n in sorted(xs, key=lambda n: (n.onset, n.pitch))]
    return [int(p) for p in xs]


def _ngrams(seq: list[int], n: int) -> list[tuple[int, ...]]:
    return [tuple(seq[i : i + n]) for i in range(len(seq) - n + 1)]


def copy_share(answer_pitches: Iterable[Any], prompt_pitches: Iterable[Any], n: int = 4) -> float:
    """Share of the answer's pitch n-grams (with repeats) found anywhere in the prompt: is it quoting? NaN if < n notes.

    Pass notes to have them ordered by onset (ties by pitch); plain pitches are taken as ordered.
    """
    a = _ordered_pitches(answer_pitches)
    if len(a) < n:
        return NAN
    seen = set(_ngrams(_ordered_pitches(prompt_pitches), n))
    grams = _ngrams(a, n)
    return sum(g in seen for g in grams) / len(grams)


def density_ratio(
    answer: Sequence[Any] | int, answer_span_s: float, prompt: Sequence[Any] | int, prompt_span_s: float
) -> float:
    """Answer's notes per second over the prompt's (notes or counts): as busy as the player? NaN if undefined."""
    na = answer if isinstance(answer, int) else len(answer)
    np_ = prompt if isinstance(prompt, int) else len(prompt)
    if answer_span_s <= 0 or prompt_span_s <= 0 or np_ == 0:
        return NAN
    return (na / answer_span_s) / (np_ / prompt_span_s)


def in_range_share(answer_pitches: Iterable[Any], prompt_pitches: Iterable[Any], widen: int = 7) -> float:
    """Share of answer notes in [min(prompt) - widen, max(prompt) + widen]: same register? NaN if either is empty."""
    a = _values(answer_pitches, "pitch", np.int64)
    p = _values(prompt_pitches, "pitch", np.int64)
    if a.size == 0 or p.size == 0:
        return NAN
    return float(np.mean((a >= p.min() - widen) & (a <= p.max() + widen)))


# ---------------------------------------------------------------------------------- defects


def ghost_notes(notes: Iterable[NoteLike], min_s: float = 0.030) -> int:
    """Notes shorter than `min_s` seconds: too short to be heard as notes. 0 is the only good figure."""
    du = _values(notes, "duration")
    return int(np.sum(du < min_s))


def doubled_strikes(notes: Iterable[NoteLike]) -> int:
    """Notes struck while an earlier note of the same pitch still sounds (a key cannot be pressed twice). 0 is good.

    Counts the re-strikes. Per pitch, notes are taken by (onset, longer first); a note counts when
    an earlier one has onset <= its onset < that one's end (ending exactly at it does not count).
    """
    by_pitch: dict[int, list[tuple[float, float]]] = {}
    for n in notes:
        by_pitch.setdefault(int(n.pitch), []).append((float(n.onset), float(n.duration)))
    count = 0
    for evs in by_pitch.values():
        evs.sort(key=lambda e: (e[0], -e[1]))
        end = -math.inf
        for on, du in evs:
            if on < end:
                count += 1
            end = max(end, on + du)
    return count


# ------------------------------------------------------------------------------ prompt helpers


def cut_prompt(notes: Iterable[NoteLike], seconds: float = 8.0) -> list[Note]:
    """The notes starting before `seconds`, durations clipped at `seconds`: the prompt's first bars."""
    return [
        Note(float(n.onset), int(n.pitch), float(min(n.duration, seconds - n.onset)), int(n.velocity))
        for n in notes
        if n.onset < seconds
    ]


def humanise(
    notes: Iterable[NoteLike],
    slower: float = 1.33,
    scatter_s: float = 0.012,
    rng: np.random.Generator | int | None = None,
) -> list[Note]:
    """The prompt as a human plays it: every time `slower` times later, onsets scattered by N(0, scatter_s).

    Durations are scaled, not scattered; onsets and durations are clipped at 0. One normal draw
    per note in input order (so a seed fixes the result); the output is sorted by (onset, pitch).
    """
    notes = list(notes)
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    jitter = gen.normal(0.0, scatter_s, size=len(notes)) if scatter_s > 0 else np.zeros(len(notes))
    out = [
        Note(
            max(0.0, float(n.onset) * slower + float(j)),
            int(n.pitch),
            max(0.0, float(n.duration) * slower),
            int(n.velocity),
        )
        for n, j in zip(notes, jitter)
    ]
    out.sort(key=lambda n: (n.onset, n.pitch))
    return out


# ------------------------------------------------------------------------------- all together


def time_figures(
    prompt: Sequence[NoteLike], answer: Sequence[NoteLike], qpm: float, numerator: int, denominator: int
) -> dict[str, float]:
    """on_grid, entry_beat_err, tempo_ratio and key_jsd of an answer, the grid fitted on the prompt at `qpm`.

    For a humanised prompt pass the tempo it is played at (qpm / slower).
    """
    p_on = _values(prompt, "onset")
    a_on = _values(answer, "onset")
    step = grid_step(qpm)
    phase = fit_grid_phase(p_on, step)
    beat16 = beat_sixteenths(numerator, denominator)
    r = beat_phase(p_on, step, phase, beat16)
    first = float(a_on.min()) if a_on.size else None
    return {
        "on_grid": on_grid(a_on, step, phase),
        "entry_beat_err": entry_beat_err(first, step, phase, beat16, r),
        "tempo_ratio": tempo_ratio(a_on, p_on),
        "key_jsd": key_jsd(answer, prompt),
    }
