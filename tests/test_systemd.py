"""sd_notify against a real datagram socket, and the unit file systemd itself accepts."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess

import pytest

from ripieno.daemon import systemd


@pytest.mark.parametrize("abstract", [False, True])
def test_notify_sends_one_datagram_to_the_socket(tmp_path, abstract):
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as srv:
        if abstract:
            name = f"ripieno-test-{os.getpid()}"
            srv.bind("\0" + name)
            env = {"NOTIFY_SOCKET": "@" + name}
        else:
            srv.bind(str(tmp_path / "notify"))
            env = {"NOTIFY_SOCKET": str(tmp_path / "notify")}
        srv.settimeout(2)
        for state in ("READY=1", "WATCHDOG=1", "STOPPING=1"):
            assert systemd.notify(state, env)
            assert srv.recv(256) == state.encode()


def test_notify_is_a_no_op_outside_systemd_and_survives_a_dead_socket(tmp_path):
    assert systemd.notify("READY=1", {}) is False
    assert systemd.notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone")}) is False


def test_watchdog_interval_is_half_of_watchdog_sec():
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "10000000"}) == 5.0
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"}) is None
    assert systemd.watchdog_interval({}) is None


@pytest.mark.parametrize("user", [True, False])
def test_unit_text_is_type_notify_and_verifies(tmp_path, user):
    exe = shutil.which("true") or "/bin/true"
    text = systemd.unit_text(exe, "/etc/ripieno/config.toml", user)
    assert "Type=notify" in text and "Restart=on-failure" in text and "WatchdogSec=" in text
    assert ("SupplementaryGroups=audio" in text) is not user
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed")
    unit = tmp_path / "ripieno.service"
    unit.write_text(text)
    r = subprocess.run([analyze, "verify", *(["--user"] if user else []), str(unit)], capture_output=True, text=True, timeout=60)
    if r.returncode != 0 and "Failed to initialize manager" in r.stderr:
        pytest.skip(f"systemd-analyze cannot run here: {r.stderr.strip().splitlines()[-1]}")
    assert r.returncode == 0, r.stderr


def test_the_user_unit_orders_itself_after_no_system_target():
    """Issue #8: sound.target and network-online.target are system units; a user manager has
    neither, so `After=` on them does nothing there. The system unit keeps them (and pulls the
    network in, which `After=` alone would not)."""
    user = systemd.unit_text("/usr/bin/ripieno", None, True)
    assert "sound.target" not in user and "network-online.target" not in user
    assert not [line for line in user.splitlines() if line.startswith(("After=", "Wants=", "Requires="))]
    system = systemd.unit_text("/usr/bin/ripieno", None, False).splitlines()
    assert "After=sound.target network-online.target" in system and "Wants=network-online.target" in system


def test_install_and_uninstall_a_user_unit(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.setenv("PATH", "/nonexistent")  # no systemctl: install only writes the file
    path = systemd.install(True, None)
    assert path == tmp_path / "systemd" / "user" / "ripieno.service" and "ExecStart=" in path.read_text()
    assert systemd.uninstall(True) == path and not path.exists()
    assert systemd.uninstall(True) is None
