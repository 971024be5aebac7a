"""The CLI skeleton as a user meets it: version, help, run up and down cleanly."""

from __future__ import annotations

import subprocess

from peers import BIN, Synth
from tiny_model import tiny_checkpoint


def test_version():
    r = subprocess.run([str(BIN / "ripieno"), "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("ripieno ")


def test_train_help():
    r = subprocess.run([str(BIN / "ripieno-train"), "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "ripieno-train" in r.stdout


def test_run_opens_virtual_ports_and_sigterm_exits_0(jack, daemon, tmp_path):
    model = tiny_checkpoint(tmp_path / "tiny.pt")
    d = daemon(f'[midi]\napi = "jack"\n[engine]\nmodel = "{model}"\n')
    d.wait_log("ripieno is up", timeout=60)
    jack.wait_for_port("ripieno:in", timeout=10)
    jack.wait_for_port("ripieno-out:out", timeout=10)
    synth = Synth("clisynth")
    try:
        jack.connect("ripieno:out", synth.port)  # the alias resolves to ripieno-out:out
    finally:
        synth.close()
    assert d.stop() == 0, d.log()
    assert "ripieno:in" not in jack.ports()


def test_run_without_midi_system_says_so(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "JACK_DEFAULT_SERVER": "no-such-server", "JACK_NO_START_SERVER": "1", "HOME": str(tmp_path)}
    r = subprocess.run([str(BIN / "ripieno"), "run", "--api", "jack"], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 3
    assert "no JACK server running" in r.stderr


def test_sigterm_during_start_up_exits_0_within_2_s(jack, daemon, tmp_path):
    """While torch is still importing, and while the model loads: a clean stop, never a kill (143)."""
    import signal
    import time

    model = tiny_checkpoint(tmp_path / "tiny.pt")
    for wait_for in (None, "MIDI api"):
        d = daemon(f'[midi]\napi = "jack"\n[engine]\nmodel = "{model}"\n')
        if wait_for is None:
            time.sleep(0.3)
        else:
            d.wait_log(wait_for, timeout=60)
        assert "ripieno is up" not in d.log()
        t0 = time.monotonic()
        assert d.stop(signal.SIGTERM, timeout=2.0) == 0, d.log()
        assert time.monotonic() - t0 < 2.0
        assert "ripieno:in" not in jack.ports()
