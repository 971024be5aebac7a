"""Witten-Bell n-gram: a hand computation, a brute-force reference, and the online wrapper."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from ripieno.model.ngram import OnlineSequenceModel, WittenBell


def reference_probs(seqs: list[list[int]], max_order: int, n: int, context: list[int]) -> list[Fraction]:
    """The textbook recursion with exact fractions and a flat table of n-gram counts."""
    counts: dict[tuple[int, ...], dict[int, int]] = {}
    for seq in seqs:
        for t, s in enumerate(seq):
            for k in range(0, min(max_order, t) + 1):
                h = tuple(seq[t - k : t])
                counts.setdefault(h, {}).setdefault(s, 0)
                counts[h][s] += 1

    def p(h: tuple[int, ...]) -> list[Fraction]:
        lower = [Fraction(1, n)] * n if len(h) == 0 else p(h[1:])
        if len(h) == 0 and () not in counts:
            return lower
        c = counts.get(h)
        if c is None:
            return lower
        total, types = sum(c.values()), len(c)
        return [(c.get(s, 0) + types * lower[s]) / (total + types) for s in range(n)]

    h = tuple(context[len(context) - min(max_order, len(context)) :])
    # the root's own recursion bottoms out in the uniform distribution
    out = p(h) if h else p(())
    return out


def test_hand_computation_order_1() -> None:
    # 0 1 0 1 1 over {0,1,2}: root counts {0:2, 1:3}; after 0: {1:2}; after 1: {0:1, 1:1}
    m = WittenBell(1, n_symbols=3).fit([[0, 1, 0, 1, 1]])
    root = [Fraction(8, 21), Fraction(11, 21), Fraction(2, 21)]
    after_1 = [Fraction(37, 84), Fraction(43, 84), Fraction(4, 84)]
    after_0 = [Fraction(8, 63), Fraction(53, 63), Fraction(2, 63)]
    np.testing.assert_allclose(m.probs([]), [float(x) for x in root], rtol=1e-12)
    np.testing.assert_allclose(m.probs([0, 1]), [float(x) for x in after_1], rtol=1e-12)
    np.testing.assert_allclose(m.probs([1, 0]), [float(x) for x in after_0], rtol=1e-12)
    np.testing.assert_allclose(m.probs([2]), [float(x) for x in root], rtol=1e-12)  # unseen context backs off
    assert m.prob([1], 2) == pytest.approx(4 / 84, rel=1e-12)


def test_empty_model_is_uniform() -> None:
    m = WittenBell(4, n_symbols=128)
    np.testing.assert_allclose(m.probs([60, 62]), np.full(128, 1 / 128))


@pytest.mark.parametrize("max_order", [0, 2, 5])
def test_matches_reference_and_sums_to_one(max_order: int) -> None:
    rng = np.random.default_rng(max_order)
    # a small alphabet repeats contexts; 40 distinct symbols also crosses into the dense rows
    seqs = [list(rng.integers(0, 6, size=60)), list(rng.integers(0, 40, size=200)), [int(x) for x in np.tile([1, 3, 5, 3], 10)]]
    m = WittenBell(max_order, n_symbols=40).fit(seqs)
    for context in ([], [1, 3], [5, 3, 1, 3], list(seqs[1][-7:]), [39, 38, 37]):
        got = m.probs(context)
        assert got.dtype == np.float64 and got.shape == (40,)
        assert got.sum() == pytest.approx(1.0, abs=1e-12)
        want = [float(x) for x in reference_probs(seqs, max_order, 40, context)]
        np.testing.assert_allclose(got, want, rtol=1e-10)
        for s in (1, 3, 39):
            assert m.prob(context, s) == pytest.approx(want[s], rel=1e-10)


def test_update_only_uses_last_max_order_symbols() -> None:
    a, b = WittenBell(2, 8), WittenBell(2, 8)
    a.update([7, 7, 7, 1, 2], 3)
    b.update([1, 2], 3)
    np.testing.assert_array_equal(a.probs([0, 1, 2]), b.probs([1, 2]))
    assert a.n_contexts == b.n_contexts == 3


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="max_order"):
        WittenBell(-1)
    with pytest.raises(ValueError, match="outside"):
        WittenBell(2, 8).update([], 8)


def test_online_model_learns_a_repeated_phrase() -> None:
    phrase = [60, 62, 64, 65, 67, 65, 64, 62]
    online = OnlineSequenceModel(max_order=16)
    first_pass, second_pass = [], []
    for rep in range(2):
        for s in phrase:
            (first_pass if rep == 0 else second_pass).append(-np.log(online.probs()[s]))
            online.observe(s)
    # the second time round every note is predicted far better than the first
    assert np.mean(second_pass) < 0.5 * np.mean(first_pass)
    assert len(online) == 16 and online.history == tuple(phrase * 2)[-16:]


def test_online_matches_explicit_contexts() -> None:
    seq = [60, 62, 60, 64, 60, 62, 60, 64, 67]
    online = OnlineSequenceModel(max_order=3)
    ref = WittenBell(3)
    for t, s in enumerate(seq):
        np.testing.assert_array_equal(online.probs(), ref.probs(seq[:t]))
        online.observe(s)
        ref.update(seq[:t], s)


def test_fork_is_independent() -> None:
    online = OnlineSequenceModel(max_order=4)
    for s in [60, 62, 64, 60, 62]:
        online.observe(s)
    before = online.probs()
    for learn in (True, False):
        twin = online.fork(learn=learn)
        for s in [70, 71, 72, 70, 71]:
            twin.observe(s)
        twin.reset()
        np.testing.assert_array_equal(online.probs(), before)
    frozen = online.fork(learn=False)
    frozen.observe(64)
    online.observe(64)
    # the frozen fork did not count its 64, but it sees the parent's counts (shared) and the same history
    assert len(frozen) == len(online) == 6
    np.testing.assert_array_equal(frozen.probs(), online.probs())


def test_arrays_round_trip() -> None:
    rng = np.random.default_rng(3)
    seqs = [list(rng.integers(50, 80, size=300)), [60, 62, 64] * 20]
    m = WittenBell(3).fit(seqs)
    arrays = m.to_arrays()
    back = WittenBell.from_arrays({k: v.copy() for k, v in arrays.items()})
    assert back.n_contexts == m.n_contexts and back.n_updates == m.n_updates
    for context in ([], [60], [62, 64], seqs[0][-5:], [1, 2, 3]):
        np.testing.assert_array_equal(back.probs(context), m.probs(context))
    arrays["count_symbol"][0] = 500
    with pytest.raises(ValueError, match="not a Witten-Bell table"):
        WittenBell.from_arrays(arrays)


def test_bounded_memory_forgets_old_notes_without_growing():
    """A session of weeks: the online model keeps the last M..2M notes, its table stays bounded."""
    rng = np.random.default_rng(0)
    seq = [int(x) for x in rng.integers(40, 80, size=5000)]
    m = 300
    bounded = OnlineSequenceModel(max_order=4, memory=m)
    unbounded = OnlineSequenceModel(max_order=4)
    contexts = []
    for i, s in enumerate(seq):
        if i < 2 * m - 1:  # before the first swap both have learned everything
            assert np.array_equal(bounded.probs(), unbounded.probs())
        bounded.observe(s)
        unbounded.observe(s)
        contexts.append(bounded.model.n_contexts)
        assert m <= len(bounded) < 2 * m or i < m
    assert max(contexts[2 * m :]) < unbounded.model.n_contexts / 3
    # After the swaps the active table is exactly what was learned from its last len() notes.
    k = len(bounded)
    ref = WittenBell(4)
    for j in range(len(seq) - k, len(seq)):
        ref.update(seq[max(0, j - 4) : j], seq[j])
    assert np.allclose(bounded.probs(), ref.probs(seq[-4:]))


def test_a_learner_that_predicts_before_each_note_counts_exactly_what_a_plain_fit_counts():
    """The online model reuses its prediction's walk of the trie for the update that follows. That
    walk must never go stale: the same counts as a plain fit, and a frozen fork taken mid-piece
    (which shares the table its parent keeps growing) predicts what a fresh walk predicts."""
    rng = np.random.default_rng(3)
    seq = [int(x) for x in rng.integers(50, 62, 400)] + [60, 62, 64, 65, 67] * 30
    base = np.full(128, 1.0 / 128)
    a, b = (1.0,) * 9, (0.0,) * 9
    learner = OnlineSequenceModel(max_order=8, memory=150)
    forks = []
    for i, s in enumerate(seq):
        learner.blend(base, a, b)
        if i % 50 == 7:
            forks.append(learner.fork(learn=False))
        learner.observe(s)
        for f in forks:
            p, w = f.blend(base, a, b)
            q, v = f.model.blend(list(f.history), base, a, b)
            assert np.array_equal(p, q) and w == v
    plain = OnlineSequenceModel(max_order=8, memory=150)
    for s in seq:
        plain.observe(s)
    for got, want in ((learner.model, plain.model), (learner._shadow, plain._shadow)):
        assert want is not None
        for k, v in want.to_arrays().items():
            assert np.array_equal(got.to_arrays()[k], v), k
