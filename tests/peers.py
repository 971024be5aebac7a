"""Real peers for integration tests: a JACK server, a mosquitto broker, a keyboard, a synth, the daemon.

Nothing here is a mock, and nothing here is written twice: the peers are the benches' own
(`ripieno.bench.peers`, bench/peers.py), re-exported for the tests; what is only the tests' is below.
"""

from __future__ import annotations

from pathlib import Path

from ripieno.bench.peers import (  # noqa: F401  (re-exported for the tests)
    BIN,
    Broker,
    Daemon,
    JackServer,
    Keyboard,
    Received,
    Synth,
    free_port,
    wait_until,
)

REPO = Path(__file__).resolve().parent.parent


def start_wired(daemon, jack, keyboard, synth, text):
    """A daemon from config text, up, with the keyboard wired to its input and its output to the synth."""
    d = daemon(text)
    jack.wait_for_port("ripieno:in", timeout=60)
    jack.wait_for_port("ripieno-out:out", timeout=10)
    d.wait_log("ripieno is up")
    jack.connect(keyboard.port, "ripieno:in")
    jack.connect("ripieno:out", synth.port)
    return d
