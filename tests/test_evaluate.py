"""Eval: numbers on a hand-made file match a hand computation; the CLI reads a checkpoint and survives broken files.

Events are encoding 2's (N, 7) rows (pitch, step, duration, velocity, role, pos, bar), time in beats.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ripieno.model import checkpoint
from ripieno.model.checkpoint import Checkpoint
from ripieno.model.encoding import BEAT_VALUES, Encoding
from ripieno.model.events import NoteEvent, Role, array_to_events
from ripieno.model.network import ModelConfig, NoteLSTM
from ripieno.model.stream import Stream
from ripieno.training import cli
from ripieno.training.evaluate import KEYS, EvalError, evaluate
from ripieno.training.markov import MarkovBaseline, corpus_markov, mean_nll
from ripieno.training.midi_io import read_midi, write_midi
from ripieno.training.pieces import Piece
from ripieno.training.play_eval import play_keys
from ripieno.model.network import checkpoint_of, model_of
from ripieno.model import network

torch.set_num_threads(1)


N_BINS = len(BEAT_VALUES)  # 36 step/duration bins
HALF_BEAT_BIN = BEAT_VALUES.index(6)  # 6 twelfths = 0.5 beats
ONE_BEAT_BIN = BEAT_VALUES.index(12)


class EchoStream:
    """A stand-in model: half its lead belief on the previous pitch, the rest spread evenly (an
    accompaniment note: uniform); its step head puts half its mass on half a beat after a repeated
    pitch, on one beat after a new one, the rest spread evenly; samples an echo half a beat later.
    Every fork logs what it is made to observe in `log` (shared with the stream it came from)."""

    def __init__(self, log: list[tuple[NoteEvent, bool | None]] | None = None) -> None:
        self.last: int | None = None
        self.log = [] if log is None else log
        self.forked = False

    def reset(self) -> None:
        self.last = None

    def observe(self, event: NoteEvent, learn: bool | None = None) -> None:
        if self.forked:
            self.log.append((event, learn))
        self.last = event.pitch

    def predict(self, role: Role = Role.PLAYER) -> object:
        if role == Role.RIPIENO or self.last is None:
            p = np.full(128, 1 / 128)
        else:
            p = np.full(128, 0.5 / 127)
            p[self.last] = 0.5

        class P:
            pitch_probs = p

        return P()

    def head_probs(self, pitch: int, temperature: float = 1.0) -> dict[str, np.ndarray]:
        step = np.full(N_BINS, 0.5 / (N_BINS - 1))
        step[HALF_BEAT_BIN if pitch == self.last else ONE_BEAT_BIN] = 0.5
        flat = np.full(N_BINS, 1 / N_BINS)
        return {"step": step, "duration": flat, "velocity": np.full(16, 1 / 16)}

    def sample(self, temperature: float, rng: np.random.Generator, top_p: float | None = None, low: int = 0, high: int = 127,
               pitch_weights: np.ndarray | None = None, role: Role = Role.PLAYER, variation: float = 0.0) -> NoteEvent:
        return NoteEvent(int(self.last), 0.5, 0.5, 64, role)

    def fork(self) -> EchoStream:
        twin = EchoStream(self.log)
        twin.last, twin.forked = self.last, True
        return twin


def events(pitches: list[int], step: float = 0.5, roles: list[int] | None = None, bar: float = 4.0) -> np.ndarray:
    """Rows in beats: `step` apart (the first 0), half a beat long, placed in bars of `bar` beats."""
    steps = [0.0 if i == 0 else step for i in range(len(pitches))]
    onsets = np.cumsum(steps)
    roles = roles or [0] * len(pitches)
    return np.array([[p, s, 0.5, 80, r, o % bar, bar] for p, s, o, r in zip(pitches, steps, onsets, roles, strict=True)], np.float32)


def test_numbers_match_a_hand_computation() -> None:
    piece = Piece("a", "test", events([60, 60, 62, 60]))
    lonely = Piece("b", "test", events([70]))  # a file, but nothing to predict
    train = [Piece("t", "test", events([60, 62]))]
    got = evaluate(EchoStream, [piece, lonely], train)
    assert list(got) == list(KEYS)
    assert got["files"] == 2 and got["events"] == 3
    # 60 after 60: p = 1/2 (and the argmax); 62 and then 60 after a different pitch: p = 0.5/127 each
    assert got["pitch_nll"] == pytest.approx((math.log(2) + 2 * math.log(254)) / 3, rel=1e-12)
    assert got["pitch_acc"] == pytest.approx(1 / 3)
    # the true step (half a beat) given the true pitch: a repeat (p = 1/2), then two new pitches (0.5/35 each)
    assert N_BINS == Encoding().time_bins == 36 and HALF_BEAT_BIN == 6
    assert got["step_nll"] == pytest.approx((math.log(2) + 2 * math.log(2 * (N_BINS - 1))) / 3, rel=1e-12)
    # continued from the first half (60 60) by echoing 60 twice; the true second half is 62 60
    kl_true = 0.5 * math.log2(0.5 / 0.25) + 0.5 * math.log2(0.5 / 0.75)
    kl_sampled = math.log2(1 / 0.75)
    assert got["jsd_pitch"] == pytest.approx(0.5 * kl_true + 0.5 * kl_sampled, rel=1e-12)
    assert got["jsd_step"] == 0.0 and got["jsd_duration"] == 0.0
    # unigram of the training file, add-one: 60 and 62 -> 2/130 each
    assert got["baseline_unigram_nll"] == pytest.approx(math.log(65), rel=1e-12)
    assert got["baseline_markov_nll"] == pytest.approx(mean_nll(MarkovBaseline(corpus_markov(train)), [piece]), rel=1e-12)


def test_parts_steps_and_continuation_placement() -> None:
    """An accompaniment note is scored by the accompaniment's readout; steps fall in the nearest
    beat bin; the continuation is observed as the lead's, not learnt, placed in the metre."""
    log: list[tuple[NoteEvent, bool | None]] = []
    piece = Piece("a", "test", events([60, 48, 60, 48], roles=[0, 1, 0, 1]))
    piece.events[3, 1] = 1.02  # off the grid: still the one-beat bin
    piece.events[3, 5] = piece.events[2, 5] + 1.02
    got = evaluate(lambda: EchoStream(log), [piece], [Piece("t", "test", events([60, 62]))])
    assert got["files"] == 1 and got["events"] == 3
    # 48 (accompaniment): uniform; 60 (lead) after 48: 0.5/127; 48 (accompaniment): uniform
    assert got["pitch_nll"] == pytest.approx((2 * math.log(128) + math.log(254)) / 3, rel=1e-12)
    assert got["pitch_acc"] == 0.0  # a uniform argmax is pitch 0
    # every pitch is new: half a beat twice at 0.5/35, then one beat (1.02) at 1/2
    assert got["step_nll"] == pytest.approx((2 * math.log(2 * (N_BINS - 1)) + math.log(2)) / 3, rel=1e-12)
    # the true second half steps 0.5 and 1.02 beats, the echo 0.5 and 0.5: two bins against one
    m = np.array([0.75, 0.25])
    jsd = 0.5 * float(np.sum(np.array([0.5, 0.5]) * np.log2(np.array([0.5, 0.5]) / m))) + 0.5 * math.log2(1 / 0.75)
    assert got["jsd_step"] == pytest.approx(jsd, rel=1e-12)
    assert got["jsd_duration"] == 0.0
    # the fork at the half-way point saw two echoes of 48, half a beat apart after the second note (pos 0.5)
    assert [(e.pitch, e.role, e.pos, e.bar, learn) for e, learn in log] == [(48, Role.PLAYER, 1.0, 4.0, False), (48, Role.PLAYER, 1.5, 4.0, False)]


