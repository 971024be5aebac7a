"""How ripieno plays, measured: prompt cuts continued through the engine `ripieno continue` runs.

For each MIDI file the first PROMPT_S seconds are the prompt, as a player would play them into
ripieno; the engine (`model.play.offline.run_offline`, with the player's beat tracked from the
prompt's onsets, as in the daemon) continues it for ANSWER_S seconds in call mode, and plays
along with the prompt's melody in accompany mode. Three performances of each prompt: as written
(at the file's tempo), 1.33x slower with 12 ms Gaussian onset scatter, and 0.8x (faster) with
8 ms, so the tracker is exercised and not only the grid of a quantised file. Every figure's
definition is in `music_metrics` (the agreed one); here they are only gathered:

- continuation_*: on_grid, entry_beat_err, tempo_ratio, key_jsd of the call-mode answers (mean
  over files), with `_slower` / `_faster` twins for the humanised performances;
- continuation_copy_4gram: share of the answer's pitch 4-grams found in the prompt, beside
  source_copy_4gram, the same share for the file's own next ANSWER_S seconds;
- continuation_density_ratio, continuation_in_range: texture against the prompt;
- accompaniment_*: consonance with the player's sounding notes (pooled over files), on_grid,
  density ratio and in-range share, at the file's tempo and `_slower`; the rivals: a random
  diatonic note of the prompt's key at the same onsets, and the file's own lower parts against
  its top part (files that have parts);
- ghost_notes / doubled_notes: notes shorter than 30 ms, pitches struck again while sounding,
  summed over every performance (0 is the only good figure).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ripieno.model.play.engine import PlaySettings
from ripieno.model.play.offline import Note, run_offline
from ripieno.training import music_metrics as mm
from ripieno.training.midi_io import MidiNotes, MidiReadError, read_notes

PROMPT_S = 8.0
ANSWER_S = 10.0
PERFORMANCES = {"": (1.0, 0.0), "_slower": (1.33, 0.012), "_faster": (0.8, 0.008)}
ACCOMPANY_PERFORMANCES = ("", "_slower")
TIME_KEYS = ("on_grid", "entry_beat_err", "tempo_ratio", "key_jsd")


def play_keys() -> tuple[str, ...]:
    keys = [f"continuation_{k}{s}" for s in PERFORMANCES for k in TIME_KEYS]
    keys += ["continuation_copy_4gram", "source_copy_4gram", "continuation_density_ratio", "continuation_in_range"]
    for s in ACCOMPANY_PERFORMANCES:
        keys += [f"accompaniment_consonance{s}", f"accompaniment_on_grid{s}"]
    keys += [
        "accompaniment_consonance_random_diatonic", "accompaniment_consonance_source",
        "accompaniment_density_ratio", "accompaniment_in_range", "ghost_notes", "doubled_notes", "play_files",
    ]
    return tuple(keys)


@dataclass
class _Pool:
    """Per-key lists of per-file values (means at the end) and pooled consonance counts."""

    values: dict[str, list[float]]
    counts: dict[str, list[float]]

    def add(self, key: str, value: float) -> None:
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            self.values.setdefault(key, []).append(float(value))

    def count(self, key: str, consonant: float, counted: float) -> None:
        c = self.counts.setdefault(key, [0.0, 0.0])
        c[0] += consonant
        c[1] += counted


def file_notes(notes: MidiNotes, part: int | None = None) -> list[Note]:
    """The file's notes in seconds (of one part, or all), sorted."""
    keep = np.ones(len(notes.pitch), dtype=bool) if part is None else notes.part == part
    return sorted(
        Note(float(o), int(p), float(d), int(v))
        for o, p, d, v, k in zip(notes.onset_s, notes.pitch, notes.duration_s, notes.velocity, keep, strict=True) if k
    )


