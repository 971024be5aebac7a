"""Is the JACK server ripieno's ports live on still there? A probe that registers no client.

A client of a JACK server that died (killed, restarted by the user, QjackCtl or a session
manager) hears nothing more from libjack or rtmidi: no error callback, sends still "succeed", and
the port list it reports is the one from before. So ripieno asks the server itself: jackd2 serves
requests on a Unix socket (`$JACK_SOCKET_DIR`, default /dev/shm, `jack_<server>_<uid>_0`); a
connect that is refused means no server, and a socket with another inode means another server
(one restarted between two probes: every client of the old one is dead all the same). Connecting and closing at once is not a request, and
jackd logs nothing for it (checked with jackd 1.9.21). No JACK client is made, so the graph of a
live server never changes because of the probe (a client per probe would reorder it every second).

PipeWire's JACK has no such socket: where it is absent at start, nothing is watched.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

def request_socket(env: dict[str, str] | None = None) -> Path:
    """Where the server ripieno uses (JACK_DEFAULT_SERVER, else "default") takes requests."""
    env = dict(os.environ) if env is None else env
    folder = env.get("JACK_SOCKET_DIR") or "/dev/shm"
    name = env.get("JACK_DEFAULT_SERVER") or "default"
    return Path(folder) / f"jack_{name}_{os.getuid()}_0"


def identity(path: Path) -> tuple[int, int] | None:
    """Which server instance owns the socket: (inode, creation time). A server started again binds a
    new socket, so a quick restart between two probes is still told from the server before it."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


def alive(path: Path) -> bool:
    """False only when nobody listens on the request socket (refused, or the socket is gone). A
    busy server (its short accept queue full while clients come and go) is alive: a connect that
    times out or would block says nothing about death."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.setblocking(False)  # it runs on the event loop: never wait for the server, only ask
        s.connect(str(path))
        return True
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except OSError:  # BlockingIOError (a full accept queue) and the like: busy, not dead
        return True
    finally:
        s.close()
