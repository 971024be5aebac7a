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

from ripieno.model.stream import Stream

from . import bench_step
from .config import Config
from ripieno.model.play.engine import Engine
from ripieno.model.play.keys import Event, KeyDown, KeyUp
from ripieno.model.play.scheduler import Scheduler

GHOST_S = 0.030  # a note shorter than this is a click, not a note (the eval's definition)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class _Sink:
    """The engine's Output: scheduled and then forgotten (nothing accumulates over a long run),
    except two defect counts a musician would hear: notes shorter than GHOST_S that left (flams,
    clicks) and a pitch struck again while it sounds. 0 is the only good figure for both."""

    def __init__(self, channel: int, polyphony: int) -> None:
        self.scheduler = Scheduler(channel, polyphony)
        self.sounding: dict[int, float] = {}
        self.ghost_notes = 0
        self.doubled_notes = 0

    def due(self, now: float) -> None:
        for t, msg in self.scheduler.due(now):
            kind, pitch = msg[0] & 0xF0, msg[1]
            if kind == 0x90 and msg[2] > 0:
                if pitch in self.sounding:
                    self.doubled_notes += 1
                self.sounding[pitch] = t
            elif kind in (0x80, 0x90) and pitch in self.sounding:
                if t - self.sounding.pop(pitch) < GHOST_S:
                    self.ghost_notes += 1

    def note(self, on: float, off: float, pitch: int, velocity: int) -> None:
        self.scheduler.add(on, off, pitch, velocity)

    def cut(self) -> None:
        self.scheduler.cut()

    def panic(self) -> None:
        self.scheduler.panic()


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
    from .service import single_thread

    single_thread()
    ck = bench_step.checkpoint_for(model)
    cfg = Config()
    cfg = dataclasses.replace(cfg, engine=dataclasses.replace(cfg.engine, mode="accompany", max_notes_per_s=24.0))
    stream = Stream(ck)
    out = _Sink(0, cfg.engine.max_polyphony)
    stats = _Steps()
    engine = Engine(cfg.engine, stream, out, np.random.default_rng(seed), stats)
    player = _player(np.random.default_rng(seed + 1))
    pending: list[Event] = []
    blocks = []
    per_block = max(1, events // 10)
    next_mark = per_block
    now = 0.0
    while stats.notes_in + stats.notes_out < events:
        if not pending:
            pending = [next(player), next(player)]
        ev = pending.pop(0)
        while True:  # engine wake-ups and due messages before the next input
            wake = min((t for t in (engine.next_wakeup(), out.scheduler.next_time()) if t is not None), default=None)
            if wake is None or wake > ev.t:
                break
            now = max(now, wake)
            engine.poll(now)
            out.due(now)
        now = max(now, ev.t)
        engine.handle(ev)
        engine.poll(now)
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
        "session_s": round(now, 1),
        "finite": all(b["finite"] for b in blocks),
        "ghost_notes": out.ghost_notes,
        "doubled_notes": out.doubled_notes,
        "step_p50_first_us": blocks[0]["step_p50_us"] if blocks else None,
        "step_p50_last_us": blocks[-1]["step_p50_us"] if blocks else None,
        "rss_first_mb": blocks[0]["rss_mb"] if blocks else None,
        "rss_last_mb": blocks[-1]["rss_mb"] if blocks else None,
        "blocks": blocks,
        "model": model,
    }
