"""Learning the piece while hearing it: a fixed-share Bayesian mixture of pitch experts.

The LSTM's hidden state forgets a phrase heard thirty seconds ago; a variable-order Markov
model of the piece so far (Witten-Bell, orders 0-16, `ngram.OnlineSequenceModel`) remembers it
exactly, and the Continuator showed players hear the difference. Neither is always right, so
they are mixed with weights that follow which expert has been predicting this piece better:
after each note every weight is multiplied by the probability its expert gave that note
(Bayes), then a fraction alpha is shared out (fixed share, Herbster & Warmuth 1998) so the
mixture can switch back quickly when the piece changes character.

`BlendedPitch` is the stronger alternative the bundled model uses (`OnlineConfig.kind =
"blend"`): instead of mixing two whole distributions with one weight per piece, the piece's
models back off *to the network*, context by context. A context heard often with one
continuation (a repeated phrase) gets most of the mass; an unheard one leaves the network in
charge. Two piece models are stacked: an interval VOM (transposition-invariant: folk tunes
repeat phrases a step higher) smoothed down to the network, and the absolute pitch VOM
smoothed down to that. How fast each order trusts its counts (a concentration per order) is
fitted on held-out pieces by `ripieno.training.online_fit` and stored in the checkpoint.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from .encoding import unknown_keys
from .ngram import OnlineSequenceModel, WittenBell

FLOOR = 1e-12  # a likelihood is never taken as exactly 0, so no weight dies for good
KINDS = ("fixed_share", "blend")
MAX_ORDER = 16
INTERVALS = 2 * 127 + 1  # every step from one MIDI pitch to another: symbol = pitch - previous + 127
CORPUS_PREFIX = "corpus."  # checkpoint tables holding the corpus n-gram (WittenBell.to_arrays)
# The piece models remember the last 4096-8192 notes (tens of minutes of playing): a daemon that
# runs for weeks stays within a few MB, and every piece in the evaluations is shorter than this.
PIECE_MEMORY = 4096


def _witten_bell(max_order: int = MAX_ORDER) -> tuple[float, ...]:
    return (1.0,) * (max_order + 1)


@dataclass(frozen=True)
class OnlineConfig:
    """How a Stream learns the piece; JSON-able, part of the checkpoint's ModelConfig.

    kind "fixed_share": network and pitch VOM mixed with fixed-share weights (alpha).
    kind "blend": `BlendedPitch`; concentration of order k is a[k] * types + b[k].
    The defaults (fixed share, or Witten-Bell concentrations) need no fitting.
    """

    kind: str = "fixed_share"
    alpha: float = 0.05
    max_order: int = MAX_ORDER
    interval: bool = True  # blend: stack an interval VOM between the network and the pitch VOM
    pitch_a: tuple[float, ...] = field(default_factory=_witten_bell)
    pitch_b: tuple[float, ...] = field(default_factory=lambda: (0.0,) * (MAX_ORDER + 1))
    interval_a: tuple[float, ...] = field(default_factory=_witten_bell)
    interval_b: tuple[float, ...] = field(default_factory=lambda: (0.0,) * (MAX_ORDER + 1))
    corpus_weight: float = 0.0  # blend: share of the checkpoint's corpus n-gram in the bottom (network) layer

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"online kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if not 0.0 <= self.corpus_weight <= 1.0:
            raise ValueError(f"online corpus_weight must be in [0, 1], got {self.corpus_weight}")
        if not 0.0 <= self.alpha < 1.0 or not 0 <= self.max_order <= 64:
            raise ValueError(f"online alpha must be in [0, 1) and max_order in 0..64, got {self.alpha}, {self.max_order}")
        for name in ("pitch_a", "pitch_b", "interval_a", "interval_b"):
            v = tuple(float(x) for x in getattr(self, name))
            if (self.kind == "blend" and len(v) != self.max_order + 1) or any(not (x >= 0.0 and x < float("inf")) for x in v):
                raise ValueError(f"online {name} needs max_order + 1 = {self.max_order + 1} finite values >= 0")
            object.__setattr__(self, name, v)
        if self.kind == "blend" and any(a + b <= 0.0 for a, b in zip(self.pitch_a + self.interval_a, self.pitch_b + self.interval_b)):
            raise ValueError("online blend: every order needs a + b > 0 (else it never backs off)")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> OnlineConfig:
        extra = unknown_keys(cls, d)
        if extra:
            raise ValueError(f"unknown online config key(s): {extra}")
        return cls(**d)


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

    scores_network = True  # observe() needs the network's distribution for the note heard

    def __init__(self, alpha: float = 0.05, max_order: int = 16) -> None:
        self.vom = OnlineSequenceModel(max_order=max_order, n_symbols=128, memory=PIECE_MEMORY)
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


class CorpusExpert:
    """The corpus n-gram as the blend's second bottom expert, its distributions memoised by context.

    A melody keeps revisiting the same few short contexts, so a dictionary lookup replaces the
    trie walk (~0.3 us instead of ~11 us, measured) on all but the first visit. Shared read-only
    by every stream of a checkpoint; the memo is bounded (cleared when full).
    """

    MEMO = 4096  # distinct corpus contexts remembered per scale (1 KB each): a bounded 4 MB each, then cleared

    def __init__(self, model: WittenBell) -> None:
        self.model = model
        self.order = model.max_order
        self._memos: dict[float, dict[int, np.ndarray]] = {}  # by scale: the blend's share comes ready-made

    def probs(self, history: Sequence[int], scale: float = 1.0) -> np.ndarray:
        """scale * P(next | the last `order` pitches of history), read-only (do not modify).

        Memoised by the deepest suffix of the context the corpus has seen: every context that
        backs off to the same node has the same distribution, so an unseen context costs a short
        walk, not a fresh vector (the table is read-only: nodes, and their ids, live as long as it).
        A blend asks with its corpus share as the scale, so the product is memoised too."""
        key = history[len(history) - self.order :] if self.order else ()
        node = self.model._chain(key)[-1]
        memo = self._memos.get(scale)
        if memo is None:
            if len(self._memos) >= 4:  # one scale per online config in practice
                self._memos.clear()
            memo = self._memos[scale] = {}
        p = memo.get(id(node))
        if p is None:
            if len(memo) >= self.MEMO:
                memo.clear()
            p = memo[id(node)] = self.model.probs(key) if scale == 1.0 else scale * self.probs(history)
            p.flags.writeable = False
        return p


class BlendedPitch:
    """The piece's interval and pitch VOMs, each backing off to the model below it, the network at the bottom.

    Same interface as `OnlinePitch`; `weights` is (share of the network in the prediction, the
    rest), which says how much the piece's own memory is steering.
    """

    # observe() only counts: a player's note heard without a sample in between costs no readout
    # and no blend (the daemon hears most notes that way), and the counts come out the same.
    scores_network = False

    def __init__(self, config: OnlineConfig, corpus: CorpusExpert | None = None) -> None:
        if config.corpus_weight > 0 and corpus is None:
            raise ValueError("this online blend mixes in a corpus n-gram, but the checkpoint holds none")
        self.config = config
        self.corpus = corpus if config.corpus_weight > 0 else None
        self._base = np.zeros(128)
        self.vom = OnlineSequenceModel(max_order=config.max_order, n_symbols=128, memory=PIECE_MEMORY)
        self.ivom = OnlineSequenceModel(max_order=config.max_order, n_symbols=INTERVALS, memory=PIECE_MEMORY) if config.interval else None
        self._ibase = np.zeros(128)  # the interval model's window onto the pitches (see mix)
        self._prev = -1  # last pitch heard, -1 before the first
        self.weights = np.array([1.0, 0.0])

    def reset(self) -> None:
        self.vom.reset()
        if self.ivom is not None:
            self.ivom.reset()
        self._prev = -1
        self.weights[:] = (1.0, 0.0)

    def fork(self, frozen: bool = False) -> BlendedPitch:
        """Independent copy; frozen=True shares the counts read-only (cheap, for planning)."""
        twin = copy.copy(self)
        twin.vom = self.vom.fork(learn=not frozen)
        twin.ivom = None if self.ivom is None else self.ivom.fork(learn=not frozen)
        twin._ibase = self._ibase.copy()
        twin._base = self._base.copy()
        twin.weights = self.weights.copy()
        return twin

    def mix(self, net_probs: np.ndarray, out: np.ndarray) -> np.ndarray:
        """The blended (128,) distribution (sums to 1 up to rounding), written into out."""
        cfg = self.config
        base, share = net_probs, 1.0
        if self.corpus is not None:
            g = cfg.corpus_weight
            base = self._base
            np.multiply(net_probs, 1.0 - g, out=base)
            base += self.corpus.probs(self.vom._history, g)
        if self.ivom is not None and self._prev >= 0:
            # interval symbol of pitch q is q + off: the interval model over the 128 intervals that
            # lead to a pitch from here (intervals heard elsewhere may point outside 0..127)
            off = 127 - self._prev
            ib, iw = self.ivom.blend(base, cfg.interval_a, cfg.interval_b, offset=off, out=self._ibase)
            kept = ib.sum()
            ib /= kept
            share = iw / kept
            base = ib
        p, w = self.vom.blend(base, cfg.pitch_a, cfg.pitch_b, out=out)
        self.weights[0] = min(share * w, 1.0)
        self.weights[1] = 1.0 - self.weights[0]
        return out

    def observe(self, pitch: int, net_probs: np.ndarray | None = None, learn: bool = True) -> None:
        """Let both piece models hear `pitch` (counted only if learn; the context always moves)."""
        self._observe(self.vom, pitch, learn)
        if self.ivom is not None and self._prev >= 0:
            self._observe(self.ivom, pitch - self._prev + 127, learn)
        self._prev = pitch

    @staticmethod
    def _observe(vom: OnlineSequenceModel, symbol: int, learn: bool) -> None:
        if learn:
            vom.observe(symbol)
            return
        was = vom.learn
        vom.learn = False
        vom.observe(symbol)
        vom.learn = was


def corpus_from_tables(tables: dict[str, np.ndarray]) -> CorpusExpert | None:
    """The corpus n-gram stored in a checkpoint's tables (CORPUS_PREFIX + WittenBell.to_arrays names), if any."""
    arrays = {k[len(CORPUS_PREFIX) :]: np.asarray(v).astype(np.int64) for k, v in tables.items() if k.startswith(CORPUS_PREFIX)}
    return CorpusExpert(WittenBell.from_arrays(arrays)) if arrays else None


def make_online(config: OnlineConfig, corpus: CorpusExpert | None = None) -> OnlinePitch | BlendedPitch:
    """The online component a checkpoint asks for."""
    if config.kind == "blend":
        return BlendedPitch(config, corpus)
    return OnlinePitch(config.alpha, config.max_order)
