"""Helpers for the command-layer and MQTT tests: a recording engine and an MQTT observer.

RecordingActions stands in for the engine behind `Actions` (it is the engine side of an
interface, not a mock of a peer): it records what the command layer asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt

from ripieno.daemon import config as cfgmod
from ripieno.daemon.commands import Controller, State
from ripieno.daemon.config import Config
from ripieno.daemon.mqtt import run_mqtt


@dataclass
class RecordingActions:
    states: list[State] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)
    fail_load: str | None = None
    load_s: float = 0.0  # how long a model load takes (a real one runs in an executor)

    def on_state(self, state: State) -> None:
        self.states.append(state)

    def reset(self) -> None:
        self.calls.append("reset")

    def panic(self) -> None:
        self.calls.append("panic")

    async def load_model(self, spec: str) -> None:
        await asyncio.sleep(self.load_s)
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


@dataclass(frozen=True)
class Seen:
    topic: str
    payload: bytes
    retain: bool

    @property
    def value(self) -> object:
        return decode(self.payload)


class Observer:
    """A real MQTT client that records everything under some topics (what a phone app would see)."""

    def __init__(self, host: str, port: int, topics: list[str], **client_kw: object) -> None:
        self.client = aiomqtt.Client(host, port, identifier=f"observer-{next(_ids)}", **client_kw)
        self.topics = topics
        self.seen: list[Seen] = []
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> Observer:
        await self.client.__aenter__()
        for t in self.topics:
            await self.client.subscribe(t, qos=1)
        self._task = asyncio.create_task(self._collect())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
            await self._task
        with contextlib.suppress(aiomqtt.MqttError):
            await self.client.__aexit__(None, None, None)

    async def _collect(self) -> None:
        async for m in self.client.messages:
            payload = m.payload if isinstance(m.payload, bytes | bytearray) else str(m.payload).encode()
            self.seen.append(Seen(m.topic.value, bytes(payload), bool(m.retain)))

    async def publish(self, topic: str, payload: bytes | str, retain: bool = False) -> None:
        await self.client.publish(topic, payload, qos=1, retain=retain)

    def on(self, topic: str) -> list[Seen]:
        return [s for s in self.seen if s.topic == topic]

    async def wait(self, pred: Callable[[], object], timeout: float = 10.0, what: str = "message") -> object:
        """Poll pred until truthy; fail naming what we waited for and what was seen."""
        deadline = time.monotonic() + timeout
        while True:
            value = pred()
            if value:
                return value
            if time.monotonic() > deadline:
                seen = "\n".join(f"  {s.topic} {s.payload[:120]!r} retain={s.retain}" for s in self.seen[-20:])
                raise AssertionError(f"timed out after {timeout}s waiting for {what}; last seen:\n{seen}")
            await asyncio.sleep(0.02)

    async def wait_for(self, topic: str, check: Callable[[object], object] = bool, timeout: float = 10.0, since: int = 0) -> Seen:
        """The first message on topic (after index since) whose decoded value passes check."""
        def found() -> Seen | None:
            return next((s for s in self.seen[since:] if s.topic == topic and check(s.value)), None)
        return await self.wait(found, timeout, f"{topic}")  # type: ignore[return-value]


_ids = itertools.count()


def mqtt_config(broker_host: str, broker_port: int, base: str | None = None, mqtt: dict | None = None, **sections: dict) -> Config:
    """A validated Config pointing at a test broker under a unique base topic (retained state is per test)."""
    base = base or f"rt{next(_ids)}-{os.getpid()}"
    data = {"mqtt": {"enabled": True, "host": broker_host, "port": broker_port, "base_topic": base, **(mqtt or {})}, **sections}
    return cfgmod.parse(data, "test-config")


@contextlib.asynccontextmanager
async def running(cfg: Config, actions: RecordingActions | None = None, **kw: object):
    """run_mqtt in this process with a Controller over RecordingActions; stopped (cleanly) on exit."""
    actions = actions or RecordingActions()
    controller = Controller(cfg, actions)
    stop = asyncio.Event()
    task = asyncio.create_task(run_mqtt(cfg, controller, stop, **kw))
    try:
        yield controller, actions, task
    finally:
        stop.set()
        async with asyncio.timeout(5):
            await task


def make_certs(d: Path) -> dict[str, Path]:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate (EC keys: fast)."""
    d.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=30)

    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=ripieno test CA")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, cn in (("server", "127.0.0.1"), ("client", "ripieno")):
        run("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "2", *(["-extfile", "san.ext"] if name == "server" else []))
    for p in d.iterdir():
        p.chmod(0o644)  # mosquitto may drop privileges before reading them
    return {n: d / n for n in ("ca.crt", "server.crt", "server.key", "client.crt", "client.key")}


def main(argv: list[str]) -> int:
    """`python mqtt_helpers.py HOST PORT BASE`: run_mqtt alone in a process, for the Last Will test."""
    host, port, base = argv[0], int(argv[1]), argv[2]
    cfg = mqtt_config(host, port, base)

    async def serve() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await run_mqtt(cfg, Controller(cfg, RecordingActions()), stop)

    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
