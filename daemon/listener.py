"""Raw MIDI bytes from the keyboard -> key presses, releases and controller moves.

Pure and forgiving: whatever a keyboard (or a fuzzer) sends, this never raises. Running status
is ignored: data bytes without a status byte of their own are dropped. ALSA and JACK deliver
complete messages (JACK MIDI forbids running status), so such bytes come from a broken client
or from events rtmidi glued together (see midi_ports.ignored), and reading them as note-ons
would strike keys nobody ever releases, which in call mode means ripieno would wait for a rest
forever (measured: that is what a fuzzed keyboard did). Several complete messages in one event
are all decoded. Real-time bytes inside
a message are skipped, sysex and system-common are skipped, a velocity-0 note-on is a
note-off, a note-off for a key that is not held is ignored, a note-on for a key that is
already held closes the old one first, All Notes Off / All Sound Off (CC123/CC120) from the
keyboard release its held keys on that channel. Drums (channel 10) are not notes to answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ripieno.model.events import DRUM_CHANNEL
from ripieno.model.play.keys import Control, Event, KeyDown, KeyUp

ALL_SOUND_OFF, ALL_NOTES_OFF = 120, 123
NOTE_OFF, NOTE_ON, POLY_AT, CONTROL, PROGRAM, CHAN_AT, PITCH_BEND = 0x80, 0x90, 0xA0, 0xB0, 0xC0, 0xD0, 0xE0
_DATA_BYTES = {NOTE_OFF: 2, NOTE_ON: 2, POLY_AT: 2, CONTROL: 2, PROGRAM: 1, CHAN_AT: 1, PITCH_BEND: 2}





def decode(data: Sequence[int]) -> list[tuple[int, int, int]]:
    """Channel-voice messages (status, data1, data2) in data, each with its own status byte.

    Incomplete messages are dropped; data bytes with no status of their own are skipped.
    """
    out: list[tuple[int, int, int]] = []
    status: int | None = None
    buf: list[int] = []
    in_sysex = False
    for b in data:
        b &= 0xFF
        if b >= 0xF8:  # real-time: may appear anywhere, changes nothing
            continue
        if b >= 0xF0:  # system common / sysex: ends the message in progress
            in_sysex = b == 0xF0
            status, buf = None, []
            continue
        if b >= 0x80:
            in_sysex = False
            status, buf = b, []
            continue
        if in_sysex or status is None:
            continue
        buf.append(b)
        if len(buf) == _DATA_BYTES[status & 0xF0]:
            out.append((status, buf[0], buf[1] if len(buf) > 1 else 0))
            status, buf = None, []
    return out


class Listener:
    """Stateful decoding: the keys the player is holding."""

    def __init__(self) -> None:
        self.held: dict[tuple[int, int], float] = {}  # (channel, pitch) -> time pressed

    def feed(self, t: float, data: Sequence[int]) -> list[Event]:
        msgs = decode(data)
        out: list[Event] = []
        for status, d1, d2 in msgs:
            kind, ch = status & 0xF0, status & 0x0F
            if kind == CONTROL:
                if d1 in (ALL_SOUND_OFF, ALL_NOTES_OFF):
                    out.extend(self._release_channel(t, ch))
                out.append(Control(t, ch, d1, d2))
            elif kind in (NOTE_ON, NOTE_OFF) and ch != DRUM_CHANNEL:
                out.extend(self._note(t, ch, d1, d2 if kind == NOTE_ON else 0))
        return out

    def _note(self, t: float, ch: int, pitch: int, velocity: int) -> Iterable[Event]:
        key = (ch, pitch)
        pressed = self.held.pop(key, None)
        if pressed is not None:  # a release, or a re-strike of a held key: either way the old note ends
            yield KeyUp(t, ch, pitch, max(0.0, t - pressed))
        if velocity > 0:
            self.held[key] = t
            yield KeyDown(t, ch, pitch, velocity)

    def _release_channel(self, t: float, channel: int) -> list[KeyUp]:
        keys = [k for k in self.held if k[0] == channel]
        return [KeyUp(t, ch, p, max(0.0, t - self.held.pop((ch, p)))) for ch, p in keys]

    def release_all(self, t: float) -> list[KeyUp]:
        """The keyboard vanished: every held key counts as released now."""
        ups = [KeyUp(t, ch, p, max(0.0, t - t0)) for (ch, p), t0 in self.held.items()]
        self.held.clear()
        return ups
