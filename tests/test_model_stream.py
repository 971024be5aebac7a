"""Streaming inference: numpy step == torch forward (both pitch readouts), state carries, seeds fix notes, guard rails hold."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ripieno.model.checkpoint import Checkpoint
from ripieno.model.encoding import BEAT_VALUES, GRID, encode
from ripieno.model.events import NoteEvent, Role, array_to_events, events_to_array
from ripieno.model.network import ModelConfig, NoteLSTM
from ripieno.model.stream import Stream
from ripieno.model.network import checkpoint_of, model_of

torch.set_num_threads(1)
GRID_VALUES = {v / GRID for v in BEAT_VALUES}


def tiny_checkpoint(tie: bool = False, layers: int = 2, seed: int = 0) -> Checkpoint:
    torch.manual_seed(seed)
    cfg = ModelConfig(hidden=24, layers=layers, pitch_embed=8, embed=4, cond_embed=4, head_hidden=8, dropout=0.0, tie_weights=tie)
    model = NoteLSTM(cfg)
    with torch.no_grad():  # larger weights than init so errors are not hidden by tiny activations
        for p in model.parameters():
            p.mul_(3.0)
    return checkpoint_of(model.eval())


def piece(n: int, seed: int = 0) -> list[NoteEvent]:
    """n events in beats, both roles, in 3/4 bars (the metre and lead columns all take part)."""
    rng = np.random.default_rng(seed)
    steps = rng.choice([0.0, 0.25, 1 / 3, 0.5, 1.0], n)
    pos = np.mod(np.cumsum(steps), 3.0)
    arr = np.stack(
        [rng.integers(40, 80, n), steps, rng.uniform(0.1, 1.0, n), rng.integers(30, 110, n), rng.integers(0, 2, n), pos, np.full(n, 3.0)], axis=1
    ).astype(np.float32)
    return array_to_events(arr)


@pytest.mark.parametrize(("tie", "layers"), [(False, 2), (True, 1), (False, 3)])
def test_streaming_step_equals_batched_torch_forward(tie, layers):
    ck = tiny_checkpoint(tie, layers)
    events = piece(40)
    tokens = torch.from_numpy(encode(events_to_array(events)))
    with torch.no_grad():
        out, (h, c) = model_of(ck)(tokens[None])
        net_probs = torch.softmax(model_of(ck).pitch_logits(out[0], 0), -1).double().numpy()
        acc_probs = torch.softmax(model_of(ck).pitch_logits(out[0], 1), -1).double().numpy()
        heads = model_of(ck).head_logits(out[0], torch.full((40,), 61))
    s = Stream(ck, online=False)
    for t, e in enumerate(events):
        s.observe(e)
        np.testing.assert_allclose(s.h[-1], out[0, t].numpy(), atol=1e-5, rtol=0)
        np.testing.assert_allclose(s.predict().net_pitch_probs, net_probs[t], atol=1e-5, rtol=0)
        np.testing.assert_allclose(s.predict().pitch_probs, net_probs[t], atol=1e-5, rtol=0)
        np.testing.assert_allclose(s.predict(Role.PLAYER).pitch_probs, net_probs[t], atol=1e-5, rtol=0)
        acc = s.predict(Role.RIPIENO)  # the accompaniment readout: the network's own
        np.testing.assert_allclose(acc.pitch_probs, acc_probs[t], atol=1e-5, rtol=0)
        np.testing.assert_allclose(acc.net_pitch_probs, acc_probs[t], atol=1e-5, rtol=0)
        assert abs(acc.pitch_probs.sum() - 1.0) < 1e-9
        for name, probs in s.head_probs(61).items():
            np.testing.assert_allclose(probs, torch.softmax(heads[name][t], -1).numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(s.h, h[:, 0].numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(s.c, c[:, 0].numpy(), atol=1e-5, rtol=0)


def test_events_one_by_one_equal_one_sequence_and_reset_forgets():
    ck = tiny_checkpoint()
    events = piece(30, seed=2)
    a = Stream(ck)
    for e in events:
        a.observe(e)
    with torch.no_grad():
        _, (h, c) = model_of(ck)(torch.from_numpy(encode(events_to_array(events)))[None])
    np.testing.assert_allclose(a.state[0], h[:, 0].numpy(), atol=1e-5, rtol=0)
    a.reset()
    fresh = Stream(ck)
    assert np.array_equal(a.state[0], fresh.state[0]) and a.n_observed == 0
    np.testing.assert_array_equal(a.predict().pitch_probs, fresh.predict().pitch_probs)


def test_prediction_is_a_distribution_and_online_changes_it():
    ck = tiny_checkpoint()
    on, off = Stream(ck, online=True), Stream(ck, online=False)
    for e in piece(50, seed=3):
        on.observe(e)
        off.observe(e)
    p = on.predict()
    assert p.pitch_probs.dtype == np.float64 and p.pitch_probs.shape == (128,)
    assert abs(p.pitch_probs.sum() - 1.0) < 1e-12 and (p.pitch_probs > 0).all()
    np.testing.assert_allclose(p.net_pitch_probs, off.predict().pitch_probs, atol=1e-12)
    assert not np.allclose(p.pitch_probs, off.predict().pitch_probs)
    assert abs(p.weights.sum() - 1.0) < 1e-12


def _notes(stream: Stream, seed: int, n: int = 20, role: Role = Role.PLAYER) -> list[NoteEvent]:
    rng = np.random.default_rng(seed)
    s = stream.fork()
    out = []
    for _ in range(n):
        e = s.sample(0.9, rng, role=role)
        s.observe(e)
        out.append(e)
    return out


def test_same_seed_same_notes_and_fork_is_independent():
    ck = tiny_checkpoint()
    s = Stream(ck)
    for e in piece(10):
        s.observe(e)
    before = s.predict().pitch_probs
    a, b = _notes(s, 7), _notes(s, 7)
    assert a == b and len({e.pitch for e in a}) > 1
    assert _notes(s, 8) != a
    np.testing.assert_array_equal(s.predict().pitch_probs, before)  # forks never touched the parent
    assert all(e.role == Role.PLAYER for e in a)  # the part asked for (the lead's by default) is the part returned
    acc = _notes(s, 7, role=Role.RIPIENO)
    assert acc == _notes(s, 7, role=Role.RIPIENO) and all(e.role == Role.RIPIENO for e in acc)
    assert [e.pitch for e in acc] != [e.pitch for e in a]  # another readout, another line
    np.testing.assert_array_equal(s.predict().pitch_probs, before)


def test_temperature_zero_is_deterministic_and_greedy():
    ck = tiny_checkpoint()
    s = Stream(ck)
    s.observe(NoteEvent(60, 0.0, 0.5, 80))
    a = s.sample(0.0, np.random.default_rng(1))
    b = s.sample(0.0, np.random.default_rng(2))
    assert a == b
    assert a.pitch == int(np.argmax(s.predict().pitch_probs)) and a.role == Role.PLAYER
    # timing at temperature 0 is the most likely bin's grid value, for the pitch drawn
    heads = s.head_probs(a.pitch)
    assert a.step == ck.encoding.step_beats(int(np.argmax(heads["step"])))
    assert a.duration == ck.encoding.duration_beats(int(np.argmax(heads["duration"])))
    acc = s.sample(0.0, np.random.default_rng(1), role=Role.RIPIENO)
    assert acc.pitch == int(np.argmax(s.predict(Role.RIPIENO).pitch_probs)) and acc.role == Role.RIPIENO


def test_pitch_weights_shape_the_pitch_and_the_timing_follows_it():
    ck = tiny_checkpoint()
    s = Stream(ck)
    for e in piece(12, seed=1):
        s.observe(e)
    rng = np.random.default_rng(0)
    weights = np.zeros(128)
    weights[[50, 57]] = [1.0, 3.0]
    for role in (Role.PLAYER, Role.RIPIENO):
        p = s.predict(role).pitch_probs
        want = p[57] * 3.0 / (p[57] * 3.0 + p[50])  # the model's odds times the weights'
        drawn = [s.sample(1.0, rng, pitch_weights=weights, role=role).pitch for _ in range(400)]
        assert set(drawn) == {50, 57} and abs(drawn.count(57) / 400 - want) < 0.08
        # at temperature 0, the argmax of the product
        w = np.exp(np.random.default_rng(1).standard_normal(128))
        e = s.sample(0.0, rng, pitch_weights=w, role=role)
        assert e.pitch == int(np.argmax(p * w))
        heads = s.head_probs(e.pitch)
        assert e.step == ck.encoding.step_beats(int(np.argmax(heads["step"])))
    # weights that leave nothing still give a note inside the range
    e = s.sample(1.0, rng, pitch_weights=np.zeros(128), low=60, high=62)
    assert 60 <= e.pitch <= 62


def test_guard_rails_range_bounds_and_no_nan():
    ck = tiny_checkpoint()
    s = Stream(ck)
    rng = np.random.default_rng(0)
    enc = ck.encoding
    bad = [
        NoteEvent(200, float("nan"), float("inf"), 500),
        NoteEvent(-5, -1.0, float("nan"), 0, pos=float("inf"), bar=-3.0),
        NoteEvent(60, 1e9, 1e9, 64, Role.RIPIENO, pos=1e12, bar=1e9),
    ]
    for e in bad:
        s.observe(e)
    assert np.isfinite(s.h).all()
    for t in (0.0, 0.5, 1.0, 2.0, 50.0, float("nan")):
        for _ in range(20):
            for role in (Role.PLAYER, Role.RIPIENO):
                e = s.sample(t, rng, top_p=0.9, low=50, high=55, role=role)
                assert 50 <= e.pitch <= 55 and 1 <= e.velocity <= 127
                assert e.step in GRID_VALUES  # a grid value in beats, never a draw inside a bin
                assert e.duration in GRID_VALUES or e.duration == enc.duration_beats(0)
                assert 0.0 < e.duration <= max(GRID_VALUES)


def test_top_p_restricts_to_the_nucleus():
    ck = tiny_checkpoint()
    s = Stream(ck)
    s.observe(NoteEvent(60, 0.0, 0.5, 80))
    p = s.predict().pitch_probs
    rng = np.random.default_rng(0)
    top = set(np.argsort(-p)[:3].tolist())
    nucleus = float(np.sort(p)[::-1][:2].sum())  # keeps at most the top 2 .. 3 pitches
    drawn = {s.sample(1.0, rng, top_p=nucleus).pitch for _ in range(100)}
    assert drawn <= top


def test_fork_never_teaches_the_parent_and_copy_online_isolates_both_ways():
    ck = tiny_checkpoint()
    s = Stream(ck)
    for e in piece(30, seed=4):
        s.observe(e)
    learned = len(s.online.vom)
    cheap, deep = s.fork(), s.fork(copy_online=True)
    for e in piece(10, seed=5):  # player notes heard by the forks only
        cheap.observe(NoteEvent(e.pitch, e.step, e.duration, e.velocity, Role.PLAYER))
        deep.observe(NoteEvent(e.pitch, e.step, e.duration, e.velocity, Role.PLAYER))
    assert len(s.online.vom) == learned and len(cheap.online.vom) == learned
    assert len(deep.online.vom) == learned + 10
    before = deep.predict().pitch_probs
    for e in piece(10, seed=6):
        s.observe(e)
    np.testing.assert_array_equal(deep.predict().pitch_probs, before)
