"""`ripieno-train bench`: training throughput of each batching path, and TBPTT's flat memory.

Throughput: full training steps (batch gathering, forward, loss, backward, clipping, AdamW,
state carry) through the same `train_step` that `fit` runs, on the default architecture and
realistic note sequences (the corpus if named, else synthetic melodies with lengths spread over
16-128 notes, like folk songs and chorales). Packed and padded run over the same bucketed
batches; naive is the notebook way (random batches padded to their longest, given the same TBPTT
chunks, which for pieces of at most `tbptt` notes changes nothing); default is what
`fit --batching auto` uses on this device, timed on its own. Modes are interleaved in short
rounds (order rotated) and each mode's best round is reported, as timeit does: on a shared
machine the slower rounds measure the neighbours, not the code (default and padded are the same
configuration on CPU, and their medians differed by 1.9x under load while their best rounds
agreed within 4 %). Medians and every round are in the details.
Throughput counts real notes only (targets, not padding).

Memory: peak training memory of one pass over pieces of 1x and 4x a length, with TBPTT chunks
and with full BPTT as a control, each in a fresh subprocess: on CPU (Linux), the peak resident
set during the pass (VmHWM, reset just before it) minus the resident set before it (interpreter,
torch, model, optimizer state, data), so the figure is what training itself adds; on CUDA,
max_memory_allocated.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ripieno.model.network import ModelConfig, NoteLSTM

from .batching_choice import save_measurement
from .data import Batching, TrainStep, bucketed_order, gather_state, make_batch, plan_chunks, random_order, scatter_state, zero_state
from .fit import FitError, resolve_batching, resolve_device, Dist, train_step

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchSpec:
    hidden: int = 256
    layers: int = 2
    batch: int = 64
    tbptt: int = 128
    steps: int = 3  # timed steps per mode per round
    rounds: int = 12
    warmup: int = 2
    pieces: int = 1024  # synthetic pieces, lengths uniform in [min_len, max_len]
    min_len: int = 16
    max_len: int = 128
    mem_length: int = 256  # 1x piece length for the memory measurement (4x = 4 * this)
    mem_batch: int = 32


QUICK = BenchSpec(hidden=32, layers=1, batch=8, tbptt=32, steps=3, rounds=2, warmup=1, pieces=96, mem_length=64, mem_batch=4)


# ------------------------------------------------------------------------------------ notes


def synthetic_pieces(n: int, rng: np.random.Generator, min_len: int, max_len: int) -> list[np.ndarray]:
    """(N, 7) melodies in beats: a stepwise random walk with leaps and chords, dotted rhythms, phrase rests."""
    out = []
    for length in rng.integers(min_len, max_len + 1, size=n):
        moves = rng.choice([-7, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 7], size=length, p=[0.02, 0.04, 0.05, 0.1, 0.16, 0.12, 0.04, 0.12, 0.16, 0.1, 0.05, 0.02, 0.02])
        pitch = np.clip(rng.integers(55, 72) + np.cumsum(moves), 36, 96)
        beat = 1.0
        step = beat * rng.choice([0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0], size=length, p=[0.1, 0.1, 0.35, 0.05, 0.3, 0.05, 0.05])
        step[0] = 0.0
        dur = np.maximum(step, beat * 0.5) * rng.uniform(0.7, 1.0, size=length)
        vel = np.clip(rng.normal(80, 12, size=length), 1, 127).round()
        pos = np.cumsum(step) % 4.0
        out.append(np.stack([pitch, step, dur, vel, np.zeros(length), pos, np.full(length, 4.0)], axis=1).astype(np.float32))
    return out


def bench_pieces(spec: BenchSpec, corpus: Sequence[str] | None, rng: np.random.Generator) -> tuple[list[np.ndarray], str]:
    if not corpus:
        return synthetic_pieces(spec.pieces, rng, spec.min_len, spec.max_len), f"synthetic melodies, {spec.min_len}-{spec.max_len} notes"
    from .corpus import load_corpus

    pieces = [p.events for p in load_corpus(list(corpus)) if len(p) >= 2]
    if not pieces:
        raise FitError(f"corpus {corpus}: no pieces")
    return [pieces[i] for i in rng.permutation(len(pieces))[: spec.pieces]], f"corpus {','.join(corpus)}"


# ------------------------------------------------------------------------------- throughput


def _mode_runner(model: NoteLSTM, tokens: Sequence[np.ndarray], order: np.ndarray, batching: Batching, spec: BenchSpec, device: torch.device):
    """A closure running the next `steps` training steps of this mode; returns (notes, seconds)."""
    model = copy.deepcopy(model).to(device).train()
    step_module = TrainStep(model, batching)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    plan = plan_chunks([len(t) for t in tokens], order, spec.batch, spec.tbptt)
    state = zero_state(model.config.layers, spec.batch, model.config.hidden, device)
    position = 0

    def run(steps: int) -> tuple[int, float]:
        nonlocal state, position
        notes = 0
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            chunk = plan[position % len(plan)]
            position += 1
            batch = make_batch(tokens, chunk).to(device)
            _, new, rows = train_step(step_module, model, optimizer, batch, gather_state(state, chunk), 1.0)
            state = scatter_state(state, chunk, new)
            notes += rows
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return notes, time.perf_counter() - t0

    return run


def throughput(pieces: Sequence[np.ndarray], spec: BenchSpec, device: torch.device, default: Batching) -> dict[str, dict[str, Any]]:
    """Notes/s per mode over interleaved rounds: best, median and every round."""
    config = ModelConfig(hidden=spec.hidden, layers=spec.layers)
    torch.manual_seed(0)
    model = NoteLSTM(config)
    tokens = [config.encoding.encode(p) for p in pieces]
    lengths = [len(t) for t in tokens]
    bucketed = bucketed_order(lengths, spec.batch, np.random.default_rng(1))
    naive = random_order(lengths, spec.batch, np.random.default_rng(1))
    runners = {
        "packed": _mode_runner(model, tokens, bucketed, "packed", spec, device),
        "padded": _mode_runner(model, tokens, bucketed, "padded", spec, device),
        "naive": _mode_runner(model, tokens, naive, "padded", spec, device),
        "default": _mode_runner(model, tokens, bucketed, default, spec, device),
    }
    for run in runners.values():
        run(spec.warmup)
    rates: dict[str, list[float]] = {m: [] for m in runners}
    modes = list(runners)
    for r in range(spec.rounds):
        for mode in modes[r % len(modes) :] + modes[: r % len(modes)]:  # rotate: no mode always follows another
            notes, seconds = runners[mode](spec.steps)
            rates[mode].append(notes / seconds)
            log.info("round %d %-7s %8.0f notes/s", r + 1, mode, rates[mode][-1])
    return {m: {"median": statistics.median(v), "best": max(v), "rounds": [round(x, 1) for x in v]} for m, v in rates.items()}


# ----------------------------------------------------------------------------------- memory


def probe_memory(probe: dict[str, Any]) -> dict[str, float]:
    """Runs in a fresh process: one training pass over `batch` pieces of `length` notes."""
    torch.set_num_threads(int(probe.get("threads") or torch.get_num_threads()))
    device = torch.device(probe["device"])
    config = ModelConfig(hidden=probe["hidden"], layers=probe["layers"])
    torch.manual_seed(0)
    model = NoteLSTM(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    step_module = TrainStep(model, probe["batching"])
    rng = np.random.default_rng(0)
    pieces = synthetic_pieces(probe["batch"], rng, probe["length"] + 1, probe["length"] + 1)
    tokens = [config.encoding.encode(p) for p in pieces]
    lengths = [len(t) for t in tokens]
    # warm-up on a tiny slice: gradients, optimizer state and kernels exist before the baseline
    warm = plan_chunks([9] * len(tokens), range(len(tokens)), probe["batch"], None)[0]
    state = zero_state(config.layers, probe["batch"], config.hidden, device)
    train_step(step_module, model, optimizer, make_batch(tokens, warm).to(device), gather_state(state, warm), 1.0)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.max_memory_allocated(device)
    before_kb, method = _reset_peak_rss()
    plan = plan_chunks(lengths, range(len(tokens)), probe["batch"], probe["tbptt"])
    for chunk in plan:
        _, new, _ = train_step(step_module, model, optimizer, make_batch(tokens, chunk).to(device), gather_state(state, chunk), 1.0)
        state = scatter_state(state, chunk, new)
    after_kb = _status_kb("VmHWM") if method == "VmHWM" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"steps": len(plan), "baseline_mb": before_kb / 1024, "peak_rss_mb": after_kb / 1024, "train_mb": (after_kb - before_kb) / 1024, "method": method}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        out["train_mb"] = (torch.cuda.max_memory_allocated(device) - before) / 2**20
    return out


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> tuple[int, str]:
    """(resident KB now, method). Linux: reset the high-water mark so the pass's own peak is seen.

    Without that (no /proc), fall back to ru_maxrss, whose earlier peak (imports) may hide a
    small pass: the result is then a lower bound.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_kb("VmRSS"), "VmHWM"
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "ru_maxrss"


