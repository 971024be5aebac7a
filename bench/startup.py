"""`ripieno bench startup`: how long `ripieno run` takes to be ready, and how much memory it holds.

Each run is a real `ripieno run` subprocess on a private dummy jackd (virtual ports, call mode,
the given model): ready_s is from the process's start to its "ripieno is up" log line (ports
open, model loaded, MQTT off), resident_mb its VmRSS half a second later, and
resident_without_jack_shm_mb the same less JACK's shared segment (see `_memory_mb`). The median of `runs`
runs is reported, with every run in the details; the machine's load average is reported with
them, since a busy box slows the imports and the model load alike.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

from .peers import CLI, Daemon, JackServer, private_jack

READY = "ripieno is up"
SETTLE_S = 0.5


def _memory_mb(pid: int) -> tuple[float, float] | None:
    """(VmRSS, the part of it that is JACK's shared memory segments) in MB, from /proc/PID/smaps.

    A JACK client maps the server's shared segment (/dev/shm/jack-*, ~100 MB on the dummy
    driver here) and counts its pages in VmRSS although every client shares them: reported apart,
    so what ripieno itself holds (and what an ALSA box sees) is readable."""
    try:
        rss = jack = 0
        name = ""
        for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
            head = line.split(None, 5)
            if len(head) >= 5 and "-" in head[0] and not head[0].endswith(":"):
                name = head[5] if len(head) == 6 else ""
            elif line.startswith("Rss:"):
                kb = int(line.split()[1])
                rss += kb
                if name.startswith("/dev/shm/jack"):
                    jack += kb
        return round(rss / 1024, 1), round(jack / 1024, 1)
    except (OSError, ValueError):
        return None


def _one(jack: JackServer, model: str, work: Path) -> tuple[float, tuple[float, float] | None]:
    d = Daemon(f'[midi]\napi = "jack"\n[engine]\nmode = "call"\nmodel = "{model}"\n', work, jack.env(), entry=CLI, log_level=None)
    try:
        d.wait_log(READY, 60, 0.005)
        ready = time.monotonic() - d.started
        time.sleep(SETTLE_S)
        rss = _memory_mb(d.proc.pid)
    finally:
        d.stop(strict=False)
    return ready, rss


def run(model: str = "default", runs: int = 5, server: str | None = None) -> dict:
    """Measure `runs` starts; JSON-able dict with the medians and every run."""
    with tempfile.TemporaryDirectory(prefix="ripieno-startup-") as tmp, private_jack(Path(tmp), 128, server) as jack:
        got = [_one(jack, model, Path(tmp) / f"run{k}") for k in range(max(1, runs))]
    ready = [r for r, _ in got]
    rss = [m[0] for _, m in got if m is not None]
    own = [m[0] - m[1] for _, m in got if m is not None]
    return {
        "ready_s": round(statistics.median(ready), 3),
        "resident_mb": round(statistics.median(rss), 1) if rss else None,
        "resident_without_jack_shm_mb": round(statistics.median(own), 1) if own else None,
        "goal_ready_s": 0.8,
        "goal_resident_mb": 120,
        "runs": len(got),
        "ready_each_s": [round(r, 3) for r in ready],
        "resident_each_mb": rss,
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "model": model,
    }
