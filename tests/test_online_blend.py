"""The online blend: its arithmetic, its storage in a checkpoint, and that fitting and streaming agree."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ripieno.model import checkpoint
from ripieno.model.checkpoint import CheckpointError
from ripieno.model.events import NoteEvent, Role, array_to_events
from ripieno.model.network import ModelConfig, NoteLSTM
from ripieno.model.ngram import OnlineSequenceModel, WittenBell
from ripieno.model.online import BlendedPitch, OnlineConfig
from ripieno.model.stream import Stream
from ripieno.training import online_fit
from ripieno.model.network import checkpoint_of
from ripieno.model import network

torch.set_num_threads(1)
SMALL = dict(hidden=16, layers=1, pitch_embed=8, embed=4, cond_embed=4, head_hidden=8, dropout=0.0)


def _tune(n: int = 60, seed: int = 3) -> np.ndarray:
    """(n, 7) lead events in sixteenths (beats) in 4/4: a 10-note phrase, then the same phrase a tone higher, repeated."""
    rng = np.random.default_rng(seed)
    phrase = rng.integers(60, 72, 10)
    pitches = np.concatenate([phrase + 2 * (i % 2) for i in range(n // 10 + 1)])[:n]
    pos = np.mod(np.arange(n) * 0.25, 4.0)
    return np.stack([pitches, np.full(n, 0.25), np.full(n, 0.2), np.full(n, 80), np.zeros(n), pos, np.full(n, 4.0)], axis=1).astype(np.float32)


def test_blend_with_witten_bell_and_uniform_base_is_witten_bell():
    m = OnlineSequenceModel(16, 128)
    for x in [60, 62, 64, 60, 62, 64, 65, 60, 62]:
        m.observe(x)
    p, share = m.blend(np.full(128, 1 / 128), [1.0] * 17, [0.0] * 17)
    np.testing.assert_allclose(p, m.probs(), atol=1e-15)
    assert 0 < share < 0.1  # a context heard before: little is left to the base


def test_blend_by_hand():
    """One order-0 context that saw 60 twice and 62 once: P = (c + beta * base) / (3 + beta), beta = a * 2 + b."""
    m = OnlineSequenceModel(0, 128)
    for x in [60, 60, 62]:
        m.observe(x)
    base = np.full(128, 1 / 128)
    p, share = m.blend(base, [0.5], [2.0])
    beta = 0.5 * 2 + 2.0
    assert p[60] == pytest.approx((2 + beta / 128) / (3 + beta))
    assert p[61] == pytest.approx((beta / 128) / (3 + beta))
    assert share == pytest.approx(beta / (3 + beta)) and p.sum() == pytest.approx(1.0)


def test_online_config_refuses_bad_values_and_round_trips():
    with pytest.raises(ValueError, match="kind"):
        OnlineConfig(kind="magic")
    with pytest.raises(ValueError, match="max_order"):
        OnlineConfig(kind="blend", pitch_a=(1.0,) * 3)
    with pytest.raises(ValueError, match="corpus_weight"):
        OnlineConfig(kind="blend", corpus_weight=1.5)
    cfg = OnlineConfig(kind="blend", corpus_weight=0.25, pitch_b=(0.5,) * 17)
    assert OnlineConfig.from_dict(cfg.to_dict()) == cfg
    assert ModelConfig.from_dict(ModelConfig(online=cfg).to_dict()).online == cfg


def test_blend_learns_a_transposed_phrase_from_intervals():
    """After hearing a phrase once, the interval model predicts it a tone higher; the pitch VOM alone cannot."""
    uniform = np.full(128, 1 / 128)
    phrase = [60, 64, 62, 65, 64, 67, 65, 69]
    with_iv, without = BlendedPitch(OnlineConfig(kind="blend")), BlendedPitch(OnlineConfig(kind="blend", interval=False))
    out = np.zeros(128)
    for b in (with_iv, without):
        for x in phrase:
            b.observe(x)
    cost = {}
    for name, b in (("with", with_iv), ("without", without)):
        b.observe(phrase[0] + 2)  # the transposed phrase starts; the rest of it is predicted
        total = 0.0
        for x in [p + 2 for p in phrase[1:]]:
            total -= np.log(b.mix(uniform, out)[x])
            b.observe(x)
        cost[name] = total
    assert cost["with"] < 0.5 * cost["without"], cost


def test_checkpoint_tables_round_trip_and_are_checksummed(tmp_path):
    torch.manual_seed(0)
    model = NoteLSTM(ModelConfig(**SMALL))
    tables = {"corpus.x": np.arange(10, dtype=np.int32)}
    path = network.save(tmp_path / "t.safetensors", model, {}, tables)
    ck = checkpoint.load(path)
    assert np.array_equal(ck.tables["corpus.x"], tables["corpus.x"]) and ck.tables["corpus.x"].dtype == np.int32
    data = bytearray(path.read_bytes())
    at = data.rindex(np.arange(10, dtype=np.int32).tobytes()) + 3 * 4
    data[at] = 99  # a damaged table is caught like damaged weights
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        checkpoint.load(path)


def test_stream_blend_matches_the_fitting_arithmetic(tmp_path):
    """What online_fit optimises is exactly what the Stream (the daemon's and eval's path) predicts."""
    torch.manual_seed(1)
    model = NoteLSTM(ModelConfig(**SMALL)).eval()
    pieces = [_tune(50, s) for s in range(4)]
    corpus = WittenBell(3, 128).fit([[int(x) for x in p[:, 0]] for p in pieces[:2]])
    ck = checkpoint_of(model.eval())
    stats = online_fit.collect(ck, pieces[2:], corpus)
    cfg = online_fit.fit_blend(stats, steps=60)
    assert cfg.kind == "blend" and 0 < cfg.corpus_weight < 1
    path = online_fit.with_online(ck, cfg, tmp_path / "blend.safetensors", {}, corpus)
    loaded = checkpoint.load(path)
    assert loaded.config.online == cfg and loaded.tables
    stream, total, n = Stream(loaded), 0.0, 0
    for p in pieces[2:]:
        stream.reset()
        for t, e in enumerate(array_to_events(p)):
            if t:
                total -= np.log(stream.predict().pitch_probs[e.pitch])
                n += 1
            stream.observe(e)
    assert total / n == pytest.approx(online_fit.blend_nll(stats, cfg), abs=1e-4)
    assert online_fit.blend_nll(stats, cfg) < online_fit.blend_nll(stats, OnlineConfig(kind="blend"))


def test_blend_stream_fork_and_own_notes():
    """A planning fork shares counts read-only; ripieno's own notes extend the context but teach nothing."""
    torch.manual_seed(2)
    model = NoteLSTM(ModelConfig(**SMALL, online=OnlineConfig(kind="blend"))).eval()
    ck = checkpoint_of(model.eval())
    s = Stream(ck)
    for e in array_to_events(_tune(30)):
        s.observe(e)
    learned = len(s.online.vom)
    twin = s.fork()
    for e in array_to_events(_tune(20, 9)):
        twin.observe(e)
        s.observe(NoteEvent(e.pitch, e.step, e.duration, e.velocity, Role.RIPIENO))
    assert len(s.online.vom) == learned and len(twin.online.vom) == learned
    assert abs(s.predict().pitch_probs.sum() - 1.0) < 1e-9
