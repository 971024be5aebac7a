"""Learning the piece while hearing it: a fixed-share Bayesian mixture of pitch experts.

The LSTM's hidden state forgets a phrase heard thirty seconds ago; a variable-order Markov
model of the piece so far (Witten-Bell, orders 0-16, `ngram.OnlineSequenceModel`) remembers it
exactly, and the Continuator showed players hear the difference. Neither is always right, so
they are mixed with weights that follow which expert has been predicting this piece better:
after each note every weight is multiplied by the probability its expert gave that note
(Bayes), then a fraction alpha is shared out (fixed share, Herbster & Warmuth 1998) so the
mixture can switch back quickly when the piece changes character.
"""

from __future__ import annotations

import copy

import numpy as np

from .ngram import OnlineSequenceModel

FLOOR = 1e-12  # a likelihood is never taken as exactly 0, so no weight dies for good


class FixedShare:
    """Weights over n experts: Bayesian update on each outcome, then fixed share alpha."""

    def __init__(self, n: int, alpha: float = 0.05) -> None:
        if n < 1 or not 0.0 <= alpha < 1.0:
            raise ValueError(f"fixed share needs n >= 1 and 0 <= alpha < 1, got n={n}, alpha={alpha}")
        self.n, self.alpha = n, alpha
        self.weights = np.full(n, 1.0 / n)

    def reset(self) -> None:
        self.weights[:] = 1.0 / self.n

    def mix(self, probs: np.ndarray, out: np.ndarray) -> np.ndarray:
        """(n, V) expert distributions -> their weighted mixture in out (V,)."""
        np.dot(self.weights, probs, out=out)
        return out

    def update(self, likelihoods: np.ndarray | tuple[float, ...]) -> None:
        """Move weight towards the experts that gave the observed outcome more probability."""
        if self.n == 2:  # the Stream's case, per note: scalar arithmetic beats four tiny array ops
            a, b = float(likelihoods[0]), float(likelihoods[1])
            if not (a == a and b == b):
                return
            a = self.weights[0] * max(a, FLOOR)
            b = self.weights[1] * max(b, FLOOR)
            total = a + b
            if not 0.0 < total < float("inf"):
                return
            a /= total
            self.weights[0] = (1.0 - self.alpha) * a + self.alpha * (1.0 - a)
            self.weights[1] = 1.0 - self.weights[0]
            return
        v = self.weights * np.maximum(likelihoods, FLOOR)
        total = v.sum()
        if not np.isfinite(total) or total <= 0.0:
            return
        v /= total
        if self.n > 1:
            v = (1.0 - self.alpha) * v + self.alpha * (1.0 - v) / (self.n - 1)
        self.weights[:] = v


class OnlinePitch:
    """The online component of a Stream: mixes the network's pitch distribution with the piece's VOM."""

    def __init__(self, alpha: float = 0.05, max_order: int = 16) -> None:
        self.vom = OnlineSequenceModel(max_order=max_order, n_symbols=128)
        self.share = FixedShare(2, alpha)
        self._experts = np.zeros((2, 128))
        self._vom_ready = False

    def reset(self) -> None:
        self.vom.reset()
        self.share.reset()
        self._vom_ready = False

    def fork(self, frozen: bool = False) -> OnlinePitch:
        """Independent copy; frozen=True shares the counts read-only (cheap, for planning)."""
        twin = copy.copy(self)
        twin.vom = self.vom.fork(learn=not frozen)
        twin.share = copy.deepcopy(self.share)
        twin._experts = self._experts.copy()
        return twin

    @property
    def weights(self) -> np.ndarray:
        return self.share.weights

    def _vom_probs(self) -> np.ndarray:
        if not self._vom_ready:
            self._experts[1] = self.vom.probs()
            self._vom_ready = True
        return self._experts[1]

    def mix(self, net_probs: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Mixture of the network's (128,) distribution and the piece's own, written into out."""
        self._experts[0] = net_probs
        self._vom_probs()
        return self.share.mix(self._experts, out)

    def observe(self, pitch: int, net_probs: np.ndarray, learn: bool = True) -> None:
        """Score both experts on the pitch just heard, then let the VOM learn it (if learn)."""
        vom = self._vom_probs()
        if learn:
            self.share.update((net_probs[pitch], vom[pitch]))
        if learn:
            self.vom.observe(pitch)
        else:  # extend the context without counting the note (e.g. ripieno's own answer)
            was = self.vom.learn
            self.vom.learn = False
            self.vom.observe(pitch)
            self.vom.learn = was
        self._vom_ready = False
