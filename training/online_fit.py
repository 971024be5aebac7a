"""Fit how the Stream learns the piece: the per-order concentrations of `model.online.BlendedPitch`.

The network is trained first and frozen; then, on the validation pieces, every note is
predicted the way the Stream will predict it (the network's probability of the true pitch,
and for each context order of the piece's interval and pitch VOMs: the count of the true
symbol, the context's total and its number of distinct followers). Those few numbers per note
are all the blend's likelihood needs, so its 4 x (max_order + 1) concentrations are fitted by
gradient descent on the exact validation NLL in seconds, and written into a copy of the
checkpoint (`config.online`). The one approximation: the interval model's renormalisation when
an interval heard elsewhere would leave 0..127 is ignored while fitting (rare), not at play time.

`python -m ripieno.training.online_fit --model RUN/model.safetensors --out FILE`; last stdout line JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ripieno.model import checkpoint as ckpt
from ripieno.model import network
from ripieno.model.checkpoint import Checkpoint
from ripieno.model.ngram import OnlineSequenceModel, WittenBell
from ripieno.model.online import CORPUS_PREFIX, INTERVALS, MAX_ORDER, OnlineConfig

log = logging.getLogger(__name__)


class OnlineFitError(Exception):
    """A fit that cannot run; str() is one line for the user."""


@dataclass
class NoteStats:
    """Per predicted note: network probability of the truth, and (max_order + 1, 3) level stats per piece model."""

    net: np.ndarray  # (N,)
    pitch: np.ndarray  # (N, K + 1, 3): count of the true pitch, total, types per context order
    interval: np.ndarray  # (N, K + 1, 3): the same for the true interval
    corpus: np.ndarray  # (N,) probability the corpus n-gram gives the truth (zeros without one)


def network_probs(ck: Checkpoint, events: np.ndarray) -> np.ndarray:
    """(N - 1,) probability the network gives each note after the first (batched forward, same numbers as the Stream)."""
    model = network.model_of(ck)
    with torch.no_grad():
        tokens = torch.from_numpy(ck.encoding.encode(events))[None]
        hidden, _ = model(tokens)
        logp = torch.log_softmax(model.pitch_logits(hidden[0, :-1], tokens[0, 1:, 4]).double(), dim=-1)
        truth = tokens[0, 1:, 0]
        return logp.gather(1, truth[:, None])[:, 0].exp().numpy()


def collect(ck: Checkpoint, pieces: Sequence[np.ndarray], corpus: WittenBell | None = None, max_order: int = MAX_ORDER) -> NoteStats:
    """The statistics of every note after each piece's first, walking the piece models as the Stream does."""
    nets, pitch_rows, interval_rows, corpus_rows = [], [], [], []
    for events in pieces:
        pitches = [min(max(int(x), 0), 127) for x in np.rint(events[:, 0])]
        if len(pitches) < 2:
            continue
        nets.append(network_probs(ck, events))
        vom = OnlineSequenceModel(max_order, 128)
        ivom = OnlineSequenceModel(max_order, INTERVALS)
        ps = np.zeros((len(pitches) - 1, max_order + 1, 3))
        iv = np.zeros_like(ps)
        cp = np.zeros(len(pitches) - 1)
        for t, x in enumerate(pitches):
            if t > 0:
                if corpus is not None:
                    cp[t - 1] = corpus.prob(vom.history[max(0, len(vom.history) - corpus.max_order) :] if corpus.max_order else (), x)
                vom.level_stats(x, ps[t - 1])
                ivom.level_stats(x - pitches[t - 1] + 127, iv[t - 1])
                ivom.observe(x - pitches[t - 1] + 127)
            vom.observe(x)
        pitch_rows.append(ps)
        interval_rows.append(iv)
        corpus_rows.append(cp)
    if not nets:
        raise OnlineFitError("no piece with two or more notes to fit the online blend on")
    return NoteStats(np.concatenate(nets), np.concatenate(pitch_rows), np.concatenate(interval_rows), np.concatenate(corpus_rows))


def _blend_prob(stats: torch.Tensor, base: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """P(truth) of a piece model smoothed down to base, shortest order first (the recursion of WittenBell.blend)."""
    p = base
    for k in range(stats.shape[1]):
        count, total, types = stats[:, k, 0], stats[:, k, 1], stats[:, k, 2]
        beta = a[k] * types + b[k]
        p = torch.where(total > 0, (count + beta * p) / (total + beta), p)
    return p


def blend_nll(stats: NoteStats, config: OnlineConfig) -> float:
    """Mean NLL (nats) of the blend described by config on the collected notes."""
    t = _tensors(stats)
    g = torch.tensor(config.corpus_weight, dtype=torch.float64)
    with torch.no_grad():
        return float(-_prob(t, *(torch.tensor(getattr(config, n), dtype=torch.float64) for n in _NAMES), g, config.interval).log().mean())


_NAMES = ("pitch_a", "pitch_b", "interval_a", "interval_b")


def _tensors(stats: NoteStats) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(a).double() for a in (stats.net, stats.pitch, stats.interval, stats.corpus))


def _prob(t: tuple[torch.Tensor, ...], pa, pb, ia, ib, g, interval: bool) -> torch.Tensor:
    net, pitch, inter, corpus = t
    base = (1.0 - g) * net + g * corpus
    base = _blend_prob(inter, base, ia, ib) if interval else base
    return _blend_prob(pitch, base, pa, pb).clamp_min(1e-300)


