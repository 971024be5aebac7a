"""Issue #4 through real JACK: `ripieno run` naming a keyboard that is switched on after the box.

The daemon must come up anyway (READY=1 to systemd, `ripieno is up` in the log), say once that
it waits for the keyboard, and answer its notes as soon as it appears, like a replug.
"""

from __future__ import annotations

import os
import socket
import time

import pytest

from peers import Keyboard, wait_until
from tiny_model import tiny_checkpoint

# The same known JACK flake as tests/test_daemon_jack.py (a test peer's client that never runs its
# process cycle): two more tries on a fresh daemon.
pytestmark = pytest.mark.flaky(reruns=2, reruns_delay=1)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.safetensors")


def test_a_keyboard_switched_on_after_start_is_waited_for_and_answered(jack, daemon, synth, model):
    name = f"ripieno-test-notify-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind("\0" + name)  # abstract: no path-length trouble in pytest's deep tmp dirs
        notify.settimeout(60)
        d = daemon(f'[midi]\napi = "jack"\ninput = "LateKbd"\noutput = "virtual"\n'
                   f'[engine]\nmode = "call"\nmodel = "{model}"\nsilence_s = 0.3\nseed = 5\n',
                   env={"NOTIFY_SOCKET": "@" + name})
        assert notify.recv(256) == b"READY=1"  # systemd hears it is up although the keyboard is not
    d.wait_log("ripieno is up (mode call, input waiting for 'LateKbd', output ripieno:out)", timeout=10)
    said = d.log().count("no input port matches 'LateKbd' yet")
    assert said >= 1, d.log()  # once (twice only if JACK stalled and ripieno reopened its clients)
    time.sleep(1.5)  # a few hot-plug polls: still up, and not repeating itself
    assert d.proc.poll() is None, d.log()
    assert d.log().count("no input port matches 'LateKbd' yet") == said and "still waiting" not in d.log()
    jack.connect("ripieno:out", synth.port)
    kbd = Keyboard("latekbd")  # the musician switches the keyboard on
    try:
        jack.wait_for_port(kbd.port)
        d.wait_log("keyboard connected: latekbd:out", timeout=5)
        time.sleep(0.2)
        kbd.phrase([60, 62, 64, 65, 67], step=0.2, dur=0.15)
        wait_until(synth.note_ons, 5, what="an answer to the late keyboard")
        assert d.stop() == 0
        assert synth.sounding() == set()
    finally:
        kbd.close()
