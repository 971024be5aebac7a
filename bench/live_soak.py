"""`ripieno bench soak --live --minutes M`: the real daemon, real JACK ports, phrases for M minutes.

The virtual soak (`bench soak`) drives the engine alone as fast as the CPU allows; this one asks
whether `ripieno run` itself, with its ports, timers, queues, logging and the JACK input client,
stays flat in memory over a long session of played phrases, as a service must. A keyboard plays a
phrase of eight notes from a scale, rests while ripieno answers (call mode), and again, for M
minutes; the daemon's resident memory is read from /proc every SAMPLE_S. JACK's shared segment is
mapped by every JACK client and counted apart (RssShmem): the figure that must level off is the
process's own memory (RssAnon). Reported: the samples, the growth over the second half
(least-squares slope, MB per hour), phrases answered, and what was left sounding after the stop.

What must grow, and where it stops: the online models learn every note the player plays, 1-3 KB
each on unrepetitive input, until a table holds 2 x PIECE_MEMORY notes; then the shadow table
(started at PIECE_MEMORY) replaces it, and the freed nodes are reused. A musician's pace (this
soak: ~1.7 learned notes a second) takes about 80 minutes to get there; `dense=True` plays in
accompany mode without rests, 8 notes a second, and gets there in 18 (measured: flat after).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from .peers import Daemon, Keyboard, Synth, private_jack

SAMPLE_S = 30.0
SCALE = [60, 62, 64, 65, 67, 69, 71, 72]


def _rss_mb(pid: int) -> dict[str, float]:
    """The process's resident memory by kind (MB), from /proc/PID/status."""
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                out[key] = round(int(value.split()[0]) / 1024, 1)
    return out


def _slope_mb_per_hour(samples: list[tuple[float, float]]) -> float | None:
    """Least-squares growth of the second half of (seconds, MB) samples, in MB per hour."""
    half = samples[len(samples) // 2 :]
    if len(half) < 3:
        return None
    t = np.array([s for s, _ in half]) / 3600.0
    y = np.array([m for _, m in half])
    return round(float(np.polyfit(t, y, 1)[0]), 2)


def run(model: str = "default", minutes: float = 60.0, server: str | None = None, seed: int = 0, dense: bool = False) -> dict:
    rng = np.random.default_rng(seed)
    mode = "accompany" if dense else "call"
    with tempfile.TemporaryDirectory(prefix="ripieno-soak-") as tmp, private_jack(Path(tmp), 128, server) as jack:
        kbd, synth = Keyboard("soakkbd"), Synth("soaksynth")
        config = (f'[midi]\napi = "jack"\ninput = "soakkbd"\noutput = "soaksynth"\n'
                  f'[engine]\nmode = "{mode}"\nmodel = "{model}"\nsilence_s = 0.4\nseed = {seed}\n')
        d = Daemon(config, Path(tmp) / "daemon", os.environ | jack.client_env(), log_level=None)
        try:
            d.wait_log("ripieno is up", timeout=60)
            start = time.monotonic()
            end = start + minutes * 60.0
            samples: list[dict] = []
            next_sample = start
            phrases = answered = 0
            while time.monotonic() < end:
                if time.monotonic() >= next_sample:
                    samples.append({"s": round(time.monotonic() - start, 1), **_rss_mb(d.proc.pid)})
                    next_sample += SAMPLE_S
                synth.clear()
                if dense:  # no rest: ripieno plays along, every note is learned
                    kbd.phrase([int(p) for p in rng.choice(SCALE, 16)], step=0.125, dur=0.1)
                    phrases += 1
                    answered += synth.wait_for(lambda r: r.msg[0] & 0xF0 == 0x90 and r.msg[2] > 0, 0.0) is not None
                    continue
                kbd.phrase([int(p) for p in rng.choice(SCALE, 8)], step=0.2, dur=0.15)
                phrases += 1
                answered += synth.wait_for(lambda r: r.msg[0] & 0xF0 == 0x90 and r.msg[2] > 0, 3.0) is not None
                time.sleep(2.5)  # the answer plays out (about the phrase's length)
            samples.append({"s": round(time.monotonic() - start, 1), **_rss_mb(d.proc.pid)})
            code = d.stop()
            time.sleep(0.2)
            left = sorted(synth.sounding())
        finally:
            if d.proc.poll() is None:
                d.stop(strict=False)
            kbd.close()
            synth.close()
    anon = [(s["s"], s["RssAnon"]) for s in samples]
    return {
        "minutes": minutes,
        "mode": mode,
        "phrases": phrases,
        "answered": answered,
        "exit_code": code,
        "left_sounding": len(left),
        "rss_anon_first_mb": anon[0][1],
        "rss_anon_last_mb": anon[-1][1],
        "rss_anon_max_mb": max(m for _, m in anon),
        "rss_anon_second_half_mb_per_hour": _slope_mb_per_hour(anon),
        "rss_shmem_last_mb": samples[-1].get("RssShmem"),
        "samples": samples,
        "model": model,
    }
