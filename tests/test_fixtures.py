"""The fixtures are real: a note crosses JACK, a message crosses mosquitto, the CLI sees the ports."""

from __future__ import annotations

import asyncio
import json
import subprocess

import aiomqtt

from peers import BIN, wait_until


def test_note_travels_from_keyboard_to_synth_through_jack(jack, keyboard, synth):
    jack.connect(keyboard.port, synth.port)
    wait_until(lambda: synth.port in _connections(jack, keyboard.port), 5, what="jack connection")
    sent = keyboard.send([0x90, 60, 100])
    keyboard.send([0x80, 60, 0])
    wait_until(lambda: len(synth.messages()) >= 2, 5, what="two messages at the synth")
    first = synth.messages()[0]
    assert first.msg == [0x90, 60, 100]
    assert 0 <= first.t - sent < 1.0
    assert synth.sounding() == set()


def _connections(jack, port: str) -> str:
    return subprocess.run(["jack_lsp", "-c", port], env=jack.env(), capture_output=True, text=True, timeout=10).stdout


async def test_mqtt_publish_reaches_subscriber_through_broker(broker):
    async with aiomqtt.Client(broker.host, broker.port, identifier="sub") as sub:
        await sub.subscribe("fixture/#", qos=1)
        async with aiomqtt.Client(broker.host, broker.port, identifier="pub") as pub:
            await pub.publish("fixture/hello", b"world", qos=1)
        async with asyncio.timeout(5):
            async for message in sub.messages:
                assert str(message.topic) == "fixture/hello"
                assert message.payload == b"world"
                break


def test_ports_json_lists_the_fixture_ports(jack, keyboard, synth):
    r = subprocess.run([str(BIN / "ripieno"), "ports", "--api", "jack", "--json"], env=jack.env(), capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout.strip().splitlines()[-1])
    assert data["api"] == "jack"
    assert keyboard.port in data["inputs"]
    assert synth.port in data["outputs"]


def test_ports_auto_picks_jack_when_it_is_the_only_system(jack):
    r = subprocess.run([str(BIN / "ripieno"), "ports", "--json"], env=jack.env(), capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["api"] in ("jack", "alsa")


def test_a_hung_jackd_is_seen_and_restarted(tmp_path):
    """SIGSTOP stands in for the jackd hang seen here (it stops answering for good, jack_lsp blocks)."""
    import os
    import signal

    from peers import JackServer

    server = JackServer(f"ripieno-test-hang-{os.getpid()}", tmp_path)
    server.start()
    try:
        assert server.healthy()
        os.kill(server.proc.pid, signal.SIGSTOP)
        assert not server.healthy()
        server.restart()
        assert server.healthy()
    finally:
        if server.proc is not None and server.proc.poll() is None:
            os.kill(server.proc.pid, signal.SIGCONT)
        server.stop()
