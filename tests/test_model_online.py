"""The online component: fixed-share arithmetic, and learning a repeated phrase lowers NLL."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ripieno.model.events import NoteEvent, Role
from ripieno.model.network import ModelConfig, NoteLSTM
from ripieno.model.online import FixedShare, OnlinePitch
from ripieno.model.stream import Stream
from ripieno.model.network import checkpoint_of

torch.set_num_threads(1)


def test_fixed_share_by_hand():
    fs = FixedShare(2, alpha=0.1)
    fs.update(np.array([0.6, 0.2]))
    v = np.array([0.5 * 0.6, 0.5 * 0.2]) / 0.4  # Bayes: [0.75, 0.25]
    expected = 0.9 * v + 0.1 * (1 - v)  # share: [0.7, 0.3]
    np.testing.assert_allclose(fs.weights, expected)
    np.testing.assert_allclose(fs.weights, [0.7, 0.3])
    for _ in range(200):  # one expert always right: its weight saturates at 1 - alpha, never 1
        fs.update(np.array([1.0, 0.0]))
    assert fs.weights[0] == pytest.approx(0.9, abs=1e-6) and fs.weights[1] > 0
    fs.update(np.array([np.nan, np.nan]))  # garbage never poisons the weights
    assert np.isfinite(fs.weights).all()


def test_online_pitch_learns_only_when_told():
    op = OnlinePitch()
    uniform = np.full(128, 1 / 128)
    out = np.zeros(128)
    for p in [60, 62, 64] * 5:
        op.observe(p, uniform, learn=False)
    assert len(op.vom) == 0 and op.weights.tolist() == [0.5, 0.5]
    for p in [60, 62, 64] * 5:
        op.observe(p, uniform, learn=True)
    assert op.weights[1] > 0.9
    assert np.argmax(op.mix(uniform, out)) == 60  # after 64 comes 60


def _phrase_piece(repeats: int) -> list[NoteEvent]:
    rng = np.random.default_rng(5)
    phrase = [int(p) for p in rng.integers(55, 80, 12)]
    # sixteenths (a quarter of a beat each) in 3/4: 12 notes fill one bar
    return [NoteEvent(p, 0.25, 0.25, 80, Role.PLAYER, pos=(i * 0.25) % 3.0, bar=3.0) for _ in range(repeats) for i, p in enumerate(phrase)]


def _nll(stream: Stream, events: list[NoteEvent]) -> float:
    total = 0.0
    for e in events:
        total -= np.log(stream.predict().pitch_probs[e.pitch])
        stream.observe(e)
    return total / len(events)


def test_online_lowers_nll_on_a_repeated_phrase():
    torch.manual_seed(0)
    cfg = ModelConfig(hidden=16, layers=1, pitch_embed=8, embed=4, cond_embed=4, head_hidden=8, dropout=0.0)
    ck = checkpoint_of(NoteLSTM(cfg).eval())
    events = _phrase_piece(6)
    offline, online = _nll(Stream(ck, online=False), events), _nll(Stream(ck, online=True), events)
    assert online < 0.5 * offline, (online, offline)
    # and it is the repetition that is learned: the last repeat is far cheaper than the first
    s = Stream(ck)
    first = _nll(s, events[:12])
    _nll(s, events[12:-12])
    assert _nll(s, events[-12:]) < 0.25 * first


def test_ripieno_notes_do_not_teach_the_online_model_by_default():
    torch.manual_seed(0)
    cfg = ModelConfig(hidden=16, layers=1, pitch_embed=8, embed=4, cond_embed=4, head_hidden=8, dropout=0.0)
    ck = checkpoint_of(NoteLSTM(cfg).eval())
    own = [NoteEvent(e.pitch, e.step, e.duration, e.velocity, Role.RIPIENO) for e in _phrase_piece(4)]
    quiet, learning = Stream(ck), Stream(ck, learn_own=True)
    for e in own:
        quiet.observe(e)
        learning.observe(e)
    assert len(quiet.online.vom) == 0 and len(learning.online.vom) == len(own)


def test_observe_learn_overrides_the_role_default():
    """The engine passes learn=False for the notes ripieno plays itself, whatever their part, and
    learn=True teaches a note whatever its role."""
    torch.manual_seed(0)
    cfg = ModelConfig(hidden=16, layers=1, pitch_embed=8, embed=4, cond_embed=4, head_hidden=8, dropout=0.0)
    ck = checkpoint_of(NoteLSTM(cfg).eval())
    lead = _phrase_piece(2)
    s = Stream(ck)
    for e in lead:
        s.observe(e, learn=False)  # ripieno's own continuation of the lead: context, not a lesson
    assert len(s.online.vom) == 0 and s.n_observed == len(lead)
    for e in lead:
        s.observe(NoteEvent(e.pitch, e.step, e.duration, e.velocity, Role.RIPIENO, e.pos, e.bar), learn=True)
    assert len(s.online.vom) == len(lead)
    # the context still moved on when nothing was learned: the state is not the fresh one
    assert not np.allclose(s.state[0], Stream(ck).state[0])
