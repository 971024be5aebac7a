"""Corpus conversion on hand-written ABC (never the reserved collections), its cache, and the refusals."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from ripieno.training import corpus
from ripieno.training.corpus import CorpusError, corpus_sources, is_reserved, load_corpus, split_abc

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
    assert [p.id for p in pieces] == ["songs.abc#1", "songs.abc#2"]
    assert "songs.abc#3" in caplog.text and "1 corpus pieces skipped" in caplog.text

    one, two = pieces
    # Q: 1/4=60 -> one quarter per second
    np.testing.assert_array_equal(one.events[:, 0], [60, 62, 64, 65, 67, 67])
    np.testing.assert_allclose(one.events[:, 1], [0, 1, 1, 1, 1, 2])
    np.testing.assert_allclose(one.events[:, 2], [1, 1, 1, 1, 2, 2])
    np.testing.assert_allclose(one.onset_q, [0, 1, 2, 3, 4, 6])
    np.testing.assert_allclose(one.qpm, 60)
    # no tempo: DEFAULT_QPM; the chord's notes share an onset; the tied d lasts a half note
    spq = 60.0 / corpus.DEFAULT_QPM
    np.testing.assert_array_equal(two.events[:, 0], [67, 67, 71, 74, 79])
    np.testing.assert_allclose(two.events[:, 1], np.array([0, 1, 0, 1, 2]) * spq, rtol=1e-6)
    np.testing.assert_allclose(two.events[:, 2], np.array([1, 1, 1, 2, 4]) * spq, rtol=1e-6)
    np.testing.assert_allclose(two.duration_q, [1, 1, 1, 2, 4])

    # the second load reads the cache and converts nothing
    def refuse(*_: object) -> None:
        raise AssertionError("converted again")

    monkeypatch.setattr(corpus, "convert_unit", refuse)
    again = load_corpus(["test"], cache_dir=tmp_path / "cache", workers=1, progress=False)
    assert [p.id for p in again] == ["songs.abc#1", "songs.abc#2"]
    np.testing.assert_array_equal(again[1].events, two.events)


def test_a_corrupt_cache_file_is_converted_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "songs.abc"
    src.write_text(ABC)
    monkeypatch.setattr(corpus, "corpus_sources", lambda names: [src])
    first = load_corpus(["test"], cache_dir=tmp_path / "cache", workers=1, progress=False)
    (cached,) = (tmp_path / "cache").rglob("*.npz")
    cached.write_bytes(cached.read_bytes()[:50])
    again = load_corpus(["test"], cache_dir=tmp_path / "cache", workers=1, progress=False)
    assert [p.id for p in again] == [p.id for p in first]


def test_tempo_map_with_a_change() -> None:
    # 60 qpm for 4 quarters, then 120: quarter 6 is at 4 + 2 * 0.5 = 5 s
    secs, qpm = corpus._tempo_map([(0.0, 60.0), (4.0, 120.0)], np.array([0.0, 3.0, 4.0, 6.0]))
    np.testing.assert_allclose(secs, [0.0, 3.0, 4.0, 5.0])
    np.testing.assert_allclose(qpm, [60, 60, 120, 120])
