"""How the network sees a note event: a fixed, versioned set of integer token columns.

Encoding 2 keeps time in *beats*, not seconds: a step or duration is a beat fraction on a grid
of twelfths of a beat up to two beats (so sixteenths, eighths and every kind of triplet are
exact), coarser above (quarter beats to three beats, then whole beats, then a few long values).
A step of zero is its own bin because "this note is part of the previous chord" is a musical
fact, not a small number. Tempo is the performer's business (the daemon's tempo source turns
beats into seconds), so the model never has to learn the same tune at forty tempi. Targets stay
categorical so timing can be *sampled*, and decoding gives the grid value itself: an answer
lands on the beat because its steps are exact beat fractions.

Input-only columns, each depending only on the current and earlier events so the streaming
daemon computes them one event at a time (`IncrementalEncoder`):
- interval to the previous pitch, pitch class (transposition-invariant melody);
- metre: the onset's position inside its beat (nearest twelfth), its beat in the bar and
  the bar's length in beats (both 0 = unknown: a player's bars are not guessed);
- lead: the pitch classes of the lead part's notes sounding at this onset and the lowest of
  them (`harmony.LeadNotes`, the one function training, eval and the daemon share), so an
  accompaniment knows what the player's notes are right now.

The whole `Encoding` is written into every checkpoint; `ENCODING_VERSION` changes whenever the
meaning of a token changes, so a checkpoint never meets the wrong encoding.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import asdict, dataclass, fields

import numpy as np

from .events import COLUMNS
from .harmony import LeadNotes

ENCODING_VERSION = 2

# Column order: the first N_TARGETS columns are also what the network predicts for the next event.
TARGETS = ("pitch", "step", "duration", "velocity")
N_TARGETS = len(TARGETS)
BASE_COLUMNS = (*TARGETS, "role")
FEATURES = ("interval", "pitch_class", "metre", "lead")
FEATURE_COLUMNS = {
    "interval": ("interval",),
    "pitch_class": ("pitch_class",),
    "metre": ("beat_frac", "bar_beat", "bar_len"),
    "lead": tuple(f"lead{k}" for k in range(12)) + ("lead_bass",),
}

N_PITCH = 128
N_ROLE = 2
N_PITCH_CLASS = 12
GRID = 12  # twelfths of a beat: 16ths (3) and triplets (4) alike are whole numbers
# step/duration values in twelfths of a beat, one bin each
BEAT_VALUES = tuple(range(0, 25)) + (27, 30, 33, 36, 42, 48, 60, 72, 96, 144, 192)
OFF_GRID = GRID  # beat_frac token of an onset whose place in the beat is unknown
MAX_BAR = 12  # bar_beat/bar_len tokens 1..12; 0 = unknown


class EncodingError(ValueError):
    """An encoding description that cannot be used (e.g. from a foreign checkpoint)."""


def unknown_keys(cls: type, d: dict) -> str:
    """The keys of d that are no field of dataclass cls, sorted and joined ("" when none): what a
    checkpoint's config tables are checked with before they become dataclasses."""
    known = {f.name for f in fields(cls)}
    return ", ".join(sorted(str(k) for k in set(d) - known))


def _edges() -> list[float]:
    """Bin boundaries in beats: midway between neighbouring values (step 0 below half a twelfth)."""
    v = [x / GRID for x in BEAT_VALUES]
    return [(a + b) / 2 for a, b in zip(v[:-1], v[1:])]


_EDGES = _edges()
_VALUES = tuple(x / GRID for x in BEAT_VALUES)


def beat_frac_token(pos: float) -> int:
    """Position inside the beat to the nearest twelfth (0..11), or OFF_GRID when unknown.

    Nearest, not exact: a player's onsets scatter around the grid (12 ms is a quarter of a
    twelfth at 100 bpm) and still mean the same place in the beat.
    """
    if not math.isfinite(pos):
        return OFF_GRID
    return round((pos % 1.0) * GRID) % GRID


