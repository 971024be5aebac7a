"""Pieces: event construction (beats, roles, metre), dedupe before split, and a split that is a function
of the piece's group (or id) alone."""

from __future__ import annotations

import numpy as np
import pytest

from ripieno.training.pieces import Piece, content_key, dedupe, events_from_notes, split, split_of


def test_events_from_notes_orders_and_merges_unisons() -> None:
    ev, keep = events_from_notes([1.0, 0.0, 0.0, 1.0], [60, 64, 60, 60], [0.5, 1.0, 2.0, 0.25], [90, 80, 70, 60])
    np.testing.assert_array_equal(ev[:, 0], [60, 64, 60])  # the doubled 60 at beat 1 kept once, the longer
    np.testing.assert_allclose(ev[:, 1:5], [[0, 2.0, 70, 0], [0, 1.0, 80, 0], [1.0, 0.5, 90, 0]])
    np.testing.assert_array_equal(keep, [2, 1, 0])
    # pos defaults to the onset (its fraction is the place in the beat), the bar to unknown
    np.testing.assert_allclose(ev[:, 5:], [[0, 0], [0, 0], [1, 0]])
    assert ev.dtype == np.float32 and ev.shape == (3, 7)


def test_events_from_notes_puts_the_lead_first_at_an_onset_and_keeps_unisons_of_two_parts() -> None:
    # at beat 0: an accompaniment chord (48, 60) and the melody's 60; at beat 1 the melody's 62 over a 55
    ev, keep = events_from_notes(
        [0, 0, 0, 1, 1], [48, 60, 60, 55, 62], [2, 1, 1, 1, 1], [50, 51, 90, 52, 91], role=[1, 1, 0, 1, 0], pos=[0, 0, 0, 1, 1], bar=3.0
    )
    # (onset, role, pitch): the lead's note first, then the accompaniment from the bottom
    assert ev[:, 0].tolist() == [60, 48, 60, 62, 55]
    assert ev[:, 4].tolist() == [0, 1, 1, 0, 1]
    assert ev[:, 3].tolist() == [90, 50, 51, 91, 52]  # the unison of two parts is two notes
    np.testing.assert_allclose(ev[:, 1], [0, 0, 0, 1, 0])
    np.testing.assert_allclose(ev[:, 5:], [[0, 3], [0, 3], [0, 3], [1, 3], [1, 3]])
    np.testing.assert_array_equal(keep, [2, 0, 1, 4, 3])
    with pytest.raises(ValueError, match="same length"):
        events_from_notes([0, 1], [60, 62], [1, 1], pos=[0])


def piece(pid: str, pitches: list[int], group: str = "", role: int = 0) -> Piece:
    return Piece(pid, "t", events_from_notes(np.arange(len(pitches)) * 0.5, pitches, [0.5] * len(pitches), role=role)[0], group=group)


def test_content_key_sees_pitches_parts_and_the_beat_grid() -> None:
    a = piece("a", [60, 62, 64])
    assert content_key(a) == content_key(piece("b", [60, 62, 64]))
    assert content_key(a) != content_key(piece("c", [60, 62, 65]))
    assert content_key(a) != content_key(piece("d", [60, 62, 64], role=1))  # the same notes as another part
    shifted = Piece("e", "t", a.events.copy())
    shifted.events[1, 1] += 1 / 12  # a twelfth of a beat later
    assert content_key(a) != content_key(shifted)
    shifted.events[1, 1] = a.events[1, 1] + 1e-4  # float noise far below the grid
    assert content_key(a) == content_key(shifted)
    barless = Piece("f", "t", a.events.copy())
    barless.events[:, 6] = 4.0  # what the metre columns say does not make other music
    assert content_key(a) == content_key(barless)


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


def test_the_versions_of_one_score_share_a_side() -> None:
    """A score's whole texture and its parts version share the group: never one in train and one in test."""
    pieces = []
    for i in range(300):
        pieces.append(piece(f"score{i}", [60 + i % 11, 62, 64], group=f"score{i}"))
        pieces.append(piece(f"score{i}@parts", [60 + i % 11, 62, 64], group=f"score{i}", role=1))
    parts = split(pieces, val=0.2, test=0.2)
    side = {p.id: s for s, ps in parts.items() for p in ps}
    assert all(side[f"score{i}"] == side[f"score{i}@parts"] == split_of(f"score{i}", 0.2, 0.2) for i in range(300))
    assert all(len(v) > 0 for v in parts.values())
    # the side is the group's, not the id's: some @parts ids alone would have landed elsewhere
    assert any(split_of(f"score{i}@parts", 0.2, 0.2) != side[f"score{i}@parts"] for i in range(300))
    assert piece("x", [60, 62]).split_key == "x" and piece("x@parts", [60, 62], group="x").split_key == "x"
