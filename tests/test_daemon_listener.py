"""The listener never raises and reads keyboards the way MIDI says: running status, velocity-0, strays."""

from __future__ import annotations

import random

from ripieno.daemon.listener import Listener, decode
from ripieno.model.play.keys import Control, KeyDown, KeyUp
from ripieno.daemon.midi_ports import ignored
from ripieno.model.play.player import Player


def test_velocity_zero_note_on_is_a_release_with_its_held_time():
    lis = Listener()
    assert lis.feed(1.0, [0x90, 60, 100]) == [KeyDown(1.0, 0, 60, 100)]
    assert lis.feed(1.5, [0x90, 60, 0]) == [KeyUp(1.5, 0, 60, 0.5)]
    assert lis.held == {}


def test_running_status_is_ignored_and_packed_complete_messages_are_all_read():
    lis = Listener()
    assert lis.feed(0.0, [0x91, 60, 90, 64, 91]) == [KeyDown(0.0, 1, 60, 90)]  # 64, 91: no status of their own
    assert lis.feed(0.1, [62, 100]) == []
    assert lis.feed(0.2, [0x91, 62, 90, 0x81, 60, 0]) == [KeyDown(0.2, 1, 62, 90), KeyUp(0.2, 1, 60, 0.2)]


def test_all_notes_off_from_the_keyboard_releases_its_keys():
    lis = Listener()
    lis.feed(0.0, [0x92, 60, 90, 0x92, 64, 90])
    lis.feed(0.0, [0x93, 67, 90])
    evs = lis.feed(1.0, [0xB2, 123, 0])
    assert evs == [KeyUp(1.0, 2, 60, 1.0), KeyUp(1.0, 2, 64, 1.0), Control(1.0, 2, 123, 0)]
    assert list(lis.held) == [(3, 67)]


def test_unmatched_note_off_and_drums_are_ignored():
    lis = Listener()
    assert lis.feed(0.0, [0x80, 60, 0]) == []
    assert lis.feed(0.0, [0x99, 36, 100]) == []  # channel 10


def test_restrike_of_a_held_key_closes_the_old_note_first():
    lis = Listener()
    lis.feed(0.0, [0x90, 60, 100])
    assert lis.feed(0.2, [0x90, 60, 80]) == [KeyUp(0.2, 0, 60, 0.2), KeyDown(0.2, 0, 60, 80)]


def test_realtime_and_sysex_inside_a_message_are_skipped():
    msgs = decode([0xF8, 0x90, 0xFE, 60, 0xF8, 100, 0xF0, 1, 2, 3, 0xF7, 62, 5])
    assert msgs == [(0x90, 60, 100)]  # the data bytes after the sysex have no status: dropped


def test_controls_come_through_and_other_channel_messages_are_dropped():
    lis = Listener()
    evs = lis.feed(0.0, [0xB3, 64, 127, 0xE0, 0, 64, 0xC0, 5, 0xD0, 3])
    assert evs == [Control(0.0, 3, 64, 127)]


def test_garbage_never_raises_and_leaves_consistent_held_keys():
    rng = random.Random(7)
    lis = Listener()
    for i in range(5000):
        data = [rng.randrange(256) for _ in range(rng.randrange(0, 8))]
        for ev in lis.feed(i * 0.001, data):
            assert 0 <= ev.channel <= 15
            if isinstance(ev, KeyDown):
                assert 0 <= ev.pitch <= 127 and 1 <= ev.velocity <= 127
    ups = lis.release_all(10.0)
    assert len(ups) == len({(u.channel, u.pitch) for u in ups}) and lis.held == {}


def test_rtmidi_thread_filter_drops_clock_sensing_and_sysex_only():
    assert ignored([0xF8]) and ignored([0xFE]) and ignored([0xF0, 1, 0xF7]) and ignored([0xF0, 0xF7]) and ignored([])
    assert not ignored([0x90, 60, 1]) and not ignored([60, 0])
    swallowed = [0xF0, 1, 2, 0x90, 60, 100, 0x80, 60, 0, 0xF7]  # rtmidi JACK glued notes onto a broken sysex
    assert not ignored(swallowed)
    assert [type(e).__name__ for e in Listener().feed(0.0, swallowed)] == ["KeyDown", "KeyUp"]


def test_player_pulse_ignores_chords_and_phrase_length_runs_to_the_last_release():
    p = Player()
    for i in range(4):
        t = 1.0 + 0.5 * i
        p.key_down(t, 80)
        p.key_down(t + 0.01, 60)  # a chord note: not a beat
        p.key_up(t + 0.3, 0.3)
        p.key_up(t + 0.3, 0.29)
    assert abs(p.ioi() - 0.5) < 1e-9
    assert p.velocity() == 70
    assert abs(p.phrase_length() - 1.8) < 1e-9
    assert p.rested_since() == 2.8


def test_note_offs_that_overflow_the_input_queue_are_kept_as_keys():
    import asyncio

    from ripieno.daemon.midi_ports import MidiInput, is_release

    assert is_release([0x83, 60, 0]) and is_release([0x90, 60, 0]) and not is_release([0x90, 60, 1])
    loop = asyncio.new_event_loop()
    try:
        port = MidiInput.__new__(MidiInput)  # only the loop-side hand-off, no rtmidi client
        port.queue, port.dropped, port.lost_releases = asyncio.Queue(1), 0, set()
        port._deliver(0.0, [0x90, 60, 100])
        port._deliver(0.1, [0x90, 60, 0])
        port._deliver(0.2, [0x85, 61, 0])
        port._deliver(0.3, [0x90, 62, 100])
        assert port.dropped == 3
        assert port.take_lost_releases() == [[0x80, 60, 0], [0x85, 61, 0]] and port.lost_releases == set()
    finally:
        loop.close()
