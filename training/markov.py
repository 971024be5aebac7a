"""The baselines a model must beat, scored exactly like the model: per file, each note after the first.

- Unigram: pitch frequencies of the training split (add-one smoothed); the floor.
- The Markov rival (`MarkovBaseline`): a fixed-share Bayesian mixture (alpha = 0.05, uniform
  start, weights updated after every note) of (a) a Witten-Bell interpolated order-3 pitch model
  trained on the training split and (b) a Witten-Bell variable-order model (orders 0-16) that
  learns online from the file as it is heard. The mixture is `model.online.FixedShare`, the same
  code the Stream mixes its own online component with, so rival and model share one definition.
"""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ripieno.model.ngram import OnlineSequenceModel, WittenBell
from ripieno.model.online import FixedShare
from ripieno.training.pieces import Piece

N_PITCHES = 128
CORPUS_ORDER = 3
ONLINE_ORDER = 16
ALPHA = 0.05


def _pitch_lists(pieces: Iterable[Piece | np.ndarray | Sequence[int]]) -> list[list[int]]:
    out = []
    for p in pieces:
        arr = p.events[:, 0] if isinstance(p, Piece) else np.asarray(p)
        arr = arr[:, 0] if arr.ndim == 2 else arr
        out.append([int(x) for x in arr])
    return out


class Unigram:
    """Add-one smoothed pitch frequencies of the training pieces."""

    def __init__(self, pieces: Iterable[Piece | np.ndarray | Sequence[int]] = ()) -> None:
        counts = np.zeros(N_PITCHES, dtype=np.int64)
        for seq in _pitch_lists(pieces):
            counts += np.bincount(seq, minlength=N_PITCHES)[:N_PITCHES]
        self.counts = counts
        self.probs = (counts + 1.0) / (counts.sum() + N_PITCHES)

    @classmethod
    def from_counts(cls, counts: np.ndarray) -> Unigram:
        u = cls()
        u.counts = np.asarray(counts, dtype=np.int64).reshape(N_PITCHES)
        u.probs = (u.counts + 1.0) / (u.counts.sum() + N_PITCHES)
        return u

    def piece_nll(self, pitches: Sequence[int]) -> tuple[float, int]:
        """(summed NLL in nats, notes predicted) over every note but the first."""
        pitches = list(pitches)[1:]
        return float(-np.log(self.probs[pitches]).sum()) if pitches else 0.0, len(pitches)


def corpus_markov(pieces: Iterable[Piece | np.ndarray | Sequence[int]], order: int = CORPUS_ORDER) -> WittenBell:
    """The corpus expert (a): Witten-Bell order-`order` pitch model of the training pieces."""
    return WittenBell(order, N_PITCHES).fit(_pitch_lists(pieces))


class MarkovBaseline:
    """The rival: corpus Markov-3 and the file's own online VOM, mixed by fixed share."""

    def __init__(self, corpus: WittenBell, alpha: float = ALPHA, online_order: int = ONLINE_ORDER) -> None:
        self.corpus = corpus
        self.alpha = alpha
        self.online_order = online_order

    def piece_probs(self, pitches: Sequence[int]) -> np.ndarray:
        """Probability the mixture gave each note after the first, predicted from the notes before it."""
        pitches = [int(x) for x in pitches]
        online = OnlineSequenceModel(self.online_order, N_PITCHES)
        share = FixedShare(2, self.alpha)
        k = self.corpus.max_order
        out = np.empty(max(0, len(pitches) - 1))
        for t, x in enumerate(pitches):
            if t > 0:
                pa = self.corpus.prob(pitches[max(0, t - k) : t], x)
                pb = online.prob(x)
                w = share.weights
                out[t - 1] = w[0] * pa + w[1] * pb
                share.update((pa, pb))
            online.observe(x)
        return out

    def piece_nll(self, pitches: Sequence[int]) -> tuple[float, int]:
        """(summed NLL in nats, notes predicted) over every note but the first."""
        p = self.piece_probs(pitches)
        return float(-np.log(p).sum()), int(p.size)


