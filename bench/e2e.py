"""`ripieno bench e2e`: input-to-output latency and output jitter through real JACK ports.

Setup: a private jackd (dummy driver, `period` frames at 48 kHz) unless a server name is given,
a keyboard and a synth client in this process, and `ripieno run` as a real subprocess.

- input_to_output: ripieno's first reaction to a note. In call mode that is the interruption:
  while an answer sounds, the keyboard plays a note and ripieno must switch its notes off at
  once; measured from the keyboard's send to the synth's receipt of the first note-off. That
  path is the whole real-time chain: rtmidi thread -> loop -> listener -> engine -> port.
- jack_floor_us: the same server's client-to-client floor, measured on the very same notes: the
  keyboard is also connected to a plain "tap" client, and floor = keyboard send -> tap receipt.
- added_p99_us: per note, synth receipt of ripieno's note-off - tap receipt of the note. Pairing
  takes out where in the JACK period the keyboard happened to send (0 to one period of wait, the
  same for ripieno and the tap); `unpaired_p99_minus_floor_p50_us` is the cruder figure that
  leaves it in. A reaction can leave at the earliest in the JACK cycle after the note arrived, so
  ripieno's physical floor is one period of added latency; the goal is one period + 1 ms.
- daemon_input_*_us: ripieno's own share, as it measured it: rtmidi callback -> note handled
  (queue wait, listener, engine, the cut's note-offs handed to the port).
- jitter_p99_us: |when ripieno handed a scheduled note to the port - when it was scheduled|,
  as the daemon itself measured it (the JSON file `ripieno run --stats-file` writes at exit).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import rtmidi

log = logging.getLogger(__name__)

RATE = 48000


class _Recorder:
    """A JACK MIDI input recording (monotonic time, message); wait_for() blocks on a condition."""

    def __init__(self, client: str) -> None:
        self.cond = threading.Condition()
        self.got: list[tuple[float, list[int]]] = []
        self.midi = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, name=client)
        self.midi.open_virtual_port("in")
        self.midi.set_callback(self._on)

    def _on(self, event: tuple[list[int], float], _data: object) -> None:
        t = time.monotonic()
        with self.cond:
            self.got.append((t, event[0]))
            self.cond.notify_all()

    def wait_for(self, pred, timeout: float) -> tuple[float, list[int]] | None:
        """The first recorded message satisfying pred(t, msg), waiting at most timeout seconds."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for t, m in self.got:
                    if pred(t, m):
                        return t, m
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def close(self) -> None:
        self.midi.cancel_callback()
        self.midi.close_port()
        self.midi.delete()


def _keyboard(client: str) -> rtmidi.MidiOut:
    k = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name=client)
    k.open_virtual_port("out")
    return k


def _jack(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=10)


def _connect(env: dict[str, str], src: str, dst: str) -> None:
    """jack_connect, retried until `jack_lsp -c` shows the connection (a fresh port may still be settling)."""
    def linked() -> bool:
        _jack(env, "jack_connect", src, dst)
        return dst in _jack(env, "jack_lsp", "-c", src).stdout

    _wait(linked, 5, f"a JACK connection {src} -> {dst}")


def _wait(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"bench: timed out waiting for {what}")
        time.sleep(0.02)


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return round(s[min(len(s) - 1, int(q * len(s)))], 1)


def _paired(tap: _Recorder, syn: _Recorder, t0: float, timeout: float = 1.0) -> tuple[float, float] | None:
    """For the note sent at t0: (when the tap heard it, when the synth heard ripieno's first note-off)."""
    heard = tap.wait_for(lambda t, m: t >= t0 and m[0] & 0xF0 == 0x90 and m[2] > 0, timeout)
    off = syn.wait_for(lambda t, m: t >= t0 and (m[0] & 0xF0 == 0x80 or (m[0] & 0xF0 == 0x90 and m[2] == 0)), timeout)
    if heard is None or off is None:
        return None
    return heard[0], off[0]


