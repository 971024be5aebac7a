"""`ripieno-train eval`: a model scored the way the daemon runs it, against the baselines.

Per file, every note except the first is predicted from the notes before it in that file only,
streamed one event at a time through the model's `Stream` (online adaptation included, reset
between files), exactly as the daemon would. The baselines score the very same notes:

- pitch_nll: mean negative log-likelihood of the true pitch, nats per predicted note (micro-
  averaged over all files), from the distribution for the true note's part (the lead's, or the
  accompaniment's where a file has parts); pitch_acc: how often the most probable pitch was the
  true one. step_nll: the timing head's NLL of the true step bin (beats), given the true pitch.
- jsd_pitch / jsd_step / jsd_duration: each file of at least 4 notes is continued from its
  first half by sampling (temperature, seeded rng; the stream forked at the half-way point, the
  sampled notes observed as the lead's, without teaching the online model); the histograms of all continuations are compared
  with those of the true second halves they replace (JSD in bits, see metrics.py; step and
  duration over the encoding's beat bins).
- baseline_unigram_nll, baseline_markov_nll: markov.py's baselines trained on the model's
  training split.

Where the baselines' training split comes from, first match wins:
1. `--train-corpus NAMES` / `--train-midi DIR`: rebuilt from that data.
2. `--baseline FILE`, or else `<checkpoint>.baseline.npz` next to the checkpoint (for the bundled
   model: model/weights/default.baseline.npz): a stored copy (`markov.Baselines`), so eval
   needs neither the corpus nor minutes of conversion.
3. The checkpoint's meta (written by `fit`): meta["data"]["corpus"] (music21 names) or
   meta["data"]["midi"] (a folder), with meta["data"]["split"]["val_fraction"/"test_fraction"];
   fit's dedupe and hash split give the same training pieces again (checked against
   meta["data"]["train_pieces"] when present).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from ripieno.model.encoding import BEAT_VALUES, Encoding
from ripieno.model.events import NoteEvent, array_to_events
from ripieno.training import metrics
from ripieno.training.markov import Baselines
from ripieno.training.pieces import Piece, dedupe, split

log = logging.getLogger(__name__)

KEYS = ("files", "events", "pitch_nll", "pitch_acc", "step_nll", "jsd_pitch", "jsd_step", "jsd_duration", "baseline_unigram_nll", "baseline_markov_nll")
MIN_CONTINUE = 4  # notes a file needs to be continued from its first half


class EvalError(Exception):
    """An evaluation that cannot run; str() is the one line for the user."""


class StreamLike(Protocol):
    def predict(self, role: Any = ...) -> Any: ...  # .pitch_probs (128,)
    def head_probs(self, pitch: int) -> dict[str, np.ndarray]: ...
    def sample(self, temperature: float, rng: np.random.Generator, **kw: Any) -> NoteEvent: ...
    def fork(self) -> StreamLike: ...
    def observe(self, event: NoteEvent, learn: bool | None = None) -> None: ...
    def reset(self) -> None: ...


def _stream_factory(model: Any) -> Callable[[], StreamLike]:
    """A Checkpoint gives the daemon's Stream; anything else is taken as a factory of stream-likes."""
    from ripieno.model.checkpoint import Checkpoint
    from ripieno.model.stream import Stream

    if isinstance(model, Checkpoint):
        return lambda: Stream(model)
    if not callable(model):
        raise EvalError(f"expected a Checkpoint or a stream factory, got {type(model).__name__}")
    return model


def evaluate(
    checkpoint_or_stream_factory: Any,
    pieces: Sequence[Piece],
    train_pieces_for_baseline: Sequence[Piece] | Baselines,
    temperature: float = 1.0,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, float | int]:
    """The eval figures (KEYS) of a model on pieces; see the module docstring for definitions."""
    stream = _stream_factory(checkpoint_or_stream_factory)()
    rng = np.random.default_rng(seed)
    base = train_pieces_for_baseline
    if not isinstance(base, Baselines):
        base = Baselines.train(base)
    unigram, markov = base.unigram, base.rival()
    n_events = 0
    total = {"model": 0.0, "unigram": 0.0, "markov": 0.0, "step": 0.0}
    correct = 0
    true_tail: list[np.ndarray] = []
    sampled_tail: list[np.ndarray] = []
    files = 0
    for piece in tqdm(pieces, unit="file", desc="eval", disable=not progress):
        events = array_to_events(piece.events)
        if not events:
            continue
        files += 1
        stream.reset()
        half = len(events) // 2 if len(events) >= MIN_CONTINUE else -1
        truth_p = np.empty(len(events) - 1)
        for t, e in enumerate(events):
            if t == half:
                sampled_tail.append(_continue(stream.fork(), len(events) - half, temperature, rng, events[t - 1]))
                true_tail.append(piece.events[half:, :3].astype(np.float64))
            if t > 0:
                probs = stream.predict(e.role).pitch_probs
                truth_p[t - 1] = probs[e.pitch]
                correct += int(np.argmax(probs) == e.pitch)
                step_p = stream.head_probs(e.pitch)["step"]
                total["step"] -= math.log(max(float(step_p[int(Encoding.time_bin(e.step))]), 1e-300))
            stream.observe(e)
        pitches = [e.pitch for e in events]
        total["model"] += metrics.nll(truth_p)
        total["unigram"] += unigram.piece_nll(pitches)[0]
        total["markov"] += markov.piece_nll(pitches)[0]
        n_events += len(events) - 1
    if n_events == 0:
        raise EvalError("nothing to evaluate: no file has two or more notes")
    out: dict[str, float | int] = {
        "files": files,
        "events": n_events,
        "pitch_nll": total["model"] / n_events,
        "pitch_acc": correct / n_events,
        "step_nll": total["step"] / n_events,
        **_jsds(true_tail, sampled_tail),
        "baseline_unigram_nll": total["unigram"] / n_events,
        "baseline_markov_nll": total["markov"] / n_events,
    }
    return {k: out[k] for k in KEYS}