def measure_memory(spec: BenchSpec, device: torch.device, batching: Batching, threads: int | None) -> dict[str, dict[str, float]]:
    """Peak training memory for TBPTT and full BPTT at 1x and 4x length, one subprocess each."""
    results = {}
    for name, tbptt, factor in (("tbptt_1x", spec.tbptt, 1), ("tbptt_4x", spec.tbptt, 4), ("full_1x", None, 1), ("full_4x", None, 4)):
        probe = {"device": str(device), "hidden": spec.hidden, "layers": spec.layers, "batch": spec.mem_batch, "length": spec.mem_length * factor, "tbptt": tbptt, "batching": batching, "threads": threads}
        proc = subprocess.run([sys.executable, "-m", "ripieno.training.bench", "--probe", json.dumps(probe)], capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise FitError(f"memory probe {name} failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}")
        results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        log.info("memory %-8s length %5d: +%.1f MB (peak RSS %.1f MB)", name, probe["length"], results[name]["train_mb"], results[name]["peak_rss_mb"])
    return results


# -------------------------------------------------------------------------------------- CLI


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="last stdout line: the JSON result")
    p.add_argument("--quick", action="store_true", help="tiny model, few steps: checks the machinery, not the machine (not cached)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--corpus", nargs="+", metavar="NAMES", help="bench on corpus pieces (cached) instead of synthetic melodies")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="timed steps per mode per round")
    p.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    p.add_argument("--no-save", action="store_true", help="do not remember the faster batching for `fit --batching auto`")


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except FitError as e:
        log.error("%s", e)
        return 2