def fit_blend(stats: NoteStats, interval: bool = True, use_corpus: bool = True, steps: int = 400, lr: float = 0.1) -> OnlineConfig:
    """Concentrations (and the corpus n-gram's share) minimising the mean NLL of the notes (Adam, from Witten-Bell)."""
    torch.manual_seed(0)
    k1 = stats.pitch.shape[1]
    t = _tensors(stats)
    # log-space parameters (exp, from Witten-Bell a = 1, b = e^-4): an order must be able to reach
    # "never trust these counts" (concentrations in the thousands), which softplus steps reach too slowly
    raw_a = [torch.zeros((k1,), dtype=torch.float64, requires_grad=True) for _ in range(2)]
    raw_b = [torch.full((k1,), -4.0, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    raw_g = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([*raw_a, *raw_b, raw_g], lr=lr)
    sp = torch.exp

    def share() -> torch.Tensor:
        return torch.sigmoid(raw_g) if use_corpus else torch.zeros((), dtype=torch.float64)

    for _ in range(steps):
        opt.zero_grad()
        loss = -_prob(t, sp(raw_a[0]), sp(raw_b[0]), sp(raw_a[1]), sp(raw_b[1]), share(), interval).log().mean()
        loss.backward()
        opt.step()
    values = [tuple(float(f"{float(x):.6g}") for x in sp(r).detach()) for r in (raw_a[0], raw_b[0], raw_a[1], raw_b[1])]
    values = [tuple(max(x, 1e-6) for x in v) for v in values]  # a + b > 0 at every order
    g = round(float(share().detach()), 6)
    return OnlineConfig(kind="blend", max_order=k1 - 1, interval=interval, corpus_weight=g, **dict(zip(_NAMES, values)))


def with_online(ck: Checkpoint, config: OnlineConfig, out: Path, meta_extra: dict, corpus: WittenBell | None = None) -> Path:
    """A copy of the checkpoint with config.online replaced (same weights) and the corpus n-gram as tables."""
    tables = {} if corpus is None or config.corpus_weight == 0 else {CORPUS_PREFIX + k: v.astype(np.int32) for k, v in corpus.to_arrays().items()}
    return ckpt.save(out, dataclasses.replace(ck.config, online=config), ck.weights, {**ck.meta, **meta_extra}, tables)


def splits(meta: dict) -> dict[str, list]:
    """The train/val/test pieces the checkpoint was trained with, rebuilt from its meta with fit's dedupe and split."""
    from ripieno.training.pieces import dedupe, split

    data = dict(meta.get("data") or {})
    sp = data.get("split") or {}
    if data.get("corpus"):
        from ripieno.training.corpus import load_corpus

        pieces = load_corpus(list(data["corpus"]), progress=False)
    elif data.get("midi"):
        from ripieno.training.midi_io import read_midi_dir

        pieces = read_midi_dir(data["midi"])
    else:
        raise OnlineFitError("the checkpoint does not record its training data (meta.data.corpus or meta.data.midi)")
    parts = split(dedupe(pieces), val=float(sp.get("val_fraction", 0.05)), test=float(sp.get("test_fraction", 0.05)))
    if not parts["val"] or not parts["train"]:
        raise OnlineFitError("the validation or training split is empty")
    return parts


def main(argv: list[str] | None = None) -> int:
    """Fit the online blend of --model on its validation split and write the result to --out; last line JSON."""
    from ripieno.model.checkpoint import CheckpointError
    from ripieno.training.corpus import CorpusError

    ap = argparse.ArgumentParser(prog="python -m ripieno.training.online_fit", description=main.__doc__)
    ap.add_argument("--model", required=True, help="checkpoint written by `ripieno-train fit`")
    ap.add_argument("--out", type=Path, required=True, help="where to write the checkpoint with its fitted online blend")
    ap.add_argument("--no-interval", action="store_true", help="blend the pitch VOM only (an ablation)")
    ap.add_argument("--no-corpus", action="store_true", help="no corpus n-gram in the bottom layer (an ablation)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    torch.set_num_threads(1)
    try:
        ck = ckpt.load(args.model)
        started = time.monotonic()
        from ripieno.training.markov import corpus_markov

        parts = splits(ck.meta)
        corpus = None if args.no_corpus else corpus_markov(parts["train"])
        # the online blend serves the lead's next note (an accompaniment note is the network's alone): fit it on lead-only pieces
        stats = collect(ck, [p.events for p in parts["val"] if not (p.events[:, 4] > 0.5).any()], corpus)
        net_nll = float(-np.log(np.maximum(stats.net, 1e-300)).mean())
        wb = blend_nll(stats, OnlineConfig(kind="blend", interval=not args.no_interval))
        config = fit_blend(stats, interval=not args.no_interval, use_corpus=corpus is not None)
        fitted = blend_nll(stats, config)
        result = {
            "checkpoint": str(args.out), "val_notes": int(stats.net.size), "val_net_nll": round(net_nll, 4),
            "val_blend_witten_bell_nll": round(wb, 4), "val_blend_fitted_nll": round(fitted, 4), "corpus_weight": config.corpus_weight,
            "interval": config.interval, "seconds": round(time.monotonic() - started, 1),
        }
        with_online(ck, config, args.out, {"online_fit": result}, corpus)
    except (OnlineFitError, CheckpointError, CorpusError, OSError, ValueError) as e:
        log.error("%s", e)
        return 2
    print(json.dumps(result))  # noqa: T201 - CLI result
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