def bar_tokens(pos: float, bar: float) -> tuple[int, int]:
    """(beat in bar 1..12, bar length 1..12), both 0 when the bar is unknown."""
    if not (math.isfinite(pos) and math.isfinite(bar)) or bar < 0.5:
        return 0, 0
    length = min(max(round(bar), 1), MAX_BAR)
    beat = min(max(int(math.floor(pos % max(bar, 1e-9) + 1e-6)), 0), MAX_BAR - 1) + 1
    return beat, length


@dataclass(frozen=True)
class Encoding:
    """Parameters of the token encoding. JSON-able via `to_dict`/`from_dict`."""

    version: int = ENCODING_VERSION
    velocity_bins: int = 16
    max_interval: int = 36  # semitones; larger intervals are clipped
    features: tuple[str, ...] = FEATURES

    def __post_init__(self) -> None:
        if self.version != ENCODING_VERSION:
            raise EncodingError(f"encoding version {self.version} is not supported (this ripieno reads {ENCODING_VERSION})")
        unknown = [f for f in self.features if f not in FEATURES]
        if unknown:
            raise EncodingError(f"unknown encoding feature(s) {unknown} (known: {', '.join(FEATURES)})")
        if not 2 <= self.velocity_bins <= 127:
            raise EncodingError(f"velocity_bins must be in 2..127, got {self.velocity_bins}")
        if not 1 <= self.max_interval <= 127:
            raise EncodingError(f"max_interval must be in 1..127, got {self.max_interval}")
        object.__setattr__(self, "features", tuple(self.features))

    # ---- description -------------------------------------------------------------------
    @property
    def columns(self) -> tuple[str, ...]:
        return BASE_COLUMNS + tuple(c for f in FEATURES if f in self.features for c in FEATURE_COLUMNS[f])

    @property
    def time_bins(self) -> int:
        return len(BEAT_VALUES)

    @property
    def vocab_sizes(self) -> tuple[int, ...]:
        sizes = {
            "pitch": N_PITCH,
            "step": self.time_bins,
            "duration": self.time_bins,
            "velocity": self.velocity_bins,
            "role": N_ROLE,
            "interval": 2 * self.max_interval + 2,  # 0 = no previous note
            "pitch_class": N_PITCH_CLASS,
            "beat_frac": GRID + 1,
            "bar_beat": MAX_BAR + 1,
            "bar_len": MAX_BAR + 1,
            "lead_bass": N_PITCH_CLASS + 1,  # 0 = no lead note sounding
        }
        return tuple(sizes.get(c, 2) for c in self.columns)  # lead0..lead11: a pitch class sounds or not

    def to_dict(self) -> dict:
        d = asdict(self)
        d["features"] = list(self.features)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Encoding:
        if not isinstance(d, dict):
            raise EncodingError(f"an encoding is a JSON object, got {type(d).__name__}")
        if d.get("version") != ENCODING_VERSION:
            raise EncodingError(
                f"encoding version {d.get('version')} (time in seconds) is not read by this ripieno (encoding {ENCODING_VERSION}, "
                "time in beats): retrain the model with `ripieno-train fit`"
            )
        extra = unknown_keys(cls, d)
        if extra:
            raise EncodingError(f"unknown encoding key(s): {extra}")
        d = dict(d)
        if "features" in d:
            d["features"] = tuple(d["features"])
        return cls(**d)

    # ---- bins --------------------------------------------------------------------------
    @staticmethod
    def time_bin(beats: np.ndarray) -> np.ndarray:
        """Step/duration bin of each value in beats (nearest grid value; long values clipped)."""
        b = np.nan_to_num(np.asarray(beats, dtype=np.float64), nan=0.0, posinf=_VALUES[-1], neginf=0.0)
        return np.searchsorted(np.asarray(_EDGES), b, side="right").astype(np.int64)

    @staticmethod
    def step_beats(bin_: int) -> float:
        """The grid value of a step bin, in beats (bin 0 = a chord: 0)."""
        return _VALUES[min(max(int(bin_), 0), len(_VALUES) - 1)]

    @staticmethod
    def duration_beats(bin_: int) -> float:
        """The grid value of a duration bin, in beats (bin 0, below half a twelfth: a quarter of a twelfth)."""
        k = min(max(int(bin_), 0), len(_VALUES) - 1)
        return _VALUES[k] if k > 0 else 0.25 / GRID

    def velocity_bin(self, velocity: np.ndarray) -> np.ndarray:
        v = np.clip(np.nan_to_num(np.asarray(velocity, dtype=np.float64), nan=64.0), 1, 127)
        return np.minimum(((np.rint(v) - 1) * self.velocity_bins) // 127, self.velocity_bins - 1).astype(np.int64)

    def velocity_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Inclusive integer (lo, hi) velocity per bin."""
        b = self.velocity_bin(np.arange(1, 128))
        lo = np.array([1 + int(np.argmax(b == k)) for k in range(self.velocity_bins)])
        hi = np.array([127 - int(np.argmax(b[::-1] == k)) for k in range(self.velocity_bins)])
        return lo, hi

    def velocity_value(self, bin_: int, rng: np.random.Generator | None = None) -> int:
        lo, hi = self.velocity_bounds()
        k = int(min(max(bin_, 0), self.velocity_bins - 1))
        if rng is None:
            return int((lo[k] + hi[k]) // 2)
        return int(rng.integers(lo[k], hi[k] + 1))

    # ---- encoding ----------------------------------------------------------------------
    def encode(self, arr: np.ndarray) -> np.ndarray:
        """(N, 7) float32 events (events.COLUMNS) -> (N, K) int64 tokens in `self.columns` order.

        Exactly what `IncrementalEncoder` gives one event at a time (tested), so training and
        the daemon never disagree about a token.
        """
        a = np.asarray(arr, dtype=np.float64)
        if a.ndim != 2 or a.shape[1] != len(COLUMNS):
            raise ValueError(f"expected an (N, {len(COLUMNS)}) event array ({', '.join(COLUMNS)}), got shape {a.shape}")
        n = len(a)
        pitch = np.clip(np.nan_to_num(np.rint(a[:, 0]), nan=60.0), 0, 127).astype(np.int64)
        step = np.maximum(np.nan_to_num(a[:, 1], nan=0.0, posinf=_VALUES[-1]), 0.0)
        dur = np.maximum(np.nan_to_num(a[:, 2], nan=0.0, posinf=_VALUES[-1]), 0.0)
        lead_role = ~(np.nan_to_num(a[:, 4]) > 0.5)
        cols: dict[str, np.ndarray] = {
            "pitch": pitch,
            "step": self.time_bin(step),
            "duration": self.time_bin(dur),
            "velocity": self.velocity_bin(a[:, 3]),
            "role": (~lead_role).astype(np.int64),
        }
        if "interval" in self.features:
            iv = np.zeros(n, dtype=np.int64)
            if n > 1:
                iv[1:] = np.clip(np.diff(pitch), -self.max_interval, self.max_interval) + self.max_interval + 1
            cols["interval"] = iv
        if "pitch_class" in self.features:
            cols["pitch_class"] = pitch % 12
        if "metre" in self.features:
            pos, bar = a[:, 5], a[:, 6]
            cols["beat_frac"] = np.array([beat_frac_token(x) for x in pos.tolist()], dtype=np.int64)
            bt = [bar_tokens(x, b) for x, b in zip(pos.tolist(), bar.tolist())]
            cols["bar_beat"] = np.array([t[0] for t in bt], dtype=np.int64).reshape(n)
            cols["bar_len"] = np.array([t[1] for t in bt], dtype=np.int64).reshape(n)
        if "lead" in self.features:
            mask, bass = lead_columns(np.cumsum(step), np.maximum(dur, 0.25 / GRID), pitch, lead_role)
            for k in range(12):
                cols[f"lead{k}"] = (mask >> k) & 1
            cols["lead_bass"] = bass + 1
        return np.stack([cols[c] for c in self.columns], axis=1).astype(np.int64).reshape(n, len(self.columns))


def lead_columns(onset: np.ndarray, dur: np.ndarray, pitch: np.ndarray, lead: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mask, lowest pitch class or -1) of the lead notes sounding at each event, through `LeadNotes`."""
    notes = LeadNotes()
    mask = np.zeros(len(onset), dtype=np.int64)
    bass = np.full(len(onset), -1, dtype=np.int64)
    for i, (t, d, p, is_lead) in enumerate(zip(onset.tolist(), dur.tolist(), pitch.tolist(), lead.tolist())):
        mask[i], bass[i] = notes.at(t)
        if is_lead:
            notes.add(t, t + d, p)
    return mask, bass


class IncrementalEncoder:
    """Encodes one event at a time with exactly the tokens `Encoding.encode` gives the sequence.

    It never re-reads history: it keeps the previous pitch, the onset in beats and the lead
    notes still sounding. Plain Python arithmetic (bisect, math) because per-event numpy calls
    cost more than the work.
    """

    __slots__ = ("encoding", "_prev_pitch", "_onset", "_lead", "_at", "_has_lead", "_vel_div", "lead_mask")

    def __init__(self, encoding: Encoding) -> None:
        self.encoding = encoding
        cols = encoding.columns
        # where each column goes in the token row (-1: not in this encoding); lead0..11 are contiguous
        self._at = tuple(cols.index(c) if c in cols else -1 for c in ("interval", "pitch_class", "beat_frac", "bar_beat", "bar_len", "lead0", "lead_bass"))
        self._has_lead = "lead" in encoding.features
        self.reset()

    def reset(self) -> None:
        self._prev_pitch: int | None = None
        self._onset = 0.0
        self._lead = LeadNotes()
        self.lead_mask = 0  # the last event's lead bits as one integer (bit k = lead0 + k), for NumpyLSTM

    def copy(self) -> IncrementalEncoder:
        other = IncrementalEncoder.__new__(IncrementalEncoder)
        other.encoding, other._at, other._has_lead = self.encoding, self._at, self._has_lead
        other._prev_pitch, other._onset, other._lead = self._prev_pitch, self._onset, self._lead.copy()
        other.lead_mask = self.lead_mask
        return other

    def push(self, pitch: float, step: float, duration: float, velocity: float, role: float, pos: float, bar: float, out: np.ndarray) -> np.ndarray:
        """Write the (K,) tokens of this event into out (int64) and advance; returns out."""
        e = self.encoding
        p = min(max(int(round(pitch)), 0), 127) if math.isfinite(pitch) else (60 if pitch != pitch else (127 if pitch > 0 else 0))
        s = max(float(step), 0.0) if math.isfinite(step) else (0.0 if step != step or step < 0 else _VALUES[-1])
        d = max(float(duration), 0.0) if math.isfinite(duration) else (0.0 if duration != duration or duration < 0 else _VALUES[-1])
        v = min(max(int(round(velocity)), 1), 127) if math.isfinite(velocity) else (64 if velocity != velocity else (127 if velocity > 0 else 1))
        lead_role = not (role > 0.5)
        self._onset += s
        out[0] = p
        out[1] = bisect.bisect_right(_EDGES, s)
        out[2] = bisect.bisect_right(_EDGES, d)
        out[3] = min(((v - 1) * e.velocity_bins) // 127, e.velocity_bins - 1)
        out[4] = 0 if lead_role else 1
        i_iv, i_pc, i_bf, i_bb, i_bl, i_lead, i_bass = self._at
        if i_iv >= 0:
            out[i_iv] = 0 if self._prev_pitch is None else min(max(p - self._prev_pitch, -e.max_interval), e.max_interval) + e.max_interval + 1
        if i_pc >= 0:
            out[i_pc] = p % 12
        if i_bf >= 0:
            out[i_bf] = beat_frac_token(pos)
            out[i_bb], out[i_bl] = bar_tokens(pos, bar)
        if i_lead >= 0:
            mask, bass = self._lead.at(self._onset)
            self.lead_mask = mask
            for k in range(12):
                out[i_lead + k] = (mask >> k) & 1
            out[i_bass] = bass + 1
            if lead_role:
                self._lead.add(self._onset, self._onset + max(d, 0.25 / GRID), p)
        self._prev_pitch = p
        return out


def encode(arr: np.ndarray, encoding: Encoding | None = None) -> np.ndarray:
    """(N, 7) float32 events -> (N, K) int64 tokens with the given (default: current) encoding."""
    return (encoding or Encoding()).encode(arr)
