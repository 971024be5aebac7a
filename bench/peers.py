"""Real peers for the benches and the integration tests: a JACK server, a mosquitto broker, a keyboard,
a synth, the daemon. The one implementation of each: `tests/peers.py` imports them from here.

Nothing here is a mock: the keyboard and synth are python-rtmidi JACK clients with virtual ports,
the JACK server a jackd on the dummy driver under a private name, the broker a real mosquitto process
on a free loopback port, the daemon a real `ripieno run` subprocess.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import rtmidi

BIN = Path(sys.executable).parent
# `ripieno` run through this interpreter, for a caller that must not depend on the script being on disk.
CLI = [sys.executable, "-m", "ripieno.daemon.cli"]
RATE = 48000  # the dummy JACK driver's sample rate


def wait_until(pred: Callable[[], object], timeout: float, interval: float = 0.02, what: str = "condition") -> object:
    """Poll pred until it returns something truthy; raise TimeoutError naming what we waited for."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def terminate(proc: subprocess.Popen | None, grace: float = 5.0, sig: int = signal.SIGTERM) -> bool:
    """sig (SIGTERM), then SIGKILL after `grace` seconds: a peer never outlives its caller.
    False when it had to be killed."""
    if proc is None or proc.poll() is not None:
        return True
    proc.send_signal(sig)
    try:
        proc.wait(grace)
        return True
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------- JACK

class JackServer:
    """jackd with the dummy driver under a private server name (JACK_DEFAULT_SERVER), never the user's."""

    def __init__(self, name: str, log_dir: Path, period: int = 128) -> None:
        self.name = name
        self.period = period
        self.rate = RATE
        self.log_path = log_dir / f"jackd-{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        jackd = shutil.which("jackd") or "/usr/bin/jackd"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [jackd, "-n", self.name, "--no-realtime", "-d", "dummy", "-r", str(self.rate), "-p", str(self.period)],
            stdout=self._log, stderr=subprocess.STDOUT, env=self.env(),
        )
        wait_until(self.ready, 10, 0.05, f"jackd server {self.name}")

    def env(self) -> dict[str, str]:
        return os.environ | self.client_env()

    def client_env(self) -> dict[str, str]:
        """What a JACK client needs to meet this server and no other (never autostart one)."""
        return {"JACK_DEFAULT_SERVER": self.name, "JACK_NO_START_SERVER": "1"}

    def ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"jackd exited with {self.proc.returncode}; log: {self.log_path.read_text(errors='replace')[-2000:]}")
        return self._answers()

    def _answers(self, timeout: float = 10.0) -> bool:
        try:
            return self._tool("jack_lsp", timeout=timeout).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def ports(self) -> list[str]:
        r = self._tool("jack_lsp")
        return [line.strip() for line in r.stdout.splitlines() if line.strip()]

    def connect(self, src: str, dst: str) -> None:
        r = self._tool("jack_connect", src, dst)
        if r.returncode != 0:
            raise subprocess.CalledProcessError(r.returncode, ["jack_connect", src, dst], r.stdout, r.stderr)

    def connected(self, src: str, dst: str) -> bool:
        """Is src wired to dst? (`jack_lsp -c src`: the port, then each of its connections indented.)"""
        lines = self._tool("jack_lsp", "-c", src).stdout.splitlines()
        return any(line.startswith((" ", "\t")) and line.strip() == dst for line in lines)

    def link(self, src: str, dst: str, timeout: float = 5.0) -> None:
        """jack_connect, retried until `jack_lsp -c` shows the connection (a fresh port may still be settling).
        Name src by its real name: `jack_lsp -c` given an alias (ripieno:out) shows none of the port's connections."""
        def linked() -> bool:
            self._tool("jack_connect", src, dst)
            return self.connected(src, dst)

        wait_until(linked, timeout, what=f"a JACK connection {src} -> {dst}")

    def _tool(self, *args: str, timeout: float = 10.0) -> subprocess.CompletedProcess:
        """A JACK command-line tool, never without a timeout: a hung jackd must fail a test, not hang it."""
        return subprocess.run(list(args), env=self.env(), capture_output=True, text=True, timeout=timeout)

    def healthy(self) -> bool:
        """Does the server still answer? (jackd itself was seen to hang for good once in ~30 runs.)"""
        return self.proc is not None and self.proc.poll() is None and self._answers(timeout=5.0)

    def restart(self) -> None:
        """Kill a hung server outright (SIGTERM is not answered then) and start it again, same name."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
        self.start()

    def wait_for_port(self, name: str, timeout: float = 10.0) -> None:
        wait_until(lambda: name in self.ports(), timeout, 0.05, f"JACK port {name}")

    def stop(self) -> None:
        terminate(self.proc)
        self._log.close()


@contextlib.contextmanager
def private_jack(log_dir: Path, period: int = 128, server: str | None = None) -> Iterator[JackServer]:
    """The JACK server for a bench: `server` if named (left running), else a private dummy jackd
    (`period` frames at 48 kHz) started here and stopped on exit. This process's own clients use it too."""
    jack = JackServer(server or f"ripieno-bench-{os.getpid()}", log_dir, period)
    os.environ.update(jack.client_env())
    if server is None:
        if shutil.which("jackd") is None:
            raise RuntimeError("this bench needs jackd (make install installs it)")
        jack.start()
    try:
        yield jack
    finally:
        if server is None:
            jack.stop()


