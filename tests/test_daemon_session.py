"""The service shell in-process on real JACK ports: an exception anywhere silences ripieno and fails."""

from __future__ import annotations

import asyncio

from ripieno.daemon import service
from ripieno.daemon.config import parse
from tiny_model import tiny_checkpoint


async def until(pred, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.01)


async def test_an_exception_in_a_callback_panics_closes_and_exits_1(jack, keyboard, synth, tmp_path):
    model = tiny_checkpoint(tmp_path / "tiny.safetensors")
    cfg = parse({"midi": {"api": "jack"}, "engine": {"model": str(model), "mode": "accompany", "max_notes_per_s": 60.0, "seed": 3}})
    loop = asyncio.get_running_loop()
    session = service.Session(cfg, "jack", loop, service.load_stream(str(model)))
    run = asyncio.create_task(session.run())
    try:
        jack.connect(keyboard.port, "ripieno:in")
        jack.connect("ripieno:out", synth.port)
        for i in range(60):  # keep playing until ripieno has something sounding
            keyboard.send([0x90, 60 + i % 12, 90])
            await asyncio.sleep(0.05)
            keyboard.send([0x80, 60 + i % 12, 0])
            await asyncio.sleep(0.05)
            if synth.sounding():
                break
        assert synth.sounding(), "accompaniment never sounded"
        loop.call_soon(lambda: 1 / 0)
        assert await asyncio.wait_for(run, 5) == 1
        assert isinstance(session.failure, ZeroDivisionError)
        await until(lambda: synth.sounding() == set(), 2)  # silenced by the failure itself, ports still open
    finally:
        if not run.done():
            session.stop.set()
            await run
        await session.close()
    assert "ripieno:in" not in jack.ports() and "ripieno-out:out" not in jack.ports()