@dataclass
class Baselines:
    """What the baselines learn from the training split, storable next to a checkpoint.

    Rebuilding them needs the training corpus (minutes to convert on a fresh machine); a stored
    copy (`<checkpoint>.baseline.npz`, plain integer arrays, no pickle) makes eval independent
    of it. `meta` says what they were trained on, to be compared with the checkpoint's.
    """

    unigram: Unigram
    corpus: WittenBell
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def train(cls, pieces: Sequence[Piece | np.ndarray | Sequence[int]], meta: dict[str, Any] | None = None) -> Baselines:
        return cls(Unigram(pieces), corpus_markov(pieces), {"train_pieces": len(pieces), **(meta or {})})

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:  # a file object: np.savez would otherwise append .npz to the name
            np.savez_compressed(f, unigram=self.unigram.counts, meta=np.array(json.dumps(self.meta, sort_keys=True)), **self.corpus.to_arrays())
        return path

    @classmethod
    def load(cls, path: str | Path) -> Baselines:
        """Read a stored copy; BaselineError naming the file if it is not one."""
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            return cls(Unigram.from_counts(arrays.pop("unigram")), WittenBell.from_arrays(arrays), json.loads(str(arrays.pop("meta"))))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            raise BaselineError(f"baseline {path}: unreadable ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None

    def rival(self) -> MarkovBaseline:
        return MarkovBaseline(self.corpus)


class BaselineError(Exception):
    """A stored baseline that cannot be used; str() is one line naming the file."""


def mean_nll(model: Unigram | MarkovBaseline, pieces: Iterable[Piece | np.ndarray | Sequence[int]]) -> float:
    """Nats per predicted note over all pieces (NaN if nothing was predicted)."""
    total, n = 0.0, 0
    for seq in _pitch_lists(pieces):
        s, k = model.piece_nll(seq)
        total += s
        n += k
    return total / n if n else math.nan


def _alone(corpus: WittenBell, pieces: Sequence[Piece]) -> float:
    """Nats per predicted note of expert (a) by itself."""
    total, n = 0.0, 0
    for seq in _pitch_lists(pieces):
        for t in range(1, len(seq)):
            total -= math.log(corpus.prob(seq[max(0, t - corpus.max_order) : t], seq[t]))
            n += 1
    return total / n if n else math.nan


def _alone_online(pieces: Sequence[Piece]) -> float:
    """Nats per predicted note of expert (b) by itself (it starts each file knowing nothing)."""
    total, n = 0.0, 0
    for seq in _pitch_lists(pieces):
        online = OnlineSequenceModel(ONLINE_ORDER, N_PITCHES)
        for t, x in enumerate(seq):
            if t:
                total -= math.log(online.prob(x))
                n += 1
            online.observe(x)
    return total / n if n else math.nan


def _timings_us(pieces: Sequence[Piece], corpus: WittenBell) -> dict[str, float]:
    """Per-note cost of the n-gram calls a Stream or the baseline makes, in microseconds."""
    import time

    obs, prd, cor = [], [], []
    for p in pieces:
        online = OnlineSequenceModel(ONLINE_ORDER, N_PITCHES)
        seq = [int(x) for x in p.events[:, 0]]
        for t, x in enumerate(seq):
            t0 = time.perf_counter()
            online.probs()
            t1 = time.perf_counter()
            online.observe(x)
            t2 = time.perf_counter()
            corpus.probs(seq[max(0, t - corpus.max_order) : t])
            t3 = time.perf_counter()
            prd.append(t1 - t0)
            obs.append(t2 - t1)
            cor.append(t3 - t2)
    out = {}
    for name, xs in (("online16_probs", prd), ("online16_observe", obs), ("corpus3_probs", cor)):
        a = np.asarray(xs) * 1e6
        out[f"{name}_p50_us"] = round(float(np.percentile(a, 50)), 2)
        out[f"{name}_p99_us"] = round(float(np.percentile(a, 99)), 2)
    return out


def _online_bytes_per_note(pieces: Sequence[Piece]) -> dict[str, float]:
    """Memory the online VOM holds after hearing all pieces back to back as one long performance."""
    import tracemalloc

    seq = [x for p in _pitch_lists(pieces) for x in p]
    tracemalloc.start()
    try:
        online = OnlineSequenceModel(ONLINE_ORDER, N_PITCHES)
        for x in seq:
            online.observe(x)
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return {"online16_notes": len(seq), "online16_contexts": online.model.n_contexts, "online16_bytes_per_note": round(held / max(1, len(seq)), 1)}


def main(argv: list[str] | None = None) -> int:
    """`python -m ripieno.training.markov --corpus NAMES`: baseline figures on the test split; last line JSON."""
    import argparse
    import logging
    import time

    from ripieno.training.corpus import CorpusError, load_corpus
    from ripieno.training.pieces import dedupe, split

    ap = argparse.ArgumentParser(prog="python -m ripieno.training.markov", description=main.__doc__)
    ap.add_argument("--corpus", nargs="+", default=["essenFolksong", "bach"])
    ap.add_argument("--val-fraction", type=float, default=0.05)
    ap.add_argument("--test-fraction", type=float, default=0.05)
    ap.add_argument("--save", type=Path, metavar="FILE", help="also store the baselines trained on the train split (e.g. next to a checkpoint as <name>.baseline.npz)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    try:
        pieces = load_corpus(args.corpus)
    except CorpusError as e:
        logging.getLogger(__name__).error("%s", e)
        return 2
    parts = split(dedupe(pieces), args.val_fraction, args.test_fraction)
    t0 = time.perf_counter()
    corpus = corpus_markov(parts["train"])
    fit_s = time.perf_counter() - t0
    test = parts["test"]
    result = {
        "corpus": args.corpus,
        "train_pieces": len(parts["train"]),
        "test_pieces": len(test),
        "test_events": int(sum(max(0, len(p) - 1) for p in test)),
        "unigram_nll": round(mean_nll(Unigram(parts["train"]), test), 4),
        "markov3_alone_nll": round(_alone(corpus, test), 4),
        "online_vom_alone_nll": round(_alone_online(test), 4),
        "baseline_markov_nll": round(mean_nll(MarkovBaseline(corpus), test), 4),
        "fit_markov3_s": round(fit_s, 2),
        "markov3_contexts": corpus.n_contexts,
        **_timings_us(test, corpus),
        **_online_bytes_per_note(test),
    }
    if args.save:
        split_meta = {"method": "sha256 of piece id", "val_fraction": args.val_fraction, "test_fraction": args.test_fraction}
        stored = Baselines(Unigram(parts["train"]), corpus, {"corpus": args.corpus, "split": split_meta, "train_pieces": len(parts["train"])})
        result["saved"] = str(stored.save(args.save))
        result["saved_bytes"] = args.save.stat().st_size
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
