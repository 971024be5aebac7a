"""Pure functions that turn a distribution into one choice, with the guard rails a musician expects.

Everything here is float64 and NaN-proof: a distribution that is not finite or sums to zero
falls back to uniform over the allowed range, so no NaN can ever reach MIDI. Draws use one
`rng.random()` and an inverse CDF, so a seed fixes the notes.
"""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """float64 softmax of logits / temperature (temperature > 0); uniform if anything is not finite.

    Lean on purpose (it runs three times per sampled note): no sanitising pass, one check at the end.
    """
    z = np.multiply(logits, 1.0 / max(temperature, 1e-6), dtype=np.float64)
    z -= z.max()
    np.exp(z, out=z)
    total = z.sum()
    if not (0.0 < total < np.inf):  # also catches NaN
        z[:] = 1.0 / len(z)
        return z
    z /= total
    return z


def _bounds(n: int, low: int, high: int | None) -> tuple[int, int]:
    """[low, high] clipped to 0..n-1 and in order (high None: the top)."""
    high = n - 1 if high is None else high
    low, high = max(0, min(int(low), n - 1)), max(0, min(int(high), n - 1))
    return (high, low) if low > high else (low, high)


def _tempered(window: np.ndarray, temperature: float, out: np.ndarray) -> np.ndarray:
    """Negative and NaN entries as 0 (fmax drops NaN), then to the power 1/temperature (temperature
    0 or 1: untempered), into out."""
    np.fmax(window, 0.0, out=out)
    if temperature > 0 and temperature != 1.0:
        top = out.max()
        out /= top if top > 0 else 1.0  # keep the power from underflowing
        np.power(out, 1.0 / temperature, out=out)
    return out


def shape(probs: np.ndarray, temperature: float, top_p: float | None = None, low: int = 0, high: int | None = None) -> np.ndarray:
    """Restrict to [low, high], sharpen/flatten by temperature, keep the top-p nucleus; renormalised.

    temperature 0 leaves the distribution untempered (the caller takes the argmax). Negative or
    NaN entries count as 0; if nothing is left, uniform over [low, high].
    """
    n = len(probs)
    low, high = _bounds(n, low, high)
    p = np.zeros(n)
    window = p[low : high + 1]
    _tempered(probs[low : high + 1], temperature, window)
    total = window.sum()
    if not (0.0 < total < np.inf):
        window[:] = 1.0
        total = float(len(window))
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
    cdf = probs.cumsum()  # array methods, not np.* wrappers: this runs per sampled note
    i = int(cdf.searchsorted(rng.random() * cdf[-1], side="right"))
    i = min(i, len(probs) - 1)
    while probs[i] <= 0.0 and i > 0:  # float edge: never land on an excluded entry
        i -= 1
    return i


def choose(probs: np.ndarray, temperature: float, rng: np.random.Generator, top_p: float | None = None, low: int = 0, high: int | None = None) -> int:
    """argmax (temperature 0) or a tempered, nucleus-restricted draw, always inside [low, high].

    A tempered draw without a nucleus (every sampled note) takes a short path: the inverse CDF of
    the window itself, unnormalised, so no full-length vector is built or divided. It is the same
    draw as `draw(shape(...))` up to float rounding, with the same one uniform; anything it cannot
    take (nothing left in the window, non-finite mass) goes the long way, which handles it."""
    if temperature > 0.0 and (top_p is None or not 0.0 < top_p < 1.0):
        lo, hi = _bounds(len(probs), low, high)
        w = _tempered(probs[lo : hi + 1], temperature, np.empty(hi - lo + 1))
        cdf = w.cumsum()
        total = float(cdf[-1])
        if 0.0 < total < np.inf:
            i = min(int(cdf.searchsorted(rng.random() * total, side="right")), len(w) - 1)
            while w[i] <= 0.0 and i > 0:  # float edge: never land on an excluded entry
                i -= 1
            return lo + i
    p = shape(probs, temperature, top_p, low, high)
    if temperature <= 0.0:
        return int(p.argmax())
    return draw(p, rng)


def choose_each(logits: np.ndarray, starts: np.ndarray, temperature: float, rng: np.random.Generator) -> list[int]:
    """One index per segment of concatenated logits (segment i = starts[i]:starts[i+1]).

    Gumbel-max: argmax(logits / T + Gumbel noise) is an exact draw from softmax(logits / T), for
    all segments with one vector of noise and no normalisation (it runs per sampled note).
    temperature 0 = plain argmax. The result is always an index inside its segment, so even
    garbage logits cannot put a NaN into a note.
    """
    z = np.multiply(logits, 1.0 / temperature if temperature > 0.0 else 1.0, dtype=np.float64)
    if temperature > 0.0:
        g = rng.random(len(z))
        np.log(g, out=g)  # u = 0 gives -inf noise: that entry cannot win, as it should not
        np.negative(g, out=g)
        np.log(g, out=g)
        z -= g
    bounds = starts.tolist()
    return [int(z[a:b].argmax()) for a, b in zip(bounds[:-1], bounds[1:])]
