"""Pure functions that turn a distribution into one choice, with the guard rails a musician expects.

Everything here is float64 and NaN-proof: a distribution that is not finite or sums to zero
falls back to uniform over the allowed range, so no NaN can ever reach MIDI. Draws use one
`rng.random()` and an inverse CDF, so a seed fixes the notes.
"""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """float64 softmax of logits / temperature (temperature > 0)."""
    z = np.asarray(logits, dtype=np.float64) / max(temperature, 1e-6)
    z = np.nan_to_num(z, nan=-np.inf, posinf=np.finfo(np.float64).max / 4, neginf=-np.inf)
    m = z.max()
    if not np.isfinite(m):
        return np.full(len(z), 1.0 / len(z))
    p = np.exp(z - m)
    return p / p.sum()


def shape(probs: np.ndarray, temperature: float, top_p: float | None = None, low: int = 0, high: int | None = None) -> np.ndarray:
    """Restrict to [low, high], sharpen/flatten by temperature, keep the top-p nucleus; renormalised.

    temperature 0 leaves the distribution untempered (the caller takes the argmax).
    """
    p = np.nan_to_num(np.asarray(probs, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    p = np.maximum(p, 0.0)
    n = len(p)
    high = n - 1 if high is None else high
    low, high = max(0, min(int(low), n - 1)), max(0, min(int(high), n - 1))
    if low > high:
        low, high = high, low
    p[:low] = 0.0
    p[high + 1 :] = 0.0
    if temperature > 0 and temperature != 1.0:
        with np.errstate(divide="ignore"):
            logp = np.log(p) / temperature
        m = logp.max()
        p = np.exp(logp - m) if np.isfinite(m) else np.zeros(n)
    total = p.sum()
    if not np.isfinite(total) or total <= 0.0:
        p = np.zeros(n)
        p[low : high + 1] = 1.0
        total = p.sum()
    p /= total
    if top_p is not None and 0.0 < top_p < 1.0:
        order = np.argsort(-p, kind="stable")
        keep = np.searchsorted(np.cumsum(p[order]), top_p) + 1
        mask = np.zeros(n, dtype=bool)
        mask[order[:keep]] = True
        p = np.where(mask, p, 0.0)
        p /= p.sum()
    return p


def draw(probs: np.ndarray, rng: np.random.Generator) -> int:
    """One index from a normalised distribution by inverse CDF (one uniform draw)."""
    cdf = np.cumsum(probs)
    i = int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))
    i = min(i, len(probs) - 1)
    while probs[i] <= 0.0 and i > 0:  # float edge: never land on an excluded entry
        i -= 1
    return i


def choose(probs: np.ndarray, temperature: float, rng: np.random.Generator, top_p: float | None = None, low: int = 0, high: int | None = None) -> int:
    """argmax (temperature 0) or a tempered, nucleus-restricted draw, always inside [low, high]."""
    p = shape(probs, temperature, top_p, low, high)
    if temperature <= 0.0:
        return int(np.argmax(p))
    return draw(p, rng)
