"""Corpus conversion on hand-written ABC (never the reserved collections), its cache, and the refusals."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from ripieno.training import corpus
from ripieno.training.corpus import CorpusError, corpus_sources, is_reserved, load_corpus, split_abc
from ripieno.training.pieces import dedupe, split

ABC = """% a hand-written test collection
X:1
T: Scale at 60
M: 4/4
L: 1/4
Q: 1/4=60
K: C
C D E F | G2 G2 |

X:2
T: Default tempo, a chord and a tie
M: 4/4
L: 1/8
K: G
G2 [GB]2 d2- d2 | g8 |

X:3
T: No notes at all
M: 4/4
L: 1/4
K: C
z4 | z4 |
"""


def test_reserved_collections_are_refused_before_anything_is_parsed() -> None:
    for name in ("oneills1850", "ONEILLS1850", "ryansMammoth", "ryansmammoth"):
        with pytest.raises(CorpusError, match="reserved"):
            corpus_sources([name])
    assert is_reserved("/x/music21/corpus/ryansMammoth/tune.abc") and not is_reserved("essenFolksong/han1.abc")
    with pytest.raises(CorpusError, match="names no scores"):
        corpus_sources(["no_such_composer_here"])


def test_split_abc_keeps_the_header() -> None:
    tunes = split_abc(ABC)
    assert [n for n, _ in tunes] == ["1", "2", "3"]
    assert all(t.startswith("% a hand-written") for _, t in tunes)


def test_abc_conversion_tempo_and_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    src = tmp_path / "songs.abc"
    src.write_text(ABC)
    monkeypatch.setattr(corpus, "corpus_sources", lambda names: [src])
    with caplog.at_level(logging.WARNING):
        pieces = load_corpus(["test"], cache_dir=tmp_path / "cache", workers=1, progress=False)
    assert [p.id for p in pieces] == ["songs.abc#1", "songs.abc#2"]  # one part each: one piece each
    assert "songs.abc#3" in caplog.text and "1 corpus pieces skipped" in caplog.text

    one, two = pieces
    # times in beats (a quarter in 4/4), whatever the tempo; Q: 1/4=60 is kept for writing MIDI back
    np.testing.assert_array_equal(one.events[:, 0], [60, 62, 64, 65, 67, 67])
    np.testing.assert_allclose(one.events[:, 1], [0, 1, 1, 1, 1, 2])
    np.testing.assert_allclose(one.events[:, 2], [1, 1, 1, 1, 2, 2])
    np.testing.assert_allclose(one.events[:, 5], [0, 1, 2, 3, 0, 2])  # beat in the bar
    np.testing.assert_allclose(one.events[:, 6], 4)
    np.testing.assert_array_equal(one.events[:, 4], 0)
    assert one.qpm == 60.0 and one.beat_q == 1.0 and one.group == "songs.abc#1"
    # no tempo: DEFAULT_QPM, and the same beats; the chord's notes share an onset; the tied d lasts a half note
    np.testing.assert_array_equal(two.events[:, 0], [67, 67, 71, 74, 79])
    np.testing.assert_allclose(two.events[:, 1], [0, 1, 0, 1, 2])
    np.testing.assert_allclose(two.events[:, 2], [1, 1, 1, 2, 4])
    np.testing.assert_allclose(two.events[:, 5], [0, 1, 1, 2, 0])
    assert two.qpm == corpus.DEFAULT_QPM

    # the second load reads the cache and converts nothing
    def refuse(*_: object) -> None:
        raise AssertionError("converted again")

    monkeypatch.setattr(corpus, "convert_unit", refuse)
    again = load_corpus(["test"], cache_dir=tmp_path / "cache", workers=1, progress=False)
    assert [p.id for p in again] == ["songs.abc#1", "songs.abc#2"]
    np.testing.assert_array_equal(again[1].events, two.events)
    assert again[0].qpm == 60.0


CHORALE = """X:1
T: A two-part chorale-like tune
M:4/4
L:1/4
Q:1/4=80
K:G
V:1
B c d B | e c d2 |
V:2
G, C D G, | C A, D2 |
"""


def test_a_score_in_parts_gives_two_pieces_of_one_group_on_one_side(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "chorale.abc"
    src.write_text(CHORALE)
    monkeypatch.setattr(corpus, "corpus_sources", lambda names: [src])
    pieces = load_corpus(["test"], cache_dir=tmp_path / "cache", workers=1, progress=False)
    assert [p.id for p in pieces] == ["chorale.abc#1", "chorale.abc#1@parts"]
    whole, parts = pieces
    assert whole.group == parts.group == "chorale.abc#1" and whole.qpm == parts.qpm == 80.0
    # the whole texture as the lead: both voices, role 0, each onset's chord from the bottom
    np.testing.assert_array_equal(whole.events[:, 4], 0)
    np.testing.assert_array_equal(whole.events[:2, 0], [55, 71])
    # the top part as the lead over the other as the accompaniment; at each onset the lead comes first
    np.testing.assert_array_equal(parts.events[:, 0], [71, 55, 72, 60, 74, 62, 71, 55, 76, 60, 72, 57, 74, 62])
    np.testing.assert_array_equal(parts.events[:, 4], [0, 1] * 7)
    np.testing.assert_allclose(parts.events[:, 1], [0, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0])
    np.testing.assert_allclose(parts.events[-2:, 2], [2, 2])
    np.testing.assert_array_equal(np.sort(whole.events[:, 0]), np.sort(parts.events[:, 0]))  # the same notes
    # both versions survive dedupe and always land on the same side of the split
    assert len(dedupe(pieces)) == 2
    for val, test in ((0.3, 0.3), (0.05, 0.05), (0.0, 0.99), (0.99, 0.0)):
        sides = [side for side, got in split(pieces, val=val, test=test).items() if got]
        assert len(sides) == 1, (val, test, sides)


def test_six_eight_has_dotted_quarter_beats_and_a_pickup_sits_late_in_its_bar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "tunes.abc"
    src.write_text(JIG_AND_PICKUP)
    monkeypatch.setattr(corpus, "corpus_sources", lambda names: [src])
    jig, pickup = load_corpus(["test"], cache_dir=tmp_path / "cache", workers=1, progress=False)
    third = 1 / 3
    np.testing.assert_allclose(jig.events[:, 1], [0] + [third] * 6 + [1, 1, 2 * third, third], atol=1e-6)
    np.testing.assert_allclose(jig.events[:, 2], [third] * 6 + [1, 1, 2 * third, third, 1], atol=1e-6)
    np.testing.assert_allclose(jig.events[:, 5], [0, third, 2 * third, 1, 1 + third, 1 + 2 * third, 0, 1, 0, 2 * third, 1], atol=1e-6)
    np.testing.assert_allclose(jig.events[:, 6], 2)  # two dotted-quarter beats to the bar
    assert jig.beat_q == 1.5
    # 3/4 with a one-beat upbeat: it is beat 3 of its bar, and the first full bar starts on beat 1
    np.testing.assert_allclose(pickup.events[:, 1], [0, 1, 2, 1])
    np.testing.assert_allclose(pickup.events[:, 5], [2, 0, 2, 0])
    np.testing.assert_allclose(pickup.events[:, 6], 3)


JIG_AND_PICKUP = """X:1
T: A jig
M:6/8
L:1/8
K:D
DFA dAF | G3 F3 | E2D E3 |

