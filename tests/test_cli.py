"""The CLI skeleton as a user meets it: version, help, run up and down cleanly."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from peers import BIN, Synth, wait_until
from ripieno.daemon import cli
from tiny_model import tiny_checkpoint


def test_version():
    r = subprocess.run([str(BIN / "ripieno"), "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("ripieno ")


def test_train_help():
    r = subprocess.run([str(BIN / "ripieno-train"), "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "ripieno-train" in r.stdout


def test_run_opens_virtual_ports_and_sigterm_exits_0(jack, daemon, tmp_path):
    model = tiny_checkpoint(tmp_path / "tiny.safetensors")
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
    """A stop during the seconds of `import torch` is a clean stop, never a kill (exit 143).

    Issue #9: this failed one fresh-clone run in three. Not a slow cold start: the stop was a
    SystemExit raised by the signal handler wherever the import happened to be, and at a few
    points of torch's import that is C++ that aborts on it (exit 134) or code that swallows it
    (the daemon started anyway and outlived the 2 s). The handler now ends the process itself,
    so wherever the stop lands it is exit 0 (150 of 150 at random points, each within 0.35 s).
    """
    d = daemon('[midi]\napi = "jack"\n')
    d.wait_log("importing the engine", timeout=60)
    _stop_within_2_s(d, jack)
    log = d.log()
    assert "MIDI api" not in log, "the stop came too late to test the import window"
    assert "stopped while importing the engine (SIGTERM)" in log, log


def test_sigterm_while_the_model_loads_exits_0_within_2_s(jack, daemon):
    """The bundled model takes a few hundred ms to load; a stop then must not wait for the load."""
    for _ in range(3):  # the window is short: try until the stop lands inside it
        d = daemon('[midi]\napi = "jack"\n[engine]\nmodel = "default"\n')
        wait_until(lambda: "MIDI api" in d.log(), 60, interval=0.005, what="the model load to start")
        _stop_within_2_s(d, jack)
        if "stopped while loading the model" in d.log():
            return
    pytest.fail("three stops all missed the model load window")


# ------------------------------------------------------------------------------- config search order

def _no_midi_env(tmp_path, **extra: str) -> dict[str, str]:
    """No MIDI system at all: `ripieno run` gets as far as reading its config, then stops with exit 3."""
    return {"PATH": "/usr/bin:/bin", "JACK_DEFAULT_SERVER": "no-such-server", "JACK_NO_START_SERVER": "1",
            "HOME": str(tmp_path / "home"), **extra}


def _run_without_config(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ripieno"), "run", "--api", "jack"], capture_output=True, text=True, timeout=60, env=env)


def test_run_without_config_reads_the_xdg_config(tmp_path):
    """Issue #3: without --config, $XDG_CONFIG_HOME/ripieno/config.toml is the configuration (here a
    broken one, so that reading it shows: one line naming it, exit 2, before any MIDI is opened)."""
    cfg = tmp_path / "xdg" / "ripieno" / "config.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text("[engine]\ntemperature = 9.0\n")
    r = _run_without_config(_no_midi_env(tmp_path, XDG_CONFIG_HOME=str(tmp_path / "xdg")))
    assert r.returncode == 2, r.stderr
    assert str(cfg) in r.stderr and "engine.temperature" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_run_without_config_falls_back_to_dot_config(tmp_path):
    cfg = tmp_path / "home" / ".config" / "ripieno" / "config.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text('[engine]\nmode = "loud"\n')
    r = _run_without_config(_no_midi_env(tmp_path))  # no XDG_CONFIG_HOME: ~/.config
    assert r.returncode == 2 and str(cfg) in r.stderr and "engine.mode" in r.stderr, r.stderr


def _run_until_the_config_is_logged(jack, env: dict[str, str], log_path) -> str:
    """`ripieno run` without --config on the test's JACK server, stopped once it logged its config."""
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen([str(BIN / "ripieno"), "run"], stdout=logf, stderr=subprocess.STDOUT, env=jack.env() | env)
        try:
            wait_until(lambda: "MIDI api" in log_path.read_text(errors="replace") or proc.poll() is not None, 60, what="the config in the log")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
    return log_path.read_text(errors="replace")


