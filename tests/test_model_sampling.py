"""Sampling primitives: tempered, range-restricted, nucleus, NaN-proof, and draws that match softmax."""

from __future__ import annotations

import numpy as np

from ripieno.model import sampling


def test_shape_restricts_range_and_survives_garbage():
    p = np.full(128, 1 / 128)
    q = sampling.shape(p, 1.0, low=60, high=64)
    assert q[60:65].sum() == 1.0 and q.sum() == 1.0
    bad = np.full(128, np.nan)
    bad[3] = -1.0
    q = sampling.shape(bad, 0.7, low=10, high=11)
    np.testing.assert_allclose(q[10:12], [0.5, 0.5])
    q = sampling.shape(np.r_[np.zeros(127), 1.0], 1.0, low=0, high=5)  # all mass outside: uniform inside
    np.testing.assert_allclose(q[:6], 1 / 6)


def test_temperature_sharpens_and_flattens():
    p = np.array([0.6, 0.3, 0.1])
    cold, hot = sampling.shape(p, 0.5), sampling.shape(p, 2.0)
    assert cold[0] > 0.6 > hot[0] and abs(cold.sum() - 1) < 1e-12
    np.testing.assert_allclose(cold, p**2 / (p**2).sum())
    assert sampling.choose(p, 0.0, np.random.default_rng(0)) == 0


def test_top_p_keeps_the_smallest_nucleus():
    p = np.array([0.5, 0.3, 0.15, 0.05])
    np.testing.assert_allclose(sampling.shape(p, 1.0, top_p=0.75), [0.625, 0.375, 0, 0])
    np.testing.assert_allclose(sampling.shape(p, 1.0, top_p=0.5), [1, 0, 0, 0])


def test_draw_never_picks_an_excluded_entry_and_matches_the_distribution():
    rng = np.random.default_rng(0)
    p = np.array([0.0, 0.2, 0.0, 0.8, 0.0])
    counts = np.bincount([sampling.draw(p, rng) for _ in range(5000)], minlength=5)
    assert counts[[0, 2, 4]].sum() == 0 and abs(counts[3] / 5000 - 0.8) < 0.03


def test_choose_each_is_a_draw_from_each_segments_softmax():
    rng = np.random.default_rng(0)
    logits = np.random.default_rng(1).standard_normal(10).astype(np.float32) * 2
    starts = np.array([0, 4, 10])
    n = 20000
    counts = np.zeros(10)
    for _ in range(n):
        a, b = sampling.choose_each(logits, starts, 0.8, rng)
        counts[a] += 1
        counts[4 + b] += 1
    expected = np.concatenate([sampling.softmax(logits[:4], 0.8), sampling.softmax(logits[4:], 0.8)])
    np.testing.assert_allclose(counts / n, expected, atol=0.015)
    assert sampling.choose_each(logits, starts, 0.0, rng) == [int(np.argmax(logits[:4])), int(np.argmax(logits[4:]))]
    nan = np.full(10, np.nan, dtype=np.float32)
    a, b = sampling.choose_each(nan, starts, 1.0, rng)
    assert 0 <= a < 4 and 0 <= b < 6


def test_softmax_is_safe():
    np.testing.assert_allclose(sampling.softmax(np.array([np.nan, 1.0])), [0.5, 0.5])
    np.testing.assert_allclose(sampling.softmax(np.array([1e30, 0.0], dtype=np.float32)), [1.0, 0.0])
