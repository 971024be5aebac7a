"""`make run`'s launcher on a machine with no MIDI system: it starts dummy JACK, says so, and stops cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from peers import REPO, wait_until
from tiny_model import tiny_checkpoint


@pytest.mark.integration
@pytest.mark.skipif(Path("/dev/snd/seq").exists(), reason="this machine has ALSA: run.sh would not start JACK")
def test_run_sh_starts_dummy_jack_and_sigterm_exits_0(tmp_path):
    server = f"ripieno-runsh-{os.getpid()}"
    env = os.environ | {"JACK_DEFAULT_SERVER": server, "JACK_NO_START_SERVER": "1", "TMPDIR": str(tmp_path)}
    env["CONFIG"] = str(tmp_path / "config.toml")
    model = tiny_checkpoint(tmp_path / "tiny.safetensors")
    (tmp_path / "config.toml").write_text((REPO / "config.toml").read_text().replace('model = "default"', f'model = "{model}"'))
    log = open(tmp_path / "run.log", "wb")
    # its own process group: if the test fails half-way, the jackd that run.sh started goes too
    proc = subprocess.Popen([str(REPO / "tools" / "run.sh")], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    clean = False
    try:
        def ports() -> str:
            try:  # jack_lsp can hang on a server that is still starting on a loaded box: not up yet
                return subprocess.run(["jack_lsp"], env=env, capture_output=True, text=True, timeout=10).stdout
            except subprocess.TimeoutExpired:
                return ""
        wait_until(lambda: "ripieno:in" in ports() and "ripieno-out:out" in ports(), 90, 0.1, "ripieno's ports")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        clean = True
    finally:
        if proc.poll() is None:
            proc.kill()
        if not clean:  # a failed test leaves nothing behind; a clean exit is checked below as it is
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.close()
    text = (tmp_path / "run.log").read_text()
    assert "starting jackd with the dummy driver" in text
    assert subprocess.run(["jack_lsp"], env=env, capture_output=True).returncode != 0, "run.sh left its jackd running"

