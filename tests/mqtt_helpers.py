"""Helpers for the command-layer and MQTT tests: a recording engine and an MQTT observer.

RecordingActions stands in for the engine behind `Actions` (it is the engine side of an
interface, not a mock of a peer): it records what the command layer asked for.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

from ripieno.daemon.commands import State


@dataclass
class RecordingActions:
    states: list[State] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)
    fail_load: str | None = None

    def on_state(self, state: State) -> None:
        self.states.append(state)

    def reset(self) -> None:
        self.calls.append("reset")

    def panic(self) -> None:
        self.calls.append("panic")

    async def load_model(self, spec: str) -> None:
        await asyncio.sleep(0)
        if self.fail_load:
            raise ValueError(self.fail_load)
        self.loaded.append(spec)


def decode(payload: bytes | bytearray | str | None) -> object:
    """A payload as JSON when it is JSON, else as text."""
    if payload is None:
        return None
    text = payload.decode() if isinstance(payload, bytes | bytearray) else str(payload)
    try:
        return json.loads(text)
    except ValueError:
        return text
