"""systemd integration without a dependency: the sd_notify datagram protocol and the unit file.

sd_notify is one datagram of `KEY=VALUE` lines to the AF_UNIX socket named in $NOTIFY_SOCKET
(a leading '@' means the abstract namespace). Outside systemd the variable is unset and every
call is a no-op, so the daemon calls these unconditionally.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__name__)

UNIT_NAME = "ripieno.service"


def notify(state: str, env: dict[str, str] | None = None) -> bool:
    """Send state (e.g. "READY=1", "WATCHDOG=1", "STOPPING=1") to systemd; False when not under systemd."""
    env = os.environ if env is None else env
    path = env.get("NOTIFY_SOCKET", "")
    if not path:
        return False
    addr = "\0" + path[1:] if path.startswith("@") else path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.sendall(state.encode())
        return True
    except OSError as exc:
        log.warning("sd_notify %s failed: %s", state, exc)
        return False


def watchdog_interval(env: dict[str, str] | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WatchdogSec), or None when no watchdog is asked for."""
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 1e6 / 2


def unit_text(exe: str, config: str | None, user: bool) -> str:
    """The unit: Type=notify with a watchdog, restarted on failure; system-wide it runs in the audio group.

    Ordering: a user manager has no sound.target or network-online.target (those are system units;
    `After=` on them does nothing in a user session), so the user unit names none. ripieno needs no
    ordering there anyway: it waits for named MIDI ports and retries the broker by itself, and a
    MIDI system that is not up yet fails the start, which Restart=on-failure retries.
    System-wide it starts after sound.target and, pulled in, network-online.target (for the broker).
    """
    cmd = f"{exe} run" + (f" --config {config}" if config else "")
    lines = [
        "[Unit]",
        "Description=ripieno real-time MIDI accompaniment daemon",
    ]
    if not user:
        lines += ["Wants=network-online.target", "After=sound.target network-online.target"]
    lines += [
        "",
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",
        f"ExecStart={cmd}",
        "Restart=on-failure",
        "RestartSec=2",
        "WatchdogSec=10",
        "TimeoutStopSec=5",
        "Environment=JACK_NO_START_SERVER=1",
    ]
    if not user:
        lines += ["SupplementaryGroups=audio", "DynamicUser=yes", "LimitRTPRIO=95", "LimitMEMLOCK=infinity"]
    lines += ["", "[Install]", "WantedBy=" + ("default.target" if user else "multi-user.target"), ""]
    return "\n".join(lines)


def unit_path(user: bool) -> Path:
    if user:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
        return base / "systemd" / "user" / UNIT_NAME
    return Path("/etc/systemd/system") / UNIT_NAME


def _systemctl(user: bool, *args: str) -> None:
    exe = shutil.which("systemctl")
    if exe is None:
        log.info("systemctl not found: run `systemctl %s%s` yourself", "--user " if user else "", " ".join(args))
        return
    r = subprocess.run([exe, *(["--user"] if user else []), *args], capture_output=True, text=True)
    if r.returncode != 0:
        log.warning("systemctl %s: %s", " ".join(args), r.stderr.strip() or r.returncode)


def install(user: bool, config: str | None) -> Path:
    """Write the unit and reload systemd; returns where the unit went. Does not start it."""
    exe = str(Path(sys.argv[0]).resolve()) if Path(sys.argv[0]).name == "ripieno" else shutil.which("ripieno") or "ripieno"
    cfg = str(Path(config).resolve()) if config else None
    path = unit_path(user)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(unit_text(exe, cfg, user))
    except PermissionError:
        raise PermissionError(f"cannot write {path}: system-wide install needs root (or use --user)") from None
    _systemctl(user, "daemon-reload")
    return path


def uninstall(user: bool) -> Path | None:
    path = unit_path(user)
    if not path.exists():
        return None
    _systemctl(user, "disable", "--now", UNIT_NAME)
    path.unlink()
    _systemctl(user, "daemon-reload")
    return path