# ------------------------------------------------------------------------------------- keyboard/synth

def _close_rtmidi(midi: rtmidi.MidiIn | rtmidi.MidiOut) -> None:
    """Close the port, let JACK periods pass, then delete the client: RtMidi 5's JACK destructor
    frees its ring buffer while the process callback may still read it (this test process
    crashed so in the fast-replug tests, once more on 2026-12-02 with 10 ms here); a closed
    port's callback returns at once, so 50 ms (nearly 20 periods) covers a late process thread."""
    midi.close_port()
    time.sleep(0.05)
    midi.delete()


@dataclass
class Received:
    t: float          # time.monotonic() when the callback saw it
    msg: list[int]


class Synth:
    """A JACK MIDI input that records every message with its arrival time."""

    def __init__(self, client: str = "testsynth", port: str = "in") -> None:
        self.client, self.port_name = client, port
        self._lock = threading.Condition()
        self.received: list[Received] = []
        self.midi = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, name=client)
        self.midi.ignore_types(sysex=False, timing=False, active_sense=False)
        self.midi.open_virtual_port(port)
        self.midi.set_callback(self._on)

    @property
    def port(self) -> str:
        return f"{self.client}:{self.port_name}"

    def _on(self, event: tuple[list[int], float], _data: object) -> None:
        now = time.monotonic()
        with self._lock:
            self.received.append(Received(now, list(event[0])))
            self._lock.notify_all()

    def messages(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def wait_for(self, pred: Callable[[Received], bool], timeout: float) -> Received | None:
        """The first message received that satisfies pred, waiting at most timeout seconds for it."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                found = next((r for r in self.received if pred(r)), None)
                left = deadline - time.monotonic()
                if found is not None or left <= 0:
                    return found
                self._lock.wait(left)

    def clear(self) -> None:
        with self._lock:
            self.received.clear()

    def note_ons(self) -> list[Received]:
        return [r for r in self.messages() if r.msg[0] & 0xF0 == 0x90 and r.msg[2] > 0]

    def sounding(self) -> set[tuple[int, int]]:
        """(channel, pitch) pairs switched on and not yet off, by what the synth has heard."""
        on: dict[tuple[int, int], int] = {}
        for r in self.messages():
            kind, ch = r.msg[0] & 0xF0, r.msg[0] & 0x0F
            if kind == 0x90 and r.msg[2] > 0:
                on[(ch, r.msg[1])] = on.get((ch, r.msg[1]), 0) + 1
            elif kind == 0x80 or (kind == 0x90 and r.msg[2] == 0):
                on.pop((ch, r.msg[1]), None)
            elif kind == 0xB0 and r.msg[1] in (120, 123):
                on = {k: v for k, v in on.items() if k[0] != ch}
        return set(on)

    def close(self) -> None:
        self.midi.cancel_callback()
        _close_rtmidi(self.midi)


class Keyboard:
    """A JACK MIDI output that plays notes; `connect` wires it to a port by name substring."""

    def __init__(self, client: str = "testkbd", port: str = "out") -> None:
        self.client, self.port_name = client, port
        self.midi = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name=client)
        self.midi.open_virtual_port(port)

    @property
    def port(self) -> str:
        return f"{self.client}:{self.port_name}"

    def send(self, msg: list[int]) -> float:
        t = time.monotonic()
        self.midi.send_message(msg)
        return t

    def note(self, pitch: int, velocity: int = 90, dur: float = 0.1, channel: int = 0) -> None:
        self.send([0x90 | channel, pitch, velocity])
        time.sleep(dur)
        self.send([0x80 | channel, pitch, 0])

    def phrase(self, pitches: list[int], step: float = 0.2, dur: float = 0.15, velocity: int = 90) -> None:
        for p in pitches:
            self.note(p, velocity, dur)
            time.sleep(max(0.0, step - dur))

    def close(self) -> None:
        _close_rtmidi(self.midi)


# -------------------------------------------------------------------------------------------- MQTT

@dataclass
class Broker:
    """A mosquitto process on a loopback port; restartable on the same port."""

    workdir: Path
    extra_conf: str = ""
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    proc: subprocess.Popen | None = None

    @property
    def conf_path(self) -> Path:
        return self.workdir / f"mosquitto-{self.port}.conf"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        listener = "" if "listener" in self.extra_conf else f"listener {self.port} {self.host}\nallow_anonymous true\n"
        # Run as root, mosquitto drops to the `mosquitto` user, which cannot write pytest's private tmp dirs.
        listener = ("user root\n" if os.geteuid() == 0 else "") + listener
        self.conf_path.write_text(listener + self.extra_conf + f"\nlog_dest file {self.workdir / f'mosquitto-{self.port}.log'}\n")
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen([exe, "-c", str(self.conf_path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_until(self._accepting, 10, 0.05, f"mosquitto on port {self.port}")

    def _accepting(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
            raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {err}")
        try:
            with socket.create_connection((self.host, self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        terminate(self.proc)

    def kill(self) -> None:
        """Gone at once, no goodbye to its clients: a broker that crashed or lost its box."""
        terminate(self.proc, sig=signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        p = self.workdir / f"mosquitto-{self.port}.log"
        return p.read_text(errors="replace") if p.exists() else ""


# ------------------------------------------------------------------------------------------ daemon

class Daemon:
    """`ripieno run` as a subprocess, its stderr logged to a file the caller can read."""

    def __init__(self, config_text: str, workdir: Path, env: dict[str, str], args: list[str] | None = None,
                 entry: list[str] | None = None, log_level: str | None = "debug") -> None:
        """entry: what runs instead of the `ripieno` script (e.g. a Python wrapper around its main);
        log_level: its --log-level, None for the default (a bench measures what a user runs)."""
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "config.toml"
        self.config.write_text(config_text)
        self.log_path = workdir / "ripieno.log"
        self._log = open(self.log_path, "wb")
        level = ["--log-level", log_level] if log_level else []
        cmd = [*(entry or [str(BIN / "ripieno")]), *level, "run", "--config", str(self.config), *(args or [])]
        self.started = time.monotonic()  # just before the process exists: what a start-up time counts from
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_log(self, needle: str, timeout: float = 20.0, interval: float = 0.05) -> None:
        def seen() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ripieno exited with {self.proc.returncode} while waiting for {needle!r}:\n{self.log()}")
            return needle in self.log()
        wait_until(seen, timeout, interval, f"{needle!r} in the daemon log")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0, strict: bool = True) -> int:
        """sig, then SIGKILL after timeout; strict: a daemon that had to be killed raises TimeoutExpired."""
        clean = terminate(self.proc, timeout, sig)
        self._log.close()
        if strict and not clean:
            raise subprocess.TimeoutExpired(self.proc.args, timeout)
        return self.proc.returncode
