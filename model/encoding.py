"""How the network sees a note event: a fixed, versioned set of integer token columns.

Times are binned on a log scale (a 10 ms difference matters for a grace note, not for a
whole-note rest); a step of (almost) zero gets its own bin because "this note is part of the
previous chord" is a musical fact, not a small number. Targets are categorical over bins so
timing can be *sampled*; decoding draws uniformly-in-log inside a bin so output timing is not
quantised to bin centres.

Beyond the four target columns and the role, optional input-only columns make the input
partly transposition- and tempo-invariant: the interval to the previous pitch, the pitch
class, and the step relative to the previous non-zero step (a rhythm ratio that does not
change when the player speeds up). They depend only on the current and earlier events, so
the streaming daemon computes them with `IncrementalEncoder`, one event at a time.

The whole `Encoding` is written into every checkpoint; `ENCODING_VERSION` changes whenever
the meaning of a token changes, so a checkpoint never meets the wrong encoding.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import asdict, dataclass, fields

import numpy as np

ENCODING_VERSION = 1

# Column order: the first N_TARGETS columns are also what the network predicts for the next event.
TARGETS = ("pitch", "step", "duration", "velocity")
N_TARGETS = len(TARGETS)
BASE_COLUMNS = (*TARGETS, "role")
FEATURES = ("interval", "pitch_class", "step_ratio")

N_PITCH = 128
N_ROLE = 2
N_PITCH_CLASS = 12
RATIO_STEPS = 6  # step_ratio: log2 ratio in half-octave steps, clipped to [-3, 3] octaves


class EncodingError(ValueError):
    """An encoding description that cannot be used (e.g. from a foreign checkpoint)."""


@dataclass(frozen=True)
class Encoding:
    """Parameters of the token encoding. JSON-able via `to_dict`/`from_dict`."""

    version: int = ENCODING_VERSION
    time_bins: int = 48  # bins for step and for duration, bin 0 = below time_min
    time_min: float = 0.02  # seconds: steps below this are "same chord"
    time_max: float = 8.0  # seconds: longer steps/durations are clipped into the last bin
    velocity_bins: int = 16
    max_interval: int = 36  # semitones; larger intervals are clipped
    features: tuple[str, ...] = FEATURES

    def __post_init__(self) -> None:
        if self.version != ENCODING_VERSION:
            raise EncodingError(f"encoding version {self.version} is not supported (this ripieno reads {ENCODING_VERSION})")
        unknown = [f for f in self.features if f not in FEATURES]
        if unknown:
            raise EncodingError(f"unknown encoding feature(s) {unknown} (known: {', '.join(FEATURES)})")
        if not (self.time_bins >= 3 and 0 < self.time_min < self.time_max):
            raise EncodingError(f"bad time bins: {self.time_bins} bins over [{self.time_min}, {self.time_max}] s")
        if not 2 <= self.velocity_bins <= 127:
            raise EncodingError(f"velocity_bins must be in 2..127, got {self.velocity_bins}")
        object.__setattr__(self, "features", tuple(self.features))

    # ---- description -------------------------------------------------------------------
    @property
    def columns(self) -> tuple[str, ...]:
        return BASE_COLUMNS + tuple(f for f in FEATURES if f in self.features)

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
            "step_ratio": 2 * RATIO_STEPS + 3,  # 0 = no previous non-zero step, 1 = chord (step 0)
        }
        return tuple(sizes[c] for c in self.columns)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["features"] = list(self.features)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Encoding:
        known = {f.name for f in fields(cls)}
        extra = set(d) - known
        if extra:
            raise EncodingError(f"unknown encoding key(s): {', '.join(sorted(extra))}")
        d = dict(d)
        if "features" in d:
            d["features"] = tuple(d["features"])
        return cls(**d)

    # ---- bins --------------------------------------------------------------------------
    def time_edges(self) -> np.ndarray:
        """(time_bins,) float64 boundaries g: bin 0 = [0, g0), bin k = [g[k-1], g[k]), last bin open above."""
        return np.geomspace(self.time_min, self.time_max, self.time_bins)

    def time_bin(self, seconds: np.ndarray) -> np.ndarray:
        s = np.nan_to_num(np.asarray(seconds, dtype=np.float64), nan=0.0, posinf=self.time_max, neginf=0.0)
        return np.minimum(np.searchsorted(self.time_edges(), s, side="right"), self.time_bins - 1).astype(np.int64)

    def time_bin_bounds(self, is_step: bool) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) seconds per bin that decoding draws between, log-uniformly.

        Step bin 0 decodes to exactly 0 (a chord); duration bin 0 to [time_min/2, time_min).
        The last bin is drawn inside its own width (bounded: never above time_max * ratio).
        """
        g = self.time_edges()
        ratio = g[1] / g[0]
        lo = np.concatenate([[0.0 if is_step else self.time_min / 2], g[:-1]])
        hi = np.concatenate([[0.0 if is_step else self.time_min], g[1:]])
        lo[-1], hi[-1] = g[-1], g[-1] * ratio
        return lo, hi

    def time_centres(self, is_step: bool) -> np.ndarray:
        """Geometric bin centres in seconds (step bin 0 = 0)."""
        lo, hi = self.time_bin_bounds(is_step)
        return np.where(lo > 0, np.sqrt(lo * np.maximum(hi, lo)), 0.0)

    def velocity_bin(self, velocity: np.ndarray) -> np.ndarray:
        v = np.clip(np.nan_to_num(np.asarray(velocity, dtype=np.float64), nan=64.0), 1, 127)
        return np.minimum(((np.rint(v) - 1) * self.velocity_bins) // 127, self.velocity_bins - 1).astype(np.int64)

    def velocity_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Inclusive integer (lo, hi) velocity per bin."""
        b = self.velocity_bin(np.arange(1, 128))
        lo = np.array([1 + int(np.argmax(b == k)) for k in range(self.velocity_bins)])
        hi = np.array([127 - int(np.argmax(b[::-1] == k)) for k in range(self.velocity_bins)])
        return lo, hi

    # ---- decoding: bins back to values -------------------------------------------------
    def step_seconds(self, bin_: int, rng: np.random.Generator | None = None) -> float:
        return self._draw_time(bin_, True, rng)

    def duration_seconds(self, bin_: int, rng: np.random.Generator | None = None) -> float:
        return self._draw_time(bin_, False, rng)

    def _draw_time(self, bin_: int, is_step: bool, rng: np.random.Generator | None) -> float:
        lo, hi = self.time_bin_bounds(is_step)
        k = int(min(max(bin_, 0), self.time_bins - 1))
        if lo[k] <= 0.0:
            return 0.0
        if rng is None:  # deterministic: the geometric centre
            return float(math.sqrt(lo[k] * hi[k]))
        return float(math.exp(rng.uniform(math.log(lo[k]), math.log(hi[k]))))

    def velocity_value(self, bin_: int, rng: np.random.Generator | None = None) -> int:
        lo, hi = self.velocity_bounds()
        k = int(min(max(bin_, 0), self.velocity_bins - 1))
        if rng is None:
            return int((lo[k] + hi[k]) // 2)
        return int(rng.integers(lo[k], hi[k] + 1))

    # ---- encoding ----------------------------------------------------------------------
    def encode(self, arr: np.ndarray) -> np.ndarray:
        """(N, 5) float32 events (events.COLUMNS) -> (N, K) int64 tokens in `self.columns` order."""
        a = np.asarray(arr, dtype=np.float64)
        if a.ndim != 2 or a.shape[1] < 5:
            raise ValueError(f"expected an (N, 5) event array, got shape {a.shape}")
        n = len(a)
        pitch = np.clip(np.nan_to_num(np.rint(a[:, 0]), nan=60.0), 0, 127).astype(np.int64)
        step = np.maximum(np.nan_to_num(a[:, 1], nan=0.0), 0.0)
        cols = {
            "pitch": pitch,
            "step": self.time_bin(step),
            "duration": self.time_bin(np.maximum(np.nan_to_num(a[:, 2], nan=0.0), 0.0)),
            "velocity": self.velocity_bin(a[:, 3]),
            "role": (np.nan_to_num(a[:, 4]) > 0.5).astype(np.int64),
        }
        if "interval" in self.features:
            iv = np.zeros(n, dtype=np.int64)
            if n > 1:
                iv[1:] = np.clip(np.diff(pitch), -self.max_interval, self.max_interval) + self.max_interval + 1
            cols["interval"] = iv
        if "pitch_class" in self.features:
            cols["pitch_class"] = pitch % 12
        if "step_ratio" in self.features:
            # last non-zero step strictly before each event (forward fill), nan if none yet
            nz = np.where(step >= self.time_min, step, np.nan)
            prev = np.full(n, np.nan)
            if n > 1:
                idx = np.where(~np.isnan(nz[:-1]), np.arange(n - 1), -1)
                idx = np.maximum.accumulate(idx)
                prev[1:] = np.where(idx >= 0, nz[:-1][np.maximum(idx, 0)], np.nan)
            cols["step_ratio"] = _ratio_token(step, prev, self.time_min)
        return np.stack([cols[c] for c in self.columns], axis=1).astype(np.int64)


def _ratio_token(step: np.ndarray, prev: np.ndarray, time_min: float) -> np.ndarray:
    """0 = no previous non-zero step, 1 = this step is a chord, 2.. = log2(step/prev) in half-octaves."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.rint(2.0 * np.log2(np.maximum(step, time_min) / prev))
    r = np.clip(np.nan_to_num(r, nan=0.0), -RATIO_STEPS, RATIO_STEPS).astype(np.int64) + RATIO_STEPS + 2
    out = np.where(np.isnan(prev), 0, r)
    return np.where(step < time_min, 1, out).astype(np.int64)


class IncrementalEncoder:
    """Encodes one event at a time with exactly the tokens `Encoding.encode` gives the sequence.

    The streaming step uses it so it never re-reads history: it only keeps the previous pitch
    and the last non-zero step. Plain Python arithmetic (bisect, math) because per-event numpy
    calls cost more than the work.
    """

    __slots__ = ("encoding", "_prev_pitch", "_prev_step", "_edges", "_cols")

    def __init__(self, encoding: Encoding) -> None:
        self.encoding = encoding
        self._edges = encoding.time_edges().tolist()
        self._cols = encoding.columns
        self.reset()

    def reset(self) -> None:
        self._prev_pitch: int | None = None
        self._prev_step: float | None = None

    def copy(self) -> IncrementalEncoder:
        other = IncrementalEncoder.__new__(IncrementalEncoder)
        other.encoding, other._edges, other._cols = self.encoding, self._edges, self._cols
        other._prev_pitch, other._prev_step = self._prev_pitch, self._prev_step
        return other

    def _time_bin(self, seconds: float) -> int:
        return min(bisect.bisect_right(self._edges, seconds), self.encoding.time_bins - 1)

    def push(self, pitch: float, step: float, duration: float, velocity: float, role: float, out: np.ndarray) -> np.ndarray:
        """Write the (K,) tokens of this event into out (int64) and advance; returns out."""
        e = self.encoding
        p = min(max(int(round(pitch)), 0), 127) if math.isfinite(pitch) else 60
        s = max(float(step), 0.0) if math.isfinite(step) else (0.0 if step != step or step < 0 else e.time_max)
        d = max(float(duration), 0.0) if math.isfinite(duration) else (0.0 if duration != duration or duration < 0 else e.time_max)
        v = min(max(int(round(velocity)), 1), 127) if math.isfinite(velocity) else (64 if velocity != velocity else (127 if velocity > 0 else 1))
        for i, c in enumerate(self._cols):
            if c == "pitch":
                out[i] = p
            elif c == "step":
                out[i] = self._time_bin(s)
            elif c == "duration":
                out[i] = self._time_bin(d)
            elif c == "velocity":
                out[i] = min(((v - 1) * e.velocity_bins) // 127, e.velocity_bins - 1)
            elif c == "role":
                out[i] = 1 if role > 0.5 else 0
            elif c == "interval":
                if self._prev_pitch is None:
                    out[i] = 0
                else:
                    out[i] = min(max(p - self._prev_pitch, -e.max_interval), e.max_interval) + e.max_interval + 1
            elif c == "pitch_class":
                out[i] = p % 12
            elif c == "step_ratio":
                if s < e.time_min:
                    out[i] = 1
                elif self._prev_step is None:
                    out[i] = 0
                else:
                    r = round(2.0 * math.log2(s / self._prev_step))
                    out[i] = min(max(r, -RATIO_STEPS), RATIO_STEPS) + RATIO_STEPS + 2
        self._prev_pitch = p
        if s >= e.time_min:
            self._prev_step = s
        return out


def encode(arr: np.ndarray, encoding: Encoding | None = None) -> np.ndarray:
    """(N, 5) float32 events -> (N, K) int64 tokens with the given (default: current) encoding."""
    return (encoding or Encoding()).encode(arr)
