"""ripieno's JACK MIDI input: its own libjack client, so every JACK event is heard as it comes.

Why not rtmidi's JACK input (measured with python-rtmidi 1.5.8 / RtMidi 5.0): an event that starts
with F0 and does not end with F7 makes it glue every later event onto that "sysex" until an F7
arrives, so a keyboard that sends one broken sysex leaves ripieno deaf; and it has no port
registration callback, so a keyboard replugged faster than the name poll is never re-wired (its
name is back, its connection is not). Here each JACK event is its own message (the listener's
decoder then ends a broken sysex at the next status byte, as the MIDI spec says), and the JACK
graph's own notifications (port registered or gone, connection made or broken, server shut down)
wake the hot-plug watcher at once; `connections()` lets it check wiring, not only names.

What was looked at: JACK-Client (cffi) has all of this but loads the system libjack beside the copy
that the python-rtmidi wheel bundles; two JACK client libraries in one process were seen to silence
rtmidi's output client (see ports._libjack_path). So this is ctypes over rtmidi's own libjack, and
only the input: the output stays rtmidi's (its process callback is C++, where timing matters).

The process callback runs in JACK's thread and only copies the bytes and hands them over, like the
rtmidi callback it replaces. It mimics the part of rtmidi.MidiIn that midi_ports uses.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable

from . import ports

log = logging.getLogger(__name__)

MIDI_TYPE = b"8 bit raw midi"
PORT_IS_INPUT, PORT_IS_OUTPUT = 0x1, 0x2
NO_START_SERVER = 0x01

_nframes = ctypes.c_uint32
_PROCESS = ctypes.CFUNCTYPE(ctypes.c_int, _nframes, ctypes.c_void_p)
_PORT_REGISTRATION = ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_int, ctypes.c_void_p)
_PORT_CONNECT = ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_int, ctypes.c_void_p)
_SHUTDOWN = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


class _MidiEvent(ctypes.Structure):
    _fields_ = [("time", _nframes), ("size", ctypes.c_size_t), ("buffer", ctypes.POINTER(ctypes.c_ubyte))]


def _library() -> ctypes.CDLL:
    lib = ctypes.CDLL(ports._libjack_path())
    p, cp = ctypes.c_void_p, ctypes.c_char_p
    sig = {
        "jack_client_open": (p, [cp, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]),
        "jack_client_close": (ctypes.c_int, [p]),
        "jack_activate": (ctypes.c_int, [p]),
        "jack_deactivate": (ctypes.c_int, [p]),
        "jack_get_client_name": (cp, [p]),
        "jack_port_register": (p, [p, cp, cp, ctypes.c_ulong, ctypes.c_ulong]),
        "jack_port_name": (cp, [p]),
        "jack_port_by_name": (p, [p, cp]),
        "jack_port_get_buffer": (p, [p, _nframes]),
        "jack_midi_get_event_count": (ctypes.c_uint32, [p]),
        "jack_midi_event_get": (ctypes.c_int, [ctypes.POINTER(_MidiEvent), p, ctypes.c_uint32]),
        "jack_get_ports": (ctypes.POINTER(cp), [p, cp, cp, ctypes.c_ulong]),
        "jack_port_get_all_connections": (ctypes.POINTER(cp), [p, p]),
        "jack_free": (None, [p]),
        "jack_connect": (ctypes.c_int, [p, cp, cp]),
        "jack_disconnect": (ctypes.c_int, [p, cp, cp]),
        "jack_set_process_callback": (ctypes.c_int, [p, _PROCESS, p]),
        "jack_set_port_registration_callback": (ctypes.c_int, [p, _PORT_REGISTRATION, p]),
        "jack_set_port_connect_callback": (ctypes.c_int, [p, _PORT_CONNECT, p]),
        "jack_on_shutdown": (None, [p, _SHUTDOWN, p]),
    }
    for name, (restype, argtypes) in sig.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    return lib


def _names(lib: ctypes.CDLL, array: ctypes.Array | None) -> list[str]:
    """A NULL-terminated char** from libjack as strings; the array is freed."""
    if not array:
        return []
    out: list[str] = []
    i = 0
    while array[i] is not None:
        out.append(array[i].decode(errors="replace"))
        i += 1
    lib.jack_free(ctypes.cast(array, ctypes.c_void_p))
    return out


class JackMidiIn:
    """One JACK client with one MIDI input port; the subset of rtmidi.MidiIn that midi_ports uses.

    `on_graph_change` (set by the owner) is called from JACK's notification thread whenever a port
    comes or goes, a connection is made or broken, or the server shuts down: hand it over, no more.
    """

    def __init__(self, name: str) -> None:
        self._lib = _library()
        status = ctypes.c_int(0)
        client = self._lib.jack_client_open(name.encode(), NO_START_SERVER, ctypes.byref(status))
        if not client:
            raise ports.MidiSystemError(f"cannot open the JACK MIDI client {name!r} (JACK status 0x{status.value:x}: is a JACK server running?)")
        self._client: int | None = client
        self._port: int | None = None
        self._peer: str | None = None
        self._callback: Callable[[tuple[list[int], float], object], None] | None = None
        self.on_graph_change: Callable[[], None] | None = None
        self.server_gone = False
        self._event = _MidiEvent()
        # ctypes callbacks must outlive the client: kept on the instance
        self._c_process = _PROCESS(self._process)
        self._c_registration = _PORT_REGISTRATION(lambda _port, _reg, _arg: self._graph_changed())
        self._c_connect = _PORT_CONNECT(lambda _a, _b, _connect, _arg: self._graph_changed())
        self._c_shutdown = _SHUTDOWN(self._shutdown)
        lib = self._lib
        if (lib.jack_set_process_callback(client, self._c_process, None)
                or lib.jack_set_port_registration_callback(client, self._c_registration, None)
                or lib.jack_set_port_connect_callback(client, self._c_connect, None)):
            self.delete()
            raise ports.MidiSystemError(f"cannot set up the JACK MIDI client {name!r}")
        lib.jack_on_shutdown(client, self._c_shutdown, None)
        if lib.jack_activate(client):
            self.delete()
            raise ports.MidiSystemError(f"cannot activate the JACK MIDI client {name!r}")

    # ------------------------------------------------------------------------------ JACK's threads

    def _process(self, nframes: int, _arg: object) -> int:
        """JACK's process thread: copy each event's bytes out and hand them over."""
        try:
            port, callback = self._port, self._callback
            if port is None:
                return 0
            lib, ev = self._lib, self._event
            buf = lib.jack_port_get_buffer(port, nframes)
            for i in range(lib.jack_midi_get_event_count(buf)):
                if lib.jack_midi_event_get(ctypes.byref(ev), buf, i) == 0 and ev.size and callback is not None:
                    callback((list(ctypes.string_at(ev.buffer, ev.size)), 0.0), None)
        except Exception:  # noqa: BLE001 - never raise into libjack
            log.exception("JACK MIDI input callback failed")
        return 0

    def _graph_changed(self) -> None:
        hook = self.on_graph_change
        if hook is not None:
            try:
                hook()
            except Exception:  # noqa: BLE001 - never raise into libjack
                log.exception("JACK graph notification failed")

    def _shutdown(self, _arg: object) -> None:
        self.server_gone = True
        self._graph_changed()

    # ------------------------------------------------------------------------- the rtmidi subset

    def ignore_types(self, sysex: bool = True, timing: bool = True, active_sense: bool = True) -> None:
        """Everything is passed on: midi_ports.MidiInput filters in its callback (ignored())."""

    def set_callback(self, callback: Callable[[tuple[list[int], float], object], None]) -> None:
        self._callback = callback

    def cancel_callback(self) -> None:
        self._callback = None

    def get_ports(self) -> list[str]:
        """Every MIDI port that can feed ripieno (other clients' outputs, ripieno's own included)."""
        if self._client is None:
            return []
        return _names(self._lib, self._lib.jack_get_ports(self._client, None, MIDI_TYPE, PORT_IS_OUTPUT))

    def _register(self, name: str) -> None:
        if self._port is None:
            port = self._lib.jack_port_register(self._client, name.encode(), MIDI_TYPE, PORT_IS_INPUT, 0)
            if not port:
                raise ports.MidiSystemError(f"cannot register the JACK MIDI port {name!r}")
            self._port = port

    def open_virtual_port(self, name: str = "in") -> None:
        self._register(name)

    def open_port(self, index: int, name: str = "in") -> None:
        """Connect the index-th of get_ports() to our port (registered on first use)."""
        names = self.get_ports()
        if not 0 <= index < len(names):
            raise ports.MidiSystemError(f"no JACK MIDI port number {index}")
        self._register(name)
        peer = names[index]
        if self._lib.jack_connect(self._client, peer.encode(), self.port_name.encode()) not in (0, 17):  # 17: EEXIST
            raise ports.MidiSystemError(f"cannot connect {peer} to {self.port_name}")
        self._peer = peer

    @property
    def port_name(self) -> str:
        """Our port's full JACK name (JACK may have renamed the client when the name was taken)."""
        if self._port is None:
            return ""
        return (self._lib.jack_port_name(self._port) or b"").decode(errors="replace")

    def connections(self, port: str | None = None) -> list[str]:
        """The ports `port` (our own by default) is connected to, as the JACK graph has them now."""
        if self._client is None:
            return []
        handle = self._port if port is None else self._lib.jack_port_by_name(self._client, port.encode())
        if not handle:
            return []
        return _names(self._lib, self._lib.jack_port_get_all_connections(self._client, handle))

    def close_port(self) -> None:
        """Disconnect the peer; our port stays (the next open reconnects it)."""
        if self._client is not None and self._port is not None and self._peer is not None:
            self._lib.jack_disconnect(self._client, self._peer.encode(), self.port_name.encode())
        self._peer = None

    def delete(self) -> None:
        """Close the client (its port goes with it). No callback runs after this returns."""
        client, self._client = self._client, None
        self._callback = None
        self.on_graph_change = None
        if client is not None:
            if not self.server_gone:
                self._lib.jack_deactivate(client)
            self._lib.jack_client_close(client)
        self._port = None