def test_run_logs_the_config_file_it_found(jack, tmp_path):
    cfg = tmp_path / "xdg" / "ripieno" / "config.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(f'[midi]\napi = "jack"\n[engine]\nmodel = "{tiny_checkpoint(tmp_path / "tiny.safetensors")}"\n')
    log = _run_until_the_config_is_logged(jack, {"HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "xdg")}, tmp_path / "log")
    assert f"config {cfg}: " in log, log


@pytest.mark.skipif(Path("/etc/ripieno/config.toml").exists(), reason="this machine has an /etc/ripieno/config.toml")
def test_run_without_any_config_logs_that_it_uses_the_built_in_defaults(jack, tmp_path):
    log = _run_until_the_config_is_logged(jack, {"HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "xdg")}, tmp_path / "log")
    looked = f"{tmp_path / 'xdg' / 'ripieno' / 'config.toml'} or /etc/ripieno/config.toml"
    assert f"config built-in defaults (no config file at {looked}): " in log, log


def test_the_search_order_is_flag_xdg_etc_defaults(tmp_path, monkeypatch):
    system = tmp_path / "etc" / "config.toml"
    monkeypatch.setattr(cli, "SYSTEM_CONFIG", system)
    xdg = tmp_path / "xdg"
    env = {"XDG_CONFIG_HOME": str(xdg), "HOME": str(tmp_path / "home")}
    assert cli.find_config(None, env=env) is None
    system.parent.mkdir(parents=True)
    system.write_text("")
    assert cli.find_config(None, env=env) == system
    (xdg / "ripieno").mkdir(parents=True)
    (xdg / "ripieno" / "config.toml").write_text("")
    assert cli.find_config(None, env=env) == xdg / "ripieno" / "config.toml"
    assert cli.find_config(str(tmp_path / "given.toml"), env=env) == tmp_path / "given.toml"  # even one that is missing: that is an error
    assert cli.find_config(None, user=False, env=env) == system  # a system-wide service runs as its own user: /etc only
    # an unset or relative XDG_CONFIG_HOME means ~/.config (the XDG spec ignores relative ones)
    for e in ({"HOME": str(tmp_path / "home")}, {"HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": "rel"}):
        assert cli.user_config(e) == tmp_path / "home" / ".config" / "ripieno" / "config.toml"


def _install(monkeypatch, tmp_path, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.setenv("PATH", "/nonexistent")  # no systemctl: install only writes the file
    monkeypatch.setattr(cli, "SYSTEM_CONFIG", tmp_path / "etc" / "config.toml")
    rc = cli.main(["service", "install", *args])
    unit = tmp_path / "systemd" / "user" / "ripieno.service"
    out = capsys.readouterr()
    return rc, unit.read_text() if unit.exists() else "", out.out + out.err


def test_service_install_without_config_writes_the_file_it_found_into_the_unit(tmp_path, monkeypatch, capsys):
    cfg = tmp_path / "ripieno" / "config.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text('[engine]\nmode = "accompany"\n')
    rc, unit, out = _install(monkeypatch, tmp_path, capsys)
    assert rc == 0, out
    assert f"run --config {cfg}" in unit and f"--config {cfg}" in out, (unit, out)


def test_service_install_without_any_config_says_the_unit_uses_built_in_defaults(tmp_path, monkeypatch, capsys):
    rc, unit, out = _install(monkeypatch, tmp_path, capsys)
    assert rc == 0, out
    assert "--config" not in unit and "built-in defaults" in out, (unit, out)


def test_service_install_refuses_a_broken_found_config_and_writes_no_unit(tmp_path, monkeypatch, capsys):
    cfg = tmp_path / "ripieno" / "config.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text("[engine]\nnope = 1\n")
    rc, unit, out = _install(monkeypatch, tmp_path, capsys)
    assert rc == 2 and unit == "" and str(cfg) in out, out
