"""Encoding and NoteLSTM contracts: tokens, the beat grid, metre and lead columns, JSON round trips,
the pitch readout per role, packed == padded."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from ripieno.model.encoding import (
    BEAT_VALUES,
    ENCODING_VERSION,
    GRID,
    MAX_BAR,
    OFF_GRID,
    Encoding,
    EncodingError,
    IncrementalEncoder,
    bar_tokens,
    beat_frac_token,
    encode,
)
from ripieno.model.events import COLUMNS, NoteEvent, Role, events_to_array
from ripieno.model.harmony import LeadNotes
from ripieno.model.network import ModelConfig, NoteLSTM
from ripieno.training.pieces import events_from_notes

torch.set_num_threads(1)

TINY = ModelConfig(hidden=16, layers=2, pitch_embed=8, embed=4, cond_embed=4, head_hidden=8, dropout=0.0)
GRID_VALUES = np.array(BEAT_VALUES, dtype=np.float64) / GRID  # beats, one per step/duration bin


def random_piece(n: int, seed: int = 0) -> np.ndarray:
    """(n, 7) events in beats: grid and off-grid steps, both roles, bars of 3, 4 and 6/8's 2, and unknown bars."""
    rng = np.random.default_rng(seed)
    steps = rng.choice([0.0, 0.0, 1 / 12, 0.25, 1 / 3, 0.5, 0.55, 1.0, 1.5, 12.0], size=n)
    onset = np.cumsum(steps)
    bar = rng.choice([0.0, 2.0, 3.0, 4.0], size=n)
    pos = np.where(bar > 0, np.mod(onset, np.maximum(bar, 1.0)), onset)
    return np.stack(
        [rng.integers(30, 90, n), steps, rng.uniform(0.0, 3.0, n), rng.integers(1, 128, n), rng.integers(0, 2, n), pos, bar], axis=1
    ).astype(np.float32)


