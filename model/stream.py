"""One performance, streamed: the state the daemon carries from note to note.

`observe` advances the LSTM by exactly one event (never re-reading history) and lets the
online component learn it; `predict` is the next pitch distribution (network mixed with what
the piece itself taught); `sample` draws one next note, pitch first, then its step, duration
and velocity conditioned on that pitch. The step is plain float32 numpy through preallocated
buffers (`NumpyLSTM`), no autograd, no torch call, one thread. Sampling does not advance the
stream: the daemon observes the notes it actually plays (role RIPIENO), which extend the
context but, by default, do not teach the online model (so ripieno never learns its own licks
as if the player had played them).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import numpy as np

from . import sampling
from .checkpoint import Checkpoint
from .encoding import IncrementalEncoder
from .events import NoteEvent, Role
from .config import HEADS
from .numpy_lstm import NumpyLSTM
from .online import CorpusExpert, corpus_from_tables, make_online


@dataclass(frozen=True)
class Prediction:
    """The next event's pitch distribution; `net_pitch_probs` is the network alone."""

    pitch_probs: np.ndarray  # float64 (128,), sums to 1, online component included
    net_pitch_probs: np.ndarray  # float64 (128,)
    weights: np.ndarray  # mixture weights (network, online VOM); [1, 0] when offline