def _run(args: argparse.Namespace) -> int:
    spec = QUICK if args.quick else BenchSpec()
    if args.rounds or args.steps:
        spec = BenchSpec(**{**spec.__dict__, "rounds": args.rounds or spec.rounds, "steps": args.steps or spec.steps})
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device, Dist())
    default, why = resolve_batching("auto", device)
    pieces, source = bench_pieces(spec, args.corpus, np.random.default_rng(0))
    log.info("bench on %s: %d pieces (%s), %dx%d, batch %d, tbptt %d, default batching %s (%s)", device, len(pieces), source, spec.layers, spec.hidden, spec.batch, spec.tbptt, default, why)
    rates = throughput(pieces, spec, device, default)
    faster: Batching = "packed" if rates["packed"]["best"] > rates["padded"]["best"] else "padded"
    memory = {} if args.no_memory else measure_memory(spec, device, faster, args.threads)
    mb = {k: round(v["train_mb"], 1) for k, v in memory.items()}
    result = {
        "device": str(device),
        "packed_tokens_per_s": round(rates["packed"]["best"], 1),
        "padded_tokens_per_s": round(rates["padded"]["best"], 1),
        "naive_tokens_per_s": round(rates["naive"]["best"], 1),
        "default_batching": default,
        "default_tokens_per_s": round(rates["default"]["best"], 1),
        "tbptt_peak_mb_1x": mb.get("tbptt_1x"),
        "tbptt_peak_mb_4x": mb.get("tbptt_4x"),
        "full_bptt_peak_mb_1x": mb.get("full_1x"),
        "full_bptt_peak_mb_4x": mb.get("full_4x"),
        "details": {
            "quick": args.quick,
            "data": source,
            "model": f"{spec.layers}x{spec.hidden}",
            "batch": spec.batch,
            "tbptt": spec.tbptt,
            "threads": torch.get_num_threads(),
            "faster_batching": faster,
            "default_over_naive": round(rates["default"]["best"] / rates["naive"]["best"], 3),
            "default_over_faster": round(rates["default"]["best"] / rates[faster]["best"], 3),
            "statistic": "best of rounds (see module docstring)",
            "median_tokens_per_s": {m: round(v["median"], 1) for m, v in rates.items()},
            "rounds_tokens_per_s": {m: v["rounds"] for m, v in rates.items()},
            "memory_lengths": [spec.mem_length, 4 * spec.mem_length],
            "memory_batch": spec.mem_batch,
            "memory_peak_rss_mb": {k: round(v["peak_rss_mb"], 1) for k, v in memory.items()},
            "memory_note": "MB = peak resident set during the training pass (VmHWM reset before it) minus the resident set before it; fresh subprocess each" if device.type == "cpu" else "train_mb = torch.cuda.max_memory_allocated during the pass",
        },
    }
    if memory:
        result["details"]["tbptt_4x_over_1x"] = round(mb["tbptt_4x"] / max(mb["tbptt_1x"], 1e-9), 3)
        result["details"]["full_4x_over_1x"] = round(mb["full_4x"] / max(mb["full_1x"], 1e-9), 3)
    if not (args.quick or args.no_save):
        path = save_measurement(device, {"faster": faster, "packed_tokens_per_s": result["packed_tokens_per_s"], "padded_tokens_per_s": result["padded_tokens_per_s"], "measured": time.strftime("%Y-%m-%d %H:%M:%S")})
        log.info("remembered %s as the faster batching on %s in %s", faster, device, path)
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            if k != "details":
                print(f"{k:24s} {v}")
    return 0


def _probe_main(argv: list[str]) -> int:
    """`python -m ripieno.training.bench --probe JSON`: one memory measurement, JSON on stdout."""
    if len(argv) != 2 or argv[0] != "--probe":
        print("usage: python -m ripieno.training.bench --probe JSON (use `ripieno-train bench`)", file=sys.stderr)
        return 2
    print(json.dumps(probe_memory(json.loads(argv[1]))))
    return 0


if __name__ == "__main__":
    sys.exit(_probe_main(sys.argv[1:]))