def _continue(stream: StreamLike, n: int, temperature: float, rng: np.random.Generator, last: NoteEvent) -> np.ndarray:
    """(n, 3) pitch, step, duration of n lead notes sampled one after another from the stream,
    each placed in the metre after `last` (the last observed event)."""
    rows = np.empty((n, 3))
    pos, bar = last.pos, last.bar
    for i in range(n):
        e = stream.sample(temperature, rng)
        rows[i] = (e.pitch, e.step, e.duration)
        pos = pos + e.step
        if bar > 0:
            pos %= bar
        stream.observe(NoteEvent(e.pitch, e.step, e.duration, e.velocity, e.role, pos, bar), learn=False)
    return rows


def _jsds(true_tail: list[np.ndarray], sampled_tail: list[np.ndarray]) -> dict[str, float]:
    if not true_tail:
        return {"jsd_pitch": math.nan, "jsd_step": math.nan, "jsd_duration": math.nan}
    t, s = np.concatenate(true_tail), np.concatenate(sampled_tail)
    return {
        "jsd_pitch": metrics.jsd(metrics.pitch_histogram(t[:, 0]), metrics.pitch_histogram(s[:, 0])),
        "jsd_step": metrics.jsd(_beat_histogram(t[:, 1]), _beat_histogram(s[:, 1])),
        "jsd_duration": metrics.jsd(_beat_histogram(t[:, 2]), _beat_histogram(s[:, 2])),
    }


def verdict(result: dict[str, Any]) -> str:
    """One plain sentence: does the model beat its baselines on these files?"""
    nll, markov, unigram = result["pitch_nll"], result["baseline_markov_nll"], result["baseline_unigram_nll"]
    if nll >= unigram:
        return f"verdict: the model does NOT beat even the pitch frequencies (pitch NLL {nll:.3f} vs unigram {unigram:.3f}): it is untrained or these files are far from its training data"
    if nll >= markov:
        return f"verdict: the model beats the unigram ({unigram:.3f}) but NOT the Markov rival (pitch NLL {nll:.3f} vs {markov:.3f})"
    return f"verdict: the model beats both baselines: pitch NLL {nll:.3f} is {100 * (1 - nll / markov):.1f} % below the Markov rival ({markov:.3f}) and {100 * (1 - nll / unigram):.1f} % below the unigram ({unigram:.3f})"


def _beat_histogram(beats: np.ndarray) -> np.ndarray:
    """Counts (len(BEAT_VALUES),) of steps or durations in beats over the encoding's time bins."""
    return np.bincount(Encoding.time_bin(np.asarray(beats).reshape(-1)), minlength=len(BEAT_VALUES)).astype(np.float64)


# --- where the baselines' training pieces come from ---------------------------------------


def baselines_for(ck: Any, train_corpus: list[str] | None = None, train_midi: Path | None = None, stored: Path | None = None) -> Baselines:
    """The baselines for a checkpoint, by the precedence in the module docstring."""
    data = dict(ck.meta.get("data") or {})
    if not (train_corpus or train_midi is not None):
        sidecar = stored or (ck.path.with_suffix(".baseline.npz") if ck.path is not None else None)
        if sidecar is not None and (stored is not None or sidecar.is_file()):
            base = Baselines.load(sidecar)
            log.info("baselines from %s (trained on %s)", sidecar, base.meta.get("corpus") or base.meta.get("midi"))
            mine = {k: data.get(k) for k in ("corpus", "midi", "train_pieces") if data.get(k) is not None}
            if any(base.meta.get(k) != v for k, v in mine.items()):
                log.warning("%s was trained on %s, the checkpoint on %s: the baselines may not match its training split", sidecar, {k: base.meta.get(k) for k in mine}, mine)
            return base
    return Baselines.train(training_split(ck.meta, train_corpus, train_midi), {k: v for k, v in data.items() if k in ("corpus", "midi", "split")})


