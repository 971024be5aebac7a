"""End to end: the real `ripieno run` on the real broker, steered the way a phone or a knob would."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess

import pytest

from mqtt_helpers import Observer
from tiny_model import tiny_checkpoint

_n = itertools.count()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A models_dir with two tiny checkpoints (the bundled model may not exist yet, and is slow to load)."""
    d = tmp_path_factory.mktemp("models")
    tiny_checkpoint(d / "tiny.safetensors", seed=0)
    tiny_checkpoint(d / "other.safetensors", seed=1)
    return d


def daemon_config(broker, base: str, models, midi_input: str = "virtual") -> str:
    return f"""
[midi]
api = "jack"
input = "{midi_input}"
output = "virtual"

[engine]
model = "{models / 'tiny.safetensors'}"
models_dir = "{models}"

[mqtt]
enabled = true
host = "{broker.host}"
port = {broker.port}
base_topic = "{base}"
"""


async def test_daemon_is_steered_over_mqtt_and_by_cc_and_says_offline_on_sigterm(broker, daemon, keyboard, models):
    base = f"e2e{next(_n)}-{os.getpid()}"
    async with Observer(broker.host, broker.port, [f"{base}/#"]) as obs:
        d = daemon(daemon_config(broker, base, models, midi_input="testkbd"))
        await obs.wait_for(f"{base}/status", lambda v: v == "online", timeout=60)
        await obs.wait_for(f"{base}/state", lambda v: "testkbd" in v["input"], timeout=20)
        subprocess.run(["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-q", "1",
                        "-t", f"{base}/set/mode", "-m", "accompany"], check=True, timeout=10)
        await obs.wait_for(f"{base}/state", lambda v: v["mode"] == "accompany")
        subprocess.run(["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-q", "1",
                        "-t", f"{base}/set/temperature", "-m", "9"], check=True, timeout=10)
        err = await obs.wait_for(f"{base}/error")
        assert "out of range" in err.value["reason"]
        keyboard.send([0xB0, 1, 127])  # mod wheel up: the same command, through MIDI
        await obs.wait_for(f"{base}/state", lambda v: v["temperature"] == 2.0)
        await obs.publish(f"{base}/set/model", "other")  # a real checkpoint load, by name only
        await obs.wait_for(f"{base}/state", lambda v: v["model"] == "other")
        await obs.publish(f"{base}/cmd/panic", "")
        await asyncio.sleep(0.2)
        assert len(obs.on(f"{base}/error")) == 1
        assert await asyncio.to_thread(d.stop) == 0
        await obs.wait_for(f"{base}/status", lambda v: v == "offline", timeout=5)


async def test_kill_9_of_the_daemon_makes_the_broker_publish_the_will(broker, daemon, models):
    base = f"e2e{next(_n)}-{os.getpid()}"
    async with Observer(broker.host, broker.port, [f"{base}/status"]) as obs:
        d = daemon(daemon_config(broker, base, models))
        await obs.wait_for(f"{base}/status", lambda v: v == "online", timeout=60)
        await asyncio.to_thread(d.stop, signal.SIGKILL)
        await obs.wait_for(f"{base}/status", lambda v: v == "offline", timeout=10)


async def test_daemon_survives_a_broker_restart_and_is_online_again_with_its_state(make_broker, daemon, models):
    broker = make_broker()
    base = f"e2e{next(_n)}-{os.getpid()}"
    d = daemon(daemon_config(broker, base, models))
    async with Observer(broker.host, broker.port, [f"{base}/#"]) as obs:
        await obs.wait_for(f"{base}/status", lambda v: v == "online", timeout=60)
        await obs.publish(f"{base}/set/silence_s", "3.5")
        await obs.wait_for(f"{base}/state", lambda v: v["silence_s"] == 3.5)
    broker.restart()
    async with Observer(broker.host, broker.port, [f"{base}/#"]) as obs:
        await obs.wait_for(f"{base}/status", lambda v: v == "online", timeout=20)
        await obs.wait_for(f"{base}/state", lambda v: v["silence_s"] == 3.5, timeout=5)
    assert d.proc.poll() is None, d.log()
    assert await asyncio.to_thread(d.stop) == 0
    log = d.log_path.read_text(errors="replace")  # (d.log() flushes a file stop() closed)
    assert "lost" in log and " ERROR " not in log and "Traceback" not in log


async def test_a_cc_storm_on_mode_and_enabled_is_rate_limited_and_ends_where_the_knob_stopped(broker, daemon, keyboard, synth, models):
    """Issue #15: 5,000 mode/enabled controller messages made 4,400-7,300 messages to the synth in a
    second and ~5k INFO lines. Now the controllers go through the MQTT command rate, the latest value
    of each wins, and a value that changes nothing does nothing."""
    base = f"e2e{next(_n)}-{os.getpid()}"
    text = daemon_config(broker, base, models, midi_input="testkbd").replace('output = "virtual"', 'output = "testsynth"')
    async with Observer(broker.host, broker.port, [f"{base}/#"]) as obs:
        d = daemon(text)
        await obs.wait_for(f"{base}/state", lambda v: "testsynth" in v["output"] and "testkbd" in v["input"], timeout=60)
        synth.clear()
        for i in range(1500):
            keyboard.send([0xB0, 20, (0, 127)[i % 2]])  # mode: off / accompany
            keyboard.send([0xB0, 21, (127, 0)[i % 2]])  # enabled: on / off
        keyboard.send([0xB0, 20, 64])  # mode: call ...
        keyboard.send([0xB0, 21, 127])  # ... and on: where the controls stopped
        await obs.wait_for(f"{base}/state", lambda v: v["mode"] == "call" and v["enabled"], timeout=10)
        await asyncio.sleep(1.0)
        sent = len(synth.messages())
        commands = d.log().count("command: ")
        assert sent < 400, f"{sent} messages to the synth"
        assert commands < 120, f"{commands} command lines in the log"
        assert await asyncio.to_thread(d.stop) == 0
