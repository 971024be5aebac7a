"""MIDI back-end selection and port discovery over python-rtmidi (ALSA and JACK).

Only this module knows rtmidi's API constants. It never starts a JACK server by itself
(JACK_NO_START_SERVER is set before any client is made): a daemon that silently spawns
audio servers is a surprise nobody wants.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import rtmidi

log = logging.getLogger(__name__)

CLIENT_NAME = "ripieno"
VIRTUAL = "virtual"

_APIS = {"alsa": rtmidi.API_LINUX_ALSA, "jack": rtmidi.API_UNIX_JACK}


class MidiSystemError(Exception):
    """No usable MIDI system, or a port that cannot be found or opened; str() is for the user."""


def _quiet_jack() -> None:
    os.environ.setdefault("JACK_NO_START_SERVER", "1")


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    """libjack prints "Cannot connect to server socket" on every failed probe; hide that noise."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def alsa_available() -> bool:
    return Path("/dev/snd/seq").exists() and rtmidi.API_LINUX_ALSA in rtmidi.get_compiled_api()


def jack_available() -> bool:
    """True when a JACK server (or PipeWire's JACK) answers; never starts one."""
    if rtmidi.API_UNIX_JACK not in rtmidi.get_compiled_api():
        return False
    _quiet_jack()
    try:
        with _stderr_silenced():
            probe = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, name=f"{CLIENT_NAME}-probe")
    except (rtmidi.SystemError, rtmidi.RtMidiError):
        return False
    probe.delete()
    return True


def resolve_api(api: str) -> str:
    """Turn 'auto' into 'alsa' or 'jack'; raise MidiSystemError with advice when neither is there."""
    if api == "alsa":
        if not alsa_available():
            raise MidiSystemError("ALSA sequencer not available (/dev/snd/seq missing; is snd-seq loaded?)")
        return "alsa"
    if api == "jack":
        if not jack_available():
            raise MidiSystemError("no JACK server running (start one, e.g. `jackd -d dummy`, or use api = \"alsa\")")
        return "jack"
    if api != "auto":
        raise MidiSystemError(f"unknown MIDI api {api!r} (auto | alsa | jack)")
    if alsa_available():
        return "alsa"
    if jack_available():
        return "jack"
    raise MidiSystemError(
        "no MIDI system: no ALSA sequencer (/dev/snd/seq) and no JACK server; "
        "load snd-seq or start JACK (`jackd --no-realtime -d dummy`), or use `make run`, which does"
    )


def rtmidi_api(api: str) -> int:
    return _APIS[api]


@dataclass(frozen=True)
class PortList:
    api: str
    inputs: list[str]
    outputs: list[str]


def list_ports(api: str) -> PortList:
    """The MIDI ports other clients offer (ripieno's own excluded), resolved api included."""
    resolved = resolve_api(api)
    _quiet_jack()
    code = _APIS[resolved]
    mi = rtmidi.MidiIn(code, name=f"{CLIENT_NAME}-list")
    mo = rtmidi.MidiOut(code, name=f"{CLIENT_NAME}-list")
    try:
        inputs = [p for p in mi.get_ports() if not p.startswith(f"{CLIENT_NAME}-list")]
        outputs = [p for p in mo.get_ports() if not p.startswith(f"{CLIENT_NAME}-list")]
    finally:
        mi.delete()
        mo.delete()
    return PortList(resolved, inputs, outputs)


def is_own(name: str) -> bool:
    """True for ports of ripieno's own clients (ripieno, ripieno-out, -probe, -list): never a peer.

    Matching our own output as the keyboard would feed ripieno its own notes forever.
    """
    if name.startswith((f"{CLIENT_NAME}:", f"{CLIENT_NAME} ")):
        return True
    return any(name.startswith(f"{CLIENT_NAME}-{suffix}") for suffix in ("out:", "out ", "probe", "list", "alias"))


def find_port(names: list[str], wanted: str) -> int | None:
    """Index of the first port whose name contains wanted (case-insensitive), ripieno's own excluded."""
    w = wanted.casefold()
    for i, name in enumerate(names):
        if is_own(name):
            continue
        if w in name.casefold():
            return i
    return None


def jack_client_name(kind: str) -> str:
    """JACK client names are unique: the input client is `ripieno`, the output client `ripieno-out`."""
    return CLIENT_NAME if kind == "in" else f"{CLIENT_NAME}-out"


def _libjack_path() -> str:
    """The libjack that rtmidi's clients already use in this process.

    The python-rtmidi wheel links a bundled copy; loading the system libjack beside it would give
    the process two JACK client libraries with separate state, and opening and closing a client
    through the second one was seen to silence rtmidi's output client now and then.
    """
    import ctypes.util

    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            for line in maps:
                path = line.split()[-1]
                if "/libjack" in path:
                    return path
    except OSError:
        pass
    return ctypes.util.find_library("jack") or "libjack.so.0"


def jack_alias(port: str, alias: str) -> bool:
    """Give a JACK port an alias (JACK resolves aliases in connect), so `ripieno:out` names our output.

    rtmidi makes one JACK client per port and cannot share one, so the output port really is
    `ripieno-out:out`; the alias lets users and tools write `jack_connect ripieno:out synth:in`.
    """
    import ctypes

    path = _libjack_path()
    try:
        lib = ctypes.CDLL(path)
    except OSError:
        log.warning("cannot load libjack to alias %s as %s", port, alias)
        return False
    lib.jack_client_open.restype = ctypes.c_void_p
    lib.jack_client_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p]
    lib.jack_port_by_name.restype = ctypes.c_void_p
    lib.jack_port_by_name.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.jack_port_set_alias.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.jack_client_close.argtypes = [ctypes.c_void_p]
    jack_no_start_server = 1
    client = lib.jack_client_open(f"{CLIENT_NAME}-alias".encode(), jack_no_start_server, None)
    if not client:
        return False
    try:
        handle = lib.jack_port_by_name(client, port.encode())
        return bool(handle) and lib.jack_port_set_alias(handle, alias.encode()) == 0
    finally:
        lib.jack_client_close(client)
