"""Batching: bucketed order, TBPTT chunk plans, packed == padded, chunked state == unchunked state."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ripieno.model.encoding import encode
from ripieno.model.network import ModelConfig, NoteLSTM
from ripieno.training.data import (
    Batch,
    augment,
    bucketed_order,
    forward_rows,
    gather_state,
    make_batch,
    plan_chunks,
    random_order,
    scatter_state,
    zero_state,
)

torch.set_num_threads(1)


def synthetic_piece(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 7) events in beats: a random walk melody with some chords and an accompaniment note now and
    then, sixteenths to whole beats and triplets, in 4/4 bars, real-ish velocity."""
    pitch = np.clip(60 + np.cumsum(rng.integers(-4, 5, size=n)), 30, 100)
    step = rng.choice([0.0, 0.25, 1 / 3, 0.5, 1.0, 2.0], size=n, p=[0.15, 0.3, 0.1, 0.3, 0.1, 0.05])
    step[0] = 0.0
    dur = rng.choice([0.25, 0.5, 1.0, 2.0], size=n)
    vel = rng.integers(40, 110, size=n)
    role = (rng.random(n) < 0.2).astype(np.float64)
    pos = np.mod(np.cumsum(step), 4.0)
    return np.stack([pitch, step, dur, vel, role, pos, np.full(n, 4.0)], axis=1).astype(np.float32)


@pytest.fixture
def tiny_model() -> NoteLSTM:
    torch.manual_seed(0)
    return NoteLSTM(ModelConfig(hidden=12, layers=2, pitch_embed=8, embed=4, cond_embed=4, head_hidden=8, dropout=0.0))


# ------------------------------------------------------------------------------------- plans


@pytest.mark.parametrize("tbptt", [None, 1, 4, 7])
def test_plan_covers_every_target_once_and_rows_continue_their_piece(tbptt: int | None) -> None:
    rng = np.random.default_rng(1)
    lengths = [int(x) for x in rng.integers(0, 30, size=23)]
    plan = plan_chunks(lengths, bucketed_order(lengths, 4, rng), rows=4, tbptt=tbptt)
    covered: dict[int, list[tuple[int, int]]] = {}
    where: dict[int, int] = {}  # piece -> row it lives on
    for chunk in plan:
        assert len(set(chunk.rows)) == len(chunk.rows) and all(0 <= r < 4 for r in chunk.rows)
        for r, p, a, b, fresh in zip(chunk.rows, chunk.pieces, chunk.starts, chunk.stops, chunk.fresh):
            assert 0 <= a < b <= lengths[p] - 1
            if tbptt is not None:
                assert b - a <= tbptt
            assert fresh == (a == 0)
            if not fresh:  # a continuation stays on its row and starts where the last chunk stopped
                assert where[p] == r and covered[p][-1][1] == a
            where[p] = r
            covered.setdefault(p, []).append((a, b))
    for p, n in enumerate(lengths):
        if n < 2:
            assert p not in covered
        else:
            spans = covered[p]
            assert spans[0][0] == 0 and spans[-1][1] == n - 1
            assert sum(b - a for a, b in spans) == n - 1


def test_continuing_rows_take_full_chunks() -> None:
    """The padded path's state is only right if short chunks are always a piece's last chunk."""
    lengths = [50, 9, 33, 20, 5, 41]
    plan = plan_chunks(lengths, list(range(len(lengths))), rows=3, tbptt=8)
    for chunk in plan:
        for p, b, n in zip(chunk.pieces, chunk.stops, chunk.lengths):
            if b < lengths[p] - 1:
                assert n == 8


def test_bucketing_pads_less_than_random_order() -> None:
    rng = np.random.default_rng(0)
    lengths = [int(x) for x in rng.integers(16, 129, size=512)]

    def padding(order: np.ndarray) -> float:
        plan = plan_chunks(lengths, order, rows=32, tbptt=256)
        padded = sum(max(c.lengths) * len(c.rows) for c in plan)
        return 1 - sum(c.targets for c in plan) / padded

    bucketed = padding(bucketed_order(lengths, 32, np.random.default_rng(1)))
    rand = padding(random_order(lengths, 32, np.random.default_rng(1)))
    assert sorted(bucketed_order(lengths, 32, np.random.default_rng(1))) == list(range(512))
    assert bucketed < 0.1 < rand


def test_plan_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="rows"):
        plan_chunks([5], [0], rows=0, tbptt=4)
    with pytest.raises(ValueError, match="tbptt"):
        plan_chunks([5], [0], rows=1, tbptt=0)


# ----------------------------------------------------------------------------- augmentation


def test_augment_transposes_within_range_and_scales_time() -> None:
    rng = np.random.default_rng(3)
    piece = synthetic_piece(rng, 40)
    piece[0, 0] = 120  # only 7 semitones of headroom upwards
    shifts, factors = set(), set()
    for _ in range(200):
        out = augment(piece, rng, transpose=12, tempo=0.2)
        d = out[:, 0] - piece[:, 0]
        assert np.all(d == d[0]) and out[:, 0].min() >= 0 and out[:, 0].max() <= 127
        shifts.add(int(d[0]))
        moving = piece[:, 1] > 0
        f = out[moving, 1] / piece[moving, 1]
        assert np.allclose(f, f[0]) and np.allclose(out[:, 2] / piece[:, 2], f[0])
        factors.add(round(float(f[0]), 3))
        assert np.array_equal(out[:, 3:], piece[:, 3:])  # velocity, role and metre untouched
    assert min(shifts) == -12 and max(shifts) == 7
    assert min(factors) < 0.85 and max(factors) > 1.15
    assert np.array_equal(augment(piece, rng), piece)


