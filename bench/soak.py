"""`ripieno bench soak`: one long session through the engine, checked for NaN and for growth.

A player improvises (a bounded random walk with chords) in accompany mode, so ripieno answers
all along and both roles go through one Stream, on a virtual clock as fast as the CPU allows.
Every tenth of the run records the median model-step time, the process's resident memory and
whether the recurrent state is finite. A long-running service must show flat lines here: the
online n-gram grows with *new* contexts only, everything else is preallocated or bounded.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
from collections.abc import Iterator

import numpy as np

from ripieno.daemon.config import Config
from ripieno.model.play.keys import Event, KeyDown, KeyUp
from ripieno.model.play.performance import Performance
from ripieno.model.stream import Stream

from . import step

GHOST_S = 0.030  # a note shorter than this is a click, not a note (the eval's definition)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class _Ears:
    """What a musician would hear as defects in the messages that left: notes shorter than GHOST_S
    (flams, clicks) and a pitch struck again while it sounds. 0 is the only good figure for both.
    Nothing else is kept, so nothing accumulates over a long run."""

    def __init__(self) -> None:
        self.sounding: dict[int, float] = {}
        self.ghost_notes = 0
        self.doubled_notes = 0

    def hear(self, messages: list[tuple[float, list[int]]]) -> None:
        for t, msg in messages:
            kind, pitch = msg[0] & 0xF0, msg[1]
            if kind == 0x90 and msg[2] > 0:
                if pitch in self.sounding:
                    self.doubled_notes += 1
                self.sounding[pitch] = t
            elif kind in (0x80, 0x90) and pitch in self.sounding:
                if t - self.sounding.pop(pitch) < GHOST_S:
                    self.ghost_notes += 1


@dataclasses.dataclass
class _Steps:
    notes_in: int = 0
    notes_out: int = 0
    dropped: int = 0
    block: list[float] = dataclasses.field(default_factory=list)

    def add_step(self, us: float) -> None:
        self.block.append(us)


def _player(rng: np.random.Generator) -> Iterator[Event]:
    t, pitch = 0.0, 60
    while True:
        pitch = int(np.clip(pitch + rng.integers(-5, 6), 36, 96))
        t += 0.0 if rng.random() < 0.2 else float(rng.choice([0.125, 0.25, 0.5]))
        dur = float(rng.uniform(0.05, 0.4))
        yield KeyDown(t, 0, pitch, int(rng.integers(40, 110)))
        yield KeyUp(t + dur, 0, pitch, dur)  # releases may come out of order: the listener's job, not here


def run(model: str = "random:2x256", events: int = 1_000_000, seed: int = 0) -> dict:
    from ripieno.daemon.service import single_thread

    single_thread()
    ck = step.checkpoint_for(model)
    cfg = Config()
    cfg = dataclasses.replace(cfg, engine=dataclasses.replace(cfg.engine, mode="accompany", max_notes_per_s=24.0))
    stream = Stream(ck)
    ears = _Ears()
    stats = _Steps()
    perf = Performance(cfg.engine, stream, np.random.default_rng(seed), stats=stats, keep=False)
    player = _player(np.random.default_rng(seed + 1))
    pending: list[Event] = []
    blocks = []
    per_block = max(1, events // 10)
    next_mark = per_block
    while stats.notes_in + stats.notes_out < events:
        if not pending:
            pending = [next(player), next(player)]
        ev = pending.pop(0)
        while True:  # the engine's turns and due messages before the next input
            due = perf.next_deadline()
            if due is None or due > ev.t:
                break
            ears.hear(perf.advance(due))
        ears.hear(perf.feed(ev))
        ears.hear(perf.advance(ev.t))
        if stats.notes_in + stats.notes_out >= next_mark:
            h, c = stream.state
            blocks.append({
                "events": stats.notes_in + stats.notes_out,
                "step_p50_us": round(statistics.median(stats.block), 1),
                "rss_mb": round(_rss_mb(), 1),
                "finite": bool(np.isfinite(h).all() and np.isfinite(c).all()),
            })
            stats.block.clear()
            next_mark += per_block
    return {
        "events": stats.notes_in + stats.notes_out,
        "player_notes": stats.notes_in,
        "ripieno_notes": stats.notes_out,
        "session_s": round(perf.clock, 1),
        "finite": all(b["finite"] for b in blocks),
        "ghost_notes": ears.ghost_notes,
        "doubled_notes": ears.doubled_notes,
        "step_p50_first_us": blocks[0]["step_p50_us"] if blocks else None,
        "step_p50_last_us": blocks[-1]["step_p50_us"] if blocks else None,
        "rss_first_mb": blocks[0]["rss_mb"] if blocks else None,
        "rss_last_mb": blocks[-1]["rss_mb"] if blocks else None,
        "blocks": blocks,
        "model": model,
    }
