"""A JACK server killed and started again under a playing ripieno (issue #15): it notices, says so,
and is back with its ports and playing within 10 s, through the real server and real peers."""

from __future__ import annotations

import os
import signal
import time

import pytest

from peers import JackServer, Keyboard, Synth, wait_until
from tiny_model import tiny_checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture
def jack(tmp_path, monkeypatch):
    """A private server for this test alone (it is killed mid-test: the session's stays out of it);
    this process's own JACK clients use it too."""
    server = JackServer(f"ripieno-restart-{os.getpid()}", tmp_path)
    monkeypatch.setenv("JACK_DEFAULT_SERVER", server.name)
    server.start()
    yield server
    server.stop()


def test_ripieno_reopens_its_ports_after_a_jack_restart_and_plays_again(jack, daemon, tmp_path):
    model = tiny_checkpoint(tmp_path / "tiny.safetensors")
    text = f'[midi]\napi = "jack"\n[engine]\nmode = "call"\nmodel = "{model}"\nsilence_s = 0.3\nseed = 5\n'
    kbd, syn = Keyboard("rskbd"), Synth("rssynth")
    d = daemon(text)
    jack.wait_for_port("ripieno:in", timeout=60)
    d.wait_log("ripieno is up")
    kbd.close()
    syn.close()
    jack.restart()  # SIGKILL and start again, same name: every client of the old one is gone
    restarted = time.monotonic()
    try:
        jack.wait_for_port("ripieno:in", timeout=15)
        jack.wait_for_port("ripieno-out:out", timeout=5)
        back = time.monotonic() - restarted  # its ports are there again
        # They may still be reopened once (open_pair's stall retry): the peers are wired when
        # ripieno says the ports are final.
        d.wait_log("the JACK server is back", timeout=15)
    except TimeoutError:
        raise AssertionError(f"ripieno's ports did not come back:\n{d.log()[-3000:]}") from None
    kbd, syn = Keyboard("rskbd2"), Synth("rssynth2")
    try:
        jack.wait_for_port(kbd.port)
        jack.wait_for_port(syn.port)
        jack.link(kbd.port, "ripieno:in")
        jack.link("ripieno-out:out", syn.port)
        kbd.phrase([60, 62, 64, 65], step=0.2, dur=0.15)
        wait_until(syn.note_ons, 5, what="an answer after the restart")
        log = d.log()
        assert "the JACK server is gone" in log and "the JACK server is back" in log, log[-2000:]
        assert back <= 10.0, (back, log[-3000:])
        assert d.stop(signal.SIGTERM) == 0
        assert syn.sounding() == set()
    finally:
        kbd.close()
        syn.close()