def test_nothing_to_predict_is_a_clear_error() -> None:
    with pytest.raises(EvalError, match="nothing to evaluate"):
        evaluate(EchoStream, [Piece("b", "test", events([70]))], [Piece("t", "test", events([60, 62]))])


def tiny_checkpoint() -> Checkpoint:
    torch.manual_seed(0)
    cfg = ModelConfig(hidden=16, layers=1, pitch_embed=8, embed=4, cond_embed=4, head_hidden=8, dropout=0.0)
    return checkpoint_of(NoteLSTM(cfg).eval())


def test_cli_reads_checkpoint_meta_and_survives_broken_files(tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    train_dir, eval_dir = tmp_path / "train", tmp_path / "eval"
    train_dir.mkdir()
    eval_dir.mkdir()
    phrase = [60, 62, 64, 65, 67, 65, 64, 62]
    write_midi(train_dir / "t.mid", events(phrase * 2))
    write_midi(eval_dir / "e1.mid", events(phrase * 3))
    write_midi(eval_dir / "e2.mid", events([67, 65, 64, 62, 60, 62, 64, 60, 67]))
    (eval_dir / "broken.mid").write_bytes(b"MThd\x00\x00\x00\x06garbage")
    ck = tiny_checkpoint()
    path = network.save(tmp_path / "m.safetensors", model_of(ck), {"data": {"midi": str(train_dir), "split": {"val_fraction": 0.0, "test_fraction": 0.0}, "train_pieces": 1}})

    with caplog.at_level(logging.WARNING):
        rc = cli.main(["eval", "--model", str(path), "--midi", str(eval_dir), "--json", "--no-progress"])
    assert rc == 0
    assert "broken.mid" in caplog.text and "1 of 3 MIDI files skipped" in caplog.text
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert list(got) == list(KEYS) + list(play_keys()) and got["files"] == 2 and got["events"] == 23 + 8
    assert got["play_files"] == 2  # the broken file is skipped by the play figures too
    assert all(v is None or (isinstance(v, int | float) and math.isfinite(v)) for v in got.values())

    # the same numbers, computed directly: the daemon's Stream, one event at a time, reset per file
    stream = Stream(checkpoint.load(path))
    nll, step_nll, files = 0.0, 0.0, [read_midi(eval_dir / "e1.mid"), read_midi(eval_dir / "e2.mid")]
    for arr in files:
        stream.reset()
        for t, e in enumerate(array_to_events(arr)):
            if t:
                nll -= math.log(stream.predict(e.role).pitch_probs[e.pitch])
                step_nll -= math.log(stream.head_probs(e.pitch)["step"][int(Encoding.time_bin(e.step))])
            stream.observe(e)
    assert got["pitch_nll"] == pytest.approx(nll / 31, rel=1e-9)
    assert got["step_nll"] == pytest.approx(step_nll / 31, rel=1e-9)
    base = MarkovBaseline(corpus_markov([read_midi(train_dir / "t.mid")]))
    assert got["baseline_markov_nll"] == pytest.approx(mean_nll(base, files), rel=1e-12)
    for k in ("jsd_pitch", "jsd_step", "jsd_duration"):
        assert 0.0 <= got[k] <= 1.0

    # --offline scores the network alone: a different figure, the same baselines
    assert cli.main(["eval", "--model", str(path), "--midi", str(eval_dir), "--json", "--no-progress", "--offline", "--no-play"]) == 0
    off = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert list(off) == list(KEYS)
    assert off["pitch_nll"] > got["pitch_nll"]  # e1 repeats its phrase: the online part must help there
    assert off["baseline_markov_nll"] == got["baseline_markov_nll"]


def test_cli_play_figures_json_and_human_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every eval key and every play key, in the JSON and in the human listing; --no-play leaves the play keys out."""
    from ripieno.training.markov import Baselines

    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    phrase = [60, 62, 64, 65, 67, 65, 64, 62]
    write_midi(eval_dir / "lead.mid", events(phrase * 3))
    # a file with parts: the melody over a bass struck with it (accompaniment rows, step 0)
    duet = [(p, 0) if i % 2 == 0 else (p - 24, 1) for p in phrase * 2 for i in range(2)]
    arr = events([p for p, _ in duet], roles=[r for _, r in duet])
    arr[1::2, 1] = 0.0
    arr[:, 5] = np.cumsum(arr[:, 1]) % 4.0
    write_midi(eval_dir / "duet.mid", arr)
    path = network.save(tmp_path / "m.safetensors", model_of(tiny_checkpoint()), {})
    Baselines.train([events(phrase)]).save(tmp_path / "m.baseline.npz")
    base = ["eval", "--model", str(path), "--midi", str(eval_dir), "--no-progress", "--play-temperature", "0.5", "--accompany", "chords"]

    def keys_of(out: str) -> tuple[list[str], dict[str, object]]:
        lines = out.strip().splitlines()
        return [line.split()[0] for line in lines[:-1] if not line.startswith("verdict:")], json.loads(lines[-1])

    assert cli.main([*base, "--json"]) == 0
    listed, got = keys_of(capsys.readouterr().out)
    assert listed == [] and list(got) == list(KEYS) + list(play_keys())
    assert got["play_files"] == 2 and got["files"] == 2
    for k, v in got.items():
        assert v is None or (isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)), (k, v)
    assert got["accompaniment_consonance_source"] is not None  # the duet's own bass against its melody
    for k in ("continuation_on_grid", "accompaniment_consonance", "accompaniment_consonance_source"):
        assert got[k] is None or 0.0 <= got[k] <= 1.0, k

    assert cli.main(base) == 0
    printed = capsys.readouterr().out
    listed, human = keys_of(printed)
    assert listed == list(KEYS) + list(play_keys()) and list(human) == listed
    assert printed.strip().splitlines()[-2].startswith("verdict: ")  # the plain sentence before the JSON

    assert cli.main([*base, "--no-play"]) == 0
    listed, short = keys_of(capsys.readouterr().out)
    assert listed == list(short) == list(KEYS)
    assert {k: short[k] for k in KEYS} == {k: got[k] for k in KEYS}  # the play figures change none of the others


def test_cli_prefers_stored_baselines_next_to_the_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ripieno.training.markov import Baselines

    (tmp_path / "eval").mkdir()
    write_midi(tmp_path / "eval" / "e.mid", events([60, 62, 64, 62, 60, 62, 64, 62]))
    path = network.save(tmp_path / "m.safetensors", model_of(tiny_checkpoint()), {})  # meta names no training data
    stored = Baselines.train([events([60, 62, 64, 65, 64, 62])])
    stored.save(tmp_path / "m.baseline.npz")
    assert cli.main(["eval", "--model", str(path), "--midi", str(tmp_path / "eval"), "--json", "--no-progress", "--no-play"]) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert got["baseline_markov_nll"] == pytest.approx(mean_nll(stored.rival(), [read_midi(tmp_path / "eval" / "e.mid")]), rel=1e-12)
    (tmp_path / "m.baseline.npz").write_bytes(b"truncated")
    assert cli.main(["eval", "--model", str(path), "--midi", str(tmp_path / "eval"), "--json", "--no-progress"]) == 2


def test_cli_one_line_errors(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ck = tiny_checkpoint()
    path = network.save(tmp_path / "m.safetensors", model_of(ck), {})
    (tmp_path / "eval").mkdir()
    write_midi(tmp_path / "eval" / "e.mid", events([60, 62, 64]))
    with caplog.at_level(logging.ERROR):
        assert cli.main(["eval", "--model", str(path), "--midi", str(tmp_path / "eval"), "--no-progress"]) == 2
        assert cli.main(["eval", "--model", str(tmp_path / "nope.safetensors"), "--midi", str(tmp_path / "eval")]) == 2
        assert cli.main(["eval", "--model", str(path), "--midi", str(tmp_path / "missing")]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert "--train-corpus" in errors[0] and "nope.safetensors" in errors[1] and "missing" in errors[2]


def test_eval_reads_what_fit_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The meta contract end to end: fit records its data and split, eval rebuilds the same training split."""
    from ripieno.training.markov import Baselines
    from ripieno.training.midi_io import read_midi_dir
    from ripieno.training.pieces import dedupe, split

    midi = tmp_path / "midi"
    midi.mkdir()
    rng = np.random.default_rng(1)
    for i in range(10):
        write_midi(midi / f"t{i}.mid", events([int(x) for x in rng.integers(55, 75, size=12)] * 2))
    fit_args = ["fit", "--midi", str(midi), "--out", str(tmp_path / "run"), "--epochs", "1", "--hidden", "8", "--layers", "1", "--batch", "4", "--no-progress", "--val-fraction", "0.2", "--test-fraction", "0.2"]
    assert cli.main(fit_args) == 0
    ck_path = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["checkpoint"]
    assert cli.main(["eval", "--model", ck_path, "--midi", str(midi), "--json", "--no-progress", "--no-play"]) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    train = split(dedupe(read_midi_dir(midi)), val=0.2, test=0.2)["train"]
    assert 0 < len(train) < 10
    assert got["baseline_markov_nll"] == pytest.approx(mean_nll(Baselines.train(train).rival(), read_midi_dir(midi)), rel=1e-12)


def test_the_human_output_ends_with_a_plain_verdict():
    from ripieno.training.evaluate import verdict

    base = {"baseline_markov_nll": 2.0, "baseline_unigram_nll": 3.0}
    assert "beats both baselines" in verdict({**base, "pitch_nll": 1.5}) and "25.0 %" in verdict({**base, "pitch_nll": 1.5})
    assert "NOT the Markov rival" in verdict({**base, "pitch_nll": 2.5})
    assert "does NOT beat even the pitch frequencies" in verdict({**base, "pitch_nll": 3.5})