def test_bar_dropout_forgets_the_bars_of_some_pieces_and_nothing_else() -> None:
    rng = np.random.default_rng(4)
    piece = synthetic_piece(rng, 30)
    dropped = 0
    for _ in range(400):
        out = augment(piece, rng, bar_dropout=0.5)
        assert np.array_equal(out[:, :6], piece[:, :6])  # the place in the beat stays: the beat is still known
        if (out[:, 6] == 0).all():
            dropped += 1
        else:
            assert np.array_equal(out[:, 6], piece[:, 6])  # a piece keeps all its bars or none
    assert 150 < dropped < 250
    assert (augment(piece, rng, bar_dropout=1.0)[:, 6] == 0).all()
    assert all(np.array_equal(augment(piece, rng, bar_dropout=0.0), piece) for _ in range(50))
    assert augment(piece[:0], rng, bar_dropout=1.0).shape == (0, 7)


# -------------------------------------------------------------------------- packed == padded


def _tokens(n_pieces: int, seed: int, lo: int = 3, hi: int = 25) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [encode(synthetic_piece(rng, int(n))) for n in rng.integers(lo, hi, size=n_pieces)]


def test_packed_and_padded_give_the_same_loss_and_gradients(tiny_model: NoteLSTM) -> None:
    tokens = _tokens(6, seed=5)
    plan = plan_chunks([len(t) for t in tokens], range(6), rows=6, tbptt=None)
    batch = make_batch(tokens, plan[0])
    assert len(set(batch.lengths.tolist())) > 1  # really variable lengths
    results = {}
    for batching in ("packed", "padded"):
        tiny_model.zero_grad()
        hidden, targets, _ = forward_rows(tiny_model, batch, None, batching)
        losses = tiny_model.loss(hidden, targets)
        losses["total"].backward()
        results[batching] = ({k: v.item() for k, v in losses.items()}, [p.grad.clone() for p in tiny_model.parameters()], targets.shape[0])
    (lp, gp, np_), (ld, gd, nd) = results["packed"], results["padded"]
    assert np_ == nd == plan[0].targets
    for k in lp:
        assert lp[k] == pytest.approx(ld[k], abs=1e-5), k
    for a, b in zip(gp, gd):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_packed_and_padded_states_agree_for_rows_that_continue(tiny_model: NoteLSTM) -> None:
    tokens = _tokens(4, seed=9, lo=20, hi=30)
    plan = plan_chunks([len(t) for t in tokens], range(4), rows=4, tbptt=6)
    batch = make_batch(tokens, plan[0])
    state = (torch.randn(2, 4, 12), torch.randn(2, 4, 12))
    _, _, sp = forward_rows(tiny_model, batch, state, "packed")
    _, _, sd = forward_rows(tiny_model, batch, state, "padded")
    torch.testing.assert_close(sp, sd, atol=1e-6, rtol=1e-5)


# ------------------------------------------------------------------------------- TBPTT state


@pytest.mark.parametrize("batching", ["packed", "padded"])
def test_chunked_tbptt_carries_the_same_state_as_an_unchunked_forward(tiny_model: NoteLSTM, batching: str) -> None:
    tokens = _tokens(7, seed=2, lo=2, hi=40)
    lengths = [len(t) for t in tokens]
    plan = plan_chunks(lengths, bucketed_order(lengths, 3, np.random.default_rng(0)), rows=3, tbptt=5)
    assert any(not all(c.fresh) for c in plan)  # some state is really carried
    chunked: dict[int, list[torch.Tensor]] = {}
    state = zero_state(2, 3, 12)
    with torch.no_grad():
        for chunk in plan:
            batch = make_batch(tokens, chunk)
            rows_state = gather_state(state, chunk)
            hidden, _, new = forward_rows(tiny_model, batch, rows_state, batching)
            per_row = _split_rows(hidden, batch, batching)
            for p, h in zip(chunk.pieces, per_row):
                chunked.setdefault(p, []).append(h)
            state = scatter_state(state, chunk, new)
            assert state[0].grad_fn is None and state[1].grad_fn is None
        for p, t in enumerate(tokens):
            whole, _ = tiny_model(torch.from_numpy(t[:-1]).unsqueeze(0))
            torch.testing.assert_close(torch.cat(chunked[p]), whole[0], atol=1e-5, rtol=1e-4)


def _split_rows(hidden: torch.Tensor, batch: Batch, batching: str) -> list[torch.Tensor]:
    """Per batch row, its (len, H) hidden rows, undoing the path's row order."""
    lengths = batch.lengths.tolist()
    if batching == "padded":
        return list(hidden.split(lengths))  # masked rows are row-major
    # packed rows are time-major over rows sorted by decreasing length
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    out: list[list[torch.Tensor]] = [[] for _ in lengths]
    k = 0
    for t in range(max(lengths)):
        for i in order:
            if lengths[i] > t:
                out[i].append(hidden[k])
                k += 1
    return [torch.stack(rows) for rows in out]


def test_gather_zeroes_fresh_rows_and_keeps_carried_ones() -> None:
    plan = plan_chunks([3, 12, 3], [0, 1, 2], rows=2, tbptt=4)
    state = (torch.ones(1, 2, 3), torch.full((1, 2, 3), 2.0))
    second = plan[1]  # row 0 starts piece 2 (fresh), row 1 continues piece 1
    assert second.rows == (0, 1) and second.fresh == (True, False)
    h, c = gather_state(state, second)
    assert torch.all(h[:, 0] == 0) and torch.all(c[:, 0] == 0)
    assert torch.all(h[:, 1] == 1) and torch.all(c[:, 1] == 2)