def training_split(meta: dict[str, Any], train_corpus: list[str] | None = None, train_midi: Path | None = None) -> list[Piece]:
    """The model's training pieces, rebuilt from checkpoint meta (or the overrides) with fit's dedupe and split."""
    data = dict(meta.get("data") or {})
    sp = data.get("split") or {}
    val, test = float(sp.get("val_fraction", 0.05)), float(sp.get("test_fraction", 0.05))
    if train_corpus:
        data = {"corpus": train_corpus}
    elif train_midi is not None:
        data = {"midi": str(train_midi)}
    if data.get("corpus"):
        from ripieno.training.corpus import load_corpus

        pieces = load_corpus(list(data["corpus"]))
    elif data.get("midi"):
        from ripieno.training.midi_io import read_midi_dir

        pieces = read_midi_dir(data["midi"])
    else:
        raise EvalError("the checkpoint does not record its training data (meta.data.corpus or meta.data.midi): pass --train-corpus NAMES or --train-midi DIR")
    train = split(dedupe(pieces), val=val, test=test)["train"]
    want = data.get("train_pieces")
    if want is not None and want != len(train):
        log.warning("rebuilt training split has %d pieces, the checkpoint recorded %d: the baselines may differ from training's", len(train), want)
    if not train:
        raise EvalError("the baselines' training split is empty")
    return train


# --- CLI ------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default", help="'default' (the bundled model) or a checkpoint path")
    p.add_argument("--midi", type=Path, required=True, metavar="DIR", help="evaluate every .mid/.midi under DIR, recursively")
    p.add_argument("--json", action="store_true", help="print only the JSON line")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--train-corpus", nargs="+", metavar="NAMES", help="baselines' training data, if the checkpoint does not record it")
    src.add_argument("--train-midi", type=Path, metavar="DIR", help="baselines' training data, if the checkpoint does not record it")
    src.add_argument("--baseline", type=Path, metavar="FILE", help="stored baselines (default: <checkpoint>.baseline.npz when it exists)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature of the continuations (JSDs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--offline", action="store_true", help="the network alone, without the Stream's online component (an ablation)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-play", action="store_true", help="skip the continuations through the engine (time and harmony figures)")
    p.add_argument("--play-temperature", type=float, default=0.9, help="temperature of the engine's continuations (the daemon's default)")
    p.add_argument("--accompany", choices=("bass", "chords", "voice"), default="bass", help="the accompaniment part the play figures use")


def run(args: argparse.Namespace) -> int:
    import torch

    from ripieno.model.blas import limit_blas_threads
    from ripieno.model.checkpoint import CheckpointError, load
    from ripieno.model.stream import Stream
    from ripieno.training.corpus import CorpusError
    from ripieno.training.markov import BaselineError
    from ripieno.training.midi_io import MidiReadError, midi_files, read_midi_dir

    # the streaming step is single-thread numpy, as in the daemon: BLAS threads only fight each other
    torch.set_num_threads(1)
    limit_blas_threads(1)
    try:
        ck = load(args.model)
        pieces = read_midi_dir(args.midi)
        if not pieces:
            raise EvalError(f"--midi {args.midi}: no readable MIDI files with notes")
        names = [n for a in (args.train_corpus or []) for n in a.split(",") if n]
        base = baselines_for(ck, names or None, args.train_midi, args.baseline)
        model = (lambda: Stream(ck, online=False)) if args.offline else ck
        result = evaluate(model, pieces, base, temperature=args.temperature, seed=args.seed, progress=not args.no_progress)
        if not args.no_play:
            from ripieno.model.play.engine import PlaySettings
            from ripieno.training.play_eval import evaluate_play

            factory = (lambda: Stream(ck, online=False)) if args.offline else (lambda: Stream(ck))
            settings = PlaySettings(temperature=args.play_temperature, accompany=args.accompany)
            result.update(evaluate_play(factory, midi_files(args.midi), settings, seed=args.seed, progress=not args.no_progress))
    except (EvalError, CheckpointError, CorpusError, MidiReadError, BaselineError, OSError) as e:
        log.error("%s", e)
        return 2
    if not args.json:
        for k in result:
            v = result[k]
            print(f"{k:22s} {v:.4f}" if isinstance(v, float) else f"{k:22s} {v}")  # noqa: T201 - CLI result
        print(verdict(result))  # noqa: T201 - CLI result
    # strict JSON: a figure that could not be computed (e.g. no file long enough to continue) is null
    print(json.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in result.items()}))
    return 0
