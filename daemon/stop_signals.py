"""The signals that stop ripieno cleanly; shared by the import phase (cli) and the running service."""

from __future__ import annotations

import signal

# Every catchable signal whose default action ends the process: each one is a clean stop (every
# note off, ports closed, exit 0), never a kill with a note left sounding. SIGHUP is what a closed
# terminal or a dropped ssh sends to `make run`; it stops too (the config is read at start only).
STOP_SIGNALS = tuple(
    getattr(signal, name)
    for name in ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGVTALRM", "SIGPROF", "SIGXCPU", "SIGXFSZ", "SIGPWR", "SIGIO")
    if hasattr(signal, name)
)
