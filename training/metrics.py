"""Pure functions behind the eval figures: histograms of pitch and timing, and Jensen-Shannon divergence.

JSD is in bits (log base 2), so it lies in [0, 1] whatever the histogram; the issue's targets
(pitch <= 0.05, step and duration <= 0.10) are read on this scale, the stricter of bits and nats.
Times are binned log-spaced (musical time is perceived in ratios), with one bin for
simultaneous onsets and very short values, so a chord (step 0) is its own category.
"""

from __future__ import annotations

import numpy as np

N_PITCHES = 128
# seconds: [0, 10 ms) = "simultaneous", then 24 log-spaced bins up to 8 s; longer values fall in the last
TIME_EDGES = np.concatenate([[0.0], np.geomspace(0.01, 8.0, 25)])


def pitch_histogram(pitches: np.ndarray) -> np.ndarray:
    """Counts (128,) of integer pitches."""
    p = np.clip(np.asarray(pitches, dtype=np.int64).reshape(-1), 0, N_PITCHES - 1)
    return np.bincount(p, minlength=N_PITCHES).astype(np.float64)


def time_histogram(seconds: np.ndarray, edges: np.ndarray = TIME_EDGES) -> np.ndarray:
    """Counts (len(edges) - 1,) of non-negative durations; values past the last edge go to the last bin."""
    s = np.clip(np.asarray(seconds, dtype=np.float64).reshape(-1), 0.0, None)
    idx = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, len(edges) - 2)
    return np.bincount(idx, minlength=len(edges) - 1).astype(np.float64)


def jsd(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence in bits between two histograms (normalised here); NaN if one is empty."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.shape != q.shape:
        raise ValueError(f"histograms differ in shape: {p.shape} vs {q.shape}")
    if p.sum() <= 0 or q.sum() <= 0:
        return float("nan")
    p = p / p.sum()
    q = q / q.sum()
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    return max(0.0, 0.5 * kl(p) + 0.5 * kl(q))


def nll(probs_of_truth: np.ndarray, floor: float = 1e-300) -> float:
    """Summed negative log-likelihood in nats of the probabilities given to what happened."""
    return float(-np.log(np.maximum(np.asarray(probs_of_truth, dtype=np.float64), floor)).sum())
