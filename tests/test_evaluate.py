"""Eval: numbers on a hand-made file match a hand computation; the CLI reads a checkpoint and survives broken files."""

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
from ripieno.model.events import NoteEvent, Role, array_to_events
from ripieno.model.network import ModelConfig, NoteLSTM
from ripieno.model.stream import Stream
from ripieno.training import cli
from ripieno.training.evaluate import KEYS, EvalError, evaluate
from ripieno.training.markov import MarkovBaseline, corpus_markov, mean_nll
from ripieno.training.midi_io import read_midi, write_midi
from ripieno.training.pieces import Piece

torch.set_num_threads(1)


class EchoStream:
    """A stand-in model: half its belief on the previous pitch, the rest spread evenly; samples an echo."""

    def __init__(self) -> None:
        self.last: int | None = None

    def reset(self) -> None:
        self.last = None

    def observe(self, event: NoteEvent) -> None:
        self.last = event.pitch

    def predict(self) -> object:
        p = np.full(128, 1 / 128) if self.last is None else np.full(128, 0.5 / 127)
        if self.last is not None:
            p[self.last] = 0.5

        class P:
            pitch_probs = p

        return P()

    def sample(self, temperature: float, rng: np.random.Generator) -> NoteEvent:
        return NoteEvent(int(self.last), 0.5, 0.5, 64, Role.RIPIENO)

    def fork(self) -> EchoStream:
        twin = EchoStream()
        twin.last = self.last
        return twin


def events(pitches: list[int], step: float = 0.5) -> np.ndarray:
    return np.array([[p, 0.0 if i == 0 else step, 0.5, 80, 0] for i, p in enumerate(pitches)], np.float32)


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
    # continued from the first half (60 60) by echoing 60 twice; the true second half is 62 60
    kl_true = 0.5 * math.log2(0.5 / 0.25) + 0.5 * math.log2(0.5 / 0.75)
    kl_sampled = math.log2(1 / 0.75)
    assert got["jsd_pitch"] == pytest.approx(0.5 * kl_true + 0.5 * kl_sampled, rel=1e-12)
    assert got["jsd_step"] == 0.0 and got["jsd_duration"] == 0.0
    # unigram of the training file, add-one: 60 and 62 -> 2/130 each
    assert got["baseline_unigram_nll"] == pytest.approx(math.log(65), rel=1e-12)
    assert got["baseline_markov_nll"] == pytest.approx(mean_nll(MarkovBaseline(corpus_markov(train)), [piece]), rel=1e-12)


def test_nothing_to_predict_is_a_clear_error() -> None:
    with pytest.raises(EvalError, match="nothing to evaluate"):
        evaluate(EchoStream, [Piece("b", "test", events([70]))], [Piece("t", "test", events([60, 62]))])


def tiny_checkpoint() -> Checkpoint:
    torch.manual_seed(0)
    cfg = ModelConfig(hidden=16, layers=1, pitch_embed=8, embed=4, cond_embed=4, head_hidden=8, dropout=0.0)
    return Checkpoint(model=NoteLSTM(cfg).eval(), config=cfg)


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
    path = checkpoint.save(tmp_path / "m.pt", ck.model, {"data": {"midi": str(train_dir), "split": {"val_fraction": 0.0, "test_fraction": 0.0}, "train_pieces": 1}})

    with caplog.at_level(logging.WARNING):
        rc = cli.main(["eval", "--model", str(path), "--midi", str(eval_dir), "--json", "--no-progress"])
    assert rc == 0
    assert "broken.mid" in caplog.text and "1 of 3 MIDI files skipped" in caplog.text
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert list(got) == list(KEYS) and got["files"] == 2 and got["events"] == 23 + 8

    # the same numbers, computed directly: the daemon's Stream, one event at a time, reset per file
    stream = Stream(checkpoint.load(path))
    nll, files = 0.0, [read_midi(eval_dir / "e1.mid"), read_midi(eval_dir / "e2.mid")]
    for arr in files:
        stream.reset()
        for t, e in enumerate(array_to_events(arr)):
            if t:
                nll -= math.log(stream.predict().pitch_probs[e.pitch])
            stream.observe(e)
    assert got["pitch_nll"] == pytest.approx(nll / 31, rel=1e-9)
    base = MarkovBaseline(corpus_markov([read_midi(train_dir / "t.mid")]))
    assert got["baseline_markov_nll"] == pytest.approx(mean_nll(base, files), rel=1e-12)
    for k in ("jsd_pitch", "jsd_step", "jsd_duration"):
        assert 0.0 <= got[k] <= 1.0

    # --offline scores the network alone: a different figure, the same baselines
    assert cli.main(["eval", "--model", str(path), "--midi", str(eval_dir), "--json", "--no-progress", "--offline"]) == 0
    off = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert off["pitch_nll"] > got["pitch_nll"]  # e1 repeats its phrase: the online part must help there
    assert off["baseline_markov_nll"] == got["baseline_markov_nll"]


def test_cli_prefers_stored_baselines_next_to_the_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ripieno.training.markov import Baselines

    (tmp_path / "eval").mkdir()
    write_midi(tmp_path / "eval" / "e.mid", events([60, 62, 64, 62, 60, 62, 64, 62]))
    path = checkpoint.save(tmp_path / "m.pt", tiny_checkpoint().model, {})  # meta names no training data
    stored = Baselines.train([events([60, 62, 64, 65, 64, 62])])
    stored.save(tmp_path / "m.baseline.npz")
    assert cli.main(["eval", "--model", str(path), "--midi", str(tmp_path / "eval"), "--json", "--no-progress"]) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert got["baseline_markov_nll"] == pytest.approx(mean_nll(stored.rival(), [read_midi(tmp_path / "eval" / "e.mid")]), rel=1e-12)
    (tmp_path / "m.baseline.npz").write_bytes(b"truncated")
    assert cli.main(["eval", "--model", str(path), "--midi", str(tmp_path / "eval"), "--json", "--no-progress"]) == 2


def test_cli_one_line_errors(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ck = tiny_checkpoint()
    path = checkpoint.save(tmp_path / "m.pt", ck.model, {})
    (tmp_path / "eval").mkdir()
    write_midi(tmp_path / "eval" / "e.mid", events([60, 62, 64]))
    with caplog.at_level(logging.ERROR):
        assert cli.main(["eval", "--model", str(path), "--midi", str(tmp_path / "eval"), "--no-progress"]) == 2
        assert cli.main(["eval", "--model", str(tmp_path / "nope.pt"), "--midi", str(tmp_path / "eval")]) == 2
        assert cli.main(["eval", "--model", str(path), "--midi", str(tmp_path / "missing")]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert "--train-corpus" in errors[0] and "nope.pt" in errors[1] and "missing" in errors[2]


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
    assert cli.main(["eval", "--model", ck_path, "--midi", str(midi), "--json", "--no-progress"]) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    train = split(dedupe(read_midi_dir(midi)), val=0.2, test=0.2)["train"]
    assert 0 < len(train) < 10
    assert got["baseline_markov_nll"] == pytest.approx(mean_nll(Baselines.train(train).rival(), read_midi_dir(midi)), rel=1e-12)
