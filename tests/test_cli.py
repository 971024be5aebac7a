"""The CLI skeleton as a user meets it: version, help, run up and down cleanly."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from peers import BIN, Synth, wait_until
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


def _stop_within_2_s(d, jack) -> None:
    t0 = time.monotonic()
    assert d.stop(signal.SIGTERM, timeout=2.0) == 0, d.log()
    assert time.monotonic() - t0 < 2.0
    assert "ripieno:in" not in jack.ports()


def test_sigterm_while_torch_imports_exits_0_within_2_s(jack, daemon, tmp_path):
    """A stop during the seconds of `import torch` is a clean stop, never a kill (exit 143)."""
    d = daemon('[midi]\napi = "jack"\n')
    d.wait_log("importing the engine", timeout=60)
    _stop_within_2_s(d, jack)
    assert "MIDI api" not in d.log(), "the stop came too late to test the import window"


def test_sigterm_while_the_model_loads_exits_0_within_2_s(jack, daemon):
    """The bundled model takes a few hundred ms to load; a stop then must not wait for the load."""
    for _ in range(3):  # the window is short: try until the stop lands inside it
        d = daemon('[midi]\napi = "jack"\n[engine]\nmodel = "default"\n')
        wait_until(lambda: "MIDI api" in d.log(), 60, interval=0.005, what="the model load to start")
        _stop_within_2_s(d, jack)
        if "stopped while loading the model" in d.log():
            return
    pytest.fail("three stops all missed the model load window")
