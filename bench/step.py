"""`ripieno bench step`: how long one streamed note costs, against the floor and the notebook way.

Three numbers, same weights, one thread:
- step: `Stream.observe` + `Stream.sample` (online component included), per event, p50/p99;
- floor: the LSTM's matrix work alone in bare numpy (per layer W_ih x + W_hh h + b and the
  gate nonlinearities, nothing else): what no streaming code can beat by much;
- naive_refeed: the notebook approach, re-running the full torch model over the last 512
  events to predict one new note.
model_spec is "default", a checkpoint path, or "random:LxH" (an untrained L-layer, H-wide
model of the default architecture: latency does not depend on the weights' values).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import numpy as np

from ripieno.model.blas import limit_blas_threads
from ripieno.model.checkpoint import Checkpoint, CheckpointError, load
from ripieno.model.config import ModelConfig
from ripieno.model.encoding import encode
from ripieno.model.events import NoteEvent, Role, events_to_array
from ripieno.model.stream import Stream

REFEED_WINDOW = 512
REFEED_REPS = 30
ROUNDS = 5
_RANDOM = re.compile(r"random:(\d+)x(\d+)$")


def checkpoint_for(model_spec: str) -> Checkpoint:
    """Load model_spec, or build an untrained model for "random:LxH"."""
    m = _RANDOM.match(model_spec)
    if not m:
        return load(model_spec)
    layers, hidden = int(m.group(1)), int(m.group(2))
    if not (1 <= layers <= 8 and 1 <= hidden <= 4096):
        raise CheckpointError(f"model {model_spec}: random:LxH needs 1 <= L <= 8 and 1 <= H <= 4096")
    import torch  # the re-feed rival needs torch anyway; a random model is built by it, as training would

    from ripieno.model.network import NoteLSTM, checkpoint_of

    torch.manual_seed(0)
    return checkpoint_of(NoteLSTM(ModelConfig(hidden=hidden, layers=layers)).eval(), {"random": True})


def player_events(n: int, rng: np.random.Generator) -> list[NoteEvent]:
    """A plausible stream of played notes: a bounded random walk with chords and varied timing."""
    pitch, out = 60, []
    for _ in range(n):
        pitch = int(np.clip(pitch + rng.integers(-5, 6), 36, 96))
        step = 0.0 if rng.random() < 0.2 else float(rng.choice([0.125, 0.25, 0.5, 1.0]) * rng.uniform(0.9, 1.1))
        out.append(NoteEvent(pitch, step, float(rng.uniform(0.1, 1.0)), int(rng.integers(40, 110)), Role.PLAYER))
    return out


def _percentiles_us(ns: list[int]) -> tuple[float, float]:
    a = np.asarray(ns, dtype=np.float64) / 1000.0
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def step_timer(ck: Checkpoint, warmup: list[NoteEvent], seed: int) -> Callable[[list[NoteEvent]], list[int]]:
    """A timer of observe + sample on one stream (warmed up, then reset): block(events) -> ns each."""
    stream, rng = Stream(ck, online=True), np.random.default_rng(seed)
    for e in warmup:
        stream.observe(e)
        stream.sample(0.9, rng)
    stream.reset()
    clock = time.perf_counter_ns

    def block(events: list[NoteEvent]) -> list[int]:
        times = []
        for e in events:
            t0 = clock()
            stream.observe(e)
            stream.sample(0.9, rng, low=21, high=108)
            times.append(clock() - t0)
        return times

    return block


def floor_timer(ck: Checkpoint, seed: int) -> Callable[[int], list[int]]:
    """A timer of the bare LSTM arithmetic for one event, in numpy, same weights: block(n) -> ns each."""
    w = ck.weights
    H, L = ck.config.hidden, ck.config.layers
    w_ih = [np.array(w[f"lstm.weight_ih_l{k}"]) for k in range(L)]
    w_hh = [np.array(w[f"lstm.weight_hh_l{k}"]) for k in range(L)]
    b = [w[f"lstm.bias_ih_l{k}"] + w[f"lstm.bias_hh_l{k}"] for k in range(L)]
    x0 = np.random.default_rng(seed).standard_normal(w_ih[0].shape[1]).astype(np.float32)
    h = np.zeros((L, H), np.float32)
    c = np.zeros((L, H), np.float32)

    def sig(v: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-v))

    clock = time.perf_counter_ns

    def block(n: int) -> list[int]:
        times = []
        for _ in range(n):
            t0 = clock()
            x = x0
            for k in range(L):
                g = w_ih[k] @ x + w_hh[k] @ h[k] + b[k]
                c[k] = sig(g[H : 2 * H]) * c[k] + sig(g[:H]) * np.tanh(g[2 * H : 3 * H])
                h[k] = sig(g[3 * H :]) * np.tanh(c[k])
                x = h[k]
            times.append(clock() - t0)
        return times

    block(100)  # warm-up
    return block


def refeed_timer(ck: Checkpoint, events: list[NoteEvent]) -> Callable[[int], list[int]]:
    """A timer of re-running torch over the last REFEED_WINDOW events for one prediction: block(reps) -> ns each."""
    import torch

    from ripieno.model.network import model_of

    model = model_of(ck)
    tokens = torch.from_numpy(encode(events_to_array(events[-REFEED_WINDOW:]), ck.encoding))[None]
    clock = time.perf_counter_ns

    def block(reps: int) -> list[int]:
        times = []
        with torch.inference_mode():
            for _ in range(reps):
                t0 = clock()
                out, _ = model(tokens)
                torch.softmax(model.pitch_logits(out[0, -1:]), -1)
                times.append(clock() - t0)
        return times

    block(3)  # warm-up
    return block


def run(model_spec: str = "default", events: int = 2000, seed: int = 0) -> dict:
    """Measure the streaming step; JSON-able dict with p50_us, p99_us, floor_us, naive_refeed_us."""
    import torch

    torch.set_num_threads(1)
    blas_threads = limit_blas_threads(1)
    ck = checkpoint_for(model_spec)
    evs = player_events(max(events, REFEED_WINDOW) + 100, np.random.default_rng(seed))
    step, floor_block, refeed = step_timer(ck, evs[:100], seed), floor_timer(ck, seed), refeed_timer(ck, evs)
    # Interleaved rounds, so a box whose speed drifts (a shared VM does) slows all three alike and
    # the ratios stay honest; measured one after another they were seen to disagree by 1.5x.
    step_ns: list[int] = []
    floor_ns: list[int] = []
    refeed_ns: list[int] = []
    per = max(1, events // ROUNDS)
    for r in range(ROUNDS):
        step_ns += step(evs[100 + r * per : 100 + (r + 1) * per])
        floor_ns += floor_block(per)
        refeed_ns += refeed(REFEED_REPS // ROUNDS)
    p50, p99 = _percentiles_us(step_ns)
    floor = _percentiles_us(floor_ns)[0]
    naive = _percentiles_us(refeed_ns)[0]
    cfg = ck.config
    return {
        "model": model_spec,
        "layers": cfg.layers,
        "hidden": cfg.hidden,
        "events": events,
        "p50_us": round(p50, 1),
        "p99_us": round(p99, 1),
        "floor_us": round(floor, 1),
        "naive_refeed_us": round(naive, 1),
        "p50_over_floor": round(p50 / floor, 2),
        "refeed_over_step": round(naive / p50, 1),
        "blas_threads": blas_threads,
    }


if __name__ == "__main__":  # python -m ripieno.bench.step [model] [events]
    import json
    import sys

    args = sys.argv[1:]
    print(json.dumps(run(args[0] if args else "random:2x256", int(args[1]) if len(args) > 1 else 2000)))
