"""ripieno's two MIDI ports (python-rtmidi, and ripieno's own JACK input): opening, closing, hot-plug, the input hand-off.

The input callback runs in the back-end's thread (rtmidi's under ALSA, JACK's process thread
under JACK: `jack_midi.JackMidiIn`). It only timestamps, drops what ripieno ignores (MIDI clock
too, unless the input was opened with `clock=True`) and hands the message to the event loop with
`call_soon_threadsafe`; the loop side puts it into a bounded queue and counts what overflows.

Hot-plug: a port given as a name substring is re-checked by `poll()` (`watch()` calls it every
`interval`; ALSA gives no callback). When the peer disappears the port reports LOST; when a
matching peer is back it is reopened and reports FOUND. Under JACK the input is ripieno's own
client (`jack_midi.JackMidiIn`, not rtmidi's), whose graph notifications wake the watcher at
once, and `poll()` also checks the wiring itself: a peer replugged faster than any poll has its
name back but not our connection, which is then made again (LOST, then FOUND). A peer that is
not there yet at start is the same case (`open_or_wait`, `open_pair(wait=True)`): a keyboard
switched on after the box is connected when it appears, like a replug; while none matches, the
log says so once and then every WAIT_LOG_S. Two python-rtmidi traps are handled here: `close_port()` cancels the
input callback (it is set again after every open), and dropping a MidiIn/MidiOut does not close
its JACK client (`close()` calls `delete()`).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable

import rtmidi

from . import ports
from .clock import CLOCK_STATUS
from .jack_midi import JackMidiIn

log = logging.getLogger(__name__)

QUEUE_SIZE = 2048  # about a second of a 1,500 notes/s smash (note-on + note-off) before drops
STALL_S = 0.5  # a JACK graph request (alias, connect) this slow means the graph stopped: see open_pair
OPEN_ATTEMPTS = 3
WAIT_LOG_S = 30.0  # while no port matches a wanted name, the log repeats which ones exist this often
SETTLE_S = 0.01  # after a JACK graph notification, wait this long so that a burst of them is one look
CLOSE_SETTLE_S = 0.05  # between closing an rtmidi JACK port and deleting its client (see _Port.close): many periods, on a busy box too


class Change(enum.Enum):
    LOST = "lost"
    FOUND = "found"


def ignored(msg: list[int]) -> bool:
    """Messages ripieno never looks at: empty, system real-time (clock, active sensing...), sysex.

    A "sysex" with status bytes inside still goes to the listener, whose decoder ends the sysex at
    the first status byte and hears what follows (a keyboard's broken sysex, or a back-end that
    glued later events onto it: rtmidi's JACK input did, see jack_midi). A clean one is dropped.
    """
    if not msg:
        return True
    first = msg[0]
    if first < 0xF0:
        return False
    if first != 0xF0:
        return True
    body = msg[1:-1] if msg[-1] == 0xF7 else msg[1:]
    return not body or max(body) < 0x80


def is_release(msg: list[int]) -> bool:
    """A note-off, or a note-on with velocity 0."""
    return len(msg) >= 3 and (msg[0] & 0xF0 == 0x80 or (msg[0] & 0xF0 == 0x90 and msg[2] == 0)) and msg[1] < 128


class _Port:
    """What inputs and outputs share: naming, matching, reopening, closing."""

    kind = ""  # "in" | "out"

    def __init__(self, api: str, wanted: str) -> None:
        self.api = api
        self.wanted = wanted
        self.virtual = wanted == ports.VIRTUAL
        client = ports.jack_client_name(self.kind) if api == "jack" else ports.CLIENT_NAME
        t0 = time.monotonic()
        self.midi: rtmidi.MidiIn | rtmidi.MidiOut | JackMidiIn
        try:
            if api == "jack" and self.kind == "in":
                self.midi = JackMidiIn(client)
            else:
                cls = rtmidi.MidiIn if self.kind == "in" else rtmidi.MidiOut
                self.midi = cls(ports.rtmidi_api(api), name=client)
        except (rtmidi.SystemError, rtmidi.RtMidiError) as exc:
            raise ports.MidiSystemError(f"cannot open the {api} MIDI client: {exc}") from None
        log.debug("%s client %s up in %.0f ms", api, client, (time.monotonic() - t0) * 1e3)
        self.client = client
        self.peer: str | None = None  # the port we are connected to (or our own virtual port's name)
        self.stalled = False  # the last open's graph request took longer than STALL_S
        self.connections = 0  # successful opens: a FOUND with 1 is a first connection (absent at start), not a replug
        self._next_wait_log: float | None = None  # while waiting for a peer: when to say so again
        self._closed = False
        # Under JACK: the client that can read the graph (the pair's input) and an event it sets
        # whenever the graph changed, so the watcher looks at once instead of at its next poll.
        self.graph: JackMidiIn | None = None
        self.changed = asyncio.Event()

    @property
    def label(self) -> str:
        return "input" if self.kind == "in" else "output"

    def open(self) -> bool:
        """Open the virtual port, or connect to the first port matching `wanted`; False if none matches."""
        if self.virtual:
            self.midi.open_virtual_port(self.kind)
            t0 = time.monotonic()
            if self.api == "jack" and self.client != ports.CLIENT_NAME:
                ports.jack_alias(f"{self.client}:{self.kind}", f"{ports.CLIENT_NAME}:{self.kind}")
            self._timed_request(t0, "alias")
            self.peer = f"{ports.CLIENT_NAME}:{self.kind}"
            log.info("opened virtual %s port %s", self.label, self.peer)
            self._opened()
            return True
        names = self.midi.get_ports()
        idx = ports.find_port(names, self.wanted)
        if idx is None:
            return False
        t0 = time.monotonic()
        self.midi.open_port(idx, self.kind)
        self._timed_request(t0, "connection")
        self.peer = names[idx]
        log.info("connected %s to %s", self.label, self.peer)
        self._opened()
        return True

    def _timed_request(self, t0: float, what: str) -> None:
        ms = (time.monotonic() - t0) * 1e3
        self.stalled = self.api == "jack" and ms > STALL_S * 1e3
        log.debug("%s %s: JACK %s in %.0f ms", self.label, self.client, what, ms)

    def _available(self, names: list[str] | None = None) -> str:
        names = self.midi.get_ports() if names is None else names
        return ", ".join(n for n in names if not ports.is_own(n)) or "none"

    def open_or_fail(self) -> None:
        if not self.open():
            available = self._available()
            self.close()
            raise ports.MidiSystemError(f"no {self.label} port matches {self.wanted!r} (available: {available})")

    def open_or_wait(self, now: float | None = None) -> bool:
        """Open now if a matching port exists; otherwise stay unconnected and let `poll()` connect it
        when one appears (a keyboard switched on after ripieno). True when connected now."""
        if self.open():
            return True
        now = time.monotonic() if now is None else now
        log.warning("no %s port matches %r yet (available: %s); waiting: it is connected as soon as it appears",
                    self.label, self.wanted, self._available())
        self._next_wait_log = now + WAIT_LOG_S
        return False

    def _opened(self) -> None:
        """Runs after every successful open; subclasses extend it."""
        self.connections += 1
        self._next_wait_log = None

    def poll(self, now: float | None = None) -> Change | None:
        """Hot-plug check: LOST when our peer vanished, FOUND when a matching one is (back) and opened.
        While none matches, the log says so again every WAIT_LOG_S."""
        if self.virtual or self._closed:
            return None
        now = time.monotonic() if now is None else now
        names = self.midi.get_ports()
        if self.peer is not None:
            if self.peer in names and self._wired():
                return None
            if self.peer in names:
                log.warning("%s port %s is no longer connected to ripieno (replugged?); connecting again", self.label, self.peer)
            else:
                log.warning("%s port %s disappeared; waiting for a port matching %r", self.label, self.peer, self.wanted)
            self.midi.close_port()
            self.peer = None
            self._next_wait_log = now + WAIT_LOG_S
            return Change.LOST
        if ports.find_port(names, self.wanted) is None:
            if self._next_wait_log is not None and now >= self._next_wait_log:
                log.warning("still waiting for an %s port matching %r (available: %s)", self.label, self.wanted, self._available(names))
                self._next_wait_log = now + WAIT_LOG_S
            return None
        return Change.FOUND if self.open() else None

    def _wired(self) -> bool:
        """Is our connection to the peer still in the JACK graph? A port that vanished and came back
        between two polls (a fast replug) has its name back, but JACK dropped the connection."""
        graph = self.graph
        if graph is None or self.peer is None or graph.server_gone:
            return True  # ALSA (no graph to read), or a dead server (the session reopens everything)
        if self.kind == "in":
            return self.peer in graph.connections()
        return any(p.startswith(f"{self.client}:") for p in graph.connections(self.peer))

    @property
    def connected(self) -> bool:
        return self.peer is not None

    def close(self) -> None:
        """Close the port and the client itself (for JACK, `delete()` is what really closes it).
        Safe to call twice: rtmidi must never see a deleted client again."""
        if self._closed:
            return
        self._closed = True
        try:
            self.midi.close_port()
            if self.api == "jack" and not isinstance(self.midi, JackMidiIn):
                # RtMidi 5's JACK destructor frees its ring buffer while the process callback may
                # still be reading it (a test peer crashed so in the fast-replug tests); once
                # the port is closed the callback returns at once, so let a period pass first.
                time.sleep(CLOSE_SETTLE_S)
        finally:
            self.midi.delete()
            self.peer = None


class MidiInput(_Port):
    """The keyboard side: every kept message lands in `queue` as (monotonic time, bytes)."""

    kind = "in"

    def __init__(self, api: str, wanted: str, loop: asyncio.AbstractEventLoop, maxsize: int = QUEUE_SIZE, clock: bool = False,
                 queue: asyncio.Queue[tuple[float, list[int]]] | None = None) -> None:
        """queue: hand messages to this queue (a port reopened after a JACK restart keeps the consumer's)."""
        super().__init__(api, wanted)
        self.loop = loop
        self.queue: asyncio.Queue[tuple[float, list[int]]] = asyncio.Queue(maxsize) if queue is None else queue
        self.dropped = 0
        self.lost_releases: set[tuple[int, int]] = set()
        # clock: MIDI clock, Start/Stop/Continue and Song Position reach the queue too ([tempo]
        # source = "midi_clock"). rtmidi drops timing clock unless asked; otherwise it stays dropped,
        # so a keyboard's own clock never floods the loop. Active sensing is always dropped.
        self.clock = clock
        self.midi.ignore_types(sysex=False, timing=not clock, active_sense=True)
        if isinstance(self.midi, JackMidiIn):
            self.graph = self.midi
            self.midi.on_graph_change = self._graph_changed

    def _graph_changed(self) -> None:
        """JACK's notification thread: a port came or went, a connection changed. Hand over only."""
        try:
            self.loop.call_soon_threadsafe(self.changed.set)
        except RuntimeError:  # the loop is closing
            pass

    def _opened(self) -> None:
        super()._opened()
        self.midi.set_callback(self._on_message)

    def _on_message(self, event: tuple[list[int], float], _data: object) -> None:
        """rtmidi's thread: timestamp, filter, hand over. Nothing else belongs here."""
        t = time.monotonic()
        msg = event[0]
        if ignored(msg) and not (self.clock and msg and msg[0] in CLOCK_STATUS):
            return
        try:
            self.loop.call_soon_threadsafe(self._deliver, t, msg)
        except RuntimeError:  # the loop is closing; the port is about to be closed too
            pass

    def _deliver(self, t: float, msg: list[int]) -> None:
        try:
            self.queue.put_nowait((t, msg))
        except asyncio.QueueFull:
            self.dropped += 1
            if is_release(msg):  # a lost note-off would leave a key "held" forever: keep the key
                self.lost_releases.add((msg[0] & 0x0F, msg[1]))

    def take_lost_releases(self) -> list[list[int]]:
        """Note-offs that overflowed the queue, as messages to feed the listener (at most 16 x 128)."""
        msgs = [[0x80 | ch, pitch, 0] for ch, pitch in sorted(self.lost_releases)]
        self.lost_releases.clear()
        return msgs

    def close(self) -> None:
        if self._closed:
            return
        try:
            self.midi.cancel_callback()
        except Exception:  # noqa: BLE001 - no callback set is fine
            pass
        super().close()


class MidiOutput(_Port):
    """The synth side; `send` never raises into the engine (a vanished peer just swallows bytes)."""

    kind = "out"

    def send(self, msg: list[int]) -> None:
        if self.peer is None:  # the synth is gone: nothing to play on until it is back
            return
        try:
            self.midi.send_message(msg)
        except (rtmidi.RtMidiError, ValueError) as exc:
            log.warning("could not send %s: %s", msg, exc)


def open_pair(api: str, input_wanted: str, output_wanted: str, loop: asyncio.AbstractEventLoop,
              clock: bool = False, wait: bool = False, queue: asyncio.Queue | None = None) -> tuple[MidiInput, MidiOutput]:
    """Open the keyboard and the synth side; MidiSystemError (nothing left open) when one cannot be.
    `clock`: the input also delivers MIDI clock messages (see MidiInput). `wait`: a named peer that
    is not there yet is no error: that side stays unconnected until `poll()` finds it (the daemon;
    a MIDI system that cannot make a client at all is still an error).

    Why the retry (measured in tests/test_daemon_jack.py, jackd 1.9.21 dummy driver, non-realtime,
    2 cores): now and then a freshly activated rtmidi JACK client never runs its process cycle
    (jackd logs "ripieno-out was not finished, state = Triggered" from then on and every note to it
    is lost). The graph then stalls, so the next graph request, our alias or connection, waits for
    JACK's own timeout (1.0-1.5 s seen, against 20-60 ms normally): in each of the 6 failing starts
    examined and in none of the passing ones checked. A request slower than STALL_S therefore means: close both clients, open again.

    Why the output first: under JACK the input is ripieno's own client (`jack_midi`), whose process
    callback is Python and needs the GIL every cycle, while python-rtmidi holds the GIL through
    its calls into libjack. An rtmidi client activated after the input therefore waits for a
    cycle the input cannot run until JACK's client timeout: measured here, the output took 1-9 s
    to open and jackd logged 44 "not finished" cycles over three starts; opened first, 12-16 ms and 3.
    """
    for attempt in range(1, OPEN_ATTEMPTS + 1):
        midi_out = MidiOutput(api, output_wanted)
        midi_in: MidiInput | None = None
        try:
            midi_out.open_or_wait() if wait else midi_out.open_or_fail()
            midi_in = MidiInput(api, input_wanted, loop, clock=clock, queue=queue)
            midi_in.open_or_wait() if wait else midi_in.open_or_fail()
        except BaseException:
            midi_out.close()
            if midi_in is not None:
                midi_in.close()
            raise
        midi_out.graph, midi_out.changed = midi_in.graph, midi_in.changed  # the input's client reads the graph for both
        if not (midi_in.stalled or midi_out.stalled) or attempt == OPEN_ATTEMPTS:
            return midi_in, midi_out
        log.warning("the JACK graph stalled while ripieno's ports opened (a known jackd hiccup on busy machines); reopening (%d of %d)",
                    attempt + 1, OPEN_ATTEMPTS)
        midi_in.close()
        midi_out.close()
    raise AssertionError("unreachable")


async def _nap(ports_: list[_Port], interval: float) -> None:
    """Sleep until the JACK graph changed (then SETTLE_S more, so a burst of notifications is one
    look) or `interval` passed."""
    events = list({id(p.changed): p.changed for p in ports_}.values())
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        done, _ = await asyncio.wait(waiters, timeout=interval, return_when=asyncio.FIRST_COMPLETED)
        if done:
            await asyncio.sleep(SETTLE_S)
    finally:
        for w in waiters:
            w.cancel()
        for e in events:
            e.clear()


async def watch(ports_: Callable[[], list[_Port]], on_change: Callable[[_Port, Change], None], interval: float = 0.5) -> None:
    """Check every port's peer forever (the caller cancels): at once when the JACK graph changed,
    and at most `interval` s apart anyway. `ports_` gives the ports now (the session reopens them
    after a JACK server restart). A port that lost its peer is looked at again at once: a peer
    that is already back (a fast replug) is FOUND in the same round."""
    while True:
        await _nap(ports_(), interval)
        for p in ports_():
            for _ in range(2):
                try:
                    change = p.poll()
                except (rtmidi.RtMidiError, rtmidi.SystemError, ports.MidiSystemError) as exc:
                    log.warning("checking %s port: %s", p.label, exc)
                    break
                if change is None:
                    break
                on_change(p, change)
                if change is not Change.LOST:
                    break