class Stream:
    """Owns the recurrent state of one performance. Not thread-safe; fork() for planning."""

    def __init__(self, checkpoint: Checkpoint, online: bool = True, alpha: float | None = None, max_order: int | None = None, learn_own: bool = False) -> None:
        """online=False: the network alone. The online component is the checkpoint's
        `config.online` (alpha and max_order, when given, override it)."""
        self.encoding = checkpoint.encoding
        self.net = _numpy_net(checkpoint)
        cfg = checkpoint.config.online
        overrides = {k: v for k, v in (("alpha", alpha), ("max_order", max_order)) if v is not None}
        if "max_order" in overrides and cfg.kind == "blend" and overrides["max_order"] != cfg.max_order:
            raise ValueError("max_order of a fitted blend is part of the checkpoint and cannot be overridden")
        cfg = dataclasses.replace(cfg, **overrides) if overrides else cfg
        self.online = make_online(cfg, _corpus(checkpoint) if cfg.corpus_weight > 0 else None) if online else None
        self.learn_own = learn_own
        self._encoder = IncrementalEncoder(self.encoding)
        self._vel_bounds = tuple(b.tolist() for b in self.encoding.velocity_bounds())
        self._alloc()
        self.reset()

    def _alloc(self) -> None:
        self.h, self.c = self.net.zero_state()
        self._buf = self.net.buffers()
        self._tokens = np.zeros(len(self.encoding.columns), dtype=np.int64)
        self._net_probs = np.zeros(128)
        self._mixed = np.zeros(128)
        self._acc_probs = np.zeros(128)
        self._fresh = False  # _net_probs/_mixed describe the current state

    def reset(self) -> None:
        """Start a new piece: zero state, empty online memory."""
        self.h[:] = 0.0
        self.c[:] = 0.0
        self._encoder.reset()
        if self.online is not None:
            self.online.reset()
        self.n_observed = 0
        self._fresh = False

    def fork(self, copy_online: bool = False) -> Stream:
        """A copy to plan with: its observations never touch this stream.

        By default the online model's counts are shared read-only (the fork extends only its
        own context and learns nothing): O(1), about 15 us. copy_online=True deep-copies the
        counts instead, so the fork may learn and is isolated from what this stream learns
        later, but it costs O(piece) (~0.6 s after 1000 notes, measured): not for the hot path.
        """
        twin = copy.copy(self)
        twin.h, twin.c = self.h.copy(), self.c.copy()
        twin._buf = self.net.buffers()
        twin._tokens = self._tokens.copy()
        twin._net_probs, twin._mixed, twin._acc_probs = self._net_probs.copy(), self._mixed.copy(), self._acc_probs.copy()
        twin._encoder = self._encoder.copy()
        twin.online = None if self.online is None else self.online.fork(frozen=not copy_online)
        return twin

    @property
    def state(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of (h, c), each (layers, hidden) float32."""
        return self.h.copy(), self.c.copy()

    def _ensure(self) -> None:
        if self._fresh:
            return
        p = _softmax_into(self.net.pitch_logits(self.h[-1], self._buf), self._net_probs)
        if self.online is not None:
            self.online.mix(p, self._mixed)
            self._mixed /= self._mixed.sum()
        else:
            self._mixed[:] = p
        self._fresh = True

    def observe(self, event: NoteEvent, learn: bool | None = None) -> None:
        """Advance by one heard (or played) event. learn: whether the online model learns it
        (default: the lead's notes do, unless `learn_own` says ripieno's do too); the engine
        passes False for the notes ripieno plays itself, whatever their part."""
        if self.online is not None:
            if self.online.scores_network:  # fixed share weighs the network by how it predicted this note
                self._ensure()
            if learn is None:
                learn = event.role == Role.PLAYER or self.learn_own
            self.online.observe(min(max(int(event.pitch), 0), 127), self._net_probs, learn)
        self._encoder.push(event.pitch, event.step, event.duration, event.velocity, int(event.role), event.pos, event.bar, self._tokens)
        self.net.step(self._tokens, self.h, self.c, self._buf, self._encoder.lead_mask)
        self.n_observed += 1
        self._fresh = False

    def predict(self, role: Role = Role.PLAYER) -> Prediction:
        """The next pitch distribution for a next note of `role` (copies: safe to keep).

        The lead's is the network mixed with what the piece taught (the online models learn the
        lead); an accompaniment note's is the network's own accompaniment readout.
        """
        if role == Role.PLAYER:
            self._ensure()
            w = self.online.weights.copy() if self.online is not None else np.array([1.0, 0.0])
            return Prediction(self._mixed.copy(), self._net_probs.copy(), w)
        p = self._accompaniment_probs()
        return Prediction(p.copy(), p.copy(), np.array([1.0, 0.0]))

    def _accompaniment_probs(self) -> np.ndarray:
        return _softmax_into(self.net.pitch_logits(self.h[-1], self._buf, int(Role.RIPIENO)), self._acc_probs)

    def head_probs(self, pitch: int, temperature: float = 1.0) -> dict[str, np.ndarray]:
        """Bin distributions of step, duration and velocity for a next note of `pitch`."""
        logits = self.net.head_logits(self.h[-1], int(pitch), self._buf)
        return {n: sampling.softmax(logits[self.net.head_slices[n]], temperature if temperature > 0 else 1.0) for n in HEADS}

    def sample(self, temperature: float, rng: np.random.Generator, top_p: float | None = None, low: int = 0, high: int = 127,
               pitch_weights: np.ndarray | None = None, role: Role = Role.PLAYER, variation: float = 0.0) -> NoteEvent:
        """Draw the next note (does not advance the stream). temperature 0 = argmax everywhere.

        `role` is the part asked for (the lead's next note, or the accompaniment's) and the role
        of the event returned. Step and duration are grid values in beats. `pitch_weights` (128,), when given, multiply
        the pitch distribution before the draw (the engine's register and harmony preferences);
        the timing is still the model's, conditioned on the pitch drawn. `variation` (0..1) steers
        how much the lead's next note may follow what the piece taught (the online models, which
        copy the player's material): 0 = the fitted blend (the likeliest, often an echo), 1 = the
        network alone (free).
        """
        t = float(temperature) if np.isfinite(temperature) else 1.0
        if role == Role.PLAYER:
            self._ensure()
            base = self._mixed
            v = min(max(float(variation), 0.0), 1.0) if variation == variation else 0.0
            if v > 0.0 and self.online is not None:
                base = (1.0 - v) * self._mixed + v * self._net_probs
        else:
            base = self._accompaniment_probs()
        probs = base if pitch_weights is None else base * pitch_weights
        pitch = sampling.choose(probs, t, rng, top_p, low, high)
        logits = self.net.head_logits(self.h[-1], pitch, self._buf)
        step_bin, dur_bin, vel_bin = sampling.choose_each(logits, self.net.head_starts, t, rng)
        r = rng if t > 0 else None
        vlo, vhi = self._vel_bounds
        k = vel_bin
        velocity = int((vlo[k] + vhi[k]) // 2) if r is None else int(vlo[k] + int(r.random() * (vhi[k] - vlo[k] + 1)))
        return NoteEvent(int(pitch), self.encoding.step_beats(step_bin), self.encoding.duration_beats(dur_bin), min(max(velocity, 1), 127), role)


def _softmax_into(logits: np.ndarray, out: np.ndarray) -> np.ndarray:
    """softmax of float32 logits written into a preallocated float64 buffer (no allocation per note)."""
    np.subtract(logits, logits.max(), out=out)
    np.exp(out, out=out)
    out /= out.sum()
    return out


def _numpy_net(ck: Checkpoint) -> NumpyLSTM:
    """The checkpoint's numpy export, made once and shared read-only by its streams (~0.2 s each otherwise)."""
    if "numpy" not in ck._cache:
        ck._cache["numpy"] = NumpyLSTM(ck.config, ck.weights)
    return ck._cache["numpy"]


def _corpus(ck: Checkpoint) -> CorpusExpert | None:
    """The checkpoint's corpus n-gram, built once per checkpoint and shared read-only by its streams."""
    if "corpus" not in ck._cache:
        ck._cache["corpus"] = corpus_from_tables(ck.tables)
    return ck._cache["corpus"]
