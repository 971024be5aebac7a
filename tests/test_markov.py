"""The baselines on a hand-made sequence, computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ripieno.training.markov import MarkovBaseline, Unigram, corpus_markov, mean_nll

ALPHA = 0.05


def test_markov_baseline_by_hand() -> None:
    train = [[60, 62, 60, 62]]
    test = [60, 62, 64]
    # (a) corpus Witten-Bell order 3. Root counts {60: 2, 62: 2}: c = 4, T = 2, uniform 1/128 below.
    p0_62 = (2 + 2 / 128) / 6
    p0_64 = (0 + 2 / 128) / 6
    pa_62 = (2 + 1 * p0_62) / 3  # after 60: {62: 2}, c = 2, T = 1
    p1_64 = (0 + 1 * p0_64) / 2  # after 62: {60: 1}
    pa_64 = (0 + 1 * p1_64) / 2  # after 60 62: {60: 1}
    # (b) online VOM of the file: after hearing 60 it knows {60: 1}; after 60 62, root {60: 1, 62: 1}
    pb_62 = (0 + 1 / 128) / 2
    pb_64 = (0 + 2 / 128) / 4  # context 62 was never followed: back off to the root
    # fixed share: uniform start, Bayes, then (1 - alpha) v + alpha (1 - v) for two experts
    p1 = 0.5 * pa_62 + 0.5 * pb_62
    v = 0.5 * pa_62 / p1
    w = (1 - ALPHA) * v + ALPHA * (1 - v)
    p2 = w * pa_64 + (1 - w) * pb_64
    want = [p1, p2]

    base = MarkovBaseline(corpus_markov(train), alpha=ALPHA)
    np.testing.assert_allclose(base.piece_probs(test), want, rtol=1e-12)
    total, n = base.piece_nll(test)
    assert n == 2 and total == pytest.approx(-math.log(p1) - math.log(p2), rel=1e-12)
    assert mean_nll(base, [test, [70]]) == pytest.approx(total / 2, rel=1e-12)  # one-note files predict nothing


def test_online_part_wins_on_repeats() -> None:
    rng = np.random.default_rng(0)
    train = [list(rng.integers(55, 80, size=200)) for _ in range(5)]
    phrase = [int(x) for x in rng.integers(55, 80, size=12)]
    base = MarkovBaseline(corpus_markov(train))
    probs = base.piece_probs(phrase * 4)
    # the first hearing is guesswork, the repeats are nearly certain
    assert probs[-12:].mean() > 0.8 > 0.2 > probs[:11].mean()


def test_unigram_by_hand() -> None:
    u = Unigram([[60, 60, 62]])
    # add-one: 60 -> 3/131, 62 -> 2/131, anything else 1/131
    total, n = u.piece_nll([62, 60, 61])
    assert n == 2 and total == pytest.approx(-math.log(3 / 131) - math.log(1 / 131))
    assert u.probs.sum() == pytest.approx(1.0)


def test_stored_baselines_round_trip(tmp_path) -> None:
    from ripieno.training.markov import BaselineError, Baselines

    train = [[60, 62, 64, 65, 67] * 3, [67, 65, 64, 62, 60]]
    base = Baselines.train(train, {"corpus": ["x"]})
    back = Baselines.load(base.save(tmp_path / "m.baseline.npz"))
    assert back.meta == {"corpus": ["x"], "train_pieces": 2}
    np.testing.assert_array_equal(back.unigram.probs, base.unigram.probs)
    probe = [60, 62, 64, 66, 67, 60, 62]
    assert back.rival().piece_nll(probe) == base.rival().piece_nll(probe)
    (tmp_path / "bad.npz").write_bytes(b"nope")
    with pytest.raises(BaselineError, match=r"bad\.npz"):
        Baselines.load(tmp_path / "bad.npz")


def test_pieces_of_encoding_2_are_their_pitch_sequences() -> None:
    """Baselines read a Piece's (N, 7) events by their pitch column, in event order."""
    from ripieno.training.pieces import Piece, events_from_notes

    train = [[60, 62, 64, 65, 67] * 3, [67, 65, 64, 62, 60]]
    probe = [60, 62, 64, 66, 67, 60, 62]

    def as_piece(pitches: list[int]) -> Piece:
        onset = np.arange(len(pitches)) * 0.5
        return Piece("p", "t", events_from_notes(onset, pitches, [0.5] * len(pitches), pos=onset % 3, bar=3.0)[0])

    from_lists = MarkovBaseline(corpus_markov(train))
    from_pieces = MarkovBaseline(corpus_markov([as_piece(p) for p in train]))
    assert from_pieces.piece_nll(probe) == from_lists.piece_nll(probe)
    assert mean_nll(from_lists, [as_piece(probe)]) == pytest.approx(mean_nll(from_lists, [probe]), rel=1e-12)
    assert Unigram([as_piece(p) for p in train]).piece_nll(probe) == Unigram(train).piece_nll(probe)
