"""Live settings beyond temperature: `variation` and `accompany`, from a command to the engine.

The engine's `set_state` takes them as keywords (the four positional parameters keep working);
the service passes what the command layer publishes; a call answer samples with the variation
last set. The model is the tiny untrained test checkpoint: what it plays is noise, but which
settings it plays with is the engine's.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import numpy as np
import pytest

from ripieno.daemon import service
from ripieno.daemon.config import EngineConfig, parse
from ripieno.model import checkpoint
from ripieno.model.play.engine import Engine
from ripieno.model.play.keys import KeyDown, KeyUp
from ripieno.model.play.performance import Performance, run_virtual
from ripieno.model.stream import Stream
from tiny_model import tiny_checkpoint


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("m") / "tiny.safetensors")


class RecordingStream:
    """A real Stream that remembers the variation of every sample it was asked for."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.variations: list[float] = []

    def sample(self, *args: Any, **kw: Any) -> Any:
        self.variations.append(kw.get("variation", 0.0))
        return self.stream.sample(*args, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def make(model, **engine_kw) -> tuple[Engine, Performance, RecordingStream]:
    cfg = dataclasses.replace(EngineConfig(), **engine_kw)
    stream = RecordingStream(Stream(checkpoint.load(model)))
    perf = Performance(cfg, stream, np.random.default_rng(1))
    return perf.engine, perf, stream


def test_set_state_takes_every_setting_past_the_mode_by_name(model):
    """Issue #14: set_state(mode, enabled, temperature, silence_s) let two floats be swapped silently."""
    engine, _, _ = make(model, variation=0.3, accompany="bass")
    engine.set_state("call", enabled=True, temperature=1.1, silence_s=0.9)  # variation and style untouched
    assert (engine.temperature, engine.silence_s, engine.variation, engine.accompany) == (1.1, 0.9, 0.3, "bass")
    engine.set_state("call", enabled=True, temperature=1.1, silence_s=0.9, variation=0.8, accompany="voice")
    assert (engine.variation, engine.accompany) == (0.8, "voice")
    engine.set_state("call", enabled=True, temperature=1.1, silence_s=0.9, variation=0.0)
    assert (engine.variation, engine.accompany) == (0.0, "voice")
    with pytest.raises(TypeError):
        engine.set_state("call", True, 1.1, 0.9)  # keyword-only past the mode
    with pytest.raises(ValueError, match="accompany must be one of bass, chords, voice"):
        engine.set_state("off", enabled=True, temperature=0.5, silence_s=0.5, accompany="drums")
    assert (engine.mode, engine.temperature, engine.accompany) == ("call", 1.1, "voice")  # refused: nothing changed


def test_a_call_answer_samples_with_the_variation_last_set(model):
    engine, out, stream = make(model, variation=0.5, silence_s=0.3)
    engine.set_state("call", enabled=True, temperature=0.9, silence_s=0.3, variation=0.85)
    t = 0.0
    for i, p in enumerate([60, 62, 64, 65, 67, 65, 64, 62]):
        t = 0.25 * i
        for ev in (KeyDown(t, 0, p, 90), KeyUp(t + 0.2, 0, p, 0.2)):
            out.feed(ev)
            out.advance(ev.t)
    run_virtual(out, [], until=t + 4.0)  # the virtual clock, from one deadline to the next, for 4 s
    assert stream.variations, "no answer was planned"
    assert set(stream.variations) == {0.85}


async def test_the_service_hands_variation_and_accompany_to_the_engine(jack, model):
    cfg = parse({"midi": {"api": "jack"}, "engine": {"model": str(model), "seed": 3}})
    loop = asyncio.get_running_loop()
    session = service.Session(cfg, "jack", loop, service.load_stream(str(model)))
    run = asyncio.create_task(session.run())
    try:
        assert (session.engine.variation, session.engine.accompany) == (0.25, "bass")
        state = await session.controller.apply("variation", b"0.2")
        assert state.variation == 0.2 and session.engine.variation == 0.2
        state = await session.controller.apply("accompany", b"chords")
        assert state.accompany == "chords" and session.engine.accompany == "chords"
        await session.controller.apply("temperature", b"1.5")  # another setting leaves them as they are
        assert (session.engine.temperature, session.engine.variation, session.engine.accompany) == (1.5, 0.2, "chords")
    finally:
        session.stop.set()
        await asyncio.wait_for(run, 5)
        await session.close()
