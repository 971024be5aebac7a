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
    """One piece: `events` is (N, 7) float32 in model.events.COLUMNS order (onset, role, pitch).

    `group` is what the train/val/test split hashes: the two versions made of one score (its
    parts as lead + accompaniment, and the whole texture as the lead) share it, so they always
    land on the same side. `qpm` is the tempo (quarter notes per minute) where the source gave
    one, for writing the piece back as MIDI at its tempo.
    """

    id: str
    source: str
    events: np.ndarray
    group: str = ""
    qpm: float = 0.0
    beat_q: float = 1.0  # the metre's beat in quarter notes (1.5 in 6/8): how to write it back as MIDI

    def __len__(self) -> int:
        return int(self.events.shape[0])

    @property
    def pitches(self) -> np.ndarray:
        return self.events[:, COLUMNS.index("pitch")].astype(np.int64)

    @property
    def split_key(self) -> str:
        return self.group or self.id


def events_from_notes(
    onset: Sequence[float] | np.ndarray,
    pitch: Sequence[int] | np.ndarray,
    duration: Sequence[float] | np.ndarray,
    velocity: Sequence[int] | np.ndarray | None = None,
    role: Sequence[int] | np.ndarray | int = Role.PLAYER,
    pos: Sequence[float] | np.ndarray | None = None,
    bar: Sequence[float] | np.ndarray | float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """(N, 7) float32 events from absolute notes (onsets and durations in beats), and the index
    of the notes kept, in event order.

    Ordered by onset, then role (the lead first: an accompaniment note struck with the player's
    is chosen knowing it, as the daemon does when it answers a key), then pitch (a chord from
    the bottom). The same pitch struck twice in one part at one onset (a unison doubled by two
    voices or channels) is one note, the longer one, since one key cannot sound twice at once.
    `pos` defaults to the onset itself (its fraction is the place in the beat), `bar` to unknown.
    """
    on = np.asarray(onset, dtype=np.float64).reshape(-1)
    pit = np.asarray(pitch, dtype=np.int64).reshape(-1)
    dur = np.maximum(np.asarray(duration, dtype=np.float64).reshape(-1), 0.0)
    vel = np.full(on.shape, DEFAULT_VELOCITY, np.int64) if velocity is None else np.asarray(velocity, np.int64).reshape(-1)
    rol = np.broadcast_to(np.asarray(role, dtype=np.int64), on.shape).copy()
    ps = on.copy() if pos is None else np.asarray(pos, dtype=np.float64).reshape(-1)
    br = np.broadcast_to(np.asarray(bar, dtype=np.float64), on.shape).copy()
    if not (on.shape == pit.shape == dur.shape == vel.shape == ps.shape):
        raise ValueError("onset, pitch, duration, velocity and pos must have the same length")
    # onset, role, pitch, longest first: the first of each (onset, role, pitch) group is the one kept
    order = np.lexsort((-dur, pit, rol, on))
    on, pit, dur, vel, rol, ps, br = (x[order] for x in (on, pit, dur, vel, rol, ps, br))
    keep = np.ones(on.shape, dtype=bool)
    if on.size > 1:
        keep[1:] = (on[1:] != on[:-1]) | (pit[1:] != pit[:-1]) | (rol[1:] != rol[:-1])
    on, pit, dur, vel, rol, ps, br, order = (x[keep] for x in (on, pit, dur, vel, rol, ps, br, order))
    step = np.diff(on, prepend=on[:1]) if on.size else on
    out = np.empty((on.size, len(COLUMNS)), dtype=np.float32)
    out[:, 0] = pit
    out[:, 1] = np.maximum(step, 0.0)
    out[:, 2] = dur
    out[:, 3] = np.clip(vel, 1, 127)
    out[:, 4] = rol
    out[:, 5] = ps
    out[:, 6] = br
    return out, order


def content_key(piece: Piece) -> bytes:
    """What makes two pieces the same music: pitches, parts, and timing on a fine beat grid."""
    ev = piece.events
    grid = np.round(ev[:, 1:3].astype(np.float64) * 48.0).astype(np.int64)  # timing to 1/48 beat
    return hashlib.sha256(ev[:, 0].astype(np.int16).tobytes() + grid.tobytes() + ev[:, 4].astype(np.int8).tobytes()).digest()


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
        out[split_of(p.split_key, val, test)].append(p)
    return out