def evaluate_play(
    stream_factory: Callable[[], Any],
    paths: Sequence[Path],
    settings: PlaySettings,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, float | int]:
    """The play figures (see module docstring) over MIDI files; unreadable files are skipped."""
    pool = _Pool({}, {})
    rng = np.random.default_rng(seed)
    ghosts = doubled = files = 0
    for path in tqdm(paths, unit="file", desc="play", disable=not progress):
        try:
            notes = read_notes(path)
        except MidiReadError:
            continue
        whole = file_notes(notes)
        prompt = mm.cut_prompt(whole, PROMPT_S)
        if len(prompt) < 4:
            continue
        files += 1
        num, den = notes.metre.signatures[0][1:]
        call = replace(settings, mode="call")
        for suffix, (slower, scatter) in PERFORMANCES.items():
            played = prompt if slower == 1.0 else mm.humanise(prompt, slower, scatter, rng)
            answer = run_offline(played, stream_factory(), call, rng, seconds=ANSWER_S)
            answer = [n for n in answer if n.onset >= played[-1].onset]
            ghosts += mm.ghost_notes(answer)
            doubled += mm.doubled_strikes(answer)
            for k, v in mm.time_figures(played, answer, notes.qpm / slower, num, den).items():
                pool.add(f"continuation_{k}{suffix}", v)
            if suffix == "":
                span_p = max(n.onset + n.duration for n in played) - played[0].onset
                span_a = (max(n.onset + n.duration for n in answer) - answer[0].onset) if answer else 0.0
                pool.add("continuation_copy_4gram", mm.copy_share(answer, played))
                truth = [n for n in whole if PROMPT_S <= n.onset < PROMPT_S + ANSWER_S]
                pool.add("source_copy_4gram", mm.copy_share(truth, played))
                pool.add("continuation_density_ratio", mm.density_ratio(answer, span_a, played, span_p))
                pool.add("continuation_in_range", mm.in_range_share(answer, played))
        # accompaniment: the melody (the file's top part, or all of it) is the player
        melody = mm.cut_prompt(file_notes(notes, 0) if (notes.part > 0).any() else whole, PROMPT_S)
        if len(melody) < 4:
            continue
        acc = replace(settings, mode="accompany")
        for suffix in ACCOMPANY_PERFORMANCES:
            slower, scatter = PERFORMANCES[suffix]
            played = melody if slower == 1.0 else mm.humanise(melody, slower, scatter, rng)
            part = run_offline(played, stream_factory(), acc, rng)
            ghosts += mm.ghost_notes(part)
            doubled += mm.doubled_strikes(part)
            pool.count(f"accompaniment_consonance{suffix}", *mm.consonance_counts(part, played))
            step = mm.grid_step(notes.qpm / slower)
            pool.add(f"accompaniment_on_grid{suffix}", mm.on_grid(part, step, mm.fit_grid_phase(played, step)))
            if suffix == "":
                _, _, scale = mm.estimate_key(played)
                counted = mm.consonance_counts(part, played)[1]
                if counted:
                    rival = mm.random_diatonic_consonance(part, played, scale)
                    pool.count("accompaniment_consonance_random_diatonic", rival * counted, counted)
                span = max(n.onset + n.duration for n in played) - played[0].onset
                pool.add("accompaniment_density_ratio", mm.density_ratio(part, span, played, span))
                pool.add("accompaniment_in_range", mm.in_range_share(part, played))
                if (notes.part > 0).any():
                    lower = mm.cut_prompt(file_notes(notes, 1), PROMPT_S)
                    pool.count("accompaniment_consonance_source", *mm.consonance_counts(lower, melody))
    out: dict[str, float | int] = {k: (float(np.mean(v)) if v else math.nan) for k, v in pool.values.items()}
    for k, (c, n) in pool.counts.items():
        out[k] = c / n if n else math.nan
    out["ghost_notes"], out["doubled_notes"], out["play_files"] = ghosts, doubled, files
    return {k: out.get(k, math.nan) for k in play_keys()}
