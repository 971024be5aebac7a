"""Pieces: event construction, dedupe before split, and a split that is a function of the id alone."""

from __future__ import annotations

import numpy as np
import pytest

from ripieno.training.pieces import Piece, dedupe, events_from_notes, split, split_of


def test_events_from_notes_orders_and_merges_unisons() -> None:
    ev, keep = events_from_notes([1.0, 0.0, 0.0, 1.0], [60, 64, 60, 60], [0.5, 1.0, 2.0, 0.25], [90, 80, 70, 60])
    np.testing.assert_array_equal(ev[:, 0], [60, 64, 60])  # the doubled 60 at 1.0 s kept once, the longer
    np.testing.assert_allclose(ev[:, 1:4], [[0, 2.0, 70], [0, 1.0, 80], [1.0, 0.5, 90]])
    np.testing.assert_array_equal(keep, [2, 1, 0])


def piece(pid: str, pitches: list[int]) -> Piece:
    return Piece(pid, "t", events_from_notes(np.arange(len(pitches)) * 0.5, pitches, [0.5] * len(pitches))[0])


def test_dedupe_then_split_is_deterministic_and_disjoint() -> None:
    pieces = [piece(f"song{i}", [60 + i % 7, 62, 64 + i % 5]) for i in range(400)]
    copies = [piece(f"copy-of-{p.id}", list(p.pitches)) for p in pieces[:50]]
    unique = dedupe(copies + pieces)
    # each duplicate group keeps the smallest id: the "copy-of-*" names sort first
    assert len(unique) == len({(60 + i % 7, 64 + i % 5) for i in range(400)})
    parts = split(unique, val=0.1, test=0.1)
    ids = [{p.id for p in v} for v in parts.values()]
    assert sum(map(len, ids)) == len(unique) and not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    # the side of a piece depends on its id only, not on what else is in the corpus
    again = split(list(reversed(unique[:10])), val=0.1, test=0.1)
    for side, got in again.items():
        assert all(split_of(p.id, 0.1, 0.1) == side for p in got)
    with pytest.raises(ValueError):
        split(unique, val=0.6, test=0.5)