def _reactions(env: dict[str, str], model: str, n: int, workdir: Path) -> tuple[list[tuple[float, float, float]], dict, int]:
    """n interruptions; each is (t_send, t_tap, t_off) on this process's monotonic clock."""
    cfg = workdir / "bench.toml"
    cfg.write_text(f'[midi]\napi = "jack"\n[engine]\nmode = "call"\nmodel = "{model}"\nsilence_s = 0.1\nanswer_s = 20.0\nseed = 1\n')
    logf = open(workdir / "ripieno.log", "wb")
    stats_file = workdir / "stats.json"
    proc = subprocess.Popen([sys.executable, "-m", "ripieno.daemon.cli", "run", "--config", str(cfg), "--stats-file", str(stats_file)],
                            env=env, stdout=logf, stderr=subprocess.STDOUT)
    kbd, syn, tap = _keyboard("bench-kbd"), _Recorder("bench-synth"), _Recorder("bench-tap")
    got: list[tuple[float, float, float]] = []
    missed = 0
    try:
        log_path = workdir / "ripieno.log"
        _wait(lambda: "ripieno is up" in log_path.read_text(errors="replace") or proc.poll() is not None, 60, "ripieno to come up")
        if proc.poll() is not None:
            raise RuntimeError(f"ripieno run exited with {proc.returncode}: {log_path.read_text(errors='replace')[-800:]}")
        _connect(env, "bench-kbd:out", "ripieno:in")
        _connect(env, "bench-kbd:out", "bench-tap:in")  # the floor, for the very same notes
        _connect(env, "ripieno-out:out", "bench-synth:in")
        time.sleep(0.3)
        for i in range(n + missed):
            if missed > n:
                break
            pitch = 48 + i % 24
            t_phrase = time.monotonic()
            kbd.send_message([0x90, pitch, 90])
            time.sleep(0.03)
            kbd.send_message([0x80, pitch, 0])
            on = syn.wait_for(lambda t, m: t > t_phrase and m[0] & 0xF0 == 0x90 and m[2] > 0, 3.0)
            if on is None:
                missed += 1
                continue
            time.sleep(0.002 + (i % 5) * 0.0017)  # interrupt at different points of the period
            t0 = time.monotonic()
            kbd.send_message([0x90, pitch, 90])
            pair = _paired(tap, syn, t0)
            kbd.send_message([0x80, pitch, 0])
            if pair is None:  # the answer's note had already ended: nothing to switch off
                missed += 1
            else:
                got.append((t0, *pair))
            time.sleep(0.05)
    finally:
        kbd.delete()
        syn.close()
        tap.close()
        stop_process(proc)
        logf.close()
    try:
        stats = json.loads(stats_file.read_text())  # the daemon's own figures, written at its exit
    except (OSError, ValueError):
        stats = {}
    return got, stats, missed


def stop_process(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM (ripieno closes its notes and ports), SIGKILL only if it has not gone within `grace`."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def private_jack(period: int = 128, server: str | None = None) -> Iterator[dict[str, str]]:
    """The environment of a JACK server for a bench: `server` if named, else a private dummy jackd
    (`period` frames at 48 kHz) started here and stopped on exit. This process's own clients use it too."""
    jackd = None
    name = server or f"ripieno-bench-{os.getpid()}"
    env = os.environ | {"JACK_DEFAULT_SERVER": name, "JACK_NO_START_SERVER": "1"}
    os.environ.update({"JACK_DEFAULT_SERVER": name, "JACK_NO_START_SERVER": "1"})
    try:
        if server is None:
            exe = shutil.which("jackd")
            if exe is None:
                raise RuntimeError("this bench needs jackd (make install installs it)")
            jackd = subprocess.Popen([exe, "-n", name, "--no-realtime", "-d", "dummy", "-r", str(RATE), "-p", str(period)],
                                     env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            _wait(lambda: _jack(env, "jack_lsp").returncode == 0, 10, "the private jackd")
        yield env
    finally:
        if jackd is not None:
            stop_process(jackd, 5.0)


def run(model: str = "default", notes: int = 200, period: int = 128, server: str | None = None) -> dict:
    """Measure; returns the JSON-able result (see module docstring)."""
    with tempfile.TemporaryDirectory(prefix="ripieno-bench-") as tmp, private_jack(period, server) as env:
        got, stats, missed = _reactions(env, model, notes, Path(tmp))
    period_us = period / RATE * 1e6
    lat = [(off - t0) * 1e6 for t0, _, off in got]
    floor = [(tap - t0) * 1e6 for t0, tap, _ in got]
    added = [(off - tap) * 1e6 for _, tap, off in got]
    floor_p50 = _pct(floor, 0.5)
    p99 = _pct(lat, 0.99)
    lateness = stats.get("lateness_us") or {}
    return {
        "input_to_output_p50_us": _pct(lat, 0.5),
        "input_to_output_p99_us": p99,
        "jitter_p99_us": lateness.get("p99"),
        "jitter_p50_us": lateness.get("p50"),
        "jack_floor_us": floor_p50,
        "jack_floor_p99_us": _pct(floor, 0.99),
        "added_p50_us": _pct(added, 0.5),
        "added_p99_us": _pct(added, 0.99),
        "goal_added_p99_us": round(period_us + 1000, 1),
        "unpaired_p99_minus_floor_p50_us": None if p99 is None or floor_p50 is None else round(p99 - floor_p50, 1),
        "period_us": round(period_us, 1),
        "reactions": len(lat),
        "missed": missed,
        "scheduled_notes": lateness.get("n"),
        "daemon_input_p50_us": (stats.get("input_us") or {}).get("p50"),
        "daemon_input_p99_us": (stats.get("input_us") or {}).get("p99"),
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "model": model,
    }
