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

import json
import logging
import os
import tempfile
import time
from pathlib import Path

from .peers import CLI, RATE, Daemon, JackServer, Keyboard, Synth, private_jack

log = logging.getLogger(__name__)


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return round(s[min(len(s) - 1, int(q * len(s)))], 1)


def _is_off(m: list[int]) -> bool:
    return m[0] & 0xF0 == 0x80 or (m[0] & 0xF0 == 0x90 and m[2] == 0)


def _is_on(m: list[int]) -> bool:
    return m[0] & 0xF0 == 0x90 and m[2] > 0


def _paired(tap: Synth, syn: Synth, t0: float, timeout: float = 1.0) -> tuple[float, float] | None:
    """For the note sent at t0: (when the tap heard it, when the synth heard ripieno's first note-off)."""
    heard = tap.wait_for(lambda r: r.t >= t0 and _is_on(r.msg), timeout)
    off = syn.wait_for(lambda r: r.t >= t0 and _is_off(r.msg), timeout)
    if heard is None or off is None:
        return None
    return heard.t, off.t


def _reactions(jack: JackServer, model: str, n: int, workdir: Path) -> tuple[list[tuple[float, float, float]], dict, int]:
    """n interruptions; each is (t_send, t_tap, t_off) on this process's monotonic clock."""
    stats_file = workdir / "stats.json"
    text = f'[midi]\napi = "jack"\n[engine]\nmode = "call"\nmodel = "{model}"\nsilence_s = 0.1\nanswer_s = 20.0\nseed = 1\n'
    d = Daemon(text, workdir, jack.env(), ["--stats-file", str(stats_file)], entry=CLI, log_level=None)
    kbd, syn, tap = Keyboard("bench-kbd"), Synth("bench-synth"), Synth("bench-tap")
    got: list[tuple[float, float, float]] = []
    missed = 0
    try:
        d.wait_log("ripieno is up", 60, 0.02)
        jack.link(kbd.port, "ripieno:in")
        jack.link(kbd.port, tap.port)  # the floor, for the very same notes
        jack.link("ripieno-out:out", syn.port)
        time.sleep(0.3)
        for i in range(n + missed):
            if missed > n:
                break
            pitch = 48 + i % 24
            t_phrase = time.monotonic()
            kbd.send([0x90, pitch, 90])
            time.sleep(0.03)
            kbd.send([0x80, pitch, 0])
            on = syn.wait_for(lambda r: r.t > t_phrase and _is_on(r.msg), 3.0)
            if on is None:
                missed += 1
                continue
            time.sleep(0.002 + (i % 5) * 0.0017)  # interrupt at different points of the period
            t0 = kbd.send([0x90, pitch, 90])
            pair = _paired(tap, syn, t0)
            kbd.send([0x80, pitch, 0])
            if pair is None:  # the answer's note had already ended: nothing to switch off
                missed += 1
            else:
                got.append((t0, *pair))
            time.sleep(0.05)
    finally:
        kbd.close()
        syn.close()
        tap.close()
        d.stop(strict=False)  # SIGTERM (ripieno closes its notes and ports), SIGKILL only after 10 s
    try:
        stats = json.loads(stats_file.read_text())  # the daemon's own figures, written at its exit
    except (OSError, ValueError):
        stats = {}
    return got, stats, missed


def run(model: str = "default", notes: int = 200, period: int = 128, server: str | None = None) -> dict:
    """Measure; returns the JSON-able result (see module docstring)."""
    with tempfile.TemporaryDirectory(prefix="ripieno-bench-") as tmp, private_jack(Path(tmp), period, server) as jack:
        got, stats, missed = _reactions(jack, model, notes, Path(tmp))
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
