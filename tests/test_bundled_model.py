"""The bundled default model: it loads, it is the file MODEL.md documents, and it still beats the rival.

A retrain that breaks the model (or a hand-edited file) cannot land silently: the figures that
model/MODEL.md states (size, SHA-256, encoding version, architecture) are read from the card
itself and compared with the file, and a quick eval on a handful of held-out pieces in
tests/data/eval (Essen + Bach TEST split, never trained on) must stay below the Markov rival.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from ripieno.model.checkpoint import default_path, load
from ripieno.model.encoding import ENCODING_VERSION
from ripieno.model.events import array_to_events
from ripieno.model.stream import Stream
from ripieno.training.evaluate import evaluate
from ripieno.training.markov import Baselines
from ripieno.training.midi_io import read_midi_dir

ROOT = Path(__file__).resolve().parents[1]
CARD = ROOT / "model" / "MODEL.md"
EVAL_DIR = ROOT / "tests" / "data" / "eval"

torch.set_num_threads(1)


def _card_value(name: str) -> str:
    """`- name: `value`` from the model card's "File" section."""
    m = re.search(rf"^- {re.escape(name)}: `([^`]+)`", CARD.read_text(), re.MULTILINE)
    assert m, f"MODEL.md does not state {name}"
    return m.group(1)


@pytest.fixture(scope="module")
def bundled():
    return load("default")


def test_bundled_file_is_the_documented_one(bundled):
    path = default_path()
    data = path.read_bytes()
    assert len(data) < 10 * 2**20
    assert len(data) == int(_card_value("bytes"))
    assert hashlib.sha256(data).hexdigest() == _card_value("file sha256")
    assert bundled.encoding.version == ENCODING_VERSION == int(_card_value("encoding version"))
    cfg = bundled.config
    assert f"{cfg.layers}x{cfg.hidden}" == _card_value("lstm")
    assert bundled.n_parameters() == int(_card_value("parameters"))
    assert cfg.online.kind == "blend" and bundled.tables, "the default learns the piece with the fitted blend and its corpus n-gram"


def test_accompaniment_beats_the_random_diatonic_rival_on_every_held_out_chorale(bundled):
    """A chorale's soprano played into accompany mode: ripieno's part is more consonant with it than
    a random note of its key at the same onsets, on every in-repo test chorale, and stays on its grid."""
    from ripieno.model.play.engine import PlaySettings
    from ripieno.model.play.offline import run_offline
    from ripieno.training import music_metrics as mm
    from ripieno.training.midi_io import read_notes
    from ripieno.training.play_eval import PROMPT_S, file_notes

    files = sorted(EVAL_DIR.glob("*_parts.mid"))
    assert len(files) >= 2
    for f in files:
        notes = read_notes(f)
        melody = mm.cut_prompt(file_notes(notes, 0), 2 * PROMPT_S)
        part = run_offline(melody, Stream(bundled), PlaySettings(mode="accompany"), np.random.default_rng(1))
        assert len(part) >= 8, f.name
        _, _, scale = mm.estimate_key(melody)
        ours, rival = mm.consonance(part, melody), mm.random_diatonic_consonance(part, melody, scale)
        assert ours > rival + 0.1, (f.name, ours, rival)
        step = mm.grid_step(notes.qpm)
        assert mm.on_grid(part, step, mm.fit_grid_phase(melody, step)) >= 0.9, f.name
        assert mm.ghost_notes(part) == 0 and mm.doubled_strikes(part) == 0


def test_call_answers_sit_on_the_prompt_grid_of_held_out_pieces(bundled):
    """Prompt cuts of the in-repo test pieces, answered through the engine as `continue` does: on the
    grid of the prompt's sixteenths, entering near a beat of the metre."""
    from ripieno.model.play.engine import PlaySettings
    from ripieno.model.play.offline import run_offline
    from ripieno.training import music_metrics as mm
    from ripieno.training.midi_io import read_notes
    from ripieno.training.play_eval import ANSWER_S, PROMPT_S, file_notes

    grid, entry = [], []
    for f in sorted(EVAL_DIR.glob("*.mid")):
        notes = read_notes(f)
        prompt = mm.cut_prompt(file_notes(notes), PROMPT_S)
        answer = [n for n in run_offline(prompt, Stream(bundled), PlaySettings(), np.random.default_rng(1), seconds=ANSWER_S) if n.onset >= prompt[-1].onset]
        fig = mm.time_figures(prompt, answer, notes.qpm, *notes.metre.signatures[0][1:])
        grid.append(fig["on_grid"])
        entry.append(fig["entry_beat_err"])
    assert np.mean(grid) >= 0.85, grid
    assert np.mean(entry) <= 0.1, entry


def test_bundled_model_beats_the_markov_rival_on_held_out_pieces(bundled):
    pieces = read_midi_dir(EVAL_DIR)
    assert len(pieces) >= 10
    base = Baselines.load(default_path().with_suffix(".baseline.npz"))
    result = evaluate(bundled, pieces, base, temperature=1.0, seed=0)
    assert result["events"] > 800
    assert result["pitch_nll"] < result["baseline_markov_nll"], result
    assert result["pitch_nll"] < result["baseline_unigram_nll"] - 1.0, result
    assert np.isfinite([result["jsd_pitch"], result["jsd_step"], result["jsd_duration"]]).all()


def test_bundled_stream_learns_a_repeated_tune(bundled):
    """The second time through a held-out tune costs far less than the first: the piece is learned as heard."""
    events = array_to_events(read_midi_dir(EVAL_DIR)[-1].events)[:40]
    stream = Stream(bundled)
    costs = []
    for rep in range(2):
        total = 0.0
        for e in events:
            total -= float(np.log(stream.predict().pitch_probs[e.pitch]))
            stream.observe(e)
        costs.append(total / len(events))
    assert costs[1] < 0.5 * costs[0], costs
