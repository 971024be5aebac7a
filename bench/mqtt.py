"""Does the control plane ever make the music wait? Measure the event loop's lateness around MQTT.

The engine and scheduler share one asyncio loop with run_mqtt, so what the music would feel is
how late a timer fires on that loop. A probe asks to wake every PROBE_S and records how late it
woke, in three phases: MQTT idle, a command flood from another process (mosquitto_pub), and the
broker gone (kill) and back. Also: how long after the broker restarts ripieno is `online` again.

    ripieno bench mqtt [--flood 5000] [--seconds 3] [--json]
    (or python -m ripieno.bench.mqtt, the same)

Needs `mosquitto` and `mosquitto_pub` on PATH; starts its own broker on a free loopback port.
Prints one JSON object (last line).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiomqtt

from ripieno.daemon.commands import Controller, State
from ripieno.daemon.config import parse
from ripieno.daemon.mqtt import run_mqtt

from .peers import Broker

PROBE_S = 0.001
log = logging.getLogger(__name__)


class _Engine:
    """The Actions side, doing what a real engine does on a command: nothing heavy."""

    applied = 0

    def on_state(self, state: State) -> None:
        self.applied += 1

    def reset(self) -> None:
        pass

    def panic(self) -> None:
        pass

    async def load_model(self, spec: str) -> None:
        pass


def _pcts(lat_us: list[float]) -> dict[str, float | None]:
    if not lat_us:
        return {"p50": None, "p99": None, "max": None, "n": 0}
    s = sorted(lat_us)
    return {"p50": round(s[len(s) // 2], 1), "p99": round(s[min(len(s) - 1, int(0.99 * len(s)))], 1),
            "max": round(s[-1], 1), "n": len(s)}


async def _probe(seconds: float) -> list[float]:
    """How late (us) a PROBE_S timer wakes on this loop, for `seconds`."""
    loop = asyncio.get_running_loop()
    out: list[float] = []
    end = loop.time() + seconds
    while loop.time() < end:
        t = loop.time()
        await asyncio.sleep(PROBE_S)
        out.append((loop.time() - t - PROBE_S) * 1e6)
    return out


async def _wait_online(port: int, base: str, timeout: float) -> float:
    """Seconds until a fresh client sees the retained `online`."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            async with aiomqtt.Client("127.0.0.1", port, identifier=f"bench-probe-{time.monotonic_ns()}") as c:
                await c.subscribe(f"{base}/status")
                async with asyncio.timeout(0.5):
                    async for m in c.messages:
                        if m.payload == b"online":
                            return time.monotonic() - t0
        except (aiomqtt.MqttError, TimeoutError):
            await asyncio.sleep(0.1)
    raise TimeoutError("ripieno did not come back online")


async def bench(flood: int, seconds: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        broker = Broker(Path(tmp))
        broker.start()
        port = broker.port
        base = "bench"
        cfg = parse({"mqtt": {"enabled": True, "host": "127.0.0.1", "port": port, "base_topic": base}}, "bench")
        engine = _Engine()
        controller = Controller(cfg, engine)
        stop = asyncio.Event()
        task = asyncio.create_task(run_mqtt(cfg, controller, stop))
        try:
            await _wait_online(port, base, 10)
            idle = await _probe(seconds)

            lines = "".join(f"{0.05 + (i % 195) / 100:.2f}\n" for i in range(flood))
            pub = await asyncio.create_subprocess_exec(
                "mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-t", f"{base}/set/temperature", "-l",
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            assert pub.stdin is not None
            t0 = time.monotonic()
            pub.stdin.write(lines.encode())
            pub.stdin.close()
            cpu0 = time.process_time()
            publisher = asyncio.create_task(pub.wait())
            publisher.add_done_callback(lambda _t: done.append(time.monotonic() - t0))
            done: list[float] = []
            flooded = await _probe(seconds)
            flood_cpu = time.process_time() - cpu0
            await publisher

            broker.kill()
            down = await _probe(seconds)
            broker.start()
            back_s = await _wait_online(port, base, 30)
            stats = controller.stats
            return {
                "probe_period_us": PROBE_S * 1e6,
                "idle_lateness_us": _pcts(idle),
                "flood_lateness_us": _pcts(flooded),
                "broker_down_lateness_us": _pcts(down),
                "flood_sent": flood,
                "flood_publish_s": round(done[0], 2) if done else None,
                "flood_phase_cpu_s": round(flood_cpu, 2),
                "commands_applied": engine.applied,
                "commands_refused": stats.commands_refused,
                "commands_dropped": stats.commands_dropped,
                "online_again_after_restart_s": round(back_s, 2),
                "loadavg_1min": round(os.getloadavg()[0], 2),
                "cpus": os.cpu_count(),
            }
        finally:
            stop.set()
            await asyncio.wait_for(task, 5)
            broker.kill()


def missing_tools() -> list[str]:
    """The broker and client programs this bench needs that are not installed."""
    return [exe for exe in ("mosquitto", "mosquitto_pub") if not shutil.which(exe) and not Path(f"/usr/sbin/{exe}").exists()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ripieno.bench.mqtt", description=__doc__.splitlines()[0])
    p.add_argument("--flood", type=int, default=5000, help="commands the flooding client sends")
    p.add_argument("--seconds", type=float, default=3.0, help="length of each probe phase")
    p.add_argument("--json", action="store_true", help="only the JSON line")
    args = p.parse_args(argv)
    missing = missing_tools()
    if missing:
        print(f"bench mqtt: {', '.join(missing)} not found (install mosquitto and mosquitto-clients)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.ERROR)
    result = asyncio.run(bench(args.flood, args.seconds))
    if not args.json:
        for k, v in result.items():
            print(f"{k}: {v}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