def garbage_piece(n: int, seed: int = 0) -> np.ndarray:
    """(n, 7) events with every kind of bad value a caller may pass: NaN, inf, negative, out of range."""
    arr = random_piece(n, seed).astype(np.float64)
    rng = np.random.default_rng(seed + 100)
    bad = [np.nan, np.inf, -np.inf, -1.0, 1e9, 300.0, 2.5, 13.0]
    for col in range(len(COLUMNS)):
        rows = rng.choice(n, size=n // 10, replace=False)
        arr[rows, col] = rng.choice(bad, size=len(rows))
    # lead notes ending exactly where the next onset is (the "no longer sounding" boundary)
    arr[5:15, 1], arr[5:15, 2], arr[5:15, 4] = 0.5, 0.5, 0.0
    return arr.astype(np.float32)


def test_encode_columns_and_ranges():
    enc = Encoding()
    tok = encode(random_piece(300))
    assert tok.dtype == np.int64 and tok.shape == (300, len(enc.columns))
    assert enc.columns[:5] == ("pitch", "step", "duration", "velocity", "role")
    assert enc.columns[5:] == ("interval", "pitch_class", "beat_frac", "bar_beat", "bar_len", *(f"lead{k}" for k in range(12)), "lead_bass")
    for j, n in enumerate(enc.vocab_sizes):
        assert tok[:, j].min() >= 0 and tok[:, j].max() < n, enc.columns[j]
    garbage = encode(garbage_piece(300, seed=1))
    for j, n in enumerate(enc.vocab_sizes):
        assert garbage[:, j].min() >= 0 and garbage[:, j].max() < n, enc.columns[j]


def test_encode_refuses_an_array_of_the_old_width():
    with pytest.raises(ValueError, match=r"\(N, 7\)"):
        encode(np.zeros((3, 5), np.float32))


def test_time_bins_are_the_beat_grid_and_step_zero_is_a_chord():
    enc = Encoding()
    assert enc.time_bins == len(BEAT_VALUES) and BEAT_VALUES[0] == 0
    # every grid value is its own bin, exactly: sixteenths, eighths, every triplet, dotted values
    np.testing.assert_array_equal(enc.time_bin(GRID_VALUES), np.arange(len(BEAT_VALUES)))
    for beats in (1 / 4, 1 / 2, 3 / 4, 1 / 3, 2 / 3, 1 / 6, 1.5, 2.0):
        k = int(enc.time_bin(np.array([beats]))[0])
        assert enc.step_beats(k) == pytest.approx(beats, abs=1e-12)
    # below half a twelfth is a chord; otherwise the nearest grid value; long values clip into the last bin
    bins = enc.time_bin(np.array([0.0, 0.5 / GRID - 1e-6, 0.5 / GRID + 1e-6, 0.26, 0.49, 2.1, 100.0, np.nan, np.inf, -1.0]))
    near = lambda beats: int(np.argmin(np.abs(GRID_VALUES - beats)))  # noqa: E731
    assert bins.tolist() == [0, 0, 1, near(0.25), near(0.5), near(2.0), len(BEAT_VALUES) - 1, 0, len(BEAT_VALUES) - 1, 0]


def test_events_in_beats_round_trip_through_tokens_to_grid_values():
    """Encoding 2's round trip: beats -> tokens -> the grid value itself (no draw inside a bin)."""
    enc = Encoding()
    # a dotted rhythm, a triplet, sixteenths, a chord and a long note, in beats
    steps = [0.0, 1.5, 0.5, 1 / 3, 1 / 3, 1 / 3, 0.25, 0.25, 0.5, 0.0, 1.0, 4.0]
    durs = [1.5, 0.5, 1 / 3, 1 / 3, 1 / 3, 0.25, 0.25, 0.5, 1.0, 1.0, 4.0, 8.0]
    onset = np.cumsum(steps)
    ev = np.stack([np.arange(60, 72), steps, durs, np.full(12, 80), np.zeros(12), onset % 4, np.full(12, 4.0)], axis=1).astype(np.float32)
    tok = enc.encode(ev)
    back_steps = np.array([enc.step_beats(k) for k in tok[:, 1]])
    back_durs = np.array([enc.duration_beats(k) for k in tok[:, 2]])
    np.testing.assert_allclose(back_steps, ev[:, 1], atol=1e-6)
    np.testing.assert_allclose(back_durs, ev[:, 2], atol=1e-6)
    np.testing.assert_allclose(np.cumsum(back_steps), onset, atol=1e-5)  # decoded onsets land on the beat
    # every bin decodes to a value that encodes to the same bin; duration bin 0 is short but not zero
    for k in range(enc.time_bins):
        assert enc.time_bin(np.array([enc.step_beats(k)]))[0] == k
        assert enc.time_bin(np.array([enc.duration_beats(k)]))[0] == k
    assert enc.step_beats(0) == 0.0 and 0.0 < enc.duration_beats(0) < 0.5 / GRID
    assert enc.step_beats(enc.time_bins - 1) == BEAT_VALUES[-1] / GRID and enc.step_beats(10**6) == BEAT_VALUES[-1] / GRID
    rng = np.random.default_rng(1)
    for v in range(1, 128):
        assert enc.velocity_bin(enc.velocity_value(int(enc.velocity_bin(v)), rng)) == enc.velocity_bin(v)


def test_metre_tokens():
    # the place in the beat, to the nearest twelfth: a player's scatter still means the same place
    assert [beat_frac_token(x) for x in (0.0, 0.5, 1 / 3, 2.75, 0.49, 3.999, 7.25)] == [0, 6, 4, 9, 6, 0, 3]
    assert beat_frac_token(float("nan")) == beat_frac_token(float("inf")) == OFF_GRID
    # (beat in the bar 1.., bar length); unknown bars are (0, 0)
    assert bar_tokens(0.0, 4.0) == (1, 4) and bar_tokens(2.0, 3.0) == (3, 3) and bar_tokens(2.5, 3.0) == (3, 3)
    assert bar_tokens(1.5, 2.0) == (2, 2)  # 6/8: the second dotted-quarter beat of a 2-beat bar
    assert bar_tokens(5.0, 3.0) == (3, 3)  # a position past the bar wraps into it
    assert bar_tokens(1.0, 0.0) == bar_tokens(float("nan"), 4.0) == bar_tokens(1.0, float("nan")) == (0, 0)
    assert bar_tokens(30.0, 40.0)[1] == MAX_BAR and bar_tokens(30.0, 40.0)[0] <= MAX_BAR
    enc = Encoding()
    ev = np.array([[60, 0, 1, 80, 0, 2.0, 3.0], [62, 0.5, 1, 80, 0, 2.5, 3.0], [64, 0.5, 1, 80, 0, np.nan, 0.0]], np.float32)
    tok = enc.encode(ev)
    cols = [enc.columns.index(c) for c in ("beat_frac", "bar_beat", "bar_len")]
    assert tok[:, cols].tolist() == [[0, 3, 3], [6, 3, 3], [OFF_GRID, 0, 0]]


def test_transposition_invariant_features_and_the_lead_moves_with_it():
    arr = random_piece(80, seed=3)
    up = arr.copy()
    up[:, 0] += 5
    enc = Encoding()
    a, b = encode(arr), encode(up)
    same = [enc.columns.index(c) for c in ("step", "duration", "velocity", "role", "interval", "beat_frac", "bar_beat", "bar_len")]
    np.testing.assert_array_equal(a[1:, same], b[1:, same])
    lead = enc.columns.index("lead0")
    np.testing.assert_array_equal(np.roll(a[:, lead : lead + 12], 5, axis=1), b[:, lead : lead + 12])  # the pitch classes move up 5
    bass = enc.columns.index("lead_bass")
    assert ((a[:, bass] == 0) == (b[:, bass] == 0)).all()
    np.testing.assert_array_equal((a[:, bass][a[:, bass] > 0] - 1 + 5) % 12, b[:, bass][b[:, bass] > 0] - 1)


@pytest.mark.parametrize("features", [None, (), ("lead",), ("metre",), ("interval", "lead")])
def test_incremental_encoder_equals_batch_encode(features):
    enc = Encoding() if features is None else Encoding(features=features)
    for arr in (random_piece(300, seed=4), garbage_piece(300, seed=5)):
        inc = IncrementalEncoder(enc)
        out = np.zeros(len(enc.columns), dtype=np.int64)
        rows = np.stack([inc.push(*r, out=out).copy() for r in arr])
        np.testing.assert_array_equal(rows, encode(arr, enc))
        # a copy continues exactly as the original would, and does not move the original
        inc.reset()
        for r in arr[:150]:
            inc.push(*r, out=out)
        twin = inc.copy()
        tail = np.stack([twin.push(*r, out=out).copy() for r in arr[150:]])
        np.testing.assert_array_equal(tail, rows[150:])
        again = np.stack([inc.push(*r, out=out).copy() for r in arr[150:]])
        np.testing.assert_array_equal(again, rows[150:])


def test_lead_notes_sounding_at_an_onset():
    notes = LeadNotes()
    notes.add(0.0, 1.0, 67)
    notes.add(0.0, 2.0, 72)
    assert notes.at(0.5) == ((1 << 7) | (1 << 0), 7)  # the lowest sounding *pitch* gives the bass class
    assert notes.pitches(1.0) == [72]  # a note ending exactly at the onset is not sounding
    assert notes.at(2.0) == (0, -1)
    notes.add(3.0, 4.0, 60)
    twin = notes.copy()
    notes.add(3.5, 5.0, 60)  # the same key struck again: one note, the new one
    assert notes.pitches(3.6) == [60] and notes.pitches(4.5) == [60] and twin.pitches(4.5) == []
    notes.release(60, 4.2)  # released earlier than estimated
    assert notes.at(4.2) == (0, -1)


def test_lead_columns_of_the_encoder():
    """An accompaniment note sees the melody note struck with it (the lead comes first at an onset),
    a lead note that ended exactly at an onset is gone, and accompaniment notes are never 'lead'."""
    enc = Encoding()
    lead = enc.columns.index("lead0")
    bass = enc.columns.index("lead_bass")
    # melody C5 D5 in quarters (each ends exactly at the next onset); a long bass C3 and a G3 under it
    ev, _ = events_from_notes([0, 0, 1, 1], [72, 48, 74, 55], [1, 4, 1, 4], role=[0, 1, 0, 1])
    assert ev[:, 0].tolist() == [72, 48, 74, 55] and ev[:, 4].tolist() == [0, 1, 0, 1]
    tok = enc.encode(ev)
    masks = [sum(int(b) << k for k, b in enumerate(row[lead : lead + 12])) for row in tok]
    assert masks == [0, 1 << 0, 0, 1 << 2]  # nothing before C5; C under the bass; C5 gone at beat 1; D5 over the G
    assert tok[:, bass].tolist() == [0, 1 + 0, 0, 1 + 2]  # lead_bass: 0 = none, else pitch class + 1


def test_encoding_json_round_trip_and_refusals():
    enc = Encoding(features=("interval",))
    assert Encoding.from_dict(json.loads(json.dumps(enc.to_dict()))) == enc
    assert Encoding.from_dict(Encoding().to_dict()) == Encoding()
    assert enc.columns == ("pitch", "step", "duration", "velocity", "role", "interval")
    with pytest.raises(EncodingError, match="version"):
        Encoding.from_dict({**enc.to_dict(), "version": ENCODING_VERSION + 1})
    # an encoding-1 description (time in seconds) is refused with the way out: retrain
    v1 = {"version": 1, "time_bins": 48, "time_min": 0.02, "time_max": 8.0, "velocity_bins": 16, "max_interval": 36, "features": ["interval", "pitch_class", "step_ratio"]}
    with pytest.raises(EncodingError, match="retrain"):
        Encoding.from_dict(v1)
    with pytest.raises(EncodingError, match="unknown"):
        Encoding(features=("step_ratio",))
    with pytest.raises(EncodingError, match="unknown"):
        Encoding.from_dict({**Encoding().to_dict(), "time_bins": 48})


def test_model_config_json_round_trip():
    cfg = ModelConfig(hidden=32, tie_weights=True, encoding=Encoding(features=()))
    assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_events_encode_end_to_end():
    events = [NoteEvent(60, 0.0, 0.5, 80), NoteEvent(64, 0.0, 0.5, 80), NoteEvent(67, 0.5, 1.0, 90, Role.RIPIENO, pos=0.5, bar=4.0)]
    arr = events_to_array(events)
    assert arr.shape == (3, 7) and np.isnan(arr[0, 5]) and arr[2, 5:].tolist() == [0.5, 4.0]
    tok = encode(arr)
    assert tok[:, 0].tolist() == [60, 64, 67] and tok[:, 4].tolist() == [0, 0, 1]
    assert tok[1, 1] == 0  # chord
    assert tok[2, 1] == int(np.flatnonzero(GRID_VALUES == 0.5)[0])


@pytest.mark.parametrize("tie", [False, True])
def test_forward_shapes_and_explicit_state(tie):
    torch.manual_seed(0)
    model = NoteLSTM(dataclasses.replace(TINY, tie_weights=tie, encoding=Encoding()))
    x = torch.from_numpy(encode(random_piece(20))).unsqueeze(0).repeat(3, 1, 1)
    out, (h, c) = model(x)
    assert out.shape == (3, 20, 16) and h.shape == c.shape == (2, 3, 16)
    assert not any(isinstance(v, torch.Tensor) and v.shape == h.shape for v in vars(model).values())
    # carrying state over a split equals one pass
    out1, st = model(x[:, :7])
    out2, _ = model(x[:, 7:], st)
    torch.testing.assert_close(torch.cat([out1, out2], 1), out, rtol=0, atol=1e-6)


@pytest.mark.parametrize("tie", [False, True])
def test_the_pitch_readout_is_one_per_role(tie):
    torch.manual_seed(0)
    model = NoteLSTM(dataclasses.replace(TINY, tie_weights=tie)).eval()
    with torch.no_grad():
        hidden = torch.randn(10, 16)
        lead, acc = model.pitch_logits(hidden, 0), model.pitch_logits(hidden, 1)
        assert lead.shape == acc.shape == (10, 128) and not torch.allclose(lead, acc)
        torch.testing.assert_close(model.pitch_logits(hidden), lead, rtol=0, atol=0)  # the lead's by default
        roles = torch.tensor([0, 1] * 5)
        mixed = model.pitch_logits(hidden, roles)  # each row its own role
        torch.testing.assert_close(mixed[roles == 0], lead[roles == 0], rtol=0, atol=0)
        torch.testing.assert_close(mixed[roles == 1], acc[roles == 1], rtol=0, atol=0)


def test_loss_keys_and_values_are_mean_nll():
    torch.manual_seed(0)
    model = NoteLSTM(TINY).eval()
    tok = torch.from_numpy(encode(random_piece(30)))
    assert set(tok[1:, 4].tolist()) == {0, 1}  # both readouts take part
    out, _ = model(tok[None, :-1])
    loss = model.loss(out[0], tok[1:])
    assert set(loss) == {"pitch", "step", "duration", "velocity", "total"}
    # an untrained model is near uniform: NLL close to log(vocab)
    assert abs(loss["pitch"].item() - np.log(128)) < 0.5
    assert torch.isclose(loss["total"], loss["pitch"] + loss["step"] + loss["duration"] + loss["velocity"])
    # the pitch target is scored by the readout of the target note's own role
    manual = -torch.log_softmax(model.pitch_logits(out[0], tok[1:, 4]), -1).gather(1, tok[1:, :1]).mean()
    torch.testing.assert_close(loss["pitch"], manual)
    lead_only = -torch.log_softmax(model.pitch_logits(out[0], 0), -1).gather(1, tok[1:, :1]).mean()
    assert not torch.isclose(loss["pitch"], lead_only)


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
