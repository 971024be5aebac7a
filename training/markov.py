"""The baselines a model must beat, scored exactly like the model: per file, each note after the first.

- Unigram: pitch frequencies of the training split (add-one smoothed); the floor.
- The Markov rival (`MarkovBaseline`): a fixed-share Bayesian mixture (alpha = 0.05, uniform
  start, weights updated after every note) of (a) a Witten-Bell interpolated order-3 pitch model
  trained on the training split and (b) a Witten-Bell variable-order model (orders 0-16) that
  learns online from the file as it is heard. The mixture is `model.online.FixedShare`, the same
  code the Stream mixes its own online component with, so rival and model share one definition.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from ripieno.model.ngram import OnlineSequenceModel, WittenBell
from ripieno.model.online import FixedShare
from ripieno.training.pieces import Piece

N_PITCHES = 128
CORPUS_ORDER = 3
ONLINE_ORDER = 16
ALPHA = 0.05


def _pitch_lists(pieces: Iterable[Piece | np.ndarray | Sequence[int]]) -> list[list[int]]:
    out = []
    for p in pieces:
        arr = p.events[:, 0] if isinstance(p, Piece) else np.asarray(p)
        arr = arr[:, 0] if arr.ndim == 2 else arr
        out.append([int(x) for x in arr])
    return out


class Unigram:
    """Add-one smoothed pitch frequencies of the training pieces."""

    def __init__(self, pieces: Iterable[Piece | np.ndarray | Sequence[int]] = ()) -> None:
        counts = np.ones(N_PITCHES, dtype=np.float64)
        for seq in _pitch_lists(pieces):
            counts += np.bincount(seq, minlength=N_PITCHES)[:N_PITCHES]
        self.probs = counts / counts.sum()

    def piece_nll(self, pitches: Sequence[int]) -> tuple[float, int]:
        """(summed NLL in nats, notes predicted) over every note but the first."""
        pitches = list(pitches)[1:]
        return float(-np.log(self.probs[pitches]).sum()) if pitches else 0.0, len(pitches)


def corpus_markov(pieces: Iterable[Piece | np.ndarray | Sequence[int]], order: int = CORPUS_ORDER) -> WittenBell:
    """The corpus expert (a): Witten-Bell order-`order` pitch model of the training pieces."""
    return WittenBell(order, N_PITCHES).fit(_pitch_lists(pieces))


class MarkovBaseline:
    """The rival: corpus Markov-3 and the file's own online VOM, mixed by fixed share."""

    def __init__(self, corpus: WittenBell, alpha: float = ALPHA, online_order: int = ONLINE_ORDER) -> None:
        self.corpus = corpus
        self.alpha = alpha
        self.online_order = online_order

    def piece_probs(self, pitches: Sequence[int]) -> np.ndarray:
        """Probability the mixture gave each note after the first, predicted from the notes before it."""
        pitches = [int(x) for x in pitches]
        online = OnlineSequenceModel(self.online_order, N_PITCHES)
        share = FixedShare(2, self.alpha)
        k = self.corpus.max_order
        out = np.empty(max(0, len(pitches) - 1))
        for t, x in enumerate(pitches):
            if t > 0:
                pa = self.corpus.prob(pitches[max(0, t - k) : t], x)
                pb = online.prob(x)
                w = share.weights
                out[t - 1] = w[0] * pa + w[1] * pb
                share.update((pa, pb))
            online.observe(x)
        return out

    def piece_nll(self, pitches: Sequence[int]) -> tuple[float, int]:
        """(summed NLL in nats, notes predicted) over every note but the first."""
        p = self.piece_probs(pitches)
        return float(-np.log(p).sum()), int(p.size)


def mean_nll(model: Unigram | MarkovBaseline, pieces: Iterable[Piece | np.ndarray | Sequence[int]]) -> float:
    """Nats per predicted note over all pieces (NaN if nothing was predicted)."""
    total, n = 0.0, 0
    for seq in _pitch_lists(pieces):
        s, k = model.piece_nll(seq)
        total += s
        n += k
    return total / n if n else math.nan
