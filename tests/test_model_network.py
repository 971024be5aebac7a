"""Encoding and NoteLSTM contracts: tokens, bins, JSON round trips, packed == padded."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from ripieno.model.encoding import ENCODING_VERSION, Encoding, EncodingError, IncrementalEncoder, encode
from ripieno.model.events import NoteEvent, Role, events_to_array
from ripieno.model.network import ModelConfig, NoteLSTM

torch.set_num_threads(1)

TINY = ModelConfig(hidden=16, layers=2, pitch_embed=8, embed=4, cond_embed=4, head_hidden=8, dropout=0.0)


def random_piece(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    steps = rng.choice([0.0, 0.0, 0.125, 0.25, 0.5, 1.0, 12.0], size=n)
    return np.stack(
        [rng.integers(30, 90, n), steps, rng.uniform(0.0, 3.0, n), rng.integers(1, 128, n), rng.integers(0, 2, n)], axis=1
    ).astype(np.float32)


def test_encode_columns_and_ranges():
    enc = Encoding()
    tok = encode(random_piece(300))
    assert tok.dtype == np.int64 and tok.shape == (300, len(enc.columns))
    assert enc.columns[:5] == ("pitch", "step", "duration", "velocity", "role")
    for j, n in enumerate(enc.vocab_sizes):
        assert tok[:, j].min() >= 0 and tok[:, j].max() < n, enc.columns[j]


def test_chord_step_has_its_own_bin_and_times_are_log_binned():
    enc = Encoding()
    bins = enc.time_bin(np.array([0.0, 0.005, 0.02, 0.1, 0.2, 0.4, 100.0]))
    assert bins[0] == bins[1] == 0 and bins[2] == 1
    assert abs((bins[4] - bins[3]) - (bins[5] - bins[4])) <= 1  # doubling = about the same number of bins
    assert np.allclose(np.diff(np.log(enc.time_edges())), np.log(enc.time_edges()[1] / enc.time_edges()[0]))
    assert bins[-1] == enc.time_bins - 1


def test_decoded_time_lands_in_its_bin_and_is_not_quantised():
    enc = Encoding()
    rng = np.random.default_rng(1)
    for k in range(enc.time_bins):
        draws = [enc.duration_seconds(k, rng) for _ in range(20)]
        assert all(enc.time_bin(np.array(draws)) == k)
        if k > 0:
            assert len(set(draws)) > 1
    assert enc.step_seconds(0, rng) == 0.0
    assert enc.step_seconds(enc.time_bins - 1, rng) <= enc.time_max * 1.2
    for v in range(1, 128):
        assert enc.velocity_bin(enc.velocity_value(int(enc.velocity_bin(v)), rng)) == enc.velocity_bin(v)


def test_transposition_features_are_invariant():
    arr = random_piece(50, seed=3)
    up = arr.copy()
    up[:, 0] += 5
    enc = Encoding()
    j = enc.columns.index("interval")
    assert (encode(arr)[1:, j] == encode(up)[1:, j]).all()
    k = enc.columns.index("step_ratio")
    slow = arr.copy()
    slow[:, 1] *= 2  # half tempo: same rhythm ratios
    a, b = encode(arr)[:, k], encode(slow)[:, k]
    assert (a == b).mean() > 0.9  # clipping at the top end may differ


def test_incremental_encoder_equals_batch_encode():
    arr = random_piece(200, seed=4)
    enc = Encoding()
    inc = IncrementalEncoder(enc)
    out = np.zeros(len(enc.columns), dtype=np.int64)
    rows = np.stack([inc.push(*r, out=out).copy() for r in arr])
    np.testing.assert_array_equal(rows, encode(arr))


def test_encoding_json_round_trip_and_refusals():
    enc = Encoding(features=("interval",))
    assert Encoding.from_dict(json.loads(json.dumps(enc.to_dict()))) == enc
    assert enc.columns == ("pitch", "step", "duration", "velocity", "role", "interval")
    with pytest.raises(EncodingError, match="version"):
        Encoding.from_dict({**enc.to_dict(), "version": ENCODING_VERSION + 1})
    with pytest.raises(EncodingError, match="unknown"):
        Encoding(features=("beat",))


def test_model_config_json_round_trip():
    cfg = ModelConfig(hidden=32, tie_weights=True, encoding=Encoding(features=()))
    assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_events_encode_end_to_end():
    events = [NoteEvent(60, 0.0, 0.5, 80), NoteEvent(64, 0.0, 0.5, 80), NoteEvent(67, 0.5, 1.0, 90, Role.RIPIENO)]
    tok = encode(events_to_array(events))
    assert tok[:, 0].tolist() == [60, 64, 67] and tok[:, 4].tolist() == [0, 0, 1]
    assert tok[1, 1] == 0  # chord


@pytest.mark.parametrize("tie", [False, True])
def test_forward_shapes_and_explicit_state(tie):
    torch.manual_seed(0)
    model = NoteLSTM(ModelConfig(**{**TINY.to_dict(), "tie_weights": tie, "encoding": Encoding()}))
    x = torch.from_numpy(encode(random_piece(20))).unsqueeze(0).repeat(3, 1, 1)
    out, (h, c) = model(x)
    assert out.shape == (3, 20, 16) and h.shape == c.shape == (2, 3, 16)
    assert not any(isinstance(v, torch.Tensor) and v.shape == h.shape for v in vars(model).values())
    # carrying state over a split equals one pass
    out1, st = model(x[:, :7])
    out2, _ = model(x[:, 7:], st)
    torch.testing.assert_close(torch.cat([out1, out2], 1), out, rtol=0, atol=1e-6)


def test_loss_keys_and_values_are_mean_nll():
    torch.manual_seed(0)
    model = NoteLSTM(TINY).eval()
    tok = torch.from_numpy(encode(random_piece(30)))
    out, _ = model(tok[None, :-1])
    loss = model.loss(out[0], tok[1:])
    assert set(loss) == {"pitch", "step", "duration", "velocity", "total"}
    # an untrained model is near uniform: NLL close to log(vocab)
    assert abs(loss["pitch"].item() - np.log(128)) < 0.5
    assert torch.isclose(loss["total"], loss["pitch"] + loss["step"] + loss["duration"] + loss["velocity"])
    manual = -torch.log_softmax(model.pitch_logits(out[0]), -1).gather(1, tok[1:, :1]).mean()
    torch.testing.assert_close(loss["pitch"], manual)


def test_packed_and_padded_give_the_same_loss_and_gradients():
    torch.manual_seed(0)
    model = NoteLSTM(TINY)
    model.eval()  # no dropout: compare arithmetic
    lengths = [12, 5, 9]
    seqs = [torch.from_numpy(encode(random_piece(n, seed=n))) for n in lengths]
    padded = torch.zeros(3, 12, seqs[0].shape[1], dtype=torch.long)
    for i, s in enumerate(seqs):
        padded[i, : len(s)] = s
    inputs, targets = padded[:, :-1], padded[:, 1:]
    in_lens = torch.tensor(lengths) - 1

    out, _ = model(inputs)
    mask = torch.arange(11)[None, :] < in_lens[:, None]
    l_pad = model.loss(out[mask], targets[mask])
    g_pad = torch.autograd.grad(l_pad["total"], list(model.parameters()), allow_unused=True)

    packed_in = pack_padded_sequence(inputs, in_lens, batch_first=True, enforce_sorted=False)
    packed_tg = pack_padded_sequence(targets, in_lens, batch_first=True, enforce_sorted=False)
    pout, (h, _) = model(packed_in)
    l_pack = model.loss(pout.data, packed_tg.data)
    g_pack = torch.autograd.grad(l_pack["total"], list(model.parameters()), allow_unused=True)

    for k in l_pad:
        torch.testing.assert_close(l_pad[k], l_pack[k], rtol=1e-5, atol=1e-6)
    for a, b in zip(g_pad, g_pack):
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    # final state of the packed pass is each sequence's last real step
    for i, n in enumerate(in_lens.tolist()):
        torch.testing.assert_close(h[-1, i], out[i, n - 1], rtol=1e-5, atol=1e-6)


def test_wrong_column_count_is_one_clear_error():
    model = NoteLSTM(TINY)
    with pytest.raises(ValueError, match="token columns"):
        model(torch.zeros(1, 3, 4, dtype=torch.long))