X:2
T: An upbeat
M:3/4
L:1/4
K:C
G | c2 d | e3 |
"""


def test_a_change_of_metre_inside_a_score() -> None:
    """A music21 score built in memory: a bar of 3/4, then 6/8 (the beat becomes a dotted quarter)."""
    from music21 import meter, note, stream

    part = stream.Part()
    first = stream.Measure(number=1)
    first.append(meter.TimeSignature("3/4"))
    for p in (60, 62, 64):
        first.append(note.Note(p, quarterLength=1))
    second = stream.Measure(number=2)
    second.append(meter.TimeSignature("6/8"))
    for p in (65, 67):
        second.append(note.Note(p, quarterLength=1.5))
    third = stream.Measure(number=3)
    third.append(note.Note(69, quarterLength=3))
    for m in (first, second, third):
        part.append(m)
    score = stream.Score([part])
    a = corpus.score_arrays(score)
    assert a is not None and set(a) == set(corpus.NOTE_ARRAYS)
    (piece,) = corpus.pieces_of("m", "t", a)
    np.testing.assert_allclose(piece.events[:, 1], [0, 1, 1, 1, 1, 1])  # one beat each, before and after
    np.testing.assert_allclose(piece.events[:, 2], [1, 1, 1, 1, 1, 2])
    np.testing.assert_allclose(piece.events[:, 5], [0, 1, 2, 0, 1, 0])
    np.testing.assert_allclose(piece.events[:, 6], [3, 3, 3, 2, 2, 2])


def test_beat_axis_and_beat_quarters() -> None:
    assert [corpus.beat_quarters(n, d) for n, d in ((4, 4), (3, 4), (2, 2), (6, 8), (9, 8), (12, 8), (3, 8), (5, 8))] == [1, 1, 2, 1.5, 1.5, 1.5, 0.5, 0.5]
    # a 3/4 bar from 0, a 6/8 bar from 3 (its beat 1.5 quarters), another from 6, a rest bar skipped, one from 12
    onset_q = np.array([0, 1, 2, 3, 4.5, 6, 12, 13.5])
    start = np.array([0, 0, 0, 3, 3, 6, 12, 12], dtype=np.float64)
    bar_q = np.full(8, 3.0)
    beat_q = np.array([1, 1, 1, 1.5, 1.5, 1.5, 1.5, 1.5])
    onset_b, pos, bar = corpus.beat_axis(onset_q, start, bar_q, beat_q)
    np.testing.assert_allclose(onset_b, [0, 1, 2, 3, 4, 5, 9, 10])
    np.testing.assert_allclose(pos, [0, 1, 2, 0, 1, 0, 0, 1])
    np.testing.assert_allclose(bar, [3, 3, 3, 2, 2, 2, 2, 2])


def test_a_corrupt_cache_file_is_converted_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "songs.abc"
    src.write_text(ABC)
    monkeypatch.setattr(corpus, "corpus_sources", lambda names: [src])
    first = load_corpus(["test"], cache_dir=tmp_path / "cache", workers=1, progress=False)
    (cached,) = (tmp_path / "cache").rglob("*.npz")
    cached.write_bytes(cached.read_bytes()[:50])
    again = load_corpus(["test"], cache_dir=tmp_path / "cache", workers=1, progress=False)
    assert [p.id for p in again] == [p.id for p in first]
