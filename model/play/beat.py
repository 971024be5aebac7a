"""The player's beat from their key presses alone: an online, symbolic beat tracker (`tempo.Tempo`).

Onsets, not audio: every key press is a sharp, exact event, so the tracker quantises each one to a
position on its beat grid (the beat or a half, third, quarter or sixth of it) and fits the grid to
those positions. That keeps it small and cheap, and robust where the player does not play a note
on every beat:

- Induction (the first notes, and the first notes after a pause): every simple hypothesis that two
  recent onsets suggest (their interval is 1/2 .. 8 beats) is quantised and scored, and the best
  is taken. Usable from the second note on, sure after three or four.
- Tracking: each new onset gets a grid position on the current estimate; a weighted least-squares
  fit over the recent positions (recent beats weigh most, a small curvature term follows tempo
  ramps) gives phase and period. Positions persist, so a correction never renumbers beats.
- Metre: at every onset the grid is compared with its metrical relatives (x2, x3, x1/2, x1/3, x3/2,
  x2/3, and the same period shifted onto another onset). The beat is the level where onsets fall
  on most beats, where the beats carry the accented and long notes, under a log-normal tempo prior
  around 100 bpm that decides where the evidence does not. A relative must win twice in a row, so
  near ties do not flip.

What was looked at: no well-kept Python library does online *symbolic* beat tracking. madmom,
librosa, essentia, BTrack and BeatNet all start from audio (an onset-strength signal); BeatRoot
(Dixon 2001, Java/C++) clusters inter-onset intervals and runs competing agents, offline; Large &
Kolen's adaptive oscillators and the linear phase/period correction models of sensorimotor
synchronisation (Repp, Mates) correct a single pulse online but do not choose the metrical level.
The quantise-and-score of hypotheses here borrows the idea of Povel & Essens' clock induction
(a good clock puts its ticks on accented events, few on silence); no code was copied.
"""

from __future__ import annotations

import math

import numpy as np

from .player import CHORD_S

# Grid positions within a beat an onset may take and the level of each (0 beat, 1 half, 2 third,
# 3 quarter, 4 sixth). An onset takes the position of least cost: its distance in timing-noise
# units plus -log of how common the level is (in folk tunes, chorales, jigs), so in doubt it takes
# the simpler reading.
_FRACS = np.array([0.0, 1 / 6, 1 / 4, 1 / 3, 1 / 2, 2 / 3, 3 / 4, 5 / 6, 1.0])
_LEVEL = np.array([0, 4, 3, 2, 1, 2, 3, 4, 0])
_LEVEL_COST = -np.log(np.array([0.4, 0.3, 0.05, 0.06, 0.015]))[_LEVEL]
_PLACE_SD_S = 0.03
_FIT_WEIGHT = np.array([1.0, 0.6, 0.35, 0.35, 0.15])  # by level: off-beats are timed less steadily
_EXACT = 1e-6

# Induction: the number of beats two onsets may span, and how many recent onsets may be a beat.
_SPANS = np.array([0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0])
_ANCHORS = 3
_INDUCE_EVENTS = 12  # induction looks at the last this-many onsets
_INDUCE_UNTIL = 8  # the first this-many onsets (of the performance, of a segment after a pause) are induced
_KEEP_BONUS = 1.0  # the current grid's advantage in induction (log units): a new one must be clearly better

# Metrical relatives of the current beat considered at every onset.
_FACTORS = (1.0, 2.0, 3.0, 0.5, 1 / 3, 1.5, 2 / 3)
_OFFSET_EVENTS = 6  # a relative's beat passes through one of the last this-many onsets
_SWITCH_MARGIN = 0.12  # log units a relative must win by ...
_SWITCH_AFTER = 2  # ... at this many onsets in a row

# Scoring weights (log units): recall (beats that have an onset), salience share on beats,
# salience contrast (on-beat onsets more accented/longer than the rest), timing fit.
_W_RECALL = 1.0
_W_CONTRAST = 1.0
_W_UNPLACED = 2.0
_W_FIT = 1.0
_FIT_SD_S = 0.035
_RECENCY_S = 4.0  # evidence older than this weighs e^-1 in scoring

# Tracking fit.
_FIT_HALFLIFE_BEATS = 6.0
_CURVE_RIDGE = 30.0
_ROBUST_S = 0.05
_SHRINK_K = 0.0
_SHRINK_FLOOR_S = 0.01
_GAP_S = 1.5  # a silence longer than this (and 3 beats) starts a new segment: the player may restart elsewhere


