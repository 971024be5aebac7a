"""A piece of music as training sees it, and the piece-level bookkeeping: dedupe and split.

The split is by a hash of the piece id, not by position or a random draw, so the same piece
lands on the same side on every machine, every run and whatever else the corpus contains;
exact duplicates are removed first so that no tune can sit on both sides under two names.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ripieno.model.events import COLUMNS, Role

log = logging.getLogger(__name__)

DEFAULT_VELOCITY = 80  # scores rarely carry dynamics


@dataclass(frozen=True, eq=False)
class Piece:
    """One piece: `events` is (N, 5) float32 in model.events.COLUMNS order, onset then pitch.

    Pieces converted from scores also keep their metrical time, so training can re-time them
    at another tempo: `onset_q` and `duration_q` in quarter notes, `qpm` the tempo (quarter
    notes per minute) in force at each onset. MIDI files leave these None.
    """

    id: str
    source: str
    events: np.ndarray
    onset_q: np.ndarray | None = None
    duration_q: np.ndarray | None = None
    qpm: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.events.shape[0])

    @property
    def pitches(self) -> np.ndarray:
        return self.events[:, COLUMNS.index("pitch")].astype(np.int64)


def events_from_notes(
    onset_s: Sequence[float] | np.ndarray,
    pitch: Sequence[int] | np.ndarray,
    duration_s: Sequence[float] | np.ndarray,
    velocity: Sequence[int] | np.ndarray | None = None,
    role: Role = Role.PLAYER,
) -> tuple[np.ndarray, np.ndarray]:
    """(N, 5) float32 events from absolute notes, and the index of the notes kept, in event order.

    Ordered by onset then pitch; the same pitch struck twice at the same onset (a unison
    doubled by two voices or channels) is one note, the longer one, since one key cannot
    sound twice at once.
    """
    onset = np.asarray(onset_s, dtype=np.float64).reshape(-1)
    pit = np.asarray(pitch, dtype=np.int64).reshape(-1)
    dur = np.maximum(np.asarray(duration_s, dtype=np.float64).reshape(-1), 0.0)
    vel = np.full(onset.shape, DEFAULT_VELOCITY, np.int64) if velocity is None else np.asarray(velocity, np.int64).reshape(-1)
    if not (onset.shape == pit.shape == dur.shape == vel.shape):
        raise ValueError("onset, pitch, duration and velocity must have the same length")
    # onset, pitch, longest first: the first of each (onset, pitch) group is the one kept
    order = np.lexsort((-dur, pit, onset))
    onset, pit, dur, vel = onset[order], pit[order], dur[order], vel[order]
    keep = np.ones(onset.shape, dtype=bool)
    if onset.size > 1:
        keep[1:] = (onset[1:] != onset[:-1]) | (pit[1:] != pit[:-1])
    onset, pit, dur, vel, order = onset[keep], pit[keep], dur[keep], vel[keep], order[keep]
    step = np.diff(onset, prepend=onset[:1]) if onset.size else onset
    out = np.empty((onset.size, len(COLUMNS)), dtype=np.float32)
    out[:, 0] = pit
    out[:, 1] = np.maximum(step, 0.0)
    out[:, 2] = dur
    out[:, 3] = np.clip(vel, 1, 127)
    out[:, 4] = int(role)
    return out, order


def content_key(piece: Piece) -> bytes:
    """What makes two pieces the same music: pitches, and timing to the millisecond."""
    ev = piece.events
    ms = np.round(ev[:, 1:3].astype(np.float64) * 1000.0).astype(np.int64)
    return hashlib.sha256(ev[:, 0].astype(np.int16).tobytes() + ms.tobytes()).digest()


def dedupe(pieces: Iterable[Piece]) -> list[Piece]:
    """Drop exact duplicates of note content; of each group the piece with the smallest id stays."""
    pieces = list(pieces)
    first: dict[bytes, Piece] = {}
    for p in sorted(pieces, key=lambda p: p.id):
        first.setdefault(content_key(p), p)
    kept = {id(p) for p in first.values()}
    out = [p for p in pieces if id(p) in kept]
    if len(out) < len(pieces):
        log.info("dedupe: %d duplicate pieces removed, %d left", len(pieces) - len(out), len(out))
    return out


def split_of(piece_id: str, val: float = 0.05, test: float = 0.05) -> str:
    """'train', 'val' or 'test' for one id: a function of the id alone."""
    u = int.from_bytes(hashlib.sha256(piece_id.encode("utf-8")).digest()[:8], "big") / 2.0**64
    if u < test:
        return "test"
    if u < test + val:
        return "val"
    return "train"


def split(pieces: Iterable[Piece], val: float = 0.05, test: float = 0.05) -> dict[str, list[Piece]]:
    """Deterministic piece-level split by a hash of each id; call dedupe() first."""
    if not (0.0 <= val and 0.0 <= test and val + test < 1.0):
        raise ValueError(f"val and test fractions must be >= 0 and sum below 1, got val={val} test={test}")
    out: dict[str, list[Piece]] = {"train": [], "val": [], "test": []}
    for p in pieces:
        out[split_of(p.id, val, test)].append(p)
    return out