class BeatTracker:
    """The beat of a player's onsets: tempo, phase and a confidence, updated at every key press.

    `onset()` is the only input; beat positions are continuous beat counts from the first onset
    (beat 0), and stay put across re-estimates. Pure: no clock, no I/O; bounded work per onset.
    """

    def __init__(
        self,
        min_bpm: float = 50.0,
        max_bpm: float = 200.0,
        prior_bpm: float = 100.0,
        prior_width: float = 0.5,
        window_s: float = 8.0,
        max_events: int = 32,
    ) -> None:
        if not (0 < min_bpm < max_bpm and math.isfinite(max_bpm)):
            raise ValueError(f"need 0 < min_bpm < max_bpm, got {min_bpm}, {max_bpm}")
        self.min_period = 60.0 / max_bpm
        self.max_period = 60.0 / min_bpm
        self.prior_bpm = min(max(prior_bpm, min_bpm), max_bpm)
        self.prior_width = prior_width  # sd of ln(bpm)
        self.window_s = window_s
        cap = max(int(max_events), 4)
        # The window of recent counted onsets, oldest first in [0, n).
        self._t = np.zeros(cap)
        self._vel = np.zeros(cap)
        self._notes = np.zeros(cap)
        self._q = np.zeros(cap)  # grid position (beats)
        self._lvl = np.zeros(cap, dtype=np.intp)
        self._res = np.zeros(cap)  # seconds off the grid when placed
        self._n = 0
        self._seg0 = 0  # window index where the current segment (after the last long gap) starts
        self._seg_events = 0
        self._count = 0  # onsets counted (chords once)
        self._last_t: float | None = None  # last accepted key press, chord notes included
        # The grid: beat position `_qa` at time `_ta`, `_period` seconds a beat.
        self._ta = 0.0
        self._qa = 0.0
        self._period = 60.0 / self.prior_bpm
        self._pending = 0  # onsets in a row a metrical relative has won
        self._margin = 0.0  # current grid's lead over its best relative (log units)
        self._rms = 0.0

    # ------------------------------------------------------------------------------ Tempo

    @property
    def tempo_bpm(self) -> float | None:
        return 60.0 / self._period if self._count >= 2 else None

    @property
    def confidence(self) -> float:
        """0..1 from how many onsets support the grid, how well they fit it and how clearly its
        metrical level beats the alternatives: low after one or two notes, near 1 when steady."""
        if self._count < 2:
            return 0.0
        support = 1.0 - math.exp(-(min(self._seg_events, self._n) - 1) / 4.0)
        fit = math.exp(-0.5 * (self._rms / _FIT_SD_S) ** 2)
        level = 0.6 + 0.4 * math.tanh(max(self._margin, 0.0) / 0.3)
        return max(0.0, min(1.0, support * fit * level))

    @property
    def bar_beats(self) -> int:
        return 0

    def beat_at(self, t: float) -> float | None:
        if self._count < 2:
            return None
        return self._qa + (t - self._ta) / self._period

    def time_at(self, beat: float) -> float:
        return self._ta + (beat - self._qa) * self._period

    def bar_start(self, beat: float) -> float | None:
        return None

    def onset(self, t: float, velocity: int = 64) -> None:
        """A key press at t seconds. Chord notes (within CHORD_S of the counted onset) count once;
        non-finite times and times before the previous press are ignored."""
        try:
            t = float(t)
            v = float(velocity)
        except (TypeError, ValueError):
            return
        if not math.isfinite(t) or (self._last_t is not None and t < self._last_t):
            return
        v = min(max(v, 1.0), 127.0) if math.isfinite(v) else 64.0
        self._last_t = t
        n = self._n
        if n and t - self._t[n - 1] < CHORD_S:
            self._vel[n - 1] = max(self._vel[n - 1], v)
            self._notes[n - 1] += 1
            return
        gap = n > 0 and t - self._t[n - 1] > max(_GAP_S, 3.0 * self._period)
        self._push(t, v)
        self._count += 1
        if self._count == 1:
            self._ta, self._qa = t, 0.0
            self._q[0], self._lvl[0], self._res[0] = 0.0, 0, 0.0
            self._seg_events = 1
            return
        if gap:
            self._seg0 = self._n - 1
            self._seg_events = 0
        self._seg_events += 1
        if self._seg_events == 1:  # the first onset after a pause: on the grid as it runs on
            self._place_last()
        elif self._seg_events <= _INDUCE_UNTIL:
            self._induce(keep_bonus=_KEEP_BONUS if self._count > self._seg_events else 0.0)
        else:
            self._place_last()
            self._reconsider_metre()
        self._fit()

    # ------------------------------------------------------------------------------ window

    def _push(self, t: float, v: float) -> None:
        n = self._n
        drop = int(np.searchsorted(self._t[:n], t - self.window_s, side="left")) if n else 0
        if n - drop >= len(self._t):
            drop = n - len(self._t) + 1
        if drop:
            for a in (self._t, self._vel, self._notes, self._q, self._lvl, self._res):
                a[: n - drop] = a[drop:n]
            n -= drop
            self._seg0 = max(self._seg0 - drop, 0)
        self._t[n], self._vel[n], self._notes[n] = t, v, 1.0
        self._q[n], self._lvl[n], self._res[n] = np.nan, 0, 0.0
        self._n = n + 1

    def _salience(self, lo: int) -> np.ndarray:
        """How much each onset in [lo, n) sounds like a beat: accent (velocity against the window's
        mean), length (the time to the next onset against the median) and chord size."""
        n = self._n
        t = self._t[lo:n]
        ioi = np.empty(n - lo)
        ioi[:-1] = np.diff(t)
        med = float(np.median(ioi[:-1])) if n - lo > 1 else self._period
        ioi[-1] = med  # the last note's length is not known yet: neutral
        length = np.sqrt(np.clip(ioi / max(med, 1e-3), 0.5, 2.5))
        vel = self._vel[lo:n]
        accent = np.clip((vel + 16.0) / (float(vel.mean()) + 16.0), 0.5, 2.0)
        chord = np.minimum(1.0 + 0.3 * (self._notes[lo:n] - 1.0), 2.0)
        return length * accent * chord

    # ------------------------------------------------------------------------------ scoring

    def _score(
        self,
        hit: np.ndarray,
        placed: np.ndarray,
        w: np.ndarray,
        s: np.ndarray,
        beats_w: np.ndarray,
        period: np.ndarray,
    ) -> np.ndarray:
        """Log-score of C grid hypotheses over N onsets (hit/placed: C x N; w, s: N; beats_w, period: C).

        recall: share of the grid's beats that have an onset; precision: share of the salience that
        falls on beats, sharpened by the contrast of on-beat salience to the average one; the prior
        on tempo; a penalty for onsets the grid cannot place."""
        eps = 1e-6
        total_w = float(w.sum()) + eps
        total_s = float((w * s).sum()) + eps
        hw = hit @ w
        recall = np.minimum(hw / np.maximum(beats_w, eps), 1.0)
        share_s = (hit @ (w * s)) / total_s
        share_n = hw / total_w
        placed_share = (placed @ w) / total_w
        prior = -0.5 * (np.log(60.0 / (period * self.prior_bpm)) / self.prior_width) ** 2
        return (
            _W_RECALL * np.log(recall + eps)
            + (1.0 + _W_CONTRAST) * np.log(share_s + eps)
            - _W_CONTRAST * np.log(share_n + eps)
            + _W_UNPLACED * np.log(placed_share + eps)
            + prior
        )

    @staticmethod
    def _beats_in(first: np.ndarray, last: float, phase: np.ndarray, step: np.ndarray, decay: np.ndarray) -> np.ndarray:
        """Recency-weighted count of grid points phase + k*step in [first, last] (weight
        exp(-decay * (last - point)) each), in closed form."""
        k_lo = np.ceil((first - phase) / step - 1e-9)
        k_hi = np.floor((last - phase) / step + 1e-9)
        count = np.maximum(k_hi - k_lo + 1.0, 0.0)
        r = np.exp(-decay * step)
        top = np.exp(-decay * (last - (phase + k_hi * step)))
        return top * (1.0 - r**count) / np.maximum(1.0 - r, 1e-12)

    @staticmethod
    def _quantise(x: np.ndarray, period: np.ndarray | float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Nearest grid positions of beat positions x (the simpler one when nearly as near):
        (positions, levels, seconds off)."""
        base = np.floor(x)
        d = ((x - base)[..., None] - _FRACS) * (np.asarray(period)[..., None] / _PLACE_SD_S)
        cost = 0.5 * d * d + _LEVEL_COST
        k = np.argmin(cost, axis=-1)
        q = base + _FRACS[k]
        return q, _LEVEL[k], (x - q) * period

    # ------------------------------------------------------------------------------ induction

    def _induce(self, keep_bonus: float) -> None:
        """Choose tempo and phase afresh from the segment's recent onsets, the running grid among
        the candidates (with a bonus, so that it is kept unless clearly worse)."""
        n = self._n
        lo = max(self._seg0, n - _INDUCE_EVENTS)
        t = self._t[lo:n]
        m = n - lo
        anchors = np.arange(max(m - _ANCHORS, 0), m)
        ia, ja = np.meshgrid(anchors, np.arange(m), indexing="ij")
        ia, ja = ia.ravel(), ja.ravel()
        keep = ia != ja
        ia, ja = ia[keep], ja[keep]
        spans = np.abs(t[ia] - t[ja])
        period = (spans[:, None] / _SPANS[None, :]).ravel()
        phase = np.repeat(t[ia], len(_SPANS))
        ok = (period >= self.min_period) & (period <= self.max_period)
        period, phase = period[ok], phase[ok]
        # The running grid, as a candidate: its beat nearest the last onset.
        cur_phase = self.time_at(round(self._qa + (t[-1] - self._ta) / self._period))
        period = np.append(period, self._period)
        phase = np.append(phase, cur_phase)
        x = (t[None, :] - phase[:, None]) / period[:, None]
        q, lvl, res = self._quantise(x, period[:, None])
        tol = 0.06 + 0.08 * period[:, None]
        placed = (np.abs(res) <= tol) & (lvl < 4)
        hit = placed & (lvl == 0)
        w = np.exp(-(t[-1] - t) / _RECENCY_S)
        s = self._salience(lo)
        beats = self._beats_in(np.full(len(period), t[0] - 0.05), t[-1] + 0.05, phase, period, np.full(len(period), 1.0 / _RECENCY_S))
        score = self._score(hit.astype(float), placed.astype(float), w, s, beats, period)
        # Timing fit, about each grid's mean offset: tracking re-fits the phase anyway.
        wp = w * placed
        sw = np.maximum(wp.sum(axis=1), 1e-9)
        off = (wp * res).sum(axis=1) / sw
        score -= _W_FIT * 0.5 * ((wp * ((res - off[:, None]) / _FIT_SD_S) ** 2).sum(axis=1) / sw)
        score[-1] += keep_bonus
        best = int(np.argmax(score))
        if best == len(score) - 1 and keep_bonus > 0:
            self._place_last()
            return
        # Number the chosen grid on from the running one, so that the present keeps its beat count.
        x_old = self._qa + (t[-1] - self._ta) / self._period
        shift = round(x_old - x[best, -1])
        if keep_bonus > 0 and lo > 0:  # a restart elsewhere: what came before the pause no longer fits
            self._drop(lo)
            lo, n = 0, self._n
        self._q[lo:n] = q[best] + shift
        self._lvl[lo:n] = np.where(placed[best], lvl[best], 4)
        self._res[lo:n] = res[best]
        self._q[:lo] = np.nan  # older onsets (beyond induction's reach) are not re-read
        self._period = float(period[best])
        self._ta, self._qa = float(t[-1]), float(x[best, -1] + shift)
        self._pending = 0

    def _drop(self, k: int) -> None:
        n = self._n
        for a in (self._t, self._vel, self._notes, self._q, self._lvl, self._res):
            a[: n - k] = a[k:n]
        self._n = n - k
        self._seg0 = max(self._seg0 - k, 0)

    # ------------------------------------------------------------------------------ tracking

    def _place_last(self) -> None:
        i = self._n - 1
        x = self._qa + (self._t[i] - self._ta) / self._period
        q, lvl, res = self._quantise(np.array([x]), self._period)
        self._q[i], self._lvl[i], self._res[i] = q[0], lvl[0], res[0]

    def _reconsider_metre(self) -> None:
        """Compare the grid with its metrical relatives on the positions already placed, and switch
        to one that wins clearly and twice in a row (renumbered to keep the present's beat count)."""
        n = self._n
        valid = np.flatnonzero(np.isfinite(self._q[:n]) & (self._lvl[:n] < 4))
        if len(valid) < 4:
            return
        q = self._q[valid]
        t = self._t[valid]
        recent = q[-_OFFSET_EVENTS:]
        fs: list[float] = []
        offs: list[float] = []
        for f in _FACTORS:
            o = np.unique(np.round(np.mod(recent, f) * 12.0) / 12.0)
            o = o[o < f - _EXACT]
            if f == 1.0:
                o = np.union1d(o, [0.0])
            fs.extend([f] * len(o))
            offs.extend(o.tolist())
        f_a = np.array(fs)
        off_a = np.array(offs)
        period = self._period * f_a
        ok = ((period >= self.min_period * 0.999) & (period <= self.max_period * 1.001)) | (f_a == 1.0)
        f_a, off_a, period = f_a[ok], off_a[ok], period[ok]
        cur = int(np.flatnonzero((f_a == 1.0) & (np.abs(off_a) < _EXACT))[0])
        y = (q[None, :] - off_a[:, None]) / f_a[:, None]
        frac = y - np.floor(y)
        on_grid = np.abs(frac[..., None] - _FRACS).min(axis=-1) < 1e-5
        hit = np.minimum(frac, 1.0 - frac) < 1e-5
        lvl = self._lvl[valid]
        w = np.exp(-(t[-1] - t) / _RECENCY_S)
        s = self._salience(0)[valid]
        decay = self._period / _RECENCY_S  # per old beat
        beats = self._beats_in(np.full(len(f_a), q[0]), float(q[-1]), off_a, f_a, np.full(len(f_a), decay))
        score = self._score(hit.astype(float), (on_grid & (lvl[None, :] < 4)).astype(float), w, s, beats, period)
        others = np.delete(score, cur)
        best_other = int(np.argmax(others))
        best = best_other + (best_other >= cur)
        self._margin = float(score[cur] - others[best_other]) if len(others) else 1.0
        if score[best] <= score[cur] + _SWITCH_MARGIN:
            self._pending = 0
            return
        self._pending += 1
        if self._pending < _SWITCH_AFTER:
            return
        f, off = float(f_a[best]), float(off_a[best])
        x_now = self._qa + (self._t[n - 1] - self._ta) / self._period
        shift = round(x_now - (x_now - off) / f)
        qa = (self._qa - off) / f + shift
        allq = self._q[:n]
        newq = (allq - off) / f + shift
        fr = newq - np.floor(newq)
        d = np.abs(fr[:, None] - _FRACS)
        k = np.argmin(d, axis=1)
        exact = d[np.arange(n), k] < 1e-5
        self._q[:n] = np.floor(newq) + _FRACS[k]
        self._lvl[:n] = np.where(exact, _LEVEL[k], 4)
        self._period *= f
        self._qa = qa
        self._pending = 0
        self._margin = 0.0

    def _fit(self) -> None:
        """Phase and period from the placed onsets: weighted least squares of time on position with
        a ridged curvature term (the tempo drifting), read off at the newest onset. Across a pause
        the drift may change (a knot at the last onset before it): the tempo goes on as it was
        until the new onsets show otherwise."""
        n = self._n
        ok = np.isfinite(self._q[:n])
        if ok.sum() < 2:
            return
        idx = np.flatnonzero(ok)
        q = self._q[idx]
        t = self._t[idx]
        q_last = float(q[-1])
        u = q - q_last
        if np.ptp(u) < 0.5:
            return
        w0 = _FIT_WEIGHT[self._lvl[idx]] * np.exp(u * (math.log(2.0) / _FIT_HALFLIFE_BEATS))
        before = idx < self._seg0
        if before.any() and not before.all():
            uk = float(u[before][-1])
            d2 = (u - uk) ** 2
            x = np.stack([np.ones_like(u), u, np.where(before, d2, 0.0), np.where(before, 0.0, d2)], axis=1)
        else:
            uk = 0.0
            x = np.stack([np.ones_like(u), u, np.zeros_like(u), u * u], axis=1)
        ridge = np.array([0.0, 0.0, _CURVE_RIDGE, _CURVE_RIDGE])
        w = w0
        for _ in range(2):  # least squares, then again with onsets far off the first fit weighed down
            xw = x * w[:, None]
            a = xw.T @ x + np.diag(ridge)
            try:
                coef = np.linalg.solve(a, xw.T @ t)
            except np.linalg.LinAlgError:
                return
            if not np.all(np.isfinite(coef)):
                return
            res = t - x @ coef
            w = w0 / (1.0 + (res / _ROBUST_S) ** 2)
        # Keep the drift only as far as the data show it (it costs precision when the tempo holds):
        # shrink each curvature by its significance and re-fit phase and period under it.
        sigma2 = max(float((w * res * res).sum() / w.sum()), _SHRINK_FLOOR_S**2)
        try:
            var = np.diag(np.linalg.inv(a))[2:] * sigma2
        except np.linalg.LinAlgError:
            return
        c = coef[2:]
        c = c * c * c / (c * c + _SHRINK_K * var + 1e-30)
        y = t - x[:, 2:] @ c
        xw = x[:, :2] * w[:, None]
        try:
            lin = np.linalg.solve(xw.T @ x[:, :2], xw.T @ y)
        except np.linalg.LinAlgError:
            return
        coef = np.concatenate([lin, c])
        ta = float(coef[0] + coef[3] * uk * uk)
        period = float(coef[1] - 2.0 * coef[3] * uk)
        period = min(max(period, self.min_period * 0.8), self.max_period * 1.25)
        self._ta, self._qa, self._period = ta, q_last, period
        self._rms = float(np.sqrt((w0 * res * res).sum() / w0.sum()))
